//! Writing a command's output to stdout.
//!
//! `println!` panics when stdout is a pipe whose reader went away
//! (`strangler diffs orders | head -1`). These macros write the same text
//! and end the process quietly instead, as `cat` does: a reader that has
//! seen enough is not an error to report.

/// As `print!`, ending the process quietly if stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout::failed(&error);
        }
    }};
}

/// As `println!`, ending the process quietly if stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout::failed(&error);
        }
    }};
}

/// A write to stdout failed: a closed pipe ends the process with 0 (its
/// reader stopped reading), anything else with 1 and one sentence.
pub(crate) fn failed(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("strangler: cannot write to stdout: {error}");
    std::process::exit(1);
}
