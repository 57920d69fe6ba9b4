//! One HTTP/1.1 exchange with an upstream, driven by the task that asked
//! for it.
//!
//! hyper's client runs each connection in a task of its own and passes the
//! request, the response head and every body frame between that task and
//! the caller through channels. For a proxy that forwards one exchange at a
//! time on a connection this hand-off was most of the per-request cost on
//! the upstream side (callgrind: ~13k of ~37k instructions per proxied
//! request). Here the request head is written, and the response head parsed
//! (httparse, as hyper does), by the caller's own task, and the response body
//! is read from the socket as the client's side asks for it, as Pingora and
//! nginx do. The framing rules are hyper's (RFC 9112 §6): see
//! [`request_framing`] and [`response_framing`].
//!
//! Only the plain case lives here: no TLS, no HTTP/2 and no protocol
//! upgrades (those use hyper; see `pool`).

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::{BoxError, UpstreamBody};
use super::headers;
use super::pool::Http1Pool;
use super::wire::{write_body, write_fields, BodyFraming, WriteError};

/// Largest response head accepted (hyper's default buffer limit is ~400 KiB;
/// 64 KiB is what we accept from clients too).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Header lines an answer's map has room for, at least (see `parse_head`).
const REUSED_MAP_CAPACITY: usize = 16;
/// The largest encoded request head whose memory a connection keeps.
const MAX_SPARE_HEAD: usize = 8 * 1024;
/// The least room the copies of answer heads are given (see `Conn::arena`).
pub(super) const ARENA_CHUNK: usize = 4 * 1024;
/// Most trailer lines after a chunked body.
const MAX_TRAILERS: usize = 32;
/// The least spare room a read is given, and the most.
pub(super) const READ_CHUNK: usize = 8 * 1024;
pub(super) const MAX_READ: usize = 64 * 1024;
/// Body pieces up to this size are copied out of the read buffer (see
/// `take_front`).
const COPY_BELOW: usize = 4 * 1024;

/// An upstream connection and the bytes read from it but not used yet.
/// Boxed for its whole life (`Conn::new`), so the exchange's future and the
/// response body move a pointer, not the connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Room given to the next read: doubles after a read that filled it,
    /// halves after one that used less than half (as hyper's reads adapt).
    read_size: usize,
    /// Where answer heads and small body pieces are copied to, out of the
    /// read buffer. Once the copies of one answer are dropped (it was
    /// written to the client), the next answer's copies reuse the memory:
    /// `BytesMut::reserve` reclaims a buffer no `Bytes` shares any more.
    arena: BytesMut,
    /// The encoded head of the last request, its memory kept for the next.
    spare_head: Vec<u8>,
    /// Bounds each exchange by its deadline. One timer for the
    /// connection's life: reset to a later deadline, it costs no trip to
    /// tokio's timer wheel (a `timeout` per exchange cost two).
    timer: Option<Pin<Box<Sleep>>>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
    #[error("upstream response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("reading the request body: {0}")]
    RequestBody(BoxError),
    #[error("the request body and its content-length differ")]
    BodyLengthMismatch,
    #[error("no answer before the upstream's timeout")]
    Timeout,
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    /// No body is sent (whatever the body holds).
    Empty,
    Length(u64),
    Chunked,
}

/// What is sent: the body in memory (can be sent again) or a stream.
pub enum Payload {
    Bytes(Bytes),
    Stream(UpstreamBody),
}

impl Payload {
    pub fn new(body: UpstreamBody) -> Payload {
        match body {
            UpstreamBody::Bytes { bytes } => Payload::Bytes(bytes.unwrap_or_default()),
            stream if stream.is_end_stream() => Payload::Bytes(Bytes::new()),
            stream => Payload::Stream(stream),
        }
    }
}

/// A request ready to be written: its encoded head and its body.
pub struct Outgoing {
    pub method: Method,
    head: Vec<u8>,
    framing: RequestFraming,
    /// The request's header map, emptied once encoded: the answer's
    /// headers go into it (no map is allocated per exchange).
    spare_headers: Option<HeaderMap>,
}

