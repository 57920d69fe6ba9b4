//! Configuration: file → raw `File*` structs → validated [`Config`].
//!
//! The pipeline, in order:
//! 1. read the file's text (its hash, before substitution, is the config hash);
//! 2. parse it as TOML keeping spans, expand `${VAR}` in string values;
//! 3. deserialize into `file::FileConfig` (unknown keys refused, with a
//!    "did you mean");
//! 4. validate into [`Config`]: ranges, cross-references, regexes.
//!
//! Every error names the file, line and column where known, and the key path
//! (`routes[1].weight`). `strangler check`, startup and reload all use [`load`].

mod model;

pub use model::*;

use std::path::Path;

/// Where `${VAR}` values come from; tests pass a map instead of touching the
/// process environment.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// `routes[1].weight`; empty for file-level problems (unreadable, syntax).
    pub key_path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key_path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key_path, self.message)
        }
    }
}

/// Every error found in one file (never empty).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A valid configuration plus the warnings `strangler check` prints.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Same format as errors, e.g. a `min_requests` too small to demonstrate
    /// `min_match_rate`.
    pub warnings: Vec<ConfigError>,
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            key_path: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(path, &text, env)
}

/// Parses and validates configuration text that was read from `path`.
pub fn parse(path: &Path, text: &str, env: &dyn EnvSource) -> Result<Loaded, ConfigErrors> {
    let _ = (path, text, env);
    unimplemented!("config parsing is being written")
}
