//! Cleartext HTTP/1.x client connections, served by the proxy's own codec.
//!
//! hyper's server connection was the largest single cost per proxied
//! request (callgrind: ~9.4k of ~27k instructions: its dispatcher, a boxed
//! head-read timer per request, a header map per request). As `h1` does
//! for upstreams, this serves the common case in the connection's own task:
//! the request head is parsed with httparse (as hyper does), the request
//! goes to [`handle`], and the answer is framed by hyper's server rules
//! (see [`encode_head`]) and written. About 5.4k instructions. While a
//! request is served, the reader watches for the client leaving, which
//! aborts the upstream exchange (see `Reader::unless_closed`).
//!
//! Only plain requests are served here: no body, or a `Content-Length` one.
//! At the first request that is anything else — the HTTP/2 preface, a head
//! httparse refuses or that exceeds a limit, `Transfer-Encoding`, `Expect`,
//! `Upgrade`, `CONNECT` — the connection and the bytes read so far are
//! handed to hyper (see `FirstHead`), which serves it from then on as it
//! serves TLS connections: its error answers (400, 414, 431), 100-continue,
//! chunked uploads, the smuggling check of `framing`, upgrades and h2c all
//! stay hyper's.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::Watcher;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::body::{BoxError, ClientBody, ProxyBody};
use super::h1::{take_front, Facts, Length, MAX_READ, READ_CHUNK};
use super::server::{serve_with_hyper, HyperServer, HEAD_TIMEOUT, MAX_HEAD_BYTES};
use super::service::{handle, ConnInfo};
use super::wire::{write_body, BodyFraming, WriteError};
use crate::runtime::Runtime;

/// Most header lines in a request head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest request target (hyper answers 414 beyond it).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// Room for a pipelined request read while the one before is served, when
/// the buffer has none left (the rest of it comes with the next head).
const WATCH_ROOM: usize = 512;
/// Header lines the proxy may add to a request before forwarding it.
const ADDED_HEADERS: usize = 6;

/// What every connection served here shares.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    pub hyper: Arc<HyperServer>,
    pub shutdown: CancellationToken,
}

/// Serves one cleartext connection until it closes, or hands it to hyper.
/// `watcher` keeps the listener's drain waiting until the connection ends.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, watcher: Watcher) {
    let info = Arc::new(ConnInfo::new(
        peer,
        "http",
        Arc::new(AtomicBool::new(false)),
    ));
    let (read, writer) = stream.into_split();
    let mut conn = Connection {
        reader: Some(Box::new(Reader {
            io: read,
            buf: BytesMut::new(),
            arena: BytesMut::new(),
        })),
        writer,
        out: Vec::new(),
        scratch: Scratch::default(),
    };
    let Some(reader) = conn.run(&shared, &info).await else {
        return;
    };
    let Reader { io, buf, .. } = *reader;
    // Both halves come from the same stream: reuniting cannot fail.
    let Ok(stream) = io.reunite(conn.writer) else {
        return;
    };
    serve_with_hyper(
        &shared.hyper,
        stream,
        buf.freeze(),
        shared.runtime.clone(),
        peer,
        "http",
        watcher,
    )
    .await;
}

/// The read side of a client connection and the bytes read but not used.
/// Lent to a request's body while the body is read (see [`OwnBody`]).
pub struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
    /// Where small request bodies are copied to (see `h1::take_front`).
    arena: BytesMut,
}

