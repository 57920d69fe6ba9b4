//! HTTP/1.x client connections, served by the own codec (`proxy::inbound`):
//! keep-alive, pipelining, HTTP/1.0, HEAD, bodies arriving in pieces, the
//! hand-over to hyper in the middle of a connection, and the drain.

use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::{full, Backend};
use crate::support::{raw_exchange, upstreams, Proxy};

/// Answers with the method, path and body it received.
async fn echo() -> Backend {
    Backend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => format!("<body failed: {error}>").into(),
        };
        let text = format!("{method} {path} {}", String::from_utf8_lossy(&body));
        Response::builder()
            .header("content-type", "text/plain")
            .body(full(text))
            .expect("a valid response")
    })
    .await
}

async fn proxy_to(legacy: &Backend) -> Proxy {
    let candidate = Backend::named("candidate").await;
    Proxy::start(&format!(
        "{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n",
        upstreams(legacy.addr, candidate.addr)
    ))
    .await
}

/// The positions of `parts` in `text`, which must appear in this order.
fn assert_in_order(text: &str, parts: &[&str]) {
    let mut from = 0;
    for part in parts {
        let at = text[from..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} missing after byte {from} of {text:?}"));
        from += at + part.len();
    }
}

#[tokio::test]
async fn pipelined_keep_alive_http10_and_head_requests_are_answered_in_order() {
    let legacy = echo().await;
    let proxy = proxy_to(&legacy).await;

    let pipelined = raw_exchange(
        proxy.addr,
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nHEAD /three HTTP/1.1\r\nHost: x\r\n\r\nGET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        pipelined.matches("HTTP/1.1 200 OK\r\n").count(),
        4,
        "{pipelined}"
    );
    // HEAD's answer keeps the length of what GET would send, without a body.
    assert_in_order(
        &pipelined,
        &[
            "GET /one ",
            "GET /two ",
            "content-length: 12\r\n",
            "connection: close",
            "GET /four ",
        ],
    );
    assert!(!pipelined.contains("HEAD /three"), "{pipelined}");
    assert_eq!(legacy.count(), 4);

    // HTTP/1.0 closes unless asked to keep the connection, and is answered in HTTP/1.0.
    let old = raw_exchange(proxy.addr, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200 OK\r\n"), "{old}");
    assert!(old.ends_with("GET /old "), "{old}");
    let kept = raw_exchange(
        proxy.addr,
        b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(kept.matches("HTTP/1.0 200 OK\r\n").count(), 2, "{kept}");
    assert_in_order(&kept, &["connection: keep-alive", "GET /a ", "GET /b "]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_body_in_pieces_then_a_chunked_upload_share_one_connection() {
    let legacy = echo().await;
    let proxy = proxy_to(&legacy).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("proxy accepts");
    stream
        .write_all(b"POST /pieces HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"world").await.expect("write");
    // A chunked upload: from here hyper serves the connection, starting
    // with the bytes already read.
    stream
        .write_all(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let answers = String::from_utf8_lossy(&out);
    assert_eq!(
        answers.matches("HTTP/1.1 200 OK\r\n").count(),
        3,
        "{answers}"
    );
    assert_in_order(
        &answers,
        &[
            "POST /pieces helloworld",
            "POST /chunked chunk",
            "GET /after ",
        ],
    );
    assert_eq!(
        legacy.connections(),
        1,
        "one upstream connection served all three"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let legacy = echo().await;
    let proxy = proxy_to(&legacy).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("proxy accepts");
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let read = stream.read(&mut answer).await.expect("an answer");
    assert!(answer[..read].starts_with(b"HTTP/1.1 200 OK\r\n"));
    // The connection is idle, kept alive; shutting down closes it.
    proxy.stop().await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection should close at shutdown: {closed:?} {rest:?}"
    );
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_after_the_answer() {
    let dead = crate::support::backend::closed_port().await;
    let proxy = Proxy::start(&format!(
        "{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n",
        upstreams(dead, dead)
    ))
    .await;
    // Half the body: the rest never comes, and nothing reads it (the
    // upstream is down), so the connection cannot carry another request.
    let answer = raw_exchange(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    proxy.stop().await;
}