impl Outgoing {
    /// Encodes the head of `request` (origin-form target, `Host` already set)
    /// into `conn`'s spare room, framing the body as hyper's client does.
    pub fn new(request: Request<()>, payload: &Payload, conn: &mut Conn) -> Outgoing {
        let mut parts = request.into_parts().0;
        let framing = request_framing(&parts.method, &mut parts.headers, payload);
        let mut head = std::mem::take(&mut conn.spare_head);
        head.clear();
        head.reserve(64 + parts.headers.len() * 32);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        write_fields(&mut head, &parts.headers);
        parts.headers.clear();
        Outgoing {
            method: parts.method,
            head,
            framing,
            spare_headers: Some(parts.headers),
        }
    }
}

/// hyper's `Client::set_length` for HTTP/1.1: a `Transfer-Encoding` is
/// chunked (and drops `Content-Length`), a valid `Content-Length` is kept, a
/// body of known size gets one, and a body of unknown size is chunked except
/// on GET, HEAD and CONNECT, which are sent without one.
fn request_framing(method: &Method, headers: &mut HeaderMap, payload: &Payload) -> RequestFraming {
    let known = match payload {
        Payload::Bytes(bytes) if bytes.is_empty() => {
            headers.remove(TRANSFER_ENCODING);
            return RequestFraming::Empty;
        }
        Payload::Bytes(bytes) => Some(bytes.len() as u64),
        Payload::Stream(body) => body.size_hint().exact(),
    };
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
        if !is_chunked(headers) {
            headers.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        return RequestFraming::Chunked;
    }
    if let Some(length) = content_length(headers) {
        return RequestFraming::Length(length);
    }
    if let Some(length) = known {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        return RequestFraming::Length(length);
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        return RequestFraming::Empty;
    }
    headers.remove(CONTENT_LENGTH);
    headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    RequestFraming::Chunked
}

/// The single length all `Content-Length` values agree on.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = parse_length(value.as_bytes())?;
        match length {
            Some(previous) if previous != parsed => return None,
            _ => length = Some(parsed),
        }
    }
    length
}

/// Whether the last transfer coding is `chunked`.
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(|value| ends_in_chunked(value.as_bytes()))
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
fn ends_in_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

impl Conn {
    pub fn new(stream: TcpStream) -> Box<Conn> {
        Box::new(Conn {
            stream,
            buf: BytesMut::new(),
            read_size: READ_CHUNK,
            arena: BytesMut::new(),
            spare_head: Vec::new(),
            timer: None,
        })
    }

    /// Whether an idle connection can carry another request: the upstream
    /// has neither closed it nor sent anything unasked. Costs a system call
    /// only when the socket was seen readable since the last read.
    pub fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the request and reads the answer's head, by `deadline` when
    /// one is given. The body streams behind, read from this connection as
    /// it is polled; at its end the connection goes back to `pool` if it can
    /// be used again. Once an answer came, `outgoing` has lent its memory to
    /// the connection.
    pub async fn exchange(
        mut self: Box<Self>,
        outgoing: &mut Outgoing,
        payload: Payload,
        pool: &Arc<Http1Pool>,
        deadline: Option<Instant>,
    ) -> Result<Response<ResponseBody>, (ExchangeError, Progress)> {
        let mut timer = deadline.map(|deadline| self.timer_at(deadline));
        let answer = {
            let answering = pin!(self.answer(outgoing, payload));
            until(timer.as_mut(), answering).await
        };
        self.timer = timer;
        // A late answer is never asked again: the upstream may be working on it.
        let (response, framing, keep_alive) =
            answer.unwrap_or(Err((ExchangeError::Timeout, Progress::Answering)))?;
        // Answered: the request is never sent again.
        self.keep_head(&mut outgoing.head);
        Ok(self.into_response(response, framing, keep_alive, pool))
    }

    /// Keeps the memory of a request head for the next one, unless it is
    /// unusually large (it would stay for the connection's life).
    fn keep_head(&mut self, head: &mut Vec<u8>) {
        if head.capacity() <= MAX_SPARE_HEAD {
            self.spare_head = std::mem::take(head);
        }
    }

