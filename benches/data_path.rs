//! Micro-benchmarks of the per-request work on strangler's data path:
//! route lookup over 10 / 100 / 1,000 prefix routes, the sticky split's
//! bucket hash, and header hygiene (hop-by-hop removal + `x-forwarded-*`).
//!
//! `cargo bench --bench data_path` (see BENCHMARKS.md). Kept short:
//! small sample sizes and measurement times.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request};
use strangler::proxy::headers::{remove_hop_by_hop, set_forwarded};
use strangler::routing::split::bucket;
use strangler::routing::RoutingTable;

/// A configuration with `n` prefix routes `/api/v1/svc{i}` (plus one exact
/// and one regex route, so every kind of table is populated).
fn config_with_prefix_routes(n: usize) -> strangler::config::Config {
    let mut toml = String::from(
        "[upstreams.legacy]\nurl = \"http://127.0.0.1:8001\"\n\n\
         [upstreams.candidate]\nurl = \"http://127.0.0.1:8002\"\n\n\
         [[routes]]\nname = \"health\"\npath = \"/healthz\"\n\
         legacy = \"legacy\"\ncandidate = \"candidate\"\n\n\
         [[routes]]\nname = \"orders-by-id\"\npath_regex = \"^/orders/[0-9]+$\"\n\
         legacy = \"legacy\"\ncandidate = \"candidate\"\n\n",
    );
    for i in 0..n {
        toml.push_str(&format!(
            "[[routes]]\nname = \"svc{i}\"\npath_prefix = \"/api/v1/svc{i}\"\n\
             legacy = \"legacy\"\ncandidate = \"candidate\"\nstage = \"canary\"\nweight = 10\n\n"
        ));
    }
    strangler::config::parse(Path::new("bench.toml"), &toml, &HashMap::new())
        .expect("the generated configuration is valid")
        .config
}

fn parts(uri: &str) -> Parts {
    Request::get(uri)
        .header("host", "shop.example")
        .header("user-agent", "bench/1.0")
        .body(())
        .expect("valid request")
        .into_parts()
        .0
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10usize, 100, 1000] {
        let table = RoutingTable::new(&config_with_prefix_routes(n));
        // A hit on the last route in the file, three segments below its prefix.
        let last = parts(&format!("/api/v1/svc{}/items/42/reviews", n - 1));
        assert!(table.lookup(&last).is_some());
        group.bench_with_input(BenchmarkId::new("hit_last_route", n), &last, |b, p| {
            b.iter(|| table.lookup(black_box(p)))
        });
        // A hit on the first route.
        let first = parts("/api/v1/svc0/items/42/reviews");
        group.bench_with_input(BenchmarkId::new("hit_first_route", n), &first, |b, p| {
            b.iter(|| table.lookup(black_box(p)))
        });
        // A miss: every segment boundary, then the regex route, then nothing.
        let miss = parts("/static/css/site/main.css");
        assert!(table.lookup(&miss).is_none());
        group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, p| {
            b.iter(|| table.lookup(black_box(p)))
        });
    }
    group.finish();
}

fn sticky_bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("sticky_bucket");
    group.bench_function("user_id_10B", |b| {
        b.iter(|| bucket(black_box(""), black_box(b"user-12345")))
    });
    group.bench_function("uuid_36B_salted", |b| {
        b.iter(|| {
            bucket(
                black_box("cohort-2026"),
                black_box(b"6f1c2a4e-93b5-4d8e-a1f0-2b7c9d3e5a61"),
            )
        })
    });
    group.finish();
}

/// A browser-like request head of 11 headers.
fn browser_headers(connection: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/130.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("cookie", "session=4f9a0c1b2d3e; theme=dark; uid=u-12345"),
        ("referer", "https://shop.example/cart"),
        ("x-request-id", "0d8f6c1e-5b2a-4c3d-9e8f-7a6b5c4d3e2f"),
        ("x-forwarded-for", "203.0.113.9"),
        ("connection", connection),
        ("keep-alive", "timeout=5"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn header_hygiene(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_hygiene");
    let peer = HeaderValue::from_static("192.0.2.10");
    let host = HeaderValue::from_static("shop.example");
    for (name, connection) in [
        ("connection_keep_alive", "keep-alive"),
        ("connection_names_2", "keep-alive, x-debug-trace"),
    ] {
        let template = browser_headers(connection);
        group.bench_function(name, |b| {
            b.iter_batched(
                || template.clone(),
                |mut h| {
                    remove_hop_by_hop(&mut h, false);
                    set_forwarded(&mut h, &peer, false, "http", Some(host.clone()));
                    h
                },
                BatchSize::SmallInput,
            )
        });
    }
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
    targets = route_lookup, sticky_bucket, header_hygiene
}
criterion_main!(benches);
