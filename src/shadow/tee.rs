//! Copying bodies aside while they stream, for the comparison.
//!
//! The primary exchange must never wait for shadowing, so the copies are
//! taken as frames pass by: [`RequestTee`] keeps the request body (up to
//! `max_body_buffer`, else the mirror is dropped as `too_large`) and
//! [`ResponseTee`] keeps the primary's response (up to `max_body_buffer`,
//! beyond which it keeps only a running SHA-256 and length). Every kept byte
//! is charged to the process-wide [`MemoryBudget`] (`server.shadow_memory`);
//! when the budget is spent the copy is abandoned (`memory`), never waited
//! for. A tee hands its copy over through a oneshot channel when the body
//! ends; if the body is dropped early (client gone), the channel closes and
//! the mirror is abandoned.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::compare::CapturedBody;

/// All buffered shadow bodies together, every route (`server.shadow_memory`).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes currently held by shadow copies.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or returns false when that would
    /// exceed it (nothing is taken then).
    fn try_take(&self, bytes: u64) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.limit {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => used = actual,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes charged to the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    pub fn empty(budget: Arc<MemoryBudget>) -> Self {
        Reservation { budget, bytes: 0 }
    }

    /// Grows the reservation by `bytes`, or fails without taking anything.
    pub fn grow(&mut self, bytes: u64) -> bool {
        if self.budget.try_take(bytes) {
            self.bytes += bytes;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// Why a copy could not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFailure {
    /// Larger than `max_body_buffer` (request bodies only).
    TooLarge,
    /// `server.shadow_memory` is spent.
    Memory,
    /// The body failed (client or upstream reset).
    Broken,
}

/// A copy of a request body, with the memory it holds.
#[derive(Debug)]
pub struct RequestCopy {
    pub body: Bytes,
    pub reservation: Reservation,
}

/// The bytes kept so far, copied into one buffer as they pass. Keeping the
/// frames themselves would be a copy less, but a frame is often a slice of
/// a connection's read buffer (up to 64 KiB), which it would then keep
/// alive for as long as the mirror waits on its candidate.
struct Kept {
    bytes: BytesMut,
    reservation: Reservation,
}

impl Kept {
    fn new(budget: Arc<MemoryBudget>) -> Self {
        Kept {
            bytes: BytesMut::new(),
            reservation: Reservation::empty(budget),
        }
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Room for the whole body when its length is known and fits under
    /// `max`: one allocation, no growing. The room is charged to the budget
    /// at once, so an announced length cannot hold memory the budget does
    /// not see.
    fn expect(&mut self, hint: &SizeHint, max: u64) {
        if let Some(length) = hint.exact().filter(|length| *length <= max) {
            if self.reservation.grow(length) {
                self.bytes.reserve(usize::try_from(length).unwrap_or(0));
            }
        }
    }

    /// Keeps `data` if the budget allows it.
    fn keep(&mut self, data: &[u8]) -> Result<(), CopyFailure> {
        let needed = (self.bytes.len() + data.len()) as u64;
        if needed > self.reservation.bytes
            && !self.reservation.grow(needed - self.reservation.bytes)
        {
            return Err(CopyFailure::Memory);
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn into_body(self) -> (Bytes, Reservation) {
        (self.bytes.freeze(), self.reservation)
    }
}

pin_project! {
    /// A request body that streams to the primary and keeps a copy.
    pub struct RequestTee<B> {
        #[pin]
        inner: B,
        state: RequestState,
        max: u64,
    }
}

impl<B: Body> RequestTee<B> {
    pub fn new(
        inner: B,
        max: u64,
        budget: Arc<MemoryBudget>,
    ) -> (Self, oneshot::Receiver<Result<RequestCopy, CopyFailure>>) {
        let (tx, rx) = oneshot::channel();
        let mut kept = Kept::new(budget);
        kept.expect(&inner.size_hint(), max);
        let mut state = Some((kept, tx));
        if inner.is_end_stream() {
            // An empty body is never polled: hand the copy over now.
            finish_request(&mut state);
        }
        (RequestTee { inner, state, max }, rx)
    }
}

type RequestState = Option<(Kept, oneshot::Sender<Result<RequestCopy, CopyFailure>>)>;

fn fail_request(state: &mut RequestState, why: CopyFailure) {
    if let Some((_, tx)) = state.take() {
        let _ = tx.send(Err(why));
    }
}

fn finish_request(state: &mut RequestState) {
    if let Some((kept, tx)) = state.take() {
        let (body, reservation) = kept.into_body();
        let _ = tx.send(Ok(RequestCopy { body, reservation }));
    }
}

impl<B> Body for RequestTee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some((kept, _)) = this.state.as_mut() {
                        if kept.len() + data.len() as u64 > *this.max {
                            fail_request(this.state, CopyFailure::TooLarge);
                        } else if let Err(why) = kept.keep(data) {
                            fail_request(this.state, why);
                        }
                    }
                }
                // hyper stops polling a body of known length once it ends.
                if this.inner.is_end_stream() {
                    finish_request(this.state);
                }
            }
            Poll::Ready(Some(Err(_))) => fail_request(this.state, CopyFailure::Broken),
            Poll::Ready(None) => finish_request(this.state),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the comparison gets of the primary's response body.
#[derive(Debug)]
pub struct ResponseCopy {
    pub body: CapturedBody,
    pub trailers: Option<HeaderMap>,
    pub reservation: Reservation,
}

/// Keeps bytes until `max`, then only a hash and a length.
pub struct BodyCapture {
    kept: Kept,
    hasher: Option<Sha256>,
    len: u64,
    max: u64,
    trailers: Option<HeaderMap>,
}

impl BodyCapture {
    pub fn new(max: u64, budget: Arc<MemoryBudget>) -> Self {
        BodyCapture {
            kept: Kept::new(budget),
            hasher: None,
            len: 0,
            max,
            trailers: None,
        }
    }

    /// Sizes the buffer for a body of known length in one allocation.
    pub fn expecting(mut self, hint: &SizeHint) -> Self {
        self.kept.expect(hint, self.max);
        self
    }

    /// Adds a frame; fails only when the memory budget is spent.
    pub fn push(&mut self, frame: &Frame<Bytes>) -> Result<(), CopyFailure> {
        if let Some(trailers) = frame.trailers_ref() {
            self.trailers = Some(trailers.clone());
            return Ok(());
        }
        let Some(data) = frame.data_ref() else {
            return Ok(());
        };
        let len = data.len() as u64;
        self.len += len;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
            return Ok(());
        }
        if self.len > self.max {
            // Past the buffer: hash what we kept and go on hashing.
            let mut hasher = Sha256::new();
            hasher.update(&self.kept.bytes);
            hasher.update(data);
            self.hasher = Some(hasher);
            self.kept = Kept::new(self.kept.reservation.budget.clone());
            return Ok(());
        }
        self.kept.keep(data)
    }

    pub fn finish(self) -> ResponseCopy {
        match self.hasher {
            Some(hasher) => ResponseCopy {
                body: CapturedBody::Hashed {
                    len: self.len,
                    sha256: hasher.finalize().into(),
                },
                trailers: self.trailers,
                reservation: self.kept.reservation,
            },
            None => {
                let trailers = self.trailers;
                let (body, reservation) = self.kept.into_body();
                ResponseCopy {
                    body: CapturedBody::Full(body),
                    trailers,
                    reservation,
                }
            }
        }
    }
}

pin_project! {
    /// A response body that streams to the client and keeps a copy.
    pub struct ResponseTee<B> {
        #[pin]
        inner: B,
        state: ResponseState,
    }
}

impl<B: Body> ResponseTee<B> {
    pub fn new(
        inner: B,
        capture: BodyCapture,
    ) -> (Self, oneshot::Receiver<Result<ResponseCopy, CopyFailure>>) {
        let (tx, rx) = oneshot::channel();
        let mut state = Some((capture.expecting(&inner.size_hint()), tx));
        if inner.is_end_stream() {
            finish_response(&mut state);
        }
        (ResponseTee { inner, state }, rx)
    }
}

type ResponseState = Option<(
    BodyCapture,
    oneshot::Sender<Result<ResponseCopy, CopyFailure>>,
)>;

fn finish_response(state: &mut ResponseState) {
    if let Some((capture, tx)) = state.take() {
        let _ = tx.send(Ok(capture.finish()));
    }
}

impl<B> Body for ResponseTee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some((capture, _)) = this.state.as_mut() {
                    if let Err(why) = capture.push(frame) {
                        if let Some((_, tx)) = this.state.take() {
                            let _ = tx.send(Err(why));
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    finish_response(this.state);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some((_, tx)) = this.state.take() {
                    let _ = tx.send(Err(CopyFailure::Broken));
                }
            }
            Poll::Ready(None) => finish_response(this.state),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &Bytes) -> Frame<Bytes> {
        Frame::data(bytes.clone())
    }

    /// Finishes a capture that kept the whole body, checks what it had
    /// charged and that dropping the copy gives it all back.
    fn whole_body(capture: BodyCapture, budget: &MemoryBudget, charged: u64) -> Bytes {
        let copy = capture.finish();
        assert_eq!(budget.used(), charged);
        let CapturedBody::Full(body) = &copy.body else {
            panic!("only a hash was kept")
        };
        let body = body.clone();
        drop(copy);
        assert_eq!(budget.used(), 0, "the copy's memory goes back with it");
        body
    }

    #[test]
    fn a_kept_frame_does_not_hold_the_buffer_it_was_sliced_from() {
        let budget = MemoryBudget::new(1 << 20);
        let read_buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let frame = read_buffer.slice(..16 * 1024);
        drop(read_buffer);
        let mut capture = BodyCapture::new(1 << 20, budget.clone());
        capture.push(&data(&frame)).expect("within the budget");
        assert!(
            frame.is_unique(),
            "the capture still refers to the frame's buffer"
        );
        assert_eq!(whole_body(capture, &budget, 16 * 1024), frame);
    }

    #[test]
    fn an_announced_length_is_charged_before_the_bytes_come() {
        let budget = MemoryBudget::new(1000);
        let mut capture =
            BodyCapture::new(1000, budget.clone()).expecting(&SizeHint::with_exact(800));
        assert_eq!(budget.used(), 800);
        for part in [&b"a"[..], &b"bc"[..]] {
            capture
                .push(&Frame::data(Bytes::from(part)))
                .expect("within the budget");
        }
        assert_eq!(
            budget.used(),
            800,
            "bytes within the announced length cost nothing more"
        );
        assert_eq!(&whole_body(capture, &budget, 800)[..], b"abc");
    }

    #[test]
    fn a_length_beyond_the_budget_is_not_charged_and_the_bytes_fail_as_memory() {
        let budget = MemoryBudget::new(100);
        let mut capture =
            BodyCapture::new(1000, budget.clone()).expecting(&SizeHint::with_exact(500));
        assert_eq!(budget.used(), 0);
        let chunk = Bytes::from(vec![b'y'; 60]);
        capture.push(&data(&chunk)).expect("60 bytes fit");
        assert_eq!(capture.push(&data(&chunk)), Err(CopyFailure::Memory));
    }

    #[test]
    fn past_max_only_a_hash_is_kept_and_the_memory_goes_back() {
        let budget = MemoryBudget::new(1 << 20);
        let mut capture = BodyCapture::new(100, budget.clone()).expecting(&SizeHint::new());
        let chunk = Bytes::from(vec![b'z'; 60]);
        capture.push(&data(&chunk)).expect("within the budget");
        assert_eq!(budget.used(), 60);
        capture
            .push(&data(&chunk))
            .expect("hashing needs no budget");
        assert_eq!(budget.used(), 0);
        let copy = capture.finish();
        let expected: [u8; 32] = Sha256::digest([b'z'; 120]).into();
        assert!(
            matches!(copy.body, CapturedBody::Hashed { len: 120, sha256 } if sha256 == expected)
        );
    }
}