    /// The connection's timer, set to `deadline`.
    fn timer_at(&mut self, deadline: Instant) -> Pin<Box<Sleep>> {
        match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Writes the request and reads the answer's head: the head, its
    /// framing, and whether the connection may carry another request.
    async fn answer(
        &mut self,
        outgoing: &mut Outgoing,
        payload: Payload,
    ) -> Result<(Response<()>, Framing, bool), (ExchangeError, Progress)> {
        let spare = outgoing.spare_headers.take().unwrap_or_default();
        if let Err(error) = self.write_request(outgoing, payload).await {
            // An upstream may answer early (a 413, say) and reset the
            // connection while the body is still being written: that answer
            // is the one to pass on. Reads on a reset socket return at once.
            let reset = matches!(&error, ExchangeError::Io(e)
                if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe));
            if reset {
                if let Ok((response, framing, _)) = self.read_head(&outgoing.method, spare).await {
                    return Ok((response, framing, false));
                }
            }
            return Err((error, Progress::Unsent));
        }
        self.read_head(&outgoing.method, spare)
            .await
            .map_err(|error| {
                let progress = if matches!(error, ExchangeError::ClosedBeforeAnswer) {
                    Progress::Unanswered
                } else {
                    Progress::Answering
                };
                (error, progress)
            })
    }

    fn into_response(
        self: Box<Self>,
        response: Response<()>,
        framing: Framing,
        keep_alive: bool,
        pool: &Arc<Http1Pool>,
    ) -> Response<ResponseBody> {
        let mut body = ResponseBody {
            conn: Some(self),
            framing,
            ready: None,
            pool: keep_alive.then(|| pool.clone()),
        };
        body.settle();
        response.map(|()| body)
    }

    async fn write_request(
        &mut self,
        outgoing: &Outgoing,
        payload: Payload,
    ) -> Result<(), ExchangeError> {
        let (head, framing) = (&outgoing.head[..], outgoing.framing);
        let body = match (framing, payload) {
            (RequestFraming::Empty, _) => return Ok(self.stream.write_all(head).await?),
            (RequestFraming::Length(length), Payload::Bytes(bytes)) => {
                if length != bytes.len() as u64 {
                    return Err(ExchangeError::BodyLengthMismatch);
                }
                // Head and body in one `writev`.
                let mut both = head.chain(bytes);
                return Ok(self.stream.write_all_buf(&mut both).await?);
            }
            (_, Payload::Bytes(bytes)) => UpstreamBody::bytes(bytes),
            (_, Payload::Stream(body)) => body,
        };
        let framing = match framing {
            RequestFraming::Length(length) => BodyFraming::Length(length),
            _ => BodyFraming::Chunked,
        };
        let mut out = head.to_vec();
        let body = std::pin::pin!(body);
        write_body(&mut self.stream, &mut out, body, framing, true)
            .await
            .map_err(|error| match error {
                WriteError::Io(error) => ExchangeError::Io(error),
                WriteError::Body(error) => ExchangeError::RequestBody(error),
                WriteError::Length => ExchangeError::BodyLengthMismatch,
            })
    }

    /// Reads until a final (non-1xx) response head is complete; its
    /// headers go into `spare` when it has room.
    async fn read_head(
        &mut self,
        method: &Method,
        mut spare: HeaderMap,
    ) -> Result<(Response<()>, Framing, bool), ExchangeError> {
        loop {
            if !self.buf.is_empty() {
                if let Some(parsed) =
                    parse_head(&mut self.buf, &mut self.arena, method, &mut spare)?
                {
                    return Ok(parsed);
                }
            }
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(ExchangeError::HeadTooLarge);
            }
            let was_empty = self.buf.is_empty();
            if self.read_more().await? == 0 {
                return Err(if was_empty {
                    ExchangeError::ClosedBeforeAnswer
                } else {
                    ExchangeError::Malformed("connection closed inside the response head")
                });
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx, READ_CHUNK)).await
    }

    /// Reads what the socket has, up to `want` bytes or the adaptive read
    /// size, whichever is larger. `Ok(0)`: the upstream closed.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.buf.reserve(want.clamp(self.read_size, MAX_READ));
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.buf
        ))?;
        if read >= room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if read < self.read_size / 2 {
            self.read_size = (self.read_size / 2).max(READ_CHUNK);
        }
        Poll::Ready(Ok(read))
    }
}

