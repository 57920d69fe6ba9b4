//! Table tests for the structural JSON diff, one per SPEC §4 rule.

use serde_json::{json, Value};

use super::*;
use crate::compare::Change;

/// Diffs `l` and `c` with the given ignore and unordered paths.
fn run_with(l: Value, c: Value, ignore: &[&str], unordered: &[&str], tol: f64) -> Vec<Difference> {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let ignore = PathList::compile("ignore_json", &owned(ignore)).expect("valid test paths");
    let unordered =
        PathList::compile("unordered_arrays", &owned(unordered)).expect("valid test paths");
    diff(
        &l,
        &c,
        &JsonRules {
            ignore: &ignore,
            unordered: &unordered,
            float_tolerance: tol,
        },
    )
}

fn run(l: Value, c: Value) -> Vec<Difference> {
    run_with(l, c, &[], &[], 1e-9)
}

/// `(path, change, legacy, candidate)` of each difference, for compact asserts.
fn summary(diffs: &[Difference]) -> Vec<(String, Change, Value, Value)> {
    diffs
        .iter()
        .map(|d| {
            (
                d.path.clone(),
                d.change,
                d.legacy.clone(),
                d.candidate.clone(),
            )
        })
        .collect()
}

fn one(path: &str, change: Change, l: Value, c: Value) -> Vec<(String, Change, Value, Value)> {
    vec![(path.to_owned(), change, l, c)]
}

