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

mod expand;
mod file;
mod locate;
mod model;
mod route;
mod suggest;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use model::*;

use locate::{KeyPath, Seg, Target};

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
    let file = path.display().to_string();
    let config_hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));

    // The original document keeps the spans every message points into.
    let original = toml_edit::ImDocument::parse(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = locate::line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let message = e.message().trim().replace('\n', "; ");
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line,
            column,
            key_path: String::new(),
            message: format!("invalid TOML: {message}"),
        }])
    })?;
    let at = |problem: validate::Problem| {
        let offset = locate::locate(original.as_item(), &problem.path, problem.target);
        let (line, column) = offset.map(|o| locate::line_col(text, o)).unzip();
        ConfigError {
            file: file.clone(),
            line,
            column,
            key_path: problem.path.to_string(),
            message: problem.message,
        }
    };
    let finish = |problems: Vec<validate::Problem>| {
        let mut errors: Vec<ConfigError> = problems.into_iter().map(at).collect();
        // File order reads best; problems without a position go last.
        errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
        errors
    };

    let mut doc = original.clone().into_mut();
    let expand_errors = expand::expand_document(&mut doc, env);
    if !expand_errors.is_empty() {
        let problems = expand_errors
            .into_iter()
            .map(|e| validate::Problem {
                path: e.path,
                target: Target::Value,
                message: e.message,
            })
            .collect();
        return Err(ConfigErrors(finish(problems)));
    }

    let (raw, serde_problems) = deserialize_all(doc);
    let Some(raw) = raw else {
        return Err(ConfigErrors(finish(serde_problems)));
    };

    let (config, mut errors, warnings) = validate::validate(&raw, path, config_hash);
    errors.extend(serde_problems);
    if !errors.is_empty() {
        return Err(ConfigErrors(finish(errors)));
    }
    Ok(Loaded {
        config,
        warnings: finish(warnings),
    })
}

/// Most serde problems gathered from one file (each costs a parse).
const MAX_SERDE_PROBLEMS: usize = 50;

/// Deserializes the file and gathers every problem serde finds, not only
/// the first (SPEC: `check` reports every error): after each one the key it
/// names is taken out and the rest parsed again. The configuration comes
/// back only when the rest parses and every key taken out was an unknown
/// one, so that it says what the file says and its validation errors are
/// real too; a key taken out for a wrong value would be missing or
/// defaulted, and errors about that would be noise.
fn deserialize_all(
    mut doc: toml_edit::DocumentMut,
) -> (Option<file::FileConfig>, Vec<validate::Problem>) {
    let mut problems: Vec<validate::Problem> = Vec::new();
    loop {
        let deserializer = toml_edit::de::Deserializer::from(doc.clone());
        let error = match serde_path_to_error::deserialize::<_, file::FileConfig>(deserializer) {
            Ok(raw) => {
                let only_unknown = problems.iter().all(|p| p.target == Target::Key);
                return (only_unknown.then_some(raw), problems);
            }
            Err(error) => error,
        };
        let problem = serde_problem(&error);
        // A required key taken out for its wrong value is missing now: not news.
        let follows_a_removal = problem
            .message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|name| problems.iter().any(|p| p.path == problem.path.key(name)));
        if follows_a_removal {
            return (None, problems);
        }
        let removed =
            problems.len() + 1 < MAX_SERDE_PROBLEMS && remove_key(doc.as_item_mut(), &problem.path);
        problems.push(problem);
        if !removed {
            return (None, problems);
        }
    }
}

/// Takes the key at `path` out of the document; false when the path does
/// not end in a key (an array element: taking it out would renumber the
/// elements after it, whose problems would then point at the wrong one).
fn remove_key(root: &mut toml_edit::Item, path: &KeyPath) -> bool {
    let Some((Seg::Key(last), parents)) = path.0.split_last() else {
        return false;
    };
    let mut item = root;
    for seg in parents {
        let next = match seg {
            Seg::Key(key) => item.get_mut(key.as_str()),
            Seg::Index(index) => item.get_mut(*index),
        };
        match next {
            Some(next) => item = next,
            None => return false,
        }
    }
    item.as_table_like_mut()
        .is_some_and(|table| table.remove(last).is_some())
}

/// Turns a serde error into a problem at its key path; an unknown key
/// points at the key itself, with a "did you mean" when one is close.
fn serde_problem(e: &serde_path_to_error::Error<toml_edit::de::Error>) -> validate::Problem {
    let mut path = KeyPath(
        e.path()
            .iter()
            .map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
                serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Seg::Key(variant.clone()),
                serde_path_to_error::Segment::Unknown => Seg::Key("?".to_owned()),
            })
            .collect(),
    );
    let message = e.inner().message().trim().to_owned();
    let Some(rest) = message.strip_prefix("unknown field ") else {
        return validate::Problem {
            path,
            target: Target::Value,
            message,
        };
    };
    // "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`").
    let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let Some((&unknown, expected)) = names.split_first() else {
        return validate::Problem {
            path,
            target: Target::Value,
            message,
        };
    };
    if path.last_key() != Some(unknown) {
        path = path.key(unknown);
    }
    let message = match suggest::suggest(unknown, expected.iter().copied()) {
        Some(s) => format!("unknown key `{unknown}`; did you mean `{s}`?"),
        None if expected.is_empty() => format!("unknown key `{unknown}`"),
        None => format!(
            "unknown key `{unknown}` (expected one of {})",
            expected
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    validate::Problem {
        path,
        target: Target::Key,
        message,
    }
}
