//! A keep-alive pool of plain HTTP/1.1 upstream connections.
//!
//! Most upstreams are `http://` services spoken to in HTTP/1.1. For them
//! this pool keeps one stack of idle connections per upstream, takes the
//! warmest from the top and gives it back when the answer's body has been
//! read to its end, as nginx's `keepalive` does. Each exchange runs in the
//! task that asked for it ([`h1`]); protocol upgrades (WebSocket) go through
//! hyper on a connection of their own, never pooled.
//!
//! While a pool holds idle connections, a sweeper task looks at them every
//! second and closes those the upstream closed (or wrote to) meanwhile and
//! those idle for longer than 90 s, so no socket lingers in CLOSE_WAIT
//! after traffic stops (nginx watches its idle upstream connections the
//! same way); checkout checks the one it takes again. A
//! request that found a reused connection broken before any answer came
//! back is sent once more on a new connection when its body is in memory
//! and the method is idempotent (or writing the request failed), as nginx's
//! `proxy_next_upstream error` does.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::UPGRADE;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{BoxError, UpstreamBody};
use super::h1::{self, Conn, ExchangeError, Outgoing, Payload, Progress};
use super::service::is_idempotent;

/// Idle connections kept per upstream; more are closed when given back.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the sweeper looks at the idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// TCP keep-alive probes on upstream connections, as hyper-util's connector.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The idle connections to one upstream.
pub struct Http1Pool {
    /// `host:port` to resolve and connect to.
    address: String,
    connect_timeout: Duration,
    idle: Mutex<IdleConns>,
}

/// The idle connections, warmest last, and whether a sweeper runs for them.
#[derive(Default)]
struct IdleConns {
    conns: Vec<Idle>,
    sweeping: bool,
}

struct Idle {
    conn: Box<Conn>,
    /// When the sweeper first saw the connection idle. Stamped by the
    /// sweeper, not when the connection is given back, so a connection
    /// reused within the second reads no clock; one left idle is closed
    /// 90 to 91 s after its last exchange.
    seen: Option<Instant>,
}

impl Idle {
    fn usable(&self) -> bool {
        self.seen.is_none_or(|seen| seen.elapsed() <= IDLE_TIMEOUT) && self.conn.is_reusable()
    }
}

/// Why a pooled exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connect to {address}: no connection within {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl PoolError {
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            PoolError::Connect { .. } | PoolError::ConnectTimeout { .. }
        )
    }

    /// The exchange's deadline passed before an answer came.
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Exchange(ExchangeError::Timeout))
    }
}

impl Http1Pool {
    pub fn new(address: String, connect_timeout: Duration) -> Arc<Http1Pool> {
        Arc::new(Http1Pool {
            address,
            connect_timeout,
            idle: Mutex::new(IdleConns::default()),
        })
    }

