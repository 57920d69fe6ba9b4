//! Property tests for the JSON walker: a document always matches itself
//! whatever the order of its keys, and any single changed leaf is found,
//! alone, at its path.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{compare, Captured, CapturedBody, Change, DiffKind, Rules};
use crate::config::CompareConfig;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-e]", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON text with every object's keys written in reverse order.
fn reversed(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), reversed(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(reversed).collect::<Vec<_>>().join(",")
        ),
        leaf => leaf.to_string(),
    }
}

/// Every scalar leaf with its JSONPath.
fn leaves(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{path}.{k}"), out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{path}[{i}]"), out)),
        _ => out.push(path),
    }
}

/// The value at a `$.a[0].b` path (keys are `[a-e]`, so no quoting).
fn at_mut<'a>(value: &'a mut Value, path: &str) -> &'a mut Value {
    let mut current = value;
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            current = current.get_mut(&after[..end]).expect("path from leaves()");
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').expect("closing bracket");
            let index: usize = after[..end].parse().expect("index");
            current = current.get_mut(index).expect("path from leaves()");
            rest = &after[end + 1..];
        } else {
            unreachable!("paths come from leaves()");
        }
    }
    current
}

fn response(body: String) -> Captured {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Captured {
        status: 200,
        headers,
        trailers: None,
        body: CapturedBody::Full(Bytes::from(body)),
    }
}

fn rules() -> Rules {
    Rules::new(
        &CompareConfig {
            ignore_headers: Vec::new(),
            ignore_json: Vec::new(),
            unordered_arrays: Vec::new(),
            float_tolerance: 1e-9,
        },
        1 << 20,
    )
    .expect("empty rules compile")
}

proptest! {
    #[test]
    fn a_document_matches_itself_in_any_key_order(doc in document()) {
        let diffs = compare(&response(doc.to_string()), &response(reversed(&doc)), &rules());
        prop_assert!(diffs.is_empty(), "{diffs:?}");
    }

    #[test]
    fn a_single_changed_leaf_is_found_at_its_path(doc in document(), pick in any::<prop::sample::Index>()) {
        let mut paths = Vec::new();
        leaves(&doc, "$".to_string(), &mut paths);
        prop_assume!(!paths.is_empty());
        let path = paths[pick.index(paths.len())].clone();
        let mut changed = doc.clone();
        *at_mut(&mut changed, &path) = Value::String("changed!".into());
        let diffs = compare(&response(doc.to_string()), &response(changed.to_string()), &rules());
        prop_assert_eq!(diffs.len(), 1, "{:?}", diffs);
        prop_assert_eq!(diffs[0].kind, DiffKind::Body);
        prop_assert_eq!(&diffs[0].path, &path);
        prop_assert_eq!(diffs[0].change, Change::Changed);
        prop_assert_eq!(&diffs[0].candidate, &Value::String("changed!".into()));
    }
}