#[test]
fn key_order_never_matters() {
    let l: Value = serde_json::from_str(r#"{"a":1,"b":{"x":1,"y":2}}"#).expect("json");
    let c: Value = serde_json::from_str(r#"{"b":{"y":2,"x":1},"a":1}"#).expect("json");
    assert!(run(l, c).is_empty());
}

#[test]
fn numbers_compare_numerically() {
    assert!(run(json!({"n": 1}), json!({"n": 1.0})).is_empty());
    assert!(run(json!(-0.0), json!(0)).is_empty());
    let d = run(json!({"n": 1}), json!({"n": 2}));
    assert_eq!(summary(&d), one("$.n", Change::Changed, json!(1), json!(2)));
}

#[test]
fn float_tolerance_is_relative_with_a_floor_of_one() {
    let tol = 1e-6;
    let cases = [
        // Near zero, the floor of 1 makes the tolerance absolute.
        (0.0, 0.000_000_9, true),
        (0.0, 0.000_002, false),
        // Large values: relative to the larger magnitude.
        (1_000_000.0, 1_000_000.9, true),
        (1_000_000.0, 1_000_002.0, false),
        (-5.0, -5.000_004, true),
    ];
    for (a, b, equal) in cases {
        let d = run_with(json!(a), json!(b), &[], &[], tol);
        assert_eq!(d.is_empty(), equal, "{a} vs {b}");
    }
    // Zero tolerance: only exact equality, even for big integers.
    assert!(run_with(json!(1.5), json!(1.5), &[], &[], 0.0).is_empty());
    assert_eq!(
        run_with(
            json!(9_007_199_254_740_993_u64),
            json!(9_007_199_254_740_992_u64),
            &[],
            &[],
            0.0
        )
        .len(),
        1
    );
}

#[test]
fn null_and_absent_differ() {
    let d = run(json!({"a": null}), json!({}));
    assert_eq!(
        summary(&d),
        one("$.a", Change::MissingInCandidate, Value::Null, Value::Null)
    );
    let d = run(json!({}), json!({"a": null}));
    assert_eq!(
        summary(&d),
        one("$.a", Change::ExtraInCandidate, Value::Null, Value::Null)
    );
    let d = run(json!({"a": 1}), json!({"b": 1}));
    assert_eq!(
        summary(&d),
        vec![
            (
                "$.a".to_owned(),
                Change::MissingInCandidate,
                json!(1),
                Value::Null
            ),
            (
                "$.b".to_owned(),
                Change::ExtraInCandidate,
                Value::Null,
                json!(1)
            ),
        ]
    );
}

#[test]
fn number_and_string_differ() {
    let d = run(json!({"id": 10}), json!({"id": "10"}));
    assert_eq!(
        summary(&d),
        one("$.id", Change::Changed, json!(10), json!("10"))
    );
    let d = run(json!({"ok": true}), json!({"ok": "true"}));
    assert_eq!(d.len(), 1);
}

#[test]
fn type_changes_report_the_whole_values() {
    let d = run(json!({"a": [1]}), json!({"a": {"0": 1}}));
    assert_eq!(
        summary(&d),
        one("$.a", Change::Changed, json!([1]), json!({"0": 1}))
    );
}

#[test]
fn ordered_arrays_compare_index_by_index() {
    let d = run(json!({"items": [1, 2, 3]}), json!({"items": [1, 3, 2]}));
    assert_eq!(
        summary(&d),
        vec![
            ("$.items[1]".to_owned(), Change::Changed, json!(2), json!(3)),
            ("$.items[2]".to_owned(), Change::Changed, json!(3), json!(2)),
        ]
    );
    let d = run(json!([1, 2, 3]), json!([1]));
    assert_eq!(
        summary(&d),
        vec![
            (
                "$[1]".to_owned(),
                Change::MissingInCandidate,
                json!(2),
                Value::Null
            ),
            (
                "$[2]".to_owned(),
                Change::MissingInCandidate,
                json!(3),
                Value::Null
            ),
        ]
    );
    let d = run(json!([1]), json!([1, {"x": 1}]));
    assert_eq!(
        summary(&d),
        one(
            "$[1]",
            Change::ExtraInCandidate,
            Value::Null,
            json!({"x": 1})
        )
    );
}

#[test]
fn nested_paths_are_concrete_and_quoted_when_needed() {
    let d = run(
        json!({"items": [{"price": 1}, {"price": 2, "a b": 1}]}),
        json!({"items": [{"price": 1}, {"price": 3, "a b": 2}]}),
    );
    let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["$.items[1]['a b']", "$.items[1].price"]);
}

#[test]
fn unordered_arrays_compare_as_multisets() {
    let unordered = ["$.items"];
    let l = json!({"items": [{"id": 1}, {"id": 2}, {"id": 3}]});
    let c = json!({"items": [{"id": 3}, {"id": 1}, {"id": 2}]});
    assert!(run_with(l.clone(), c.clone(), &[], &unordered, 0.0).is_empty());
    // The same arrays are different when order matters.
    assert_eq!(run(l, c).len(), 3);

    // Duplicates count: [1, 1, 2] is not [1, 2, 2].
    let d = run_with(
        json!({"items": [1, 1, 2]}),
        json!({"items": [2, 1, 2]}),
        &[],
        &unordered,
        0.0,
    );
    assert_eq!(
        summary(&d),
        vec![
            (
                "$.items[1]".to_owned(),
                Change::MissingInCandidate,
                json!(1),
                Value::Null
            ),
            (
                "$.items[2]".to_owned(),
                Change::ExtraInCandidate,
                Value::Null,
                json!(2)
            ),
        ]
    );
}

#[test]
fn large_unordered_arrays_stay_fast() {
    // Identical elements pair in linear time, however shuffled.
    let l: Vec<u32> = (0..20_000).collect();
    let c: Vec<u32> = l.iter().rev().copied().collect();
    assert!(run_with(
        json!({"items": l}),
        json!({"items": c}),
        &[],
        &["$.items"],
        0.0
    )
    .is_empty());
    // Past the probe budget, leftovers are reported without matching.
    let l: Vec<f64> = (0..1_500).map(f64::from).collect();
    let c: Vec<f64> = l.iter().map(|x| x + 0.5).collect();
    let d = run_with(
        json!({"items": l}),
        json!({"items": c}),
        &[],
        &["$.items"],
        0.0,
    );
    assert_eq!(d.len(), 3_000);
}

#[test]
fn unordered_arrays_report_leftovers_at_their_own_index() {
    let l = json!({"items": [{"id": 1}, {"id": 2}]});
    let c = json!({"items": [{"id": 9}, {"id": 2}, {"id": 1}]});
    let d = run_with(l, c, &[], &["$.items"], 0.0);
    assert_eq!(
        summary(&d),
        vec![(
            "$.items[0]".to_owned(),
            Change::ExtraInCandidate,
            Value::Null,
            json!({"id": 9})
        )]
    );
}

#[test]
fn unordered_with_wildcards_tolerance_and_ignores() {
    // Nested arrays selected with a wildcard.
    let l = json!({"orders": [{"tags": ["a", "b"]}, {"tags": ["c", "d"]}]});
    let c = json!({"orders": [{"tags": ["b", "a"]}, {"tags": ["d", "c"]}]});
    assert!(run_with(l, c, &[], &["$.orders[*].tags"], 0.0).is_empty());
    // Elements match under the tolerance and with ignored fields.
    let l = json!({"items": [{"id": 1, "ts": 5, "v": 1.0}, {"id": 2, "ts": 6, "v": 2.0}]});
    let c =
        json!({"items": [{"id": 2, "ts": 7, "v": 2.000_000_000_1}, {"id": 1, "ts": 8, "v": 1.0}]});
    assert!(run_with(l.clone(), c.clone(), &["$..ts"], &["$.items"], 1e-9).is_empty());
    // Without the ignore, nothing matches.
    assert_eq!(run_with(l, c, &[], &["$.items"], 1e-9).len(), 4);
}

#[test]
fn ignore_json_skips_selected_locations() {
    let l = json!({"meta": {"request_id": "a", "v": 1}, "items": [{"created_at": 1, "p": 1}]});
    let c = json!({"meta": {"request_id": "b", "v": 1}, "items": [{"created_at": 2, "p": 2}]});
    let d = run_with(l, c, &["$.meta.request_id", "$..created_at"], &[], 0.0);
    assert_eq!(
        summary(&d),
        one("$.items[0].p", Change::Changed, json!(1), json!(2))
    );
}

#[test]
fn ignore_json_applies_in_either_document() {
    // Only in legacy, only in candidate: neither is a difference.
    let d = run_with(json!({"trace": 1}), json!({}), &["$..trace"], &[], 0.0);
    assert!(d.is_empty());
    let d = run_with(
        json!({}),
        json!({"x": {"trace": 1}}),
        &["$..trace"],
        &[],
        0.0,
    );
    // `$.x` itself is extra; the walker reports it whole (it is not ignored).
    assert_eq!(d.len(), 1);
    let d = run_with(
        json!({"x": {}}),
        json!({"x": {"trace": 1}}),
        &["$..trace"],
        &[],
        0.0,
    );
    assert!(d.is_empty());
}

#[test]
fn ignore_json_with_array_wildcards() {
    let l = json!({"items": [{"etag": "a", "n": 1}, {"etag": "b", "n": 2}], "etag": "x"});
    let c = json!({"items": [{"etag": "c", "n": 1}, {"etag": "d", "n": 2}], "etag": "y"});
    let d = run_with(l.clone(), c.clone(), &["$.items[*].etag"], &[], 0.0);
    assert_eq!(
        summary(&d),
        one("$.etag", Change::Changed, json!("x"), json!("y"))
    );
    // Whole subtrees and the root.
    assert!(run_with(l.clone(), c.clone(), &["$.items", "$.etag"], &[], 0.0).is_empty());
    assert!(run_with(l, c, &["$"], &[], 0.0).is_empty());
}

#[test]
fn ignore_json_on_array_elements_in_either_document() {
    // Extra trailing element selected in the candidate only.
    let d = run_with(
        json!({"a": [1]}),
        json!({"a": [1, 2]}),
        &["$.a[1]"],
        &[],
        0.0,
    );
    assert!(d.is_empty());
}

#[test]
fn scalars_at_the_root() {
    assert!(run(json!("x"), json!("x")).is_empty());
    assert_eq!(
        summary(&run(json!(true), json!(false))),
        one("$", Change::Changed, json!(true), json!(false))
    );
}