impl Reader {
    /// Reads what the socket has into the buffer. `Ok(0)`: the client closed.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.buf.reserve(want.clamp(READ_CHUNK, MAX_READ));
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Runs `work` (serving a request) unless the client closes the
    /// connection first (`None`; `work` is dropped, which aborts the
    /// upstream exchange). As hyper's server does with `half_close` off,
    /// and nginx with `proxy_ignore_client_abort off`: an end of input in
    /// the middle of an exchange means the client left, a half-close
    /// included. Bytes that arrive instead (a pipelined request) stay in
    /// the buffer for the next head, and end the watch. While the socket
    /// is quiet this costs no system call: the last read drained it, so
    /// tokio only registers the wake-up.
    ///
    /// `work` is pinned by the caller, since moving a request's future
    /// (18 KiB) into this one is a copy. callgrind, pass-through: 22.3k
    /// instructions per request without the watch, 22.7k with it (24.9k
    /// when it moved the future and grew the buffer).
    async fn unless_closed<F: Future>(&mut self, mut work: Pin<&mut F>) -> Option<F::Output> {
        let mut watching = self.buf.is_empty();
        poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if watching {
                // Into the room the buffer has left, most of a read chunk:
                // growing it now would allocate, as the request's head still
                // shares its memory.
                if self.buf.capacity() == self.buf.len() {
                    self.buf.reserve(WATCH_ROOM);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => watching = false,
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Waits for the next complete request head, while the connection is
    /// idle also for `shutdown`, and at most until `deadline`. `Ok(None)`:
    /// the connection is to close.
    async fn next_head(
        &mut self,
        scratch: &mut Scratch,
        mut deadline: Pin<&mut Sleep>,
        mut shutdown: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Result<Option<Head>, Unsupported> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, scratch)? {
                    Some(head) => return Ok(Some(head)),
                    None if self.buf.len() < MAX_HEAD_BYTES => {}
                    None => return Err(Unsupported),
                }
            }
            let idle = self.buf.is_empty();
            let read = poll_fn(|cx| {
                if let Poll::Ready(read) = self.poll_read_more(cx, READ_CHUNK) {
                    return Poll::Ready(read.ok().filter(|n| *n > 0));
                }
                if idle && shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            if read.is_none() {
                // Closed, failed, shutting down or too slow: nothing to answer.
                return Ok(None);
            }
        }
    }
}

/// Ends a connection whose client closed it while its request was served.
fn client_left(info: &ConnInfo) -> Option<Box<Reader>> {
    tracing::debug!(peer = %info.peer, "client closed the connection before its answer ended");
    None
}

struct Connection {
    /// At home between requests; lent to a request body while it is read.
    reader: Option<Box<Reader>>,
    writer: OwnedWriteHalf,
    /// The answer's head and small body pieces, reused from answer to answer.
    out: Vec<u8>,
    scratch: Scratch,
}

impl Connection {
    /// Serves requests until the connection closes (`None`) or must go to
    /// hyper (its reader is returned).
    async fn run(&mut self, shared: &Shared, info: &Arc<ConnInfo>) -> Option<Box<Reader>> {
        // One timer and one shutdown watch for the connection's life: a
        // timer reset to a later deadline costs no trip to the timer wheel.
        let mut deadline = pin!(tokio::time::sleep(HEAD_TIMEOUT));
        let mut shutdown = pin!(shared.shutdown.cancelled());
        loop {
            let reader = self.reader.as_mut()?;
            deadline.as_mut().reset(Instant::now() + HEAD_TIMEOUT);
            let head = match reader
                .next_head(&mut self.scratch, deadline.as_mut(), shutdown.as_mut())
                .await
            {
                Ok(Some(head)) => head,
                Ok(None) => return None,
                Err(Unsupported) => return self.reader.take(),
            };
            let Head {
                request,
                length,
                keep_alive,
            } = head;
            let asked = Asked {
                version: request.version(),
                head: request.method() == Method::HEAD,
            };
            let (body, lent) = self.request_body(length);
            let request = request.map(|()| ClientBody::Own { body });
            let mut handling = pin!(handle(shared.runtime.clone(), info.clone(), request));
            let response = match self.reader.as_mut() {
                Some(reader) => match reader.unless_closed(handling.as_mut()).await {
                    Some(response) => response,
                    None => return client_left(info),
                },
                // The body has the reader: a request whose body is still
                // arriving is not watched.
                None => handling.await,
            };
            if let Some(mut lent) = lent {
                // Back only when the body was read to its end.
                self.reader = lent.try_recv().ok();
            }
            let keep_alive = keep_alive && self.reader.is_some() && !shared.shutdown.is_cancelled();
            match self.write_response(response, asked, keep_alive).await {
                Ok(Some(true)) => {}
                Ok(Some(false)) => return None,
                Ok(None) => return client_left(info),
                Err(error) => {
                    tracing::debug!(peer = %info.peer, %error, "client connection ended mid-answer");
                    return None;
                }
            }
        }
    }

    /// The request's body: bytes already read, or the connection's reader
    /// lent until the body's end (then sent back through the receiver).
    fn request_body(&mut self, length: u64) -> (OwnBody, Option<oneshot::Receiver<Box<Reader>>>) {
        let Some(reader) = self.reader.as_mut().filter(|_| length > 0) else {
            return (OwnBody::bytes(None), None);
        };
        if reader.buf.len() as u64 >= length {
            // `length` fits: it is at most the buffer's length.
            let bytes = take_front(&mut reader.buf, &mut reader.arena, length as usize);
            return (OwnBody::bytes(Some(bytes)), None);
        }
        let (home, lent) = oneshot::channel();
        let body = OwnBody {
            ready: None,
            reader: self.reader.take(),
            left: length,
            home: Some(home),
        };
        (body, Some(lent))
    }

    /// Writes the answer; `Ok(Some(true))` when the connection may carry
    /// another request, `Ok(None)` when the client left while the answer's
    /// body was awaited.
    async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        asked: Asked,
        keep_alive: bool,
    ) -> io::Result<Option<bool>> {
        let (mut parts, body) = response.into_parts();
        let length = (!body.is_end_stream()).then(|| body.size_hint().exact());
        self.out.clear();
        let (framing, last) = encode_head(&mut self.out, &mut parts, asked, length, !keep_alive);
        parts.headers.clear();
        self.scratch.headers = Some(parts.headers);
        let body = pin!(body);
        // Trailers are dropped: hyper sends only those a `Trailer` header
        // announces, and hygiene removes that header.
        let mut writing = pin!(write_body(
            &mut self.writer,
            &mut self.out,
            body,
            framing,
            false
        ));
        let written = match self.reader.as_mut() {
            Some(reader) => reader.unless_closed(writing.as_mut()).await,
            None => Some(writing.await),
        };
        let Some(written) = written else {
            return Ok(None);
        };
        written.map_err(|error| match error {
            WriteError::Io(error) => error,
            WriteError::Body(error) => io::Error::other(error),
            WriteError::Length => io::Error::other("answer body and its length differ"),
        })?;
        Ok(Some(!last))
    }
}

/// A parsed request head and what it says about its body and connection.
struct Head {
    request: Request<()>,
    /// The body's `Content-Length` (0: no body).
    length: u64,
    keep_alive: bool,
}

/// A request head not served here: the connection goes to hyper (see the
/// module's doc).
#[derive(Debug)]
struct Unsupported;

/// Storage reused from request to request.
#[derive(Default)]
struct Scratch {
    /// An emptied header map kept from the last answer: the next request's
    /// headers go into it, so no map is allocated per request.
    headers: Option<HeaderMap>,
    /// The header lines of the head being parsed: names, and where their
    /// values sit in the head.
    lines: Vec<(HeaderName, Range<usize>)>,
}

/// Parses one request head off the front of `buf`, as hyper's server does.
/// `Ok(None)`: more bytes are needed. `Err`: the head is left in `buf` for
/// hyper.
fn parse_head(buf: &mut BytesMut, scratch: &mut Scratch) -> Result<Option<Head>, Unsupported> {
    let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let parser = httparse::ParserConfig::default();
    let len = match parser.parse_request_with_uninit_headers(&mut parsed, buf, &mut lines) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Unsupported),
    };
    let (Some(method), Some(path), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Unsupported);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(Unsupported);
    };
    if method == Method::CONNECT || path.len() > MAX_URI_LEN {
        return Err(Unsupported);
    }
    let version = if version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Where the target and the values sit: they become slices of the head
    // once it is split off the buffer, as hyper does (no copy).
    let base = buf.as_ptr() as usize;
    let range = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let target = range(path.as_bytes());
    let mut facts = Facts::new(version);
    scratch.lines.clear();
    for line in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(line.name.as_bytes()) else {
            return Err(Unsupported);
        };
        if name == EXPECT || name == UPGRADE {
            return Err(Unsupported);
        }
        facts.note(&name, line.value);
        scratch.lines.push((name, range(line.value)));
    }
    let length = match (facts.chunked, facts.length) {
        (None, Length::Absent) => 0,
        (None, Length::Valid(length)) => length,
        _ => return Err(Unsupported),
    };
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
        // httparse takes some targets `Uri` refuses (`http://[::1/`): put
        // the head back for hyper, which answers 400.
        let mut whole = BytesMut::from(&head[..]);
        whole.unsplit(std::mem::take(buf));
        *buf = whole;
        return Err(Unsupported);
    };
    // Room for what the proxy adds (`x-forwarded-*`, `host`): growing a map
    // rehashes it, which costs more than the whole parse.
    let room = scratch.lines.len() + ADDED_HEADERS;
    let mut headers = match scratch.headers.take() {
        Some(spare) if spare.capacity() >= room => spare,
        _ => HeaderMap::with_capacity(room),
    };
    for (name, value) in scratch.lines.drain(..) {
        // httparse accepts exactly the value bytes `HeaderValue` does.
        if let Ok(value) = HeaderValue::from_maybe_shared(head.slice(value)) {
            headers.append(name, value);
        }
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        length,
        keep_alive: facts.keep_alive,
    }))
}

