//! HTTP/1.x client connections, served by the own codec (`proxy::inbound`):
//! keep-alive, pipelining, HTTP/1.0, HEAD, bodies arriving in pieces, the
//! hand-over to hyper in the middle of a connection, and the drain.

use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::{full, Backend};
use crate::support::{raw_exchange, read_request_head, upstreams, Proxy};

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

/// What a [`holding_origin`] saw of one connection.
#[derive(Debug, PartialEq)]
enum OriginSaw {
    /// A whole request head arrived.
    Request,
    /// The proxy closed the connection.
    Closed,
}

/// An origin that answers nothing, or, with `first_chunk`, only the head
/// of a chunked answer and one chunk, then holds the connection until the
/// proxy closes it. Reports what it saw.
async fn holding_origin(
    first_chunk: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<OriginSaw>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("bound");
    let (saw, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let saw = saw.clone();
            tokio::spawn(async move {
                if !read_request_head(&mut stream).await {
                    return;
                }
                let _ = saw.send(OriginSaw::Request);
                let mut buf = [0u8; 4096];
                if first_chunk {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nchunk\r\n",
                        )
                        .await;
                }
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = saw.send(OriginSaw::Closed);
            });
        }
    });
    (addr, seen)
}

/// A proxy in front of `origin` with upstream timeouts far beyond the
/// tests' guards, so only the client's leaving can end an exchange.
async fn patient_proxy_to(origin: std::net::SocketAddr) -> Proxy {
    let candidate = Backend::named("candidate").await;
    Proxy::start(&format!(
        "[upstreams.legacy]\nurl = \"http://{origin}\"\ntimeout = \"600s\"\nidle_timeout = \"600s\"\n\n\
         [upstreams.candidate]\nurl = \"http://{}\"\n\n\
         [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nlegacy = \"legacy\"\ncandidate = \"candidate\"\n",
        candidate.addr
    ))
    .await
}

/// Waits (at most a minute, a hang guard) for the origin's next report.
async fn next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<OriginSaw>) -> Option<OriginSaw> {
    tokio::time::timeout(Duration::from_secs(60), seen.recv())
        .await
        .ok()
        .flatten()
}

/// A proxy in front of a [`holding_origin`], and a client connection whose
/// `GET path` has reached the origin.
async fn request_held(
    first_chunk: bool,
    path: &str,
) -> (
    Proxy,
    TcpStream,
    tokio::sync::mpsc::UnboundedReceiver<OriginSaw>,
) {
    let (origin, mut seen) = holding_origin(first_chunk).await;
    let proxy = patient_proxy_to(origin).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("proxy accepts");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    assert_eq!(next(&mut seen).await, Some(OriginSaw::Request));
    (proxy, stream, seen)
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_aborts_the_upstream_request() {
    let (proxy, stream, mut seen) = request_held(false, "/long-poll").await;
    drop(stream);
    // As nginx does: the upstream request ends with the client's.
    assert_eq!(next(&mut seen).await, Some(OriginSaw::Closed));
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_stalled_stream_aborts_the_upstream_request() {
    let (proxy, mut stream, mut seen) = request_held(true, "/events").await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("chunk") {
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
            .await
            .expect("the first chunk arrives")
            .expect("read");
        assert!(
            read > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..read]);
    }
    drop(stream);
    assert_eq!(next(&mut seen).await, Some(OriginSaw::Closed));
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_pipelined_while_the_first_waits_is_answered_after_it() {
    // `/slow` answers once the second request has reached the proxy.
    let (release, released) = tokio::sync::watch::channel(false);
    let legacy = Backend::start(move |request: http::Request<hyper::body::Incoming>| {
        let mut released = released.clone();
        async move {
            let path = request.uri().path().to_owned();
            if path == "/slow" {
                let _ = released.wait_for(|go| *go).await;
            }
            Response::new(full(format!("answer {path}")))
        }
    })
    .await;
    let proxy = proxy_to(&legacy).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("proxy accepts");
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    while legacy.count() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream
        .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // Give the second request time to arrive while the first is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send_replace(true);
    let mut answers = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answers)).await;
    let answers = String::from_utf8_lossy(&answers);
    assert_in_order(&answers, &["answer /slow", "answer /next"]);
    assert_eq!(legacy.count(), 2);
    proxy.stop().await;
}
