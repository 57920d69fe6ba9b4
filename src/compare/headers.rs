//! Header and trailer comparison.
//!
//! Names are compared case-insensitively (`http::HeaderMap` already stores
//! them lowercase). Some headers are never compared because they describe
//! one connection or one message's framing rather than the answer:
//! hop-by-hop headers (RFC 9110 §7.6.1, including any name listed in
//! `connection`), `content-length` and `transfer-encoding`, and the route's
//! `ignore_headers`. Everything else, `content-encoding` included, is
//! compared as the ordered list of its values; users ignore what they must.

use std::collections::HashSet;

use http::HeaderMap;
use serde_json::Value;

use super::{DiffKind, Difference};

/// Headers that belong to a connection or to framing, never compared.
const NEVER_COMPARED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Compares two header (or trailer) maps; `kind` is `Header` or `Trailer`.
/// Differences come sorted by name.
///
/// Runs for every mirrored answer, and most compare equal: the values are
/// compared as bytes first, and only names that differ are allocated,
/// filtered and rendered.
pub(crate) fn diff(
    kind: DiffKind,
    legacy: &HeaderMap,
    candidate: &HeaderMap,
    ignore: &HashSet<String>,
) -> Vec<Difference> {
    // `keys` yields each name once; a name only the candidate has is new.
    let mut differing: Vec<&str> = legacy
        .keys()
        .filter(|name| {
            !legacy
                .get_all(*name)
                .iter()
                .eq(candidate.get_all(*name).iter())
        })
        .chain(candidate.keys().filter(|name| !legacy.contains_key(*name)))
        .map(http::HeaderName::as_str)
        .collect();
    if differing.is_empty() {
        return Vec::new();
    }
    differing.sort_unstable();
    let listed = connection_listed(legacy, candidate);
    let mut out = Vec::new();
    for name in differing {
        if NEVER_COMPARED.contains(&name) || ignore.contains(name) || listed.contains(name) {
            continue;
        }
        let (l, c) = (
            as_json(values(legacy, name)),
            as_json(values(candidate, name)),
        );
        let d = match (l, c) {
            (Some(l), Some(c)) => Difference::changed(kind, name.to_owned(), l, c),
            (l, c) => Difference::one_sided(kind, name.to_owned(), l, c),
        };
        out.push(d);
    }
    out
}

/// Names that either side's `connection` header marks as hop-by-hop.
fn connection_listed(a: &HeaderMap, b: &HeaderMap) -> HashSet<String> {
    a.get_all(http::header::CONNECTION)
        .iter()
        .chain(b.get_all(http::header::CONNECTION).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The values of one header in order, decoded lossily for display.
fn values(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// A header's value for a difference: `None` when absent, a string when
/// single, an array of strings when repeated.
fn as_json(mut values: Vec<String>) -> Option<Value> {
    match values.len() {
        0 => None,
        1 => values.pop().map(Value::String),
        _ => Some(Value::Array(
            values.into_iter().map(Value::String).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Change;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
                http::HeaderValue::from_str(v).expect("test header value"),
            );
        }
        m
    }

    fn run(l: &[(&str, &str)], c: &[(&str, &str)], ignore: &[&str]) -> Vec<Difference> {
        let ignore = ignore.iter().map(|s| (*s).to_owned()).collect();
        diff(DiffKind::Header, &map(l), &map(c), &ignore)
    }

    #[test]
    fn names_are_case_insensitive() {
        assert!(run(&[("X-Version", "1")], &[("x-version", "1")], &[]).is_empty());
        let d = run(&[("X-Version", "1")], &[("x-VERSION", "2")], &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "x-version");
        assert_eq!(
            (d[0].legacy.clone(), d[0].candidate.clone()),
            (json!("1"), json!("2"))
        );
    }

    #[test]
    fn missing_and_extra_headers() {
        let d = run(&[("a", "1")], &[("b", "2")], &[]);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].path.as_str(), d[0].change),
            ("a", Change::MissingInCandidate)
        );
        assert_eq!(d[0].candidate, Value::Null);
        assert_eq!(
            (d[1].path.as_str(), d[1].change),
            ("b", Change::ExtraInCandidate)
        );
        assert_eq!(d[1].legacy, Value::Null);
    }

    #[test]
    fn multi_valued_headers_are_ordered_lists() {
        let l = [("vary", "a"), ("vary", "b")];
        assert!(run(&l, &l, &[]).is_empty());
        let d = run(&l, &[("vary", "b"), ("vary", "a")], &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].legacy, json!(["a", "b"]));
        assert_eq!(d[0].candidate, json!(["b", "a"]));
        let d = run(&l, &[("vary", "a")], &[]);
        assert_eq!(d[0].candidate, json!("a"));
    }

    #[test]
    fn ignored_hop_by_hop_and_framing_headers_are_skipped() {
        let l = [
            ("date", "Mon"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
        ];
        let c = [("date", "Tue"), ("content-length", "11"), ("x-hop", "2")];
        assert!(run(&l, &c, &["date"]).is_empty());
        // Without the ignore list, `date` is a difference.
        assert_eq!(run(&l, &c, &[]).len(), 1);
    }

    #[test]
    fn differences_come_sorted_by_name() {
        let d = run(
            &[("z-last", "1"), ("a-first", "1"), ("same", "x")],
            &[("same", "x"), ("m-middle", "2"), ("a-first", "2")],
            &[],
        );
        let names: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(names, ["a-first", "m-middle", "z-last"]);
    }

    #[test]
    fn content_encoding_is_compared_like_any_header() {
        let d = run(&[("content-encoding", "gzip")], &[], &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "content-encoding");
        assert!(run(&[("content-encoding", "gzip")], &[], &["content-encoding"]).is_empty());
    }

    #[test]
    fn trailers_use_the_trailer_kind() {
        let d = diff(
            DiffKind::Trailer,
            &map(&[("grpc-status", "0")]),
            &map(&[("grpc-status", "13")]),
            &HashSet::new(),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, DiffKind::Trailer);
        assert_eq!(d[0].path, "grpc-status");
    }
}
