//! Proxy hygiene (SPEC §8): hop-by-hop headers, x-forwarded-*, Host policy,
//! malformed and ambiguous requests.

use http::Response;

use crate::support::backend::{full, Backend};
use crate::support::{client, raw_exchange, upstreams, Proxy};

fn one_route(
    legacy: std::net::SocketAddr,
    candidate: std::net::SocketAddr,
    upstream_extra: &str,
) -> String {
    format!(
        "{}{upstream_extra}\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n",
        upstreams(legacy, candidate)
    )
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let legacy = Backend::start(|_req| async {
        Response::builder()
            .header("connection", "x-resp-private")
            .header("x-resp-private", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-resp-public", "1")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&one_route(legacy.addr, candidate.addr, "")).await;
    let request =
        "GET /path?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: close, x-private\r\nx-private: secret\r\n\
         Keep-Alive: timeout=5\r\nTE: gzip\r\nProxy-Connection: keep-alive\r\nx-strangler-debug: 1\r\n\
         X-Forwarded-For: 6.6.6.6\r\nx-public: yes\r\n\r\n";
    let answer = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-resp-public: 1"), "{answer}");
    for gone in ["x-resp-private", "keep-alive:", "proxy-authenticate"] {
        assert!(!lower.contains(gone), "{gone} reached the client: {answer}");
    }
    let seen = legacy.seen();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    assert_eq!(seen[0].uri.path_and_query().unwrap().as_str(), "/path?q=1");
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-connection",
        "x-strangler-debug",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(headers["x-public"], "yes");
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "an untrusted peer's x-forwarded-for is replaced"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.example");
    assert_eq!(
        headers["host"], "shop.example",
        "Host is preserved by default"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn trusted_proxies_extend_x_forwarded_for_and_host_policies_apply() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
        one_route(legacy.addr, candidate.addr, "host = \"fixed.example\"\n")
    )
    .replace(
        "[upstreams.candidate]",
        "host = \"upstream\"\n\n[upstreams.candidate]",
    );
    let proxy = Proxy::start(&toml).await;
    let http = client();
    http.get(proxy.url("/a"))
        .header("x-forwarded-for", "1.2.3.4")
        .send()
        .await
        .unwrap();
    let seen = &legacy.seen()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(
        seen["host"],
        legacy.addr.to_string(),
        "host = upstream sends the URL's authority"
    );
    http.post(proxy.admin_url("/api/routes/all/weight"))
        .json(&serde_json::json!({"weight": 100}))
        .send()
        .await
        .unwrap();
    http.get(proxy.url("/b")).send().await.unwrap();
    assert_eq!(candidate.seen()[0].headers["host"], "fixed.example");
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_ambiguous_requests_are_refused() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&one_route(legacy.addr, candidate.addr, "")).await;

    let malformed = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
    )
    .await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let oversized = raw_exchange(proxy.addr, big.as_bytes()).await;
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized}");

    assert_eq!(legacy.count(), 0, "no refused request reached the upstream");

    // Content-Length with Transfer-Encoding is refused (400), nothing is
    // forwarded, and the connection closes: nothing can be smuggled behind it.
    let smuggling = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let ambiguous = raw_exchange(proxy.addr, smuggling).await;
    assert!(ambiguous.starts_with("HTTP/1.1 400"), "{ambiguous}");
    assert_eq!(
        ambiguous.matches("HTTP/1.1").count(),
        1,
        "one answer, then close: {ambiguous}"
    );
    assert_eq!(legacy.count(), 0, "neither request reached the upstream");

    // Later on a keep-alive connection it is refused just the same: the own
    // HTTP/1 codec hands it to hyper with the check in front.
    let mut second = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    second.extend_from_slice(smuggling);
    let answers = raw_exchange(proxy.addr, &second).await;
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 2, "{answers}");
    assert!(answers.contains("HTTP/1.1 400"), "{answers}");
    assert_eq!(legacy.count(), 1, "only /first reached the upstream");

    // On a connection hyper already serves (since a chunked upload), hyper's
    // RFC 9112 §6.3 handling neutralises it: chunked wins, Content-Length
    // never reaches the upstream, and the connection closes after the answer.
    let mut third =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec();
    third.extend_from_slice(smuggling);
    let answers = raw_exchange(proxy.addr, &third).await;
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 2, "{answers}");
    let seen = legacy.seen();
    assert_eq!(seen.len(), 3, "the smuggled GET never reached the upstream");
    assert!(
        !seen[2].headers.contains_key("content-length"),
        "{:?}",
        seen[2].headers
    );
    proxy.stop().await;
}
