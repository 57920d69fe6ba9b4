//! Upstream keep-alive: connections are reused, and a connection the
//! upstream closed, or whose answer the client abandoned, is never reused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backend::{full, Backend};
use crate::support::{client, read_request_head, upstreams, Proxy};

const ROUTE: &str = "\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n";

/// A proxy whose one route sends everything to `legacy` (with a candidate
/// that is never asked, kept alive as long as the proxy).
async fn proxy_to(legacy: SocketAddr) -> (Proxy, Backend) {
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!("{}{ROUTE}", upstreams(legacy, candidate.addr))).await;
    (proxy, candidate)
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let big = "b".repeat(16 * 1024);
    let body = big.clone();
    let legacy = Backend::start(move |req| {
        let body = body.clone();
        async move {
            let text = if req.uri().path() == "/big" {
                body
            } else {
                "small".to_string()
            };
            Response::new(full(text))
        }
    })
    .await;
    let (proxy, _candidate) = proxy_to(legacy.addr).await;
    let http = client();
    for i in 0..40 {
        let path = if i % 2 == 0 { "/big" } else { "/small" };
        let response = http.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert_eq!(text.len(), if i % 2 == 0 { big.len() } else { 5 }, "{path}");
    }
    assert_eq!(legacy.count(), 40);
    assert_eq!(
        legacy.connections(),
        1,
        "40 sequential requests should reuse one kept-alive connection"
    );
    proxy.stop().await;
}

/// An origin that answers one request per connection and then closes it,
/// without announcing `Connection: close`. Counts its connections.
async fn one_shot_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !read_request_head(&mut stream).await {
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_reused() {
    let (origin, accepted) = one_shot_origin().await;
    let (proxy, _candidate) = proxy_to(origin).await;
    let http = client();
    for _ in 0..10 {
        let response = http.get(proxy.url("/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
        // Give the closing FIN time to reach the proxy before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    proxy.stop().await;
}

#[tokio::test]
async fn an_answer_the_client_abandoned_does_not_poison_the_pool() {
    // `/stream` sends one chunk and then stalls; `/` answers at once.
    let legacy = Backend::start(|req| async move {
        if req.uri().path() == "/stream" {
            let chunks = futures_util::stream::unfold(0, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Some((Ok(http_body::Frame::data(Bytes::from("chunk"))), n + 1))
            });
            Response::new(StreamBody::new(chunks).boxed())
        } else {
            Response::new(full("whole"))
        }
    })
    .await;
    let (proxy, _candidate) = proxy_to(legacy.addr).await;
    let http = client();
    let mut response = http.get(proxy.url("/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.chunk().await.unwrap().unwrap(), "chunk");
    drop(response);
    for _ in 0..5 {
        let response = http.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "whole");
    }
    // The abandoned connection could not carry the later requests.
    assert!(legacy.connections() >= 2, "{}", legacy.connections());
    proxy.stop().await;
}

#[tokio::test]
async fn answers_without_a_body_give_their_connection_back() {
    let legacy = Backend::start(|req| async move {
        match req.uri().path() {
            "/empty" => Response::builder().status(204).body(full("")).unwrap(),
            _ => Response::new(full("content")),
        }
    })
    .await;
    let (proxy, _candidate) = proxy_to(legacy.addr).await;
    let http = client();
    for _ in 0..5 {
        let head = http.head(proxy.url("/doc")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.text().await.unwrap(), "");
        let empty = http.get(proxy.url("/empty")).send().await.unwrap();
        assert_eq!(empty.status(), 204);
        let full = http.get(proxy.url("/doc")).send().await.unwrap();
        assert_eq!(full.text().await.unwrap(), "content");
    }
    assert_eq!(legacy.count(), 15);
    assert_eq!(
        legacy.connections(),
        1,
        "HEAD and 204 answers must not cost a connection"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_upstream_url_path_prefixes_the_request_path() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&format!(
        "[upstreams.legacy]\nurl = \"http://{}/v2/\"\n\n[upstreams.candidate]\nurl = \"http://{}\"\n{ROUTE}",
        legacy.addr, candidate.addr
    ))
    .await;
    let response = client()
        .get(proxy.url("/orders/1?expand=items"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = legacy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/v2/orders/1?expand=items");
    assert_eq!(seen[0].headers["host"], proxy.addr.to_string());
    proxy.stop().await;
}

#[tokio::test]
async fn expect_continue_uploads_and_streamed_answers_pass_through() {
    // Echoes the request body, streamed back in two chunks (chunked framing).
    let legacy = Backend::start(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let half = body.len() / 2;
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(http_body::Frame::data(body.slice(..half))),
            Ok(http_body::Frame::data(body.slice(half..))),
        ]);
        Response::new(StreamBody::new(chunks).map_err(Into::into).boxed())
    })
    .await;
    let (proxy, _candidate) = proxy_to(legacy.addr).await;

    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut continued = [0u8; 25];
    stream.read_exact(&mut continued).await.unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello world").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).ends_with("0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the answer arrives")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200 ok\r\n"), "{answer}");
    assert!(answer.contains("transfer-encoding: chunked"), "{answer}");
    let body: String = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(body, "hello world");
    proxy.stop().await;
}
