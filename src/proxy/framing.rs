//! Refusing ambiguous request framing (request smuggling) before hyper's
//! parser resolves it.
//!
//! A request with both `Content-Length` and `Transfer-Encoding` is the
//! classic smuggling vector. hyper handles it as RFC 9112 §6.3 allows
//! (chunked wins, `Content-Length` is dropped, the connection closes after
//! the answer), but it no longer shows the service that both were there.
//! [`FirstHead`] wraps a client connection and parses, with `httparse`, the
//! head of the connection's first request as it is read; when it carries
//! both headers the connection is flagged and the proxy answers 400 instead
//! of forwarding. After that first head it is a plain pass-through (later
//! requests on a keep-alive connection are still neutralised by hyper).
//!
//! It also hands hyper the bytes `inbound` already read from a connection
//! it passes on: its first reads return them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest first head inspected (the proxy answers 431 beyond it anyway).
const MAX_HEAD: usize = 64 * 1024;

pin_project! {
    /// A connection whose first request head is checked for ambiguous
    /// framing, and whose first reads return `read`, bytes already read
    /// from it.
    pub struct FirstHead<S> {
        #[pin]
        inner: S,
        read: Bytes,
        head: Option<Vec<u8>>,
        ambiguous: Arc<AtomicBool>,
    }
}

impl<S> FirstHead<S> {
    /// Wraps `inner`, from which `read` was read already; the returned
    /// flag is set when the first request is ambiguous.
    pub fn new(inner: S, read: Bytes) -> (Self, Arc<AtomicBool>) {
        let ambiguous = Arc::new(AtomicBool::new(false));
        (
            FirstHead {
                inner,
                read,
                head: Some(Vec::new()),
                ambiguous: ambiguous.clone(),
            },
            ambiguous,
        )
    }
}

/// What the bytes seen so far say about the first head.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    NeedMore,
    Clear,
    Ambiguous,
}

fn inspect(head: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            let has = |name: &str| {
                request
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(name))
            };
            if has("content-length") && has("transfer-encoding") {
                Verdict::Ambiguous
            } else {
                Verdict::Clear
            }
        }
        Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => Verdict::NeedMore,
        // Too large, too many headers, HTTP/2's preface or garbage: hyper
        // answers those itself.
        _ => Verdict::Clear,
    }
}

impl<S: AsyncRead> AsyncRead for FirstHead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = if this.read.is_empty() {
            this.inner.poll_read(cx, buf)
        } else {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            Poll::Ready(Ok(()))
        };
        if let (Poll::Ready(Ok(())), Some(head)) = (&polled, this.head.as_mut()) {
            head.extend_from_slice(&buf.filled()[before..]);
            match inspect(head) {
                Verdict::NeedMore if buf.filled().len() > before => {}
                Verdict::Ambiguous => {
                    this.ambiguous.store(true, Ordering::Release);
                    *this.head = None;
                }
                _ => *this.head = None,
            }
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for FirstHead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_framing_headers_are_ambiguous() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(inspect(head), Verdict::Ambiguous);
        let lower = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(inspect(lower), Verdict::Ambiguous);
    }

    #[test]
    fn ordinary_and_partial_heads() {
        assert_eq!(
            inspect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Verdict::Clear
        );
        assert_eq!(
            inspect(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            Verdict::Clear
        );
        assert_eq!(inspect(b"POST / HTTP/1.1\r\nContent-Le"), Verdict::NeedMore);
        assert_eq!(inspect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Verdict::Clear);
    }

    #[tokio::test]
    async fn bytes_already_read_come_first_and_are_inspected() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut near, far) = tokio::io::duplex(256);
        let (mut stream, ambiguous) = FirstHead::new(
            far,
            Bytes::from_static(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"),
        );
        near.write_all(b"Transfer-Encoding: chunked\r\n\r\n")
            .await
            .expect("duplex write");
        drop(near);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.expect("duplex read");
        assert_eq!(
            all,
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert!(
            ambiguous.load(Ordering::Acquire),
            "the whole head was inspected"
        );
    }
}
