//! JSONPath plumbing shared by the comparison rules.
//!
//! Differences name their location with a concrete JSONPath
//! (`$.items[3].price`, `$['a b']`); noise is learned per *normalized* path
//! (`$.items[*].price`); user rules (`ignore_json`, `unordered_arrays`,
//! `redact_json`, accepted differences) are full RFC 9535 JSONPaths, compiled
//! once with `serde_json_path` and located in a document as sets of concrete
//! segment lists. Keeping all three spellings here means the walker in
//! `json.rs` only ever pushes and pops [`Seg`]s.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::Value;
use serde_json_path::{JsonPath, NormalizedPath, PathElement};

use super::CompareError;

/// One step of a concrete location: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a concrete location: `$`, `.key` for plain keys, `['a b']` for
/// keys that need quoting, `[3]` for indices.
pub(crate) fn render(segs: &[Seg]) -> String {
    let mut out = String::from("$");
    for seg in segs {
        match seg {
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            Seg::Key(k) if is_plain_key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Key(k) => {
                out.push_str("['");
                escape_into(&mut out, k);
                out.push_str("']");
            }
        }
    }
    out
}

/// A key that can be written after a dot: an ASCII identifier.
fn is_plain_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Escapes a key for a single-quoted name selector (RFC 9535 §2.7).
fn escape_into(out: &mut String, k: &str) {
    for c in k.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Parses a path written by [`render`] (or any normalized path using dots,
/// quoted names and indices) back into segments. `None` for anything else,
/// such as wildcards.
pub(crate) fn parse_concrete(path: &str) -> Option<Vec<Seg>> {
    let rest = path.strip_prefix('$')?;
    let chars: Vec<char> = rest.chars().collect();
    let mut segs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                if i == start {
                    return None;
                }
                segs.push(Seg::Key(chars[start..i].iter().collect()));
            }
            '[' => {
                i += 1;
                match chars.get(i)? {
                    q @ ('\'' | '"') => {
                        let quote = *q;
                        i += 1;
                        let mut key = String::new();
                        loop {
                            match *chars.get(i)? {
                                '\\' => {
                                    i += 1;
                                    key.push(unescape(&chars, &mut i)?);
                                }
                                c if c == quote => break,
                                c => key.push(c),
                            }
                            i += 1;
                        }
                        i += 1; // closing quote
                        segs.push(Seg::Key(key));
                    }
                    _ => {
                        let start = i;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                        let digits: String = chars[start..i].iter().collect();
                        segs.push(Seg::Index(digits.parse().ok()?));
                    }
                }
                if chars.get(i) != Some(&']') {
                    return None;
                }
                i += 1;
            }
            _ => return None,
        }
    }
    Some(segs)
}

/// Reads the escape whose letter is at `chars[*i]`, leaving `*i` on its last
/// character.
fn unescape(chars: &[char], i: &mut usize) -> Option<char> {
    Some(match *chars.get(*i)? {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'u' => {
            let hex: String = chars.get(*i + 1..*i + 5)?.iter().collect();
            *i += 4;
            char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
        }
        c => c,
    })
}

/// Replaces every array index with `[*]`: `$.items[3].price` →
/// `$.items[*].price`. Quoted names are left untouched, so `$['a[1]']` stays.
pub fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\'' | '"' => {
                // Copy the quoted name verbatim, escapes included.
                while let Some(q) = chars.next() {
                    out.push(q);
                    if q == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if q == c {
                        break;
                    }
                }
            }
            '[' if chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('*');
            }
            _ => {}
        }
    }
    out
}

/// Converts a location found by `serde_json_path` into segments.
fn to_segs(location: &NormalizedPath<'_>) -> Vec<Seg> {
    location
        .iter()
        .map(|e| match e {
            PathElement::Name(n) => Seg::Key((*n).to_owned()),
            PathElement::Index(i) => Seg::Index(*i),
        })
        .collect()
}

/// A list of compiled user JSONPaths (one config key's worth).
#[derive(Debug, Clone, Default)]
pub(crate) struct PathList {
    paths: Vec<JsonPath>,
}

