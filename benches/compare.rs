//! Micro-benchmark of the shadow comparison (SPEC §4): `compare::compare`
//! of two ~10 KiB JSON responses that differ in one field, with the default
//! rules, and with `unordered_arrays = ["$.items"]`.
//!
//! `cargo bench --bench compare` (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use strangler::compare::{compare, Captured, CapturedBody, Rules};
use strangler::config::CompareConfig;

/// An order list of about 10 KiB; `price_of_7` is the price of item 7.
fn document(price_of_7: f64) -> Bytes {
    let items: Vec<serde_json::Value> = (0..62)
        .map(|i| {
            serde_json::json!({
                "id": 1000 + i,
                "sku": format!("SKU-{:06}", i * 7919 % 1_000_000),
                "name": format!("Item number {i} with a reasonably long name"),
                "price": if i == 7 { price_of_7 } else { 9.99 + f64::from(i) },
                "quantity": i % 5 + 1,
                "tags": ["bench", "order", if i % 2 == 0 { "even" } else { "odd" }],
                "shipped": i % 3 == 0,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "meta": {"page": 1, "per_page": 62, "total": 62, "request_id": "r-1"},
        "customer": {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com"},
        "items": items,
    });
    let bytes = serde_json::to_vec(&doc).expect("serialises");
    assert!(
        (9_000..12_000).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
    Bytes::from(bytes)
}

fn captured(body: Bytes) -> Captured {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(body.len()));
    headers.insert(
        "date",
        HeaderValue::from_static("Wed, 25 Nov 2026 10:00:00 GMT"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    Captured {
        status: 200,
        headers,
        trailers: None,
        body: CapturedBody::Full(body),
    }
}

fn rules(unordered: &[&str]) -> Rules {
    let config = CompareConfig {
        ignore_headers: vec!["date".into(), "server".into(), "x-request-id".into()],
        ignore_json: Vec::new(),
        unordered_arrays: unordered.iter().map(|s| s.to_string()).collect(),
        float_tolerance: 1e-9,
    };
    Rules::new(&config, 1 << 20).expect("valid rules")
}

fn compare_json(c: &mut Criterion) {
    let legacy = captured(document(16.99));
    let candidate = captured(document(17.0));
    let mut group = c.benchmark_group("compare_json_10KiB");
    // Ordered, the changed price is one difference; with `$.items` unordered
    // the changed element has no partner: missing + extra (two differences).
    for (name, rules, expected) in [
        ("one_difference", rules(&[]), 1),
        ("one_difference_unordered_items", rules(&["$.items"]), 2),
    ] {
        let diffs = compare(&legacy, &candidate, &rules);
        assert_eq!(diffs.len(), expected, "{diffs:?}");
        group.bench_function(name, |b| {
            b.iter(|| compare(black_box(&legacy), black_box(&candidate), &rules))
        });
    }
    let same = captured(document(16.99));
    let rules = rules(&[]);
    assert!(compare(&legacy, &same, &rules).is_empty());
    group.bench_function("identical", |b| {
        b.iter(|| compare(black_box(&legacy), black_box(&same), &rules))
    });
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = quick();
    targets = compare_json
}
criterion_main!(benches);
