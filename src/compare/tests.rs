//! Tests of the top-level API: `compare`, serialization and `classify`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;

fn config() -> CompareConfig {
    CompareConfig {
        ignore_headers: vec![
            "date".to_owned(),
            "server".to_owned(),
            "x-request-id".to_owned(),
        ],
        ignore_json: vec!["$.meta.request_id".to_owned(), "$..created_at".to_owned()],
        unordered_arrays: vec!["$.items".to_owned()],
        float_tolerance: 1e-9,
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Captured {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            http::HeaderValue::from_str(v).expect("test header value"),
        );
    }
    Captured {
        status,
        headers: map,
        trailers: None,
        body: CapturedBody::Full(Bytes::from(body.to_owned())),
    }
}

#[test]
fn identical_responses_match() {
    let rules = Rules::new(&config(), 1 << 20).expect("valid rules");
    let a = response(
        200,
        &[("content-type", "application/json"), ("date", "x")],
        r#"{"a":1}"#,
    );
    let b = response(
        200,
        &[("Content-Type", "application/json"), ("date", "y")],
        r#"{ "a" : 1.0 }"#,
    );
    assert!(compare(&a, &b, &rules).is_empty());
}

#[test]
fn differences_come_in_status_header_trailer_body_order() {
    let rules = Rules::new(&config(), 1 << 20).expect("valid rules");
    let mut l = response(
        200,
        &[("x-v", "1")],
        r#"{"items":[1,2],"meta":{"request_id":"a"},"n":1}"#,
    );
    let mut c = response(
        201,
        &[("x-v", "2")],
        r#"{"items":[2,1],"meta":{"request_id":"b"},"n":2}"#,
    );
    l.trailers = Some(http::HeaderMap::from_iter([(
        http::HeaderName::from_static("x-checksum"),
        http::HeaderValue::from_static("1"),
    )]));
    c.trailers = None;
    let d = compare(&l, &c, &rules);
    let summary: Vec<(DiffKind, &str, Change)> = d
        .iter()
        .map(|d| (d.kind, d.path.as_str(), d.change))
        .collect();
    assert_eq!(
        summary,
        [
            (DiffKind::Status, "status", Change::Changed),
            (DiffKind::Header, "x-v", Change::Changed),
            (DiffKind::Trailer, "x-checksum", Change::MissingInCandidate),
            (DiffKind::Body, "$.n", Change::Changed),
        ]
    );
    assert_eq!(
        (d[0].legacy.clone(), d[0].candidate.clone()),
        (json!(200), json!(201))
    );
}

#[test]
fn difference_serializes_in_the_spec_shape() {
    let d = Difference::one_sided(DiffKind::Body, "$.a".to_owned(), Some(json!(1)), None);
    let v = serde_json::to_value(&d).expect("serializable");
    assert_eq!(
        v,
        json!({"kind": "body", "path": "$.a", "change": "missing_in_candidate", "legacy": 1, "candidate": null})
    );
    let back: Difference = serde_json::from_value(v).expect("deserializable");
    assert_eq!(back, d);
    let extra = Difference::one_sided(DiffKind::Trailer, "t".to_owned(), None, Some(json!("x")));
    let v = serde_json::to_value(&extra).expect("serializable");
    assert_eq!(
        (v["kind"].clone(), v["change"].clone()),
        (json!("trailer"), json!("extra_in_candidate"))
    );
}

#[test]
fn rules_reject_bad_json_paths() {
    let mut c = config();
    c.unordered_arrays = vec!["$.items[".to_owned()];
    let err = Rules::new(&c, 1024).expect_err("bad path");
    assert!(err.to_string().contains("unordered_arrays"), "{err}");
}

fn body_diff(path: &str) -> Difference {
    Difference::changed(DiffKind::Body, path.to_owned(), Value::Null, Value::Null)
}

#[test]
fn classify_drops_accepted_then_noise() {
    let ep = "GET /orders/{id}";
    let mut noise = NoiseModel::new();
    for _ in 0..20 {
        noise.record_legacy_pair(ep, &[body_diff("$.ts")]);
    }
    let accepted = Accepted::new([(ep, "$.version")]).expect("valid");

    let diffs = vec![body_diff("$.version")];
    noise.record_comparison(ep, &diffs);
    assert_eq!(classify(ep, diffs, &noise, &accepted), Verdict::Match);

    let diffs = vec![body_diff("$.ts"), body_diff("$.version")];
    noise.record_comparison(ep, &diffs);
    assert_eq!(classify(ep, diffs, &noise, &accepted), Verdict::Noise);

    let diffs = vec![body_diff("$.ts"), body_diff("$.price")];
    noise.record_comparison(ep, &diffs);
    assert_eq!(
        classify(ep, diffs, &noise, &accepted),
        Verdict::Mismatch(vec![body_diff("$.price")])
    );
    assert_eq!(classify(ep, vec![], &noise, &accepted), Verdict::Match);
}
