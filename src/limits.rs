//! Process limits a proxy needs raised before it accepts traffic.
//!
//! Every client connection, and every upstream connection behind it, is a
//! file descriptor. Linux starts most processes with a soft limit of 1,024
//! open files and a hard limit far above it (systemd: 524,288), so a proxy
//! left at the soft limit refuses connections (`accept` fails with EMFILE)
//! at about 500 clients. Like Go's runtime (since 1.19) and what nginx's
//! `worker_rlimit_nofile` is usually set to, `strangler run` raises the
//! soft limit to the hard one at startup; the hard limit is the operator's
//! (`ulimit -Hn`, systemd's `LimitNOFILE=`).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The open-files limit before and after [`raise_open_files`]; `None` is
/// "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: Option<u64>,
    pub now: Option<u64>,
}

impl std::fmt::Display for OpenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |limit: Option<u64>| limit.map_or("unlimited".to_string(), |n| n.to_string());
        write!(f, "{} -> {}", shown(self.before), shown(self.now))
    }
}

/// Raises the soft limit on open files to the hard limit. Never fails the
/// start: when the kernel refuses, the limit stays as it was.
pub fn raise_open_files() -> Result<OpenFiles, rustix::io::Errno> {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if before == limit.maximum {
        return Ok(OpenFiles {
            before,
            now: before,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(OpenFiles {
        before,
        now: getrlimit(Resource::Nofile).current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lowers this test process's soft limit, then raises it back: the
    /// soft limit ends at the hard limit, which is left alone.
    #[test]
    fn soft_limit_rises_to_the_hard_limit() {
        let start = getrlimit(Resource::Nofile);
        let Some(hard) = start.maximum else {
            eprintln!("skipped: the hard open-files limit is unlimited here");
            return;
        };
        // One below the hard limit: lowering further could starve the tests
        // running beside this one in the same process.
        let lowered = hard.saturating_sub(1).max(1);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(lowered),
                maximum: start.maximum,
            },
        )
        .expect("lowering the soft limit below the hard one is always allowed");

        let raised = raise_open_files().expect("raising up to the hard limit is allowed");
        assert_eq!(raised.before, Some(lowered));
        assert_eq!(raised.now, Some(hard));
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, Some(hard));
        assert_eq!(after.maximum, start.maximum, "the hard limit is untouched");

        assert_eq!(raised.to_string(), format!("{lowered} -> {hard}"));

        // Already at the hard limit: nothing to do, nothing changes.
        assert_eq!(
            raise_open_files().expect("no change needed"),
            OpenFiles {
                before: Some(hard),
                now: Some(hard)
            }
        );
    }
}
