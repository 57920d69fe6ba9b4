//! A keep-alive pool of plain HTTP/1.1 upstream connections.
//!
//! Most upstreams are `http://` services spoken to in HTTP/1.1, and for them
//! hyper-util's general client (which also does TLS, HTTP/2 and connection
//! racing) costs more per request than the rest of the proxy: a boxed
//! checkout future, a pool keyed by scheme and authority, and a task spawned
//! per request to return the connection. This pool is the plain case only:
//! one stack of idle [`SendRequest`]s per upstream, taken from the top (the
//! warmest connection) and given back when the response body has been read
//! to its end, as nginx's `keepalive` does.
//!
//! A connection that is not ready when checked out (its previous exchange
//! has not settled yet) is left in the pool; one that closed is dropped. A
//! request the pool could not even start on a reused connection (it closed
//! in the meantime) is sent again on a new one, as hyper-util does.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpstreamBody;

/// Idle connections kept per upstream; more are closed when given back.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on upstream connections, as hyper-util's connector.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The idle connections to one upstream.
pub struct Http1Pool {
    /// `host:port` to resolve and connect to.
    address: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
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
    Http(#[from] hyper::Error),
}

impl PoolError {
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            PoolError::Connect { .. } | PoolError::ConnectTimeout { .. }
        )
    }
}

impl Http1Pool {
    pub fn new(address: String, connect_timeout: Duration) -> Arc<Http1Pool> {
        Arc::new(Http1Pool {
            address,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends a request (origin-form URI, `Host` set) on a pooled connection
    /// or a new one.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let (mut sender, reused) = match self.checkout() {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok(self.wrap(response, sender)),
            Err(mut error) => match error.take_message() {
                // Not started: the reused connection had closed. Once more,
                // on a new connection.
                Some(unsent) if reused => {
                    let mut sender = self.connect().await?;
                    let response = sender
                        .try_send_request(unsent)
                        .await
                        .map_err(|error| error.into_error())?;
                    Ok(self.wrap(response, sender))
                }
                _ => Err(error.into_error().into()),
            },
        }
    }

    /// The warmest ready idle connection, if any.
    fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(entry) = idle.pop() {
            if entry.sender.is_closed() || entry.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            if entry.sender.is_ready() {
                found = Some(entry.sender);
                break;
            }
            // Its last exchange is still settling: keep it for later.
            busy.push(entry);
        }
        idle.extend(busy.into_iter().rev());
        found
    }

    /// Gives a connection whose exchange is over back to the pool.
    fn give_back(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest entry ages out here, one per return: no sweeper task.
        if idle
            .first()
            .is_some_and(|oldest| oldest.since.elapsed() > IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn wrap(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<UpstreamBody>,
    ) -> Response<PooledBody> {
        // A switched connection belongs to the upgrade, never to the pool.
        let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
        let (parts, body) = response.into_parts();
        let mut body = PooledBody {
            inner: body,
            reuse: reusable.then(|| Reuse {
                sender,
                pool: self.clone(),
            }),
        };
        body.release_if_done();
        Response::from_parts(parts, body)
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, PoolError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| PoolError::ConnectTimeout {
                address: self.address.clone(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| PoolError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
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

struct Reuse {
    sender: SendRequest<UpstreamBody>,
    pool: Arc<Http1Pool>,
}

/// An upstream response body that gives its connection back to the pool
/// once read to the end. Dropped early, it takes the connection with it
/// (hyper closes a connection whose response was not read).
pub struct PooledBody {
    inner: Incoming,
    reuse: Option<Reuse>,
}

impl PooledBody {
    /// A body from a connection the pool does not own (hyper-util's client).
    pub fn unpooled(inner: Incoming) -> PooledBody {
        PooledBody { inner, reuse: None }
    }

    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }

    fn release(&mut self) {
        if let Some(Reuse { sender, pool }) = self.reuse.take() {
            pool.give_back(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // `PooledBody` is `Unpin`: `Incoming` and `SendRequest` both are.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) => this.release_if_done(),
            Poll::Ready(Some(Err(_))) => this.reuse = None,
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