/// Runs `work` until `timer` fires (`None` then); without a timer, to its end.
async fn until<F: Future>(
    mut timer: Option<&mut Pin<Box<Sleep>>>,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let fired = timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if fired {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Takes `n` bytes off the front of the read buffer. Small pieces are
/// copied into `arena` (see `Conn::arena`), so the read buffer stays
/// unshared and the next read reuses it, and no piece allocates; large ones
/// are split off without a copy.
pub(super) fn take_front(buf: &mut BytesMut, arena: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPY_BELOW {
        let data = copy_into(arena, &buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// A copy of `bytes` in `arena`, or of its own when larger than a chunk
/// (an arena keeps its memory for the connection's life).
pub(super) fn copy_into(arena: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if bytes.len() > ARENA_CHUNK {
        return Bytes::copy_from_slice(bytes);
    }
    if arena.capacity() < bytes.len() {
        // Reclaims the chunk when no copy in it is alive any more.
        arena.reserve(ARENA_CHUNK);
    }
    arena.extend_from_slice(bytes);
    arena.split().freeze()
}

/// How far a failed exchange got, for deciding whether it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Writing the request failed (the connection was broken): the upstream
    /// cannot have received it whole.
    Unsent,
    /// Written, but not a byte of an answer came back.
    Unanswered,
    /// Part of an answer came back: never retried.
    Answering,
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
}

/// Parses one head from the front of `buf`, copying it to `arena`; skips
/// 1xx answers. The headers go into `spare` when it has room. `None`: more
/// bytes are needed.
fn parse_head(
    buf: &mut BytesMut,
    arena: &mut BytesMut,
    method: &Method,
    spare: &mut HeaderMap,
) -> Result<Option<(Response<()>, Framing, bool)>, ExchangeError> {
    loop {
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let parser = httparse::ParserConfig::default();
        let len = match parser.parse_response_with_uninit_headers(&mut parsed, buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Malformed("too many header lines"))
            }
            Err(_) => return Err(ExchangeError::Malformed("invalid response head")),
        };
        let status = StatusCode::from_u16(parsed.code.unwrap_or_default())
            .map_err(|_| ExchangeError::Malformed("invalid status code"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ExchangeError::Malformed(
                    "101 to a request that did not ask to upgrade",
                ));
            }
            buf.advance(len);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let version = if parsed.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let reason = parsed
            .reason
            .filter(|reason| Some(*reason) != status.canonical_reason())
            .map(|reason| Bytes::copy_from_slice(reason.as_bytes()));
        // The header values become slices of one copy of the head: shared,
        // not copied one by one, and the read buffer stays unshared.
        let head = copy_into(arena, &buf[..len]);
        let base = buf.as_ptr() as usize;
        // Room for a client's request head too: `inbound` reuses this map
        // for the next request on the client connection.
        let room = parsed.headers.len().max(REUSED_MAP_CAPACITY);
        let mut map = if spare.capacity() >= room {
            std::mem::take(spare)
        } else {
            HeaderMap::with_capacity(room)
        };
        let mut facts = Facts::new(version);
        // Hop-by-hop headers concern this connection only: noted, and left
        // out of the answer instead of removed from it later (101 answers,
        // which keep `Connection: upgrade`, never come this way).
        let mut named_by_connection = Vec::new();
        for header in parsed.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| ExchangeError::Malformed("invalid header name"))?;
            facts.note(&name, header.value);
            if headers::is_hop_by_hop(&name) {
                if name == CONNECTION {
                    named_by_connection.extend(headers::named_by_connection([header.value], false));
                }
                continue;
            }
            let start = header.value.as_ptr() as usize - base;
            let value =
                HeaderValue::from_maybe_shared(head.slice(start..start + header.value.len()))
                    .map_err(|_| ExchangeError::Malformed("invalid header value"))?;
            map.append(name, value);
        }
        for name in named_by_connection {
            map.remove(&name);
        }
        buf.advance(len);
        let framing = response_framing(status, method, version, &facts, &mut map)?;
        let keep_alive = facts.keep_alive && framing != Framing::Close;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        if let Some(reason) = reason {
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                response.extensions_mut().insert(reason);
            }
        }
        return Ok(Some((response, framing, keep_alive)));
    }
}

