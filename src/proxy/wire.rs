//! Writing an HTTP/1 message body after its head: delimited by length,
//! chunked, or until the connection closes. One writer for both
//! directions: request bodies sent upstream (`h1`) and answers sent to
//! clients (`inbound`).
//!
//! Small pieces are gathered behind the head and written together; a piece
//! larger than [`COPY_BELOW`] goes out in the same `writev` as what was
//! gathered, without being copied. Whatever is gathered is written before
//! waiting for the body, so a slow body never holds back what came before.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes gathered before a write.
const COALESCE: usize = 16 * 1024;
/// Body pieces larger than this are written from their own buffer.
const COPY_BELOW: usize = 4 * 1024;

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Why a body could not be written whole.
#[derive(Debug)]
pub enum WriteError<E> {
    Io(io::Error),
    /// The body itself failed.
    Body(E),
    /// The body is longer or shorter than its `Content-Length`.
    Length,
}

/// Writes `out` (the head, already encoded) and then `body`, framed as
/// `framing`. A body with a length is not polled past it. Trailers follow
/// a chunked body when `trailers` is set, and are dropped otherwise.
pub async fn write_body<W, B>(
    writer: &mut W,
    out: &mut Vec<u8>,
    mut body: Pin<&mut B>,
    framing: BodyFraming,
    trailers: bool,
) -> Result<(), WriteError<B::Error>>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
{
    let chunked = framing == BodyFraming::Chunked;
    let mut left = match framing {
        BodyFraming::Length(length) => length,
        BodyFraming::Chunked | BodyFraming::Close => u64::MAX,
    };
    while left > 0 {
        let frame = match poll_now(body.as_mut()) {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    writer.write_all(out).await.map_err(WriteError::Io)?;
                    out.clear();
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Err(error)) => return Err(WriteError::Body(error)),
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => data,
            Err(frame) => {
                if let (true, true, Ok(fields)) = (chunked, trailers, frame.into_trailers()) {
                    out.extend_from_slice(b"0\r\n");
                    write_fields(out, &fields);
                    writer.write_all(out).await.map_err(WriteError::Io)?;
                    out.clear();
                    return Ok(());
                }
                continue;
            }
        };
        if framing != BodyFraming::Close {
            left = left
                .checked_sub(data.len() as u64)
                .ok_or(WriteError::Length)?;
        }
        if chunked {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:X}\r\n", data.len());
        }
        if data.len() > COPY_BELOW {
            let mut both = out.as_slice().chain(data);
            writer
                .write_all_buf(&mut both)
                .await
                .map_err(WriteError::Io)?;
            out.clear();
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            writer.write_all(out).await.map_err(WriteError::Io)?;
            out.clear();
        }
    }
    if matches!(framing, BodyFraming::Length(_)) && left > 0 {
        return Err(WriteError::Length);
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        writer.write_all(out).await.map_err(WriteError::Io)?;
        out.clear();
    }
    Ok(())
}

/// Writes header (or trailer) lines and the empty line that ends them.
pub fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What `poll_frame` gives when ready: a frame, an error, or the end (`None`).
type Polled<B> = Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>;

/// Polls a body once, without waiting: `None` when it has nothing yet.
fn poll_now<B: Body>(body: Pin<&mut B>) -> Option<Polled<B>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.poll_frame(&mut cx) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    fn body(
        frames: Vec<Frame<Bytes>>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        StreamBody::new(futures_util::stream::iter(frames.into_iter().map(Ok)))
    }

    fn trailers() -> Frame<Bytes> {
        let mut fields = HeaderMap::new();
        fields.insert("grpc-status", http::HeaderValue::from_static("0"));
        Frame::trailers(fields)
    }

    async fn written(
        frames: Vec<Frame<Bytes>>,
        framing: BodyFraming,
        keep_trailers: bool,
    ) -> Result<String, WriteError<Infallible>> {
        let mut wire = Vec::new();
        let mut out = b"HEAD\r\n\r\n".to_vec();
        let body = std::pin::pin!(body(frames));
        write_body(&mut wire, &mut out, body, framing, keep_trailers).await?;
        assert!(out.is_empty(), "everything gathered was written");
        Ok(String::from_utf8(wire).expect("test bodies are ASCII"))
    }

    #[tokio::test]
    async fn bodies_are_framed_as_asked() {
        let pieces = || {
            vec![
                Frame::data(Bytes::from("ab")),
                Frame::data(Bytes::from("cde")),
            ]
        };
        let length = written(pieces(), BodyFraming::Length(5), true).await;
        assert_eq!(length.ok().as_deref(), Some("HEAD\r\n\r\nabcde"));
        let close = written(pieces(), BodyFraming::Close, true).await;
        assert_eq!(close.ok().as_deref(), Some("HEAD\r\n\r\nabcde"));
        let chunked = written(pieces(), BodyFraming::Chunked, true).await;
        assert_eq!(
            chunked.ok().as_deref(),
            Some("HEAD\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
        );
        // A piece too large to copy goes out whole, in order.
        let big = "x".repeat(COPY_BELOW + 1);
        let large = written(
            vec![
                Frame::data(Bytes::from("a")),
                Frame::data(Bytes::from(big.clone())),
            ],
            BodyFraming::Chunked,
            true,
        )
        .await;
        let expected = format!(
            "HEAD\r\n\r\n1\r\na\r\n{:X}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        assert_eq!(large.ok(), Some(expected));
    }

    #[tokio::test]
    async fn trailers_follow_a_chunked_body_only_when_kept() {
        let frames = || vec![Frame::data(Bytes::from("ab")), trailers()];
        let kept = written(frames(), BodyFraming::Chunked, true).await;
        assert_eq!(
            kept.ok().as_deref(),
            Some("HEAD\r\n\r\n2\r\nab\r\n0\r\ngrpc-status: 0\r\n\r\n")
        );
        let dropped = written(frames(), BodyFraming::Chunked, false).await;
        assert_eq!(
            dropped.ok().as_deref(),
            Some("HEAD\r\n\r\n2\r\nab\r\n0\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn a_body_that_differs_from_its_length_fails() {
        let longer = written(
            vec![Frame::data(Bytes::from("abcdef"))],
            BodyFraming::Length(5),
            true,
        );
        assert!(matches!(longer.await, Err(WriteError::Length)));
        let shorter = written(
            vec![Frame::data(Bytes::from("abc"))],
            BodyFraming::Length(5),
            true,
        );
        assert!(matches!(shorter.await, Err(WriteError::Length)));
        // A length of zero never polls the body.
        let zero = written(
            vec![Frame::data(Bytes::from("x"))],
            BodyFraming::Length(0),
            true,
        );
        assert_eq!(zero.await.ok().as_deref(), Some("HEAD\r\n\r\n"));
    }
}