    /// Sends a request (origin-form URI, `Host` set) on a pooled connection
    /// or a new one; with a deadline, fails with a timeout when no answer
    /// came by then.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
        deadline: Option<Instant>,
    ) -> Result<Response<PooledBody>, PoolError> {
        // Header hygiene leaves `Upgrade` (with `Connection: upgrade`) only
        // on a request that switches protocols.
        if request.method() == Method::CONNECT || request.headers().contains_key(UPGRADE) {
            return self.send_upgrade(request).await;
        }
        let (parts, body) = request.into_parts();
        let payload = Payload::new(body);
        let replay = match &payload {
            Payload::Bytes(bytes) => Some(bytes.clone()),
            Payload::Stream(_) => None,
        };
        let (mut conn, reused) = match self.checkout() {
            Some(conn) => (conn, true),
            None => (self.connect_by(deadline).await?, false),
        };
        let mut outgoing = Outgoing::new(Request::from_parts(parts, ()), &payload, &mut conn);
        match conn.exchange(&mut outgoing, payload, self, deadline).await {
            Ok(response) => Ok(response.map(PooledBody::Lean)),
            Err((error, progress)) => {
                let again = reused
                    && match progress {
                        Progress::Unsent => true,
                        Progress::Unanswered => is_idempotent(&outgoing.method),
                        Progress::Answering => false,
                    };
                match replay {
                    Some(bytes) if again => {
                        tracing::debug!(%error, "reused upstream connection was broken; sending once more");
                        let conn = self.connect_by(deadline).await?;
                        conn.exchange(&mut outgoing, Payload::Bytes(bytes), self, deadline)
                            .await
                            .map(|response| response.map(PooledBody::Lean))
                            .map_err(|(error, _)| error.into())
                    }
                    _ => Err(error.into()),
                }
            }
        }
    }

    /// A protocol upgrade or CONNECT: hyper on a new connection, which the
    /// upgrade then owns.
    async fn send_upgrade(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let stream = self.open_timed().await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        let response = sender.send_request(request).await?;
        Ok(response.map(PooledBody::unpooled))
    }

    /// The warmest idle connection still usable, if any.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(entry) = idle.conns.pop() {
            if entry.usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Gives a connection whose exchange is over back to the pool.
    pub(super) fn give_back(self: &Arc<Self>, conn: Box<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.conns.len() >= MAX_IDLE {
            return;
        }
        idle.conns.push(Idle { conn, seen: None });
        if !idle.sweeping {
            idle.sweeping = self.start_sweeper();
        }
    }

    /// Starts the task that closes idle connections no longer usable; it
    /// ends when none are left (or the pool is gone) and starts again with
    /// the next one given back. Without a runtime (never, in practice) the
    /// connections are still checked at checkout, for all but their age.
    fn start_sweeper(self: &Arc<Self>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                match pool.upgrade() {
                    Some(pool) if pool.sweep() => {}
                    _ => return,
                }
            }
        });
        true
    }

    /// Closes the idle connections no longer usable. `false`, with the
    /// sweeper marked stopped, when none are left.
    fn sweep(&self) -> bool {
        let (stale, sweeping) = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            for entry in &mut idle.conns {
                entry.seen.get_or_insert(now);
            }
            let (usable, stale): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut idle.conns)
                .into_iter()
                .partition(Idle::usable);
            idle.conns = usable;
            idle.sweeping = !idle.conns.is_empty();
            (stale, idle.sweeping)
        };
        // Closed outside the lock: a request may be checking one out.
        drop(stale);
        sweeping
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .conns
            .len()
    }

    /// A new connection; one not made by `deadline` is a timeout.
    async fn connect_by(&self, deadline: Option<Instant>) -> Result<Box<Conn>, PoolError> {
        let connecting = self.open_timed();
        let stream = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, connecting)
                .await
                .map_err(|_| PoolError::Exchange(ExchangeError::Timeout))??,
            None => connecting.await?,
        };
        Ok(Conn::new(stream))
    }

    async fn open_timed(&self) -> Result<TcpStream, PoolError> {
        tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| PoolError::ConnectTimeout {
                address: self.address.clone(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| PoolError::Connect {
                address: self.address.clone(),
                source,
            })
    }

    /// Resolves the address and connects to the first address that answers.
    async fn open(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for address in tokio::net::lookup_host(self.address.as_str()).await? {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
                    return Ok(stream);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
        }))
    }
}

/// An upstream response body: read by [`h1`] from a pooled connection, or
/// hyper's (upgrades, and the TLS and HTTP/2 client).
pub enum PooledBody {
    Lean(h1::ResponseBody),
    Hyper(Incoming),
}

impl PooledBody {
    /// A body from a connection the pool does not own (hyper-util's client).
    pub fn unpooled(inner: Incoming) -> PooledBody {
        PooledBody::Hyper(inner)
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `PooledBody` is `Unpin`: both bodies are.
        match self.get_mut() {
            PooledBody::Lean(body) => Pin::new(body).poll_frame(cx),
            PooledBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Lean(body) => body.is_end_stream(),
            PooledBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Lean(body) => body.size_hint(),
            PooledBody::Hyper(body) => body.size_hint(),
        }
    }
}