/// What a message head says about its framing and its connection, noted
/// while its lines are read (no lookups afterwards). Used for answers here
/// and for client requests in `inbound`.
pub(super) struct Facts {
    /// Whether the last transfer coding is chunked; `None`: no
    /// `Transfer-Encoding`.
    pub chunked: Option<bool>,
    pub length: Length,
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Length {
    Absent,
    Valid(u64),
    Invalid,
}

impl Facts {
    pub(super) fn new(version: Version) -> Facts {
        Facts {
            chunked: None,
            length: Length::Absent,
            // HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes it.
            keep_alive: version == Version::HTTP_11,
        }
    }

    pub(super) fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == CONTENT_LENGTH {
            self.length = match (self.length, parse_length(value)) {
                (Length::Absent, Some(length)) => Length::Valid(length),
                (Length::Valid(previous), Some(length)) if previous == length => self.length,
                _ => Length::Invalid,
            };
        } else if *name == TRANSFER_ENCODING {
            self.chunked = Some(ends_in_chunked(value));
        } else if *name == CONNECTION {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    // Once any line asks to close, a later keep-alive cannot undo it.
                    self.keep_alive = false;
                    return;
                }
                if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        }
    }
}

/// A `Content-Length` value: digits, or a list of equal such values.
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 {
            return None;
        }
        let mut parsed: u64 = 0;
        for digit in part {
            if !digit.is_ascii_digit() {
                return None;
            }
            parsed = parsed * 10 + u64::from(digit - b'0');
        }
        match length {
            Some(previous) if previous != parsed => return None,
            _ => length = Some(parsed),
        }
    }
    length
}

