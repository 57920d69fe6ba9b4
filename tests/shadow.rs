//! Shadow traffic and comparison (SPEC §4): the client is answered by the
//! primary, the other side gets a copy, differences are counted and kept.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use serde_json::{json, Value};

use crate::support::backend::{closed_port, full, Backend};
use crate::support::{client, Proxy};

/// A JSON backend: `{"id": <path id>, "price": price, "name": "widget"}`,
/// plus a fresh `request_id` when `noisy`.
async fn json_backend(price: u32, noisy: bool) -> Backend {
    let counter = Arc::new(AtomicU64::new(0));
    Backend::start(move |req| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let id = req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("0")
                .to_string();
            let mut body = json!({ "id": id, "name": "widget", "price": price });
            if noisy {
                body["request_id"] = json!(format!("req-{n}-{}", rand_suffix()));
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(full(body.to_string()))
                .unwrap()
        }
    })
    .await
}

/// A candidate that accepts requests and never answers.
async fn stuck_backend() -> Backend {
    Backend::start(|_req| async {
        std::future::pending::<()>().await;
        Response::new(full(""))
    })
    .await
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

fn config(legacy: SocketAddr, candidate: SocketAddr, stage: &str, shadow: &str) -> String {
    format!(
        r#"
[upstreams.legacy]
url = "http://{legacy}"

[upstreams.candidate]
url = "http://{candidate}"

[[routes]]
name = "items"
path_prefix = "/items"
legacy = "legacy"
candidate = "candidate"
stage = "{stage}"

[routes.shadow]
{shadow}
"#
    )
}

/// Polls the route until `done` holds (a hang guard, not a timing assertion:
/// mirrors run on a thread of nice 10, which a busy machine starves; 60 s,
/// the longest mirror timeout these tests set).
async fn route_until(proxy: &Proxy, route: &str, done: impl Fn(&Value) -> bool) -> Value {
    let http = client();
    let url = proxy.admin_url(&format!("/api/routes/{route}"));
    for _ in 0..1200 {
        let value: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        if done(&value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let value: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    panic!("route never reached the expected state: {value:#}");
}

/// Stored mismatches of `items`, polled until at least `n` are there (the
/// store writer is asynchronous).
async fn stored_diffs(proxy: &Proxy, n: usize) -> Value {
    let url = proxy.admin_url(&format!("/api/routes/items/diffs?limit={}", n.max(20)));
    let mut diffs = Value::Null;
    for _ in 0..600 {
        diffs = client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if diffs.as_array().is_some_and(|d| d.len() >= n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    diffs
}

/// The export of `items`, polled until it has at least `lines` lines.
async fn export_lines(proxy: &Proxy, lines: usize) -> String {
    let mut export = String::new();
    for _ in 0..600 {
        export = client()
            .get(proxy.admin_url("/api/routes/items/export"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if export.lines().count() >= lines {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    export
}

#[tokio::test]
async fn shadow_answers_from_legacy_and_keeps_the_differences() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(11, false).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", "")).await;
    let http = client();
    for i in 0..5 {
        let body: Value = http
            .get(proxy.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["price"], 10, "the client is always answered by legacy");
    }
    let route = route_until(&proxy, "items", |r| r["shadow"]["compared"] == 5).await;
    assert_eq!(route["shadow"]["mismatched"], 5);
    assert_eq!(route["shadow"]["match_rate"], 0.0);
    assert_eq!(candidate.count(), 5);
    assert!(candidate
        .seen()
        .iter()
        .all(|s| s.headers["x-strangler-shadow"] == "1"));
    assert!(proxy
        .metrics()
        .await
        .contains(r#"strangler_shadow_comparisons_total{route="items",result="mismatch"} 5"#));

    // The mismatches are stored (the writer is asynchronous: poll).
    let diffs = stored_diffs(&proxy, 3).await;
    let first = &diffs[0];
    assert_eq!(first["endpoint"], "GET /items/{id}");
    assert_eq!(first["method"], "GET");
    assert_eq!(
        first["differences"],
        json!([{ "kind": "body", "path": "$.price", "change": "changed", "legacy": 10, "candidate": 11 }])
    );
    assert_eq!(first["legacy_response"]["status"], 200);
    assert!(first["request"]["path"]
        .as_str()
        .unwrap()
        .starts_with("/items/"));

    // Accepting the difference makes later comparisons match.
    let accepted = http
        .post(proxy.admin_url("/api/routes/items/accept"))
        .json(&json!({ "endpoint": "GET /items/{id}", "path": "$.price", "note": "price rounding fixed on purpose" }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    for i in 0..3 {
        http.get(proxy.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
    }
    let route = route_until(&proxy, "items", |r| r["shadow"]["compared"] == 8).await;
    assert_eq!(route["shadow"]["matched"], 3);
    proxy.stop().await;
}

#[tokio::test]
async fn writes_are_not_mirrored_without_allow_writes() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(10, false).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", "")).await;
    let http = client();
    let response = http
        .post(proxy.url("/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    http.get(proxy.url("/items/1")).send().await.unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["compared"] == 1).await;
    assert_eq!(candidate.count(), 1, "only the GET reached the candidate");
    assert!(proxy
        .metrics()
        .await
        .contains(r#"strangler_shadow_dropped_total{route="items",reason="unsafe_method"} 1"#));
    proxy.stop().await;
}

#[tokio::test]
async fn writes_are_mirrored_with_allow_writes_and_their_bodies() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(10, false).await;
    let shadow = "methods = [\"GET\", \"POST\"]\nallow_writes = true";
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", shadow)).await;
    client()
        .post(proxy.url("/items/1"))
        .body("{\"qty\": 2}")
        .send()
        .await
        .unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["compared"] == 1).await;
    assert_eq!(candidate.seen()[0].method, http::Method::POST);
    proxy.stop().await;
}

#[tokio::test]
async fn a_candidate_that_never_answers_is_never_felt_and_never_looks_good() {
    let legacy = json_backend(10, false).await;
    let stuck = stuck_backend().await;
    let proxy = Proxy::start(&config(
        legacy.addr,
        stuck.addr,
        "shadow",
        "timeout = \"300ms\"",
    ))
    .await;
    let http = client();
    for i in 0..3 {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            http.get(proxy.url(&format!("/items/{i}"))).send(),
        )
        .await
        .expect("the client is answered whatever the candidate does")
        .unwrap();
        assert_eq!(response.status(), 200);
    }
    let route = route_until(&proxy, "items", |r| r["shadow"]["dropped"] == 3).await;
    assert_eq!(route["shadow"]["compared"], 0);
    assert_eq!(route["shadow"]["match_rate"], 0.0);
    let text = proxy.metrics().await;
    assert!(
        text.contains(r#"strangler_shadow_dropped_total{route="items",reason="timeout"} 3"#),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_candidate_counts_as_a_comparison_error() {
    let legacy = json_backend(10, false).await;
    let dead = closed_port().await;
    let proxy = Proxy::start(&config(legacy.addr, dead, "shadow", "")).await;
    client().get(proxy.url("/items/1")).send().await.unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["match_rate"] == 0.0).await;
    assert!(proxy
        .metrics()
        .await
        .contains(r#"strangler_shadow_comparisons_total{route="items",result="error"} 1"#));
    proxy.stop().await;
}

#[tokio::test]
async fn max_in_flight_drops_instead_of_queueing() {
    let legacy = json_backend(10, false).await;
    let stuck = stuck_backend().await;
    let proxy = Proxy::start(&config(
        legacy.addr,
        stuck.addr,
        "shadow",
        "max_in_flight = 1\ntimeout = \"5s\"",
    ))
    .await;
    let http = client();
    for i in 0..4 {
        assert_eq!(
            http.get(proxy.url(&format!("/items/{i}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let text = proxy.metrics().await;
    assert!(
        text.contains(r#"strangler_shadow_dropped_total{route="items",reason="overload"} 3"#),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn noise_is_learned_from_a_secondary_legacy() {
    let legacy = json_backend(10, true).await;
    let secondary = json_backend(10, true).await;
    let candidate = json_backend(10, true).await;
    let toml = format!(
        "{}\n[upstreams.legacy2]\nurl = \"http://{}\"\n",
        config(
            legacy.addr,
            candidate.addr,
            "shadow",
            "secondary = \"legacy2\""
        ),
        secondary.addr
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    for i in 0..30 {
        http.get(proxy.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
        // One at a time, so the legacy pairs are counted before the next comparison.
        route_until(&proxy, "items", |r| r["shadow"]["compared"] == i + 1).await;
    }
    let route = route_until(&proxy, "items", |r| r["shadow"]["compared"] == 30).await;
    let noise = route["shadow"]["noise"].as_u64().unwrap();
    assert!(
        noise >= 10,
        "after 20 legacy pairs the request_id difference is noise: {route:#}"
    );
    assert_eq!(secondary.count(), 30);
    let export = http
        .get(proxy.admin_url("/api/routes/items/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rules: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    let learned = &rules["noise"][0];
    assert_eq!(learned["path"], "$.request_id");
    assert_eq!(learned["endpoint"], "GET /items/{id}");
    assert!(learned["samples"].as_u64().unwrap() >= 20);
    proxy.stop().await;
}

#[tokio::test]
async fn noise_sample_sends_legacy_a_second_copy_without_a_secondary() {
    let legacy = json_backend(10, true).await;
    let candidate = json_backend(10, true).await;
    let proxy = Proxy::start(&config(
        legacy.addr,
        candidate.addr,
        "shadow",
        "noise_sample = 1.0",
    ))
    .await;
    let http = client();
    for i in 0..25 {
        http.get(proxy.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
        route_until(&proxy, "items", |r| r["shadow"]["compared"] == i + 1).await;
    }
    assert_eq!(legacy.count(), 50, "each request reached legacy twice");
    let route = route_until(&proxy, "items", |r| r["shadow"]["compared"] == 25).await;
    assert!(route["shadow"]["noise"].as_u64().unwrap() >= 4, "{route:#}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_candidate_stage_mirrors_safe_requests_to_legacy() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(10, false).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "candidate", "")).await;
    let http = client();
    let body: Value = http
        .get(proxy.url("/items/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["price"], 10);
    http.post(proxy.url("/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["matched"] == 1).await;
    assert_eq!(
        legacy.count(),
        1,
        "the GET was mirrored to legacy, the POST never"
    );
    assert_eq!(candidate.count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn bodies_over_the_buffer_are_compared_by_hash() {
    let big = |fill: u8| async move {
        Backend::start(move |_req| async move { Response::new(full(vec![fill; 10_000])) }).await
    };
    let legacy = big(b'a').await;
    let same = big(b'a').await;
    let other = big(b'b').await;
    let toml = |candidate: SocketAddr| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_buffer = \"1KiB\"\n{}",
            config(legacy.addr, candidate, "shadow", "")
        )
    };
    let proxy = Proxy::start(&toml(same.addr)).await;
    let body = client()
        .get(proxy.url("/items/1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 10_000, "the client gets the whole body");
    route_until(&proxy, "items", |r| r["shadow"]["matched"] == 1).await;
    proxy.stop().await;

    let proxy = Proxy::start(&toml(other.addr)).await;
    client()
        .get(proxy.url("/items/1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["mismatched"] == 1).await;
    let diffs = stored_diffs(&proxy, 1).await;
    let body_diff = diffs[0]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "body")
        .unwrap()
        .clone();
    assert_eq!(body_diff["path"], "$");
    let legacy_value = body_diff["legacy"].as_str().unwrap();
    assert!(
        legacy_value.starts_with("sha256:") && legacy_value.ends_with("(10000 bytes)"),
        "{legacy_value}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn stored_exchanges_are_redacted() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(11, false).await;
    let toml = format!(
        "[store]\nurl = \"sqlite::memory:\"\nredact_headers = [\"x-api-key\"]\nredact_json = [\"$..password\"]\n{}",
        config(legacy.addr, candidate.addr, "shadow", "methods = [\"POST\"]\nallow_writes = true")
    );
    let proxy = Proxy::start(&toml).await;
    client()
        .post(proxy.url("/items/1?token=abc&page=2"))
        .header("authorization", "Bearer secret")
        .header("x-api-key", "k")
        .header("content-type", "application/json")
        .body(r#"{"user": "ann", "password": "hunter2"}"#)
        .send()
        .await
        .unwrap();
    let export = export_lines(&proxy, 2).await;
    let exchange: Value =
        serde_json::from_str(export.lines().nth(1).expect("one exchange stored")).unwrap();
    let request = &exchange["request"];
    assert_eq!(request["headers"]["authorization"], "[redacted]");
    assert_eq!(request["headers"]["x-api-key"], "[redacted]");
    assert_eq!(request["query"], "token=[redacted]&page=2");
    let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["password"], "[redacted]");
    assert_eq!(body["user"], "ann");
    for secret in ["hunter2", "Bearer secret", "token=abc"] {
        assert!(!export.contains(secret), "{secret} leaked into the export");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn the_store_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(10, false).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", "")).await;
    let db = proxy.config_path.with_file_name("strangler.db");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", db.display());
    proxy.stop().await;
}

#[tokio::test]
async fn replay_exits_3_on_differences_and_0_once_fixed() {
    let legacy = json_backend(10, false).await;
    let buggy = json_backend(11, false).await;
    let fixed = json_backend(10, false).await;
    let proxy = Proxy::start(&config(legacy.addr, buggy.addr, "shadow", "")).await;
    for i in 0..3 {
        client()
            .get(proxy.url(&format!("/items/{i}")))
            .send()
            .await
            .unwrap();
    }
    let export = export_lines(&proxy, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.jsonl");
    std::fs::write(&file, &export).unwrap();
    let run = |candidate: SocketAddr, from_file: bool| {
        let admin = format!("http://{}", proxy.admin);
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"));
            command.args([
                "replay",
                "items",
                "--candidate",
                &format!("http://{candidate}"),
            ]);
            if from_file {
                command.arg("--from").arg(&file);
            } else {
                command.args(["--admin", &admin]);
            }
            command.output().unwrap()
        })
    };
    let still_buggy = run(buggy.addr, true).await.unwrap();
    assert_eq!(
        still_buggy.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&still_buggy.stdout)
    );
    assert!(String::from_utf8_lossy(&still_buggy.stdout).contains("$.price"));
    let repaired = run(fixed.addr, true).await.unwrap();
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&repaired.stdout)
    );
    let via_admin = run(fixed.addr, false).await.unwrap();
    assert_eq!(
        via_admin.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&via_admin.stderr)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_candidate_answers_after_the_client_already_has_its_response() {
    let legacy = json_backend(10, false).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let slow = Backend::start(move |_req| {
        let gate = gate.clone();
        async move {
            // Answers only once the test says so (after the client got its answer).
            gate.notified().await;
            Response::builder()
                .header("content-type", "application/json")
                .body(full(r#"{"id": "1", "name": "widget", "price": 10}"#))
                .unwrap()
        }
    })
    .await;
    let proxy = Proxy::start(&config(
        legacy.addr,
        slow.addr,
        "shadow",
        "timeout = \"30s\"",
    ))
    .await;
    let response = client().get(proxy.url("/items/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["price"], 10);
    // The client is done and the candidate has not answered yet.
    let before = route_until(&proxy, "items", |_| true).await;
    assert_eq!(before["shadow"]["compared"], 0);
    // The mirror runs on its own thread and may reach the candidate a moment
    // after the client's answer; it cannot be compared before the release.
    for _ in 0..500 {
        if slow.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.count(), 1, "the mirror is waiting on the candidate");
    release.notify_one();
    route_until(&proxy, "items", |r| r["shadow"]["matched"] == 1).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_50_mb_response_is_compared_by_hash_while_it_streams() {
    const SIZE: usize = 50 * 1024 * 1024;
    let streaming = |fill: u8| async move {
        Backend::start(move |_req| async move {
            use http_body_util::BodyExt;
            let chunk = bytes::Bytes::from(vec![fill; 64 * 1024]);
            let frames = (0..SIZE / chunk.len())
                .map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(chunk.clone())));
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames))
                .map_err(|e| Box::new(e) as _)
                .boxed();
            Response::new(body)
        })
        .await
    };
    let legacy = streaming(b'x').await;
    let candidate = streaming(b'x').await;
    let proxy = Proxy::start(&config(
        legacy.addr,
        candidate.addr,
        "shadow",
        "timeout = \"60s\"",
    ))
    .await;
    let body = client()
        .get(proxy.url("/items/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), SIZE);
    route_until(&proxy, "items", |r| r["shadow"]["matched"] == 1).await;
    proxy.stop().await;
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn gzip_backend(body: Vec<u8>) -> Backend {
    Backend::start(move |_req| {
        let body = body.clone();
        async move {
            Response::builder()
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(full(body))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn gzip_bodies_are_compared_decoded() {
    let doc = br#"{"id": 1, "items": [1, 2, 3], "total": 6}"#;
    let legacy = gzip_backend(gzip(doc, 9)).await;
    let same = gzip_backend(gzip(doc, 1)).await;
    let different = gzip_backend(gzip(br#"{"id": 1, "items": [1, 2, 3], "total": 7}"#, 6)).await;
    let proxy = Proxy::start(&config(legacy.addr, same.addr, "shadow", "")).await;
    client().get(proxy.url("/items/1")).send().await.unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["matched"] == 1).await;
    proxy.stop().await;

    let proxy = Proxy::start(&config(legacy.addr, different.addr, "shadow", "")).await;
    client().get(proxy.url("/items/1")).send().await.unwrap();
    let route = route_until(&proxy, "items", |r| r["shadow"]["mismatched"] == 1).await;
    let fields = &route["endpoints"][0]["fields"];
    assert_eq!(fields[0]["path"], "$.total", "{route:#}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_gzip_bomb_is_not_expanded() {
    // 64 MiB of zeros compress to about 64 KiB; the buffer is 1 MiB.
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let bomb = gzip(&zeros, 9);
    let mut other = zeros;
    other[0] = 1;
    let other_bomb = gzip(&other, 9);
    drop(other);
    let legacy = gzip_backend(bomb).await;
    let candidate = gzip_backend(other_bomb).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", "")).await;
    client().get(proxy.url("/items/1")).send().await.unwrap();
    route_until(&proxy, "items", |r| r["shadow"]["mismatched"] == 1).await;
    let diffs = stored_diffs(&proxy, 1).await;
    let body = diffs[0]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "body")
        .cloned()
        .unwrap();
    let legacy_value = body["legacy"].as_str().unwrap();
    assert!(legacy_value.contains("not decoded"), "{legacy_value}");
    proxy.stop().await;
}

#[tokio::test]
async fn shadow_memory_bounds_buffered_bodies_whatever_the_candidate_does() {
    let legacy = json_backend(10, false).await;
    let stuck = stuck_backend().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshadow_memory = \"64KiB\"\n{}",
        config(
            legacy.addr,
            stuck.addr,
            "shadow",
            "methods = [\"POST\"]\nallow_writes = true\ntimeout = \"30s\""
        )
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    for i in 0..10 {
        let response = http
            .post(proxy.url(&format!("/items/{i}")))
            .body(vec![b'a'; 20 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // 64 KiB hold at most three 20 KiB bodies: the rest are dropped. The
    // mirror tasks count their drops on the shadow thread: poll (a hang
    // guard, not a timing assertion).
    let memory_drops = |text: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with(r#"strangler_shadow_dropped_total{route="items",reason="memory"}"#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut text = proxy.metrics().await;
    for _ in 0..200 {
        if memory_drops(&text) >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = proxy.metrics().await;
    }
    assert!(memory_drops(&text) >= 7, "{text}");
    proxy.stop().await;
}

#[tokio::test]
async fn endpoint_templates_are_capped_at_max_endpoints() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(10, false).await;
    let toml = config(legacy.addr, candidate.addr, "shadow", "").replace(
        "stage = \"shadow\"",
        "stage = \"shadow\"\nmax_endpoints = 20",
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    for i in 0..100u32 {
        let slug: String = format!("{i:03}")
            .bytes()
            .map(|d| char::from(b'a' + (d - b'0')))
            .collect();
        http.get(proxy.url(&format!("/items/post-{slug}/detail")))
            .send()
            .await
            .unwrap();
    }
    let route = route_until(&proxy, "items", |r| r["shadow"]["compared"] == 100).await;
    let endpoints = route["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 21, "20 templates and {{other}}");
    assert!(endpoints.iter().any(|e| e["endpoint"] == "{other}"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_secret_sent_by_the_client_is_nowhere_in_the_database_file() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(11, false).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", "")).await;
    let secret = "SECRET-TOKEN-8d1f0c";
    client()
        .get(proxy.url(&format!("/items/1?access_token={secret}")))
        .header("authorization", format!("Bearer {secret}"))
        .header("cookie", format!("session={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored_diffs(&proxy, 1).await.as_array().map(Vec::len),
        Some(1)
    );
    let db = proxy.config_path.with_file_name("strangler.db");
    // Stop the proxy but keep its folder (and database) until read.
    let mut proxy = proxy;
    proxy.app.take().unwrap().stop().await;
    let mut bytes = std::fs::read(&db).unwrap();
    for suffix in ["-wal", "-shm"] {
        if let Ok(more) = std::fs::read(format!("{}{suffix}", db.display())) {
            bytes.extend(more);
        }
    }
    assert!(bytes.len() > 4096, "the database holds the sample");
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret reached the database file"
    );
}

/// `(thread id, nice value)` of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the parenthesised name start at field 3; nice is 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let nice = after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        found.push((task.file_name().to_string_lossy().into_owned(), nice));
    }
    found
}

#[tokio::test]
async fn mirrors_run_on_a_thread_of_lower_priority() {
    let legacy = json_backend(10, false).await;
    let candidate = json_backend(10, false).await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow", "")).await;
    let response = client().get(proxy.url("/items/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    route_until(&proxy, "items", |r| r["shadow"]["compared"] == 1).await;
    let shadow = threads_named("shadow-mirror");
    assert!(!shadow.is_empty(), "no shadow thread in this process");
    for (tid, nice) in shadow {
        assert_eq!(nice, 10, "thread {tid}");
    }
    proxy.stop().await;
}
