//! Upstream failures: 502, 504, the legacy retry and fallback_statuses.

use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;

use crate::support::backend::{closed_port, full, Backend};
use crate::support::{client, raw_exchange, upstreams, Proxy};

/// The route under test, in stage `candidate`. Its errors are the point of
/// these tests, so the automatic rollback (one failing evaluation, every
/// 500 ms, by default) must not move the route back to legacy mid-test.
fn candidate_route(extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\nstage = \"candidate\"\n{extra}\n[routes.rollout]\nfailure_limit = 1000000\n"
    )
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_idempotent_requests_retry_on_legacy() {
    let legacy = Backend::named("legacy").await;
    let dead = closed_port().await;
    let toml = format!("{}{}", upstreams(legacy.addr, dead), candidate_route(""));
    let proxy = Proxy::start(&toml).await;
    let http = client();

    let get = http.get(proxy.url("/orders/1")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().await.unwrap(), "legacy", "GET retried on legacy");

    let put = http
        .put(proxy.url("/orders/1"))
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "PUT is idempotent and its body fits");

    let post = http
        .post(proxy.url("/orders"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502, "POST is never retried");
    let text = post.text().await.unwrap();
    assert!(
        text.contains("orders") && text.contains("candidate"),
        "{text}"
    );

    let route: serde_json::Value = proxy.admin_json("/api/routes/orders").await;
    assert_eq!(route["candidate"]["requests"], 3);
    assert_eq!(
        route["candidate"]["errors"], 3,
        "retries count as candidate errors"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"strangler_upstream_errors_total{route="orders",upstream="candidate",kind="connect"} 3"#),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_chunked_body_that_fits_is_retried_on_legacy_and_a_larger_one_is_not() {
    // Answers with the body it received and whether it came chunked.
    let legacy = Backend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let chunked = request.headers().contains_key("transfer-encoding");
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = format!(
            "legacy chunked={chunked} {}",
            String::from_utf8_lossy(&body)
        );
        Response::new(full(text))
    })
    .await;
    let dead = closed_port().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_buffer = \"16B\"\n\n{}{}",
        upstreams(legacy.addr, dead),
        candidate_route("")
    );
    let proxy = Proxy::start(&toml).await;

    let small = raw_exchange(
        proxy.addr,
        b"PUT /orders/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n",
    )
    .await;
    assert!(small.starts_with("HTTP/1.1 200 "), "{small}");
    assert!(
        small.ends_with(r#"legacy chunked=false {"a":2}"#),
        "{small}"
    );

    // 20 bytes: more than max_body_buffer, streamed once, not retried.
    let large = raw_exchange(
        proxy.addr,
        b"PUT /orders/3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
    )
    .await;
    assert!(large.starts_with("HTTP/1.1 502 "), "{large}");
    assert_eq!(legacy.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let slow = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "{}{}",
        upstreams(slow.addr, candidate.addr).replace(
            &format!("url = \"http://{}\"\n", slow.addr),
            &format!("url = \"http://{}\"\ntimeout = \"200ms\"\n", slow.addr)
        ),
        "[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n"
    );
    let proxy = Proxy::start(&toml).await;
    let response = client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(response.text().await.unwrap().contains("legacy"));
    proxy.stop().await;
}

#[tokio::test]
async fn fallback_statuses_serve_legacy_for_unimplemented_endpoints() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::start(|req| async move {
        let status = if req.uri().path() == "/orders/new-endpoint" {
            200
        } else {
            404
        };
        Response::builder()
            .status(status)
            .body(full("candidate"))
            .unwrap()
    })
    .await;
    let toml = format!(
        "{}{}",
        upstreams(legacy.addr, candidate.addr),
        candidate_route("fallback_statuses = [404, 501]")
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    let old = http
        .get(proxy.url("/orders/old-endpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 200);
    assert_eq!(old.text().await.unwrap(), "legacy");
    let new = http
        .get(proxy.url("/orders/new-endpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(new.text().await.unwrap(), "candidate");
    // A POST is not idempotent: the candidate's 404 stands.
    let post = http
        .post(proxy.url("/orders/old-endpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"strangler_fallbacks_total{route="orders",code="404"} 1"#),
        "{metrics}"
    );
    let route: serde_json::Value = proxy.admin_json("/api/routes/orders").await;
    assert_eq!(
        route["candidate"]["errors"], 1,
        "a fallback is a candidate error"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_by_idle_timeout() {
    use http_body_util::BodyExt;
    let stalling = Backend::start(|_req| async {
        let stream = futures_util::stream::unfold(0, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Some((
                Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(
                    b"first",
                ))),
                n + 1,
            ))
        });
        let body = http_body_util::StreamBody::new(stream)
            .map_err(|e| Box::new(e) as _)
            .boxed();
        Response::new(body)
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "{}{}",
        upstreams(stalling.addr, candidate.addr).replace(
            &format!("url = \"http://{}\"\n", stalling.addr),
            &format!("url = \"http://{}\"\nidle_timeout = \"300ms\"\n", stalling.addr)
        ),
        "[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n"
    );
    let proxy = Proxy::start(&toml).await;
    let response = client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let outcome = tokio::time::timeout(Duration::from_secs(10), response.bytes()).await;
    assert!(
        matches!(outcome, Ok(Err(_))),
        "the body ends with an error, not a hang: {outcome:?}"
    );
    proxy.stop().await;
}