/// hyper's `Client::decoder`: no body after HEAD, 204 and 304; a
/// `Transfer-Encoding` ending in chunked is chunked (its `Content-Length` is
/// dropped), any other until close; then `Content-Length`; else until close.
fn response_framing(
    status: StatusCode,
    method: &Method,
    version: Version,
    facts: &Facts,
    headers: &mut HeaderMap,
) -> Result<Framing, ExchangeError> {
    if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
    {
        return Ok(Framing::Done);
    }
    if let Some(chunked) = facts.chunked {
        if version == Version::HTTP_10 {
            return Err(ExchangeError::Malformed(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
        if facts.length != Length::Absent {
            headers.remove(CONTENT_LENGTH);
        }
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    match facts.length {
        Length::Valid(0) => Ok(Framing::Done),
        Length::Valid(length) => Ok(Framing::Length(length)),
        Length::Invalid => Err(ExchangeError::Malformed("invalid content-length")),
        Length::Absent => Ok(Framing::Close),
    }
}

/// A response body read from the upstream connection as it is polled. At
/// its end the connection returns to the pool (when the answer allows
/// keep-alive); dropped early, the connection is closed with it.
pub struct ResponseBody {
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// Body bytes already taken off the connection, sent first.
    ready: Option<Bytes>,
    /// Where the connection goes at the end; `None`: it closes.
    pool: Option<Arc<Http1Pool>>,
}

impl ResponseBody {
    /// When the whole body is already buffered (most small answers), takes
    /// it off the connection and gives the connection back at once.
    fn settle(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        if let Framing::Length(length) = self.framing {
            if conn.buf.len() as u64 >= length {
                // `length` fits: it is at most the buffer's length.
                let data = take_front(&mut conn.buf, &mut conn.arena, length as usize);
                self.ready = Some(data);
                self.framing = Framing::Done;
            }
        }
        if self.framing == Framing::Done {
            self.release();
        }
    }

    /// The body is complete: the connection goes back to the pool, unless
    /// the upstream sent more than the answer.
    fn release(&mut self) {
        self.framing = Framing::Done;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            if conn.buf.is_empty() {
                pool.give_back(conn);
            }
        }
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(ExchangeError::Malformed(why).into())))
    }

    /// Reads more of the body into the connection's buffer: `true` when
    /// bytes came, `false` when the upstream closed. A read error drops the
    /// connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Result<bool, BoxError>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(Ok(false));
        };
        match ready!(conn.poll_read_more(cx, want)) {
            Ok(read) => Poll::Ready(Ok(read > 0)),
            Err(error) => {
                self.conn = None;
                Poll::Ready(Err(ExchangeError::Io(error).into()))
            }
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(data) = self.ready.take() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(conn) = &mut self.conn else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::Done => {
                    self.release();
                    return Poll::Ready(None);
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() {
                        let want = usize::try_from(left).unwrap_or(usize::MAX);
                        match ready!(self.poll_fill(cx, want)) {
                            Ok(true) => continue,
                            Ok(false) => return self.fail("connection closed inside the body"),
                            Err(error) => return Poll::Ready(Some(Err(error))),
                        }
                    }
                    let take = left.min(conn.buf.len() as u64);
                    // `take` fits: it is at most the buffer's length.
                    let data = take_front(&mut conn.buf, &mut conn.arena, take as usize);
                    let left = left - take;
                    self.framing = match (self.framing, left) {
                        (Framing::Length(_), 0) => Framing::Done,
                        (Framing::Length(_), left) => Framing::Length(left),
                        (_, 0) => Framing::Chunked(Chunk::DataEnd),
                        (_, left) => Framing::Chunked(Chunk::Data(left)),
                    };
                    if self.framing == Framing::Done {
                        self.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.buf.is_empty() {
                        match ready!(self.poll_fill(cx, READ_CHUNK)) {
                            Ok(true) => continue,
                            Ok(false) => {
                                // The close is the body's end; the connection goes with it.
                                self.framing = Framing::Done;
                                self.conn = None;
                                return Poll::Ready(None);
                            }
                            Err(error) => return Poll::Ready(Some(Err(error))),
                        }
                    }
                    let all = conn.buf.len();
                    let data = take_front(&mut conn.buf, &mut conn.arena, all);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(chunk) => {
                    let step = match chunk {
                        Chunk::Size => match httparse::parse_chunk_size(&conn.buf) {
                            Ok(httparse::Status::Complete((used, 0))) => {
                                conn.buf.advance(used);
                                Some(Framing::Chunked(Chunk::Trailers))
                            }
                            Ok(httparse::Status::Complete((used, size))) => {
                                conn.buf.advance(used);
                                Some(Framing::Chunked(Chunk::Data(size)))
                            }
                            Ok(httparse::Status::Partial) => None,
                            Err(_) => return self.fail("invalid chunk size"),
                        },
                        Chunk::DataEnd => match conn.buf.get(..2) {
                            Some(b"\r\n") => {
                                conn.buf.advance(2);
                                Some(Framing::Chunked(Chunk::Size))
                            }
                            Some(_) => return self.fail("chunk data not followed by CRLF"),
                            None => None,
                        },
                        Chunk::Trailers => {
                            if conn.buf.starts_with(b"\r\n") {
                                conn.buf.advance(2);
                                self.release();
                                return Poll::Ready(None);
                            }
                            let mut lines = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                            match httparse::parse_headers(&conn.buf, &mut lines) {
                                Ok(httparse::Status::Complete((used, lines))) => {
                                    let mut trailers = HeaderMap::with_capacity(lines.len());
                                    for line in lines {
                                        if let (Ok(name), Ok(value)) = (
                                            HeaderName::from_bytes(line.name.as_bytes()),
                                            HeaderValue::from_bytes(line.value),
                                        ) {
                                            trailers.append(name, value);
                                        }
                                    }
                                    conn.buf.advance(used);
                                    self.release();
                                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                                }
                                Ok(httparse::Status::Partial) => None,
                                Err(_) => return self.fail("invalid trailers"),
                            }
                        }
                        Chunk::Data(_) => unreachable!("handled with Framing::Length"),
                    };
                    match step {
                        Some(next) => self.framing = next,
                        None => {
                            if conn.buf.len() >= MAX_HEAD_BYTES {
                                return self.fail("chunk framing line too long");
                            }
                            match ready!(self.poll_fill(cx, READ_CHUNK)) {
                                Ok(true) => {}
                                Ok(false) => return self.fail("connection closed inside the body"),
                                Err(error) => return Poll::Ready(Some(Err(error))),
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `ResponseBody` is `Unpin`: every field is.
        self.get_mut().poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |b| b.len() as u64);
        match self.framing {
            Framing::Done => SizeHint::with_exact(ready),
            Framing::Length(left) => SizeHint::with_exact(ready + left),
            _ => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready);
                hint
            }
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
