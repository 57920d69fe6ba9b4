//! Response bodies sent to the client.
//!
//! An upstream body is streamed frame by frame; [`IdleTimeout`] ends it with
//! an error when the upstream stays silent longer than `idle_timeout`, so a
//! stuck upstream never holds a client connection forever.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::inbound::OwnBody;
use super::pool::PooledBody;
use crate::shadow::tee::{RequestTee, ResponseTee};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// What the proxy answers with: a streamed upstream body (copied aside
    /// when it is being shadowed), bytes the proxy made, or a gRPC answer
    /// whose status is read from its trailers as it passes.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Streamed { #[pin] body: IdleTimeout<PooledBody> },
        /// Boxed: a tee is several times the size of the other bodies, and
        /// every answer's body is moved a few times on its way out.
        Teed { body: Pin<Box<ResponseTee<IdleTimeout<PooledBody>>>> },
        Full { #[pin] body: Full<Bytes> },
        GrpcStatus { body: Pin<Box<GrpcStatus>> },
    }
}

impl ProxyBody {
    /// This body, telling `verdict` once whether the `grpc-status` of its
    /// trailers failed (see [`GrpcStatus`]).
    pub fn with_grpc_verdict(self, verdict: GrpcVerdict) -> ProxyBody {
        ProxyBody::GrpcStatus {
            body: Box::pin(GrpcStatus {
                body: self,
                verdict: Some(verdict),
            }),
        }
    }
}

/// Told once whether a gRPC answer failed: `true` for a `grpc-status`
/// other than 0 in its trailers, an upstream error mid-stream, or an end
/// without a status (gRPC clients take that as an error too).
pub type GrpcVerdict = Box<dyn FnOnce(bool) + Send>;

pin_project! {
    /// A gRPC answer whose status comes in its trailers (the usual case:
    /// only trailers-only answers carry it in the head). A body dropped
    /// before its end (the client went away) gives no failure.
    pub struct GrpcStatus {
        #[pin]
        body: ProxyBody,
        verdict: Option<GrpcVerdict>,
    }

    impl PinnedDrop for GrpcStatus {
        fn drop(this: Pin<&mut Self>) {
            if let Some(verdict) = this.project().verdict.take() {
                verdict(false);
            }
        }
    }
}

impl Body for GrpcStatus {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        let failed = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get(super::headers::GRPC_STATUS)
                    .is_none_or(|s| s.as_bytes() != b"0")
            }),
            Some(Err(_)) | None => Some(true),
        };
        if let Some(failed) = failed {
            if let Some(verdict) = this.verdict.take() {
                verdict(failed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A body made by the proxy itself (errors, 101 answers).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::Full {
        body: Full::new(bytes.into()),
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Streamed { body } => body.poll_frame(cx),
            ProxyBodyProj::Teed { body } => body.as_mut().poll_frame(cx),
            ProxyBodyProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ProxyBodyProj::GrpcStatus { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Streamed { body } => body.is_end_stream(),
            ProxyBody::Teed { body } => body.is_end_stream(),
            ProxyBody::Full { body } => body.is_end_stream(),
            ProxyBody::GrpcStatus { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Streamed { body } => body.size_hint(),
            ProxyBody::Teed { body } => body.size_hint(),
            ProxyBody::Full { body } => body.size_hint(),
            ProxyBody::GrpcStatus { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// A client's request body: read by hyper (TLS, HTTP/2, and what the
    /// own codec hands over), or by the own HTTP/1 codec (see `inbound`).
    #[project = ClientBodyProj]
    pub enum ClientBody {
        Hyper { #[pin] body: Incoming },
        Own { body: OwnBody },
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ClientBodyProj::Hyper { body } => body.poll_frame(cx).map_err(Into::into),
            ClientBodyProj::Own { body } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper { body } => body.is_end_stream(),
            ClientBody::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper { body } => body.size_hint(),
            ClientBody::Own { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// A request body sent upstream: the client's stream (copied aside when
    /// it is being shadowed), or bytes we hold (a kept body that may be sent
    /// twice, or a mirrored request).
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        Streamed { #[pin] body: ClientBody },
        /// Boxed, as `ProxyBody::Teed`.
        Teed { body: Pin<Box<RequestTee<ClientBody>>> },
        /// Bytes in memory, taken when sent (`None` once sent, or if empty).
        Bytes { bytes: Option<Bytes> },
        /// A body of unknown length whose first frames were read ahead (to
        /// learn whether it fits `max_body_buffer`), then the rest of it.
        Resumed { read: VecDeque<Frame<Bytes>>, rest: Pin<Box<UpstreamBody>> },
    }
}

impl UpstreamBody {
    pub fn bytes(bytes: Bytes) -> Self {
        UpstreamBody::Bytes {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            UpstreamBodyProj::Streamed { body } => body.poll_frame(cx).map_err(Into::into),
            UpstreamBodyProj::Teed { body } => body.as_mut().poll_frame(cx).map_err(Into::into),
            UpstreamBodyProj::Bytes { bytes } => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
            UpstreamBodyProj::Resumed { read, rest } => match read.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rest.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streamed { body } => body.is_end_stream(),
            UpstreamBody::Teed { body } => body.is_end_stream(),
            UpstreamBody::Bytes { bytes } => bytes.is_none(),
            UpstreamBody::Resumed { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streamed { body } => body.size_hint(),
            UpstreamBody::Teed { body } => body.size_hint(),
            UpstreamBody::Bytes { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            // Unknown, as the client's was: it stays chunked.
            UpstreamBody::Resumed { .. } => SizeHint::default(),
        }
    }
}

/// The upstream went silent mid-body.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for more than {0:?}")]
pub struct IdleTimeoutError(Duration);

pin_project! {
    /// Fails the body when no frame arrives within `idle`. The timer is
    /// armed only while the body waits: a body whose frames are ready when
    /// asked (most small answers) never touches the timer wheel.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
        idle: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: None,
            armed: false,
            idle,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let sleep = match this.sleep {
                    Some(sleep) if *this.armed => sleep,
                    Some(sleep) => {
                        sleep.as_mut().reset(Instant::now() + *this.idle);
                        sleep
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(*this.idle))),
                };
                *this.armed = true;
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(IdleTimeoutError(*this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
