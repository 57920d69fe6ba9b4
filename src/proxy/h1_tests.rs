//! The HTTP/1.1 exchange against a scripted upstream on a real socket: it
//! records the bytes of every request and answers with the bytes a test
//! gives, so framing on both sides is checked byte for byte.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::body::UpstreamBody;
use super::super::pool::{Http1Pool, PooledBody};

/// What the upstream does with the n-th request on the c-th connection.
enum Answer {
    /// Writes these bytes and keeps the connection open.
    Bytes(&'static [u8]),
    /// Writes these bytes and closes.
    BytesThenClose(&'static [u8]),
    /// Closes without answering.
    Close,
    /// Waits 200 ms, then writes these bytes and keeps the connection open.
    Late(&'static [u8]),
}

/// The requests an upstream received: (connection, raw bytes).
type Seen = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

/// An upstream answering request `n` of connection `c` with `script(c, n)`.
async fn upstream(
    script: impl Fn(usize, usize) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, Seen) {
    let script = Arc::new(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let (record, script) = (record.clone(), script.clone());
            let c = connection;
            connection += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    let Some(request) = read_request(&mut stream, &mut buf).await else {
                        return;
                    };
                    record.lock().unwrap().push((c, request));
                    match script(c, n) {
                        Answer::Bytes(bytes) => stream.write_all(bytes).await.unwrap(),
                        Answer::BytesThenClose(bytes) => {
                            stream.write_all(bytes).await.unwrap();
                            return;
                        }
                        Answer::Close => return,
                        Answer::Late(bytes) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            stream.write_all(bytes).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// One request off the stream: its head and a content-length or chunked body.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = request_end(buf) {
            return Some(buf.drain(..end).collect());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn request_end(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        let end = buf[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head + end + 5);
    }
    let length = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    (buf.len() >= head + length).then_some(head + length)
}

fn pool_to(addr: SocketAddr) -> Arc<Http1Pool> {
    Http1Pool::new(addr.to_string(), Duration::from_secs(2))
}

fn request(method: Method, path: &str, body: &'static [u8]) -> Request<UpstreamBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "upstream")
        .body(UpstreamBody::bytes(Bytes::from_static(body)))
        .unwrap()
}

/// Sends and reads the whole answer: status, body, trailers.
async fn exchange(
    pool: &Arc<Http1Pool>,
    request: Request<UpstreamBody>,
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    let response = pool.send(request, None).await.expect("exchange");
    let (parts, body) = response.into_parts();
    assert!(matches!(body, PooledBody::Lean(_)));
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

fn text(seen: &Seen, i: usize) -> (usize, String) {
    let seen = seen.lock().unwrap();
    (seen[i].0, String::from_utf8_lossy(&seen[i].1).into_owned())
}

#[tokio::test]
async fn a_chunked_answer_with_trailers_is_decoded_and_its_connection_reused() {
    let (addr, seen) = upstream(|_, _| {
        Answer::Bytes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\n",
        )
    })
    .await;
    let pool = pool_to(addr);
    for _ in 0..2 {
        let (parts, body, trailers) = exchange(&pool, request(Method::GET, "/c", b"")).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, "hello world");
        // Transfer-Encoding wins; the conflicting length is not passed on.
        assert!(parts.headers.get("content-length").is_none());
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }
    let (connection, head) = text(&seen, 1);
    assert_eq!(
        connection, 0,
        "the second request reused the first connection"
    );
    assert_eq!(head, "GET /c HTTP/1.1\r\nhost: upstream\r\n\r\n");
}

#[tokio::test]
async fn an_answer_without_length_is_read_to_the_close_and_not_reused() {
    let (addr, seen) =
        upstream(|_, _| Answer::BytesThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close")).await;
    let pool = pool_to(addr);
    for _ in 0..2 {
        let (_, body, _) = exchange(&pool, request(Method::GET, "/", b"")).await;
        assert_eq!(body, "until close");
    }
    assert_eq!(
        text(&seen, 1).0,
        1,
        "a close-delimited answer ends its connection"
    );
}

#[tokio::test]
async fn head_204_and_304_answers_have_no_body_and_keep_the_connection() {
    let (addr, seen) = upstream(|_, n| {
        Answer::Bytes(match n {
            0 => b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            1 => b"HTTP/1.1 204 No Content\r\n\r\n",
            _ => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        })
    })
    .await;
    let pool = pool_to(addr);
    let (parts, body, _) = exchange(&pool, request(Method::HEAD, "/", b"")).await;
    assert_eq!(parts.headers["content-length"], "1234");
    assert!(body.is_empty());
    let (parts, body, _) = exchange(&pool, request(Method::GET, "/", b"")).await;
    assert_eq!((parts.status.as_u16(), body.len()), (204, 0));
    let (parts, body, _) = exchange(&pool, request(Method::GET, "/", b"")).await;
    assert_eq!((parts.status.as_u16(), body.len()), (304, 0));
    assert!(seen.lock().unwrap().iter().all(|(c, _)| *c == 0));
}

#[tokio::test]
async fn informational_answers_are_skipped_and_a_custom_reason_is_kept() {
    let (addr, _) = upstream(|_, _| {
        Answer::Bytes(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 201 Made It\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let (parts, body, _) = exchange(&pool_to(addr), request(Method::POST, "/", b"x=1")).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(body, "ok");
    let cookies: Vec<_> = parts.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"Made It");
}

#[tokio::test]
async fn a_body_in_memory_gets_its_length_and_an_empty_post_none() {
    let (addr, seen) =
        upstream(|_, _| Answer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let pool = pool_to(addr);
    exchange(&pool, request(Method::POST, "/p?q=1", b"{\"a\":1}")).await;
    exchange(&pool, request(Method::PUT, "/e", b"")).await;
    assert_eq!(
        text(&seen, 0).1,
        "POST /p?q=1 HTTP/1.1\r\nhost: upstream\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
    );
    assert_eq!(
        text(&seen, 1).1,
        "PUT /e HTTP/1.1\r\nhost: upstream\r\n\r\n"
    );
}

#[tokio::test]
async fn a_request_given_a_transfer_encoding_is_sent_chunked() {
    let (addr, seen) =
        upstream(|_, _| Answer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let mut request = request(Method::POST, "/", b"abc");
    request
        .headers_mut()
        .insert("transfer-encoding", "chunked".parse().unwrap());
    request
        .headers_mut()
        .insert("content-length", "3".parse().unwrap());
    exchange(&pool_to(addr), request).await;
    assert_eq!(
        text(&seen, 0).1,
        "POST / HTTP/1.1\r\nhost: upstream\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn a_broken_reused_connection_is_retried_for_an_idempotent_request_only() {
    // Connection 0 answers once, then takes the next request and closes
    // without a word (a keep-alive race); connection 1 answers.
    let (addr, seen) = upstream(|c, n| match (c, n) {
        (0, 0) | (1, _) => Answer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        _ => Answer::Close,
    })
    .await;
    let pool = pool_to(addr);
    exchange(&pool, request(Method::GET, "/", b"")).await;
    let (parts, body, _) = exchange(&pool, request(Method::GET, "/again", b"")).await;
    assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"ok"[..]));
    assert_eq!(
        text(&seen, 2),
        (1, "GET /again HTTP/1.1\r\nhost: upstream\r\n\r\n".into())
    );

    // The same race on a POST: it may have been processed, so no retry.
    let (addr, seen) = upstream(|c, n| match (c, n) {
        (0, 0) => Answer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        _ => Answer::Close,
    })
    .await;
    let posts = pool_to(addr);
    exchange(&posts, request(Method::GET, "/", b"")).await;
    let error = posts
        .send(request(Method::POST, "/", b"x"), None)
        .await
        .err()
        .unwrap();
    assert!(!error.is_connect());
    assert!(
        error
            .to_string()
            .contains("closed the connection before answering"),
        "{error}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "the POST was sent once");
}

#[tokio::test]
async fn the_connection_timer_bounds_each_exchange_by_its_own_deadline() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Every answer but the first comes 200 ms late, on one connection.
    let (addr, seen) = upstream(|_, n| match n {
        0 => Answer::Bytes(OK),
        _ => Answer::Late(OK),
    })
    .await;
    let pool = pool_to(addr);
    let within = |ms| Some(tokio::time::Instant::now() + Duration::from_millis(ms));
    let answered = pool
        .send(request(Method::GET, "/0", b""), within(100))
        .await;
    let (_, body) = answered.expect("answered at once").into_parts();
    body.collect().await.expect("body");
    // The first deadline passes while the connection is idle: the timer
    // fires with nobody waiting, and the next exchange must set it anew.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let answered = pool
        .send(request(Method::GET, "/1", b""), within(2_000))
        .await;
    let (_, body) = answered
        .expect("answered within its own deadline")
        .into_parts();
    assert_eq!(&body.collect().await.expect("body").to_bytes()[..], b"ok");
    let late = pool.send(request(Method::GET, "/2", b""), within(50)).await;
    let error = late.err().expect("200 ms is past a 50 ms deadline");
    assert!(error.is_timeout() && !error.is_connect(), "{error}");
    let connections: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
    assert_eq!(
        connections,
        [0, 0, 0],
        "one connection, the late request sent once"
    );
}

/// The error an exchange ends with when the upstream answers `answer` and
/// closes: from the head, or else from reading the body.
async fn failure(answer: &'static [u8]) -> String {
    let (addr, _) = upstream(move |_, _| Answer::BytesThenClose(answer)).await;
    match pool_to(addr)
        .send(request(Method::GET, "/", b""), None)
        .await
    {
        Err(error) => error.to_string(),
        Ok(response) => match response.into_body().collect().await {
            Err(error) => error.to_string(),
            Ok(_) => String::from("no error"),
        },
    }
}

#[tokio::test]
async fn malformed_answers_and_truncated_bodies_are_errors() {
    let cases: [(&[u8], &str); 5] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "invalid content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            "invalid content-length",
        ),
        (b"NOT HTTP\r\n\r\n", "malformed upstream response"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
            "closed inside the body",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunk size",
        ),
    ];
    for (answer, expected) in cases {
        let error = failure(answer).await;
        assert!(error.contains(expected), "{error}");
    }
}

#[tokio::test]
async fn a_large_body_arrives_whole_across_reads() {
    // 200 KiB: several reads, the read size growing on the way.
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 204800\r\n\r\n".to_vec();
    answer.extend((0..204_800).map(|i| b'a' + (i % 26) as u8));
    let big: &'static [u8] = answer.leak();
    let (addr, _) = upstream(move |_, _| Answer::Bytes(big)).await;
    let pool = pool_to(addr);
    let (_, body, _) = exchange(&pool, request(Method::GET, "/", b"")).await;
    assert_eq!(body.len(), 204_800);
    assert_eq!(&body[..], &big[big.len() - 204_800..]);
}

#[test]
fn content_lengths_must_be_digits_and_agree() {
    use super::parse_length;
    assert_eq!(parse_length(b"42"), Some(42));
    assert_eq!(parse_length(b" 7 , 7"), Some(7));
    assert_eq!(parse_length(b"7, 8"), None);
    assert_eq!(parse_length(b"+7"), None);
    assert_eq!(parse_length(b""), None);
    assert_eq!(
        parse_length(b"99999999999999999999"),
        None,
        "20 digits could overflow"
    );
    assert_eq!(
        parse_length(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
}

#[test]
fn arena_copies_stay_intact_and_its_memory_is_reused_once_they_are_dropped() {
    use super::{copy_into, ARENA_CHUNK};
    let mut arena = bytes::BytesMut::new();
    let head = b"HTTP/1.1 200 OK\r\n\r\n";
    // Copies alive when the chunk runs out: the next goes to a new chunk,
    // and the earlier ones keep their bytes.
    let first = copy_into(&mut arena, head);
    let filler = vec![b'x'; ARENA_CHUNK - head.len()];
    let second = copy_into(&mut arena, &filler);
    let third = copy_into(&mut arena, b"more");
    assert_eq!(
        (&first[..], &second[..], &third[..]),
        (&head[..], &filler[..], &b"more"[..])
    );
    drop((first, second, third));

    // Copies dropped when the chunk runs out: the next reuses its memory.
    let mut arena = bytes::BytesMut::new();
    let first = copy_into(&mut arena, head);
    let start = first.as_ptr();
    drop(first);
    drop(copy_into(&mut arena, &filler));
    let again = copy_into(&mut arena, b"reused");
    assert_eq!(&again[..], b"reused");
    assert_eq!(again.as_ptr(), start, "the chunk was reclaimed");

    // A piece larger than a chunk gets memory of its own.
    let large = vec![b'z'; ARENA_CHUNK + 1];
    assert_eq!(&copy_into(&mut arena, &large)[..], &large[..]);
    assert!(arena.capacity() <= ARENA_CHUNK);
}

#[tokio::test]
async fn a_connection_keeps_the_memory_of_a_request_head_unless_it_is_large() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let mut conn = super::Conn::new(stream.await.unwrap());
    let mut usual = Vec::with_capacity(512);
    conn.keep_head(&mut usual);
    assert_eq!(conn.spare_head.capacity(), 512);
    let mut large = Vec::with_capacity(super::MAX_SPARE_HEAD + 1);
    conn.keep_head(&mut large);
    assert_eq!(
        conn.spare_head.capacity(),
        512,
        "the large one was not kept"
    );
    assert_eq!(large.capacity(), super::MAX_SPARE_HEAD + 1);
}

/// Our sockets to `port` in CLOSE_WAIT (the peer closed, we did not yet),
/// from the kernel's table of IPv4 TCP sockets.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16) == Ok(port) && fields[3] == "08"
        })
        .count()
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_closed_without_new_traffic() {
    // Connection 0 answers and closes; connection 1 answers 200 ms later
    // and stays open.
    let (addr, _) = upstream(|c, _| {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if c == 0 {
            Answer::BytesThenClose(answer)
        } else {
            Answer::Late(answer)
        }
    })
    .await;
    let pool = pool_to(addr);
    let (first, second) = tokio::join!(
        exchange(&pool, request(Method::GET, "/", b"")),
        exchange(&pool, request(Method::GET, "/", b""))
    );
    assert_eq!((first.1.len(), second.1.len()), (2, 2));
    // Both went back to the pool. No request follows: the sweeper closes
    // connection 0 on its own, within a second of the upstream's close.
    let mut waited = 0;
    while (pool.idle_count(), close_wait_to(addr.port())) != (1, 0) {
        assert!(
            waited < 100,
            "still {} idle, {} in CLOSE_WAIT after 10 s",
            pool.idle_count(),
            close_wait_to(addr.port())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    // The one left is the live connection, and it is reused.
    let (_, again, _) = exchange(&pool, request(Method::GET, "/", b"")).await;
    assert_eq!(again.len(), 2);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_90_seconds_and_each_reuse_restarts_its_age() {
    let (addr, seen) =
        upstream(|_, _| Answer::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let pool = pool_to(addr);
    exchange(&pool, request(Method::GET, "/", b"")).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.idle_count(), 1, "60 s idle is within the limit");
    exchange(&pool, request(Method::GET, "/", b"")).await;
    tokio::time::sleep(Duration::from_secs(85)).await;
    assert_eq!(pool.idle_count(), 1, "85 s since its reuse");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(pool.idle_count(), 0, "95 s since its reuse");
    let connections: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
    assert_eq!(
        connections,
        [0, 0],
        "the second request reused the connection"
    );
}