impl PathList {
    /// Compiles each expression; `key` names the config list in errors.
    pub(crate) fn compile(key: &'static str, raw: &[String]) -> Result<Self, CompareError> {
        let paths = raw
            .iter()
            .map(|p| {
                JsonPath::parse(p).map_err(|e| CompareError::JsonPath {
                    key,
                    path: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(PathList { paths })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Every concrete location that one of the paths selects in `doc`.
    pub(crate) fn locate(&self, doc: &Value) -> HashSet<Vec<Seg>> {
        let mut out = HashSet::new();
        for p in &self.paths {
            for node in p.query_located(doc).iter() {
                out.insert(to_segs(node.location()));
            }
        }
        out
    }

    /// The JSON Pointer of every location the paths select in `doc`, for
    /// rewriting the selected values in place.
    pub(crate) fn pointers(&self, doc: &Value) -> Vec<String> {
        self.paths
            .iter()
            .flat_map(|p| {
                p.query_located(doc)
                    .iter()
                    .map(|n| n.location().to_json_pointer())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// True when `pattern` selects `target` or one of its ancestors, judged
/// without the original document: `target` is rebuilt as a skeleton
/// document (one branch, `null` leaves) and the pattern is run on it. So
/// `$..created_at`, `$.items[*]` and `$.meta` all match
/// `$.items[2].meta.created_at` where they should; filters on values see
/// only `null`s.
pub(crate) fn pattern_covers(pattern: &JsonPath, target: &[Seg]) -> bool {
    /// Skeletons for very large indices would allocate too much.
    const MAX_SKELETON_INDEX: usize = 100_000;
    if target
        .iter()
        .any(|s| matches!(s, Seg::Index(i) if *i > MAX_SKELETON_INDEX))
    {
        return false;
    }
    let mut doc = Value::Null;
    for seg in target.iter().rev() {
        doc = match seg {
            Seg::Key(k) => Value::Object([(k.clone(), doc)].into_iter().collect()),
            Seg::Index(i) => {
                let mut items = vec![Value::Null; *i];
                items.push(doc);
                Value::Array(items)
            }
        };
    }
    pattern.query_located(&doc).iter().any(|node| {
        let found = to_segs(node.location());
        target.starts_with(&found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_owned())
    }

    #[test]
    fn render_uses_dots_brackets_and_quotes() {
        let segs = [key("items"), Seg::Index(3), key("price")];
        assert_eq!(render(&segs), "$.items[3].price");
        assert_eq!(render(&[key("a b")]), "$['a b']");
        assert_eq!(render(&[key("it's")]), r"$['it\'s']");
        assert_eq!(render(&[key("1st")]), "$['1st']");
        assert_eq!(render(&[]), "$");
    }

    #[test]
    fn parse_concrete_inverts_render() {
        for segs in [
            vec![key("items"), Seg::Index(3), key("price")],
            vec![key("a b"), key("it's"), key("x\\y"), Seg::Index(0)],
            vec![key("a.b"), key("[0]")],
        ] {
            assert_eq!(parse_concrete(&render(&segs)), Some(segs));
        }
        assert_eq!(parse_concrete("$.items[*]"), None);
        assert_eq!(parse_concrete("status"), None);
    }

    #[test]
    fn normalize_replaces_indices_only() {
        assert_eq!(normalize_path("$.items[3].price"), "$.items[*].price");
        assert_eq!(normalize_path("$[0][12]"), "$[*][*]");
        assert_eq!(normalize_path("$['a[1]'][2]"), "$['a[1]'][*]");
        assert_eq!(normalize_path("x-request-id"), "x-request-id");
    }

    #[test]
    fn pattern_covers_wildcards_descendants_and_ancestors() {
        let target = parse_concrete("$.items[2].meta.created_at").expect("valid path");
        for (pattern, expected) in [
            ("$..created_at", true),
            ("$.items[*].meta.created_at", true),
            ("$.items[2]", true),
            ("$.items", true),
            ("$.items[1]", false),
            ("$.meta", false),
            ("$..updated_at", false),
        ] {
            let p = JsonPath::parse(pattern).expect("valid pattern");
            assert_eq!(pattern_covers(&p, &target), expected, "{pattern}");
        }
    }

    #[test]
    fn locate_finds_concrete_locations() {
        let list = PathList::compile("ignore_json", &["$..id".to_owned()]).expect("valid");
        let doc = serde_json::json!({"id": 1, "items": [{"id": 2}, {"x": 3}]});
        let found = list.locate(&doc);
        assert_eq!(found.len(), 2);
        assert!(found.contains(&vec![key("items"), Seg::Index(0), key("id")]));
    }

    #[test]
    fn compile_rejects_bad_paths() {
        let err = PathList::compile("ignore_json", &["$.[".to_owned()]).expect_err("invalid");
        assert!(err.to_string().contains("ignore_json"), "{err}");
    }
}
