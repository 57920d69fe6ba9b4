//! Accepted differences (`strangler accept`): known, intended changes.
//!
//! Each accepted entry is an endpoint template and a path. A JSONPath
//! (starting with `$`, wildcards `[*]` and descendants `..` allowed)
//! accepts every body difference at a location it selects or below one; any
//! other path is a header or trailer name (or `status`) and accepts that,
//! case-insensitively. Matching needs no document: see
//! `path::pattern_covers`.

use serde_json_path::JsonPath;

use super::path::{parse_concrete, pattern_covers};
use super::{CompareError, DiffKind, Difference};

/// The accepted differences of one route.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    endpoint: String,
    pattern: Pattern,
}

#[derive(Debug, Clone)]
enum Pattern {
    Json(JsonPath),
    /// A header or trailer name, or `status`; lowercase.
    Name(String),
}

impl Accepted {
    /// Compiles `(endpoint template, path)` pairs.
    pub fn new<E, P>(entries: impl IntoIterator<Item = (E, P)>) -> Result<Accepted, CompareError>
    where
        E: AsRef<str>,
        P: AsRef<str>,
    {
        let entries = entries
            .into_iter()
            .map(|(endpoint, path)| {
                let path = path.as_ref().trim();
                let pattern = if path.starts_with('$') {
                    Pattern::Json(JsonPath::parse(path).map_err(|e| CompareError::JsonPath {
                        key: "accepted",
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?)
                } else {
                    Pattern::Name(path.to_ascii_lowercase())
                };
                Ok(Entry {
                    endpoint: endpoint.as_ref().to_owned(),
                    pattern,
                })
            })
            .collect::<Result<_, CompareError>>()?;
        Ok(Accepted { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `diff`, seen on `endpoint`, is accepted.
    pub fn is_accepted(&self, endpoint: &str, diff: &Difference) -> bool {
        let mut relevant = self
            .entries
            .iter()
            .filter(|e| e.endpoint == endpoint)
            .peekable();
        if relevant.peek().is_none() {
            return false;
        }
        let segs = match diff.kind {
            DiffKind::Body => parse_concrete(&diff.path),
            _ => None,
        };
        relevant.any(|e| match (&e.pattern, diff.kind) {
            (Pattern::Json(p), DiffKind::Body) => {
                segs.as_deref().is_some_and(|s| pattern_covers(p, s))
            }
            (Pattern::Name(n), DiffKind::Header | DiffKind::Trailer | DiffKind::Status) => {
                n.eq_ignore_ascii_case(&diff.path)
            }
            _ => false,
        })
    }

    /// Removes the accepted differences from `diffs`.
    pub fn retain_unaccepted(&self, endpoint: &str, diffs: &mut Vec<Difference>) {
        diffs.retain(|d| !self.is_accepted(endpoint, d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Change;
    use serde_json::Value;

    const EP: &str = "GET /orders/{id}";

    fn diff(kind: DiffKind, path: &str) -> Difference {
        Difference {
            kind,
            path: path.to_owned(),
            change: Change::Changed,
            legacy: Value::Null,
            candidate: Value::Null,
        }
    }

    #[test]
    fn json_paths_with_wildcards_and_descendants() {
        let a = Accepted::new([(EP, "$.items[*].price"), (EP, "$..etag"), (EP, "$.meta")])
            .expect("valid paths");
        for (path, accepted) in [
            ("$.items[3].price", true),
            ("$.items[3].name", false),
            ("$.a.b[2].etag", true),
            ("$.meta.version", true),
            ("$.metadata", false),
            ("$['items'][0]['price']", true),
        ] {
            assert_eq!(
                a.is_accepted(EP, &diff(DiffKind::Body, path)),
                accepted,
                "{path}"
            );
        }
        // Only for its endpoint template.
        assert!(!a.is_accepted("GET /other", &diff(DiffKind::Body, "$.meta")));
    }

    #[test]
    fn names_accept_headers_trailers_and_status() {
        let a = Accepted::new([(EP, "X-Version"), (EP, "status")]).expect("valid");
        assert!(a.is_accepted(EP, &diff(DiffKind::Header, "x-version")));
        assert!(a.is_accepted(EP, &diff(DiffKind::Trailer, "x-version")));
        assert!(a.is_accepted(EP, &diff(DiffKind::Status, "status")));
        assert!(!a.is_accepted(EP, &diff(DiffKind::Header, "x-other")));
        assert!(!a.is_accepted(EP, &diff(DiffKind::Body, "$")));
    }

    #[test]
    fn root_accepts_a_whole_non_json_body() {
        let a = Accepted::new([(EP, "$")]).expect("valid");
        assert!(a.is_accepted(EP, &diff(DiffKind::Body, "$")));
        assert!(a.is_accepted(EP, &diff(DiffKind::Body, "$.x[1]")));
    }

    #[test]
    fn retain_and_errors() {
        let a = Accepted::new([(EP, "$.a")]).expect("valid");
        let mut d = vec![diff(DiffKind::Body, "$.a"), diff(DiffKind::Body, "$.b")];
        a.retain_unaccepted(EP, &mut d);
        assert_eq!(d, vec![diff(DiffKind::Body, "$.b")]);
        assert!(Accepted::new([(EP, "$[")]).is_err());
    }
}
