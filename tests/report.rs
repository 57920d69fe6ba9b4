//! The measure view, the migration report and the ROI command (SPEC §6).

use std::time::Duration;

use http::Response;
use serde_json::Value;

use crate::support::backend::{full, Backend};
use crate::support::{client, Proxy};

async fn backend(slow_path: &'static str) -> Backend {
    Backend::start(move |req| async move {
        if req.uri().path().starts_with(slow_path) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Response::new(full("same"))
    })
    .await
}

fn config(legacy: std::net::SocketAddr, candidate: std::net::SocketAddr, stage: &str) -> String {
    format!(
        r#"
[upstreams.legacy]
url = "http://{legacy}"

[upstreams.candidate]
url = "http://{candidate}"

[[routes]]
name = "orders"
path_prefix = "/orders"
legacy = "legacy"
candidate = "candidate"
stage = "{stage}"

[routes.rollout]
auto = false
"#
    )
}

#[tokio::test]
async fn endpoints_are_ranked_by_their_share_of_time() {
    let legacy = backend("/orders/export").await;
    let candidate = backend("/orders/export").await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "legacy")).await;
    let http = client();
    for i in 0..30 {
        http.get(proxy.url(&format!("/orders/{i}")))
            .send()
            .await
            .unwrap();
    }
    for _ in 0..5 {
        http.get(proxy.url("/orders/export")).send().await.unwrap();
    }
    let endpoints: Value = proxy.admin_json("/api/endpoints").await;
    let first = &endpoints[0];
    assert_eq!(first["endpoint"], "GET /orders/export", "{endpoints:#}");
    assert_eq!(first["requests"], 5);
    assert!(first["share"].as_f64().unwrap() > 0.5);
    assert_eq!(endpoints[1]["endpoint"], "GET /orders/{id}");
    assert_eq!(endpoints[1]["requests"], 30);
    assert!(endpoints[1]["legacy"]["p99_ms"].as_f64().is_some());
    proxy.stop().await;
}

#[tokio::test]
async fn the_report_says_legacy_can_go_only_when_it_serves_nothing() {
    let legacy = backend("/none").await;
    let candidate = backend("/none").await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "candidate")).await;
    let http = client();
    for i in 0..10 {
        http.get(proxy.url(&format!("/orders/{i}")))
            .send()
            .await
            .unwrap();
    }
    http.post(proxy.admin_url("/api/routes/orders/accept"))
        .json(&serde_json::json!({"endpoint": "GET /orders/{id}", "path": "$.total", "note": "rounding fixed"}))
        .send()
        .await
        .unwrap();
    let report: Value = proxy.admin_json("/api/report").await;
    assert_eq!(
        report["verdict"]["legacy_can_be_decommissioned"], true,
        "{report:#}"
    );
    assert!(report["verdict"]["caveat"]
        .as_str()
        .unwrap()
        .contains("bypass"));
    assert_eq!(report["legacy_still_serves"], serde_json::json!([]));
    assert_eq!(report["accepted"][0]["path"], "$.total");
    assert_eq!(report["accepted"][0]["note"], "rounding fixed");
    assert_eq!(report["routes"][0]["stage"], "candidate");
    assert_eq!(report["endpoints"][0]["endpoint"], "GET /orders/{id}");
    assert!(report["noise"].is_array());

    // One request that matches no route still reaches legacy: no verdict.
    http.get(proxy.url("/elsewhere")).send().await.unwrap();
    let report: Value = proxy.admin_json("/api/report").await;
    assert_eq!(report["verdict"]["legacy_can_be_decommissioned"], false);
    assert_eq!(report["legacy_still_serves"][0]["route"], "_default");
    assert_eq!(report["legacy_still_serves"][0]["requests"], 1);

    // The markdown form, through the command.
    let admin = format!("http://{}", proxy.admin);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .args(["report", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("# Migration report") && text.contains("legacy still serves"),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_route_still_in_shadow_is_listed_as_served_by_legacy() {
    let legacy = backend("/none").await;
    let candidate = backend("/none").await;
    let proxy = Proxy::start(&config(legacy.addr, candidate.addr, "shadow")).await;
    client().get(proxy.url("/orders/1")).send().await.unwrap();
    let report: Value = proxy.admin_json("/api/report").await;
    let serves = &report["legacy_still_serves"][0];
    assert_eq!(serves["route"], "orders");
    assert!(serves["reason"].as_str().unwrap().contains("shadow"));
    assert_eq!(serves["endpoints"][0], "GET /orders/{id}");
    proxy.stop().await;
}

#[test]
fn roi_prints_both_sides_and_refuses_bad_inputs() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .arg("roi")
            .args(args)
            .args(["--admin", "http://127.0.0.1:1"])
            .output()
            .unwrap()
    };
    let out = run(&[
        "--performance-gain",
        "0.5",
        "--instances",
        "10",
        "--instance-cost",
        "200",
        "--months",
        "24",
        "--incidents-avoided",
        "4",
        "--incident-cost",
        "5000",
        "--productivity-gain",
        "10000",
        "--engineer-months",
        "6",
        "--engineer-month-cost",
        "15000",
        "--velocity-loss",
        "20000",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("54000.00") && text.contains("110000.00") && text.contains("-56000.00"),
        "{text}"
    );
    assert!(
        text.contains("Break-even        not within 24 months"),
        "{text}"
    );
    assert!(text.contains("What the proxy measured"), "{text}");
    let bad = run(&["--instance-cost", "-5"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--instance-cost"));
    let zero = run(&["--months", "0"]);
    assert_eq!(zero.status.code(), Some(2));
}

#[test]
fn a_reader_that_closed_the_pipe_ends_the_command_quietly() {
    // `strangler roi … | head -0`: the reader is gone before the first line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["roi", "--admin", "http://127.0.0.1:1"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