/// What the request asked that the answer's framing depends on.
#[derive(Clone, Copy)]
struct Asked {
    version: Version,
    head: bool,
}

/// Encodes the answer's head into `out` by hyper's server rules
/// (`role::Server::encode` and `Conn::enforce_version`). `length`: `None`
/// when the body is empty, else its exact length if known. `last`: the
/// connection closes after this answer. Returns the body's framing and
/// whether the connection closes after it.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    asked: Asked,
    length: Option<Option<u64>>,
    mut last: bool,
) -> (BodyFraming, bool) {
    let headers = &mut parts.headers;
    let version = if asked.version == Version::HTTP_10 {
        // An HTTP/1.0 client is answered in HTTP/1.0, told when the
        // connection stays open.
        if !has_token(headers, b"keep-alive") {
            if parts.version == Version::HTTP_10 {
                last = true;
            } else if !last {
                headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
            }
        }
        Version::HTTP_10
    } else {
        if last && !has_token(headers, b"close") {
            headers.append(CONNECTION, HeaderValue::from_static("close"));
        }
        if parts.version == Version::HTTP_10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        }
    };
    let status = parts.status;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if version == Version::HTTP_11 && status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if version == Version::HTTP_10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let can_have_body = !asked.head && !bodiless_status;
    let mut framing = None;
    let mut wrote_date = false;
    for (name, value) in headers.iter() {
        if *name == CONTENT_LENGTH {
            let written = match length {
                Some(Some(known)) => Some(known),
                Some(None) => super::h1::parse_length(value.as_bytes()),
                // An empty body keeps its length only in an answer to HEAD.
                None if asked.head => Some(0),
                None => None,
            };
            match (written, framing) {
                (Some(length), None) => framing = Some(BodyFraming::Length(length)),
                // Repeated lines (hyper checks they agree; ours always do).
                _ => continue,
            }
        } else if *name == TRANSFER_ENCODING {
            // Hop-by-hop, removed by hygiene: the framing is decided below.
            continue;
        } else if *name == CONNECTION {
            last |= token_in(value.as_bytes(), b"close");
        } else if *name == DATE {
            wrote_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match (framing, length) {
        (Some(framing), _) => framing,
        (None, Some(None)) if version == Version::HTTP_11 && can_have_body => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            BodyFraming::Chunked
        }
        (None, Some(None)) => BodyFraming::Close,
        (None, None | Some(Some(0))) => {
            if can_have_body {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            BodyFraming::Length(0)
        }
        (None, Some(Some(length))) => {
            if !bodiless_status {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Length(length)
        }
    };
    let framing = if can_have_body {
        framing
    } else {
        BodyFraming::Length(0)
    };
    if !wrote_date {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
    (framing, last || framing == BodyFraming::Close)
}

/// Whether any `Connection` line of `headers` holds `token`.
fn has_token(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| token_in(value.as_bytes(), token))
}

fn token_in(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

thread_local! {
    /// The `Date` value, formatted once a second per thread (as hyper does).
    static DATE_TEXT: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_TEXT.with_borrow_mut(|(cached, text)| {
        if *cached != second || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *cached = second;
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// A request body with a `Content-Length`: bytes already read, or read from
/// the client connection as it is polled. At its end the connection's
/// reader goes home; dropped before, the connection closes after the answer.
pub struct OwnBody {
    ready: Option<Bytes>,
    reader: Option<Box<Reader>>,
    left: u64,
    home: Option<oneshot::Sender<Box<Reader>>>,
}

impl OwnBody {
    fn bytes(ready: Option<Bytes>) -> OwnBody {
        OwnBody {
            ready,
            reader: None,
            left: 0,
            home: None,
        }
    }

    fn go_home(&mut self) {
        if let (Some(reader), Some(home)) = (self.reader.take(), self.home.take()) {
            let _ = home.send(reader);
        }
    }
}

impl Body for OwnBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `OwnBody` is `Unpin`: every field is.
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        if reader.buf.is_empty() {
            let want = usize::try_from(this.left).unwrap_or(usize::MAX);
            let failure = match ready!(reader.poll_read_more(cx, want)) {
                Ok(0) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection inside the request body",
                ),
                Ok(_) => return Pin::new(this).poll_frame(cx),
                Err(error) => error,
            };
            this.reader = None;
            return Poll::Ready(Some(Err(failure.into())));
        }
        let take = this.left.min(reader.buf.len() as u64);
        // `take` fits: it is at most the buffer's length.
        let data = take_front(&mut reader.buf, &mut reader.arena, take as usize);
        this.left -= take;
        if this.left == 0 {
            this.go_home();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left + self.ready.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
