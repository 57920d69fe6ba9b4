//! The proxy listener: accepts connections (cleartext HTTP/1.x and h2c, or
//! TLS with ALPN `h2`/`http/1.1`) and drains them on shutdown. Cleartext
//! connections are served by the own HTTP/1 codec (`inbound`), which hands
//! whatever it does not serve to hyper-util's automatic protocol detection;
//! TLS connections go to hyper directly.
//!
//! Shutdown: when `shutdown` is cancelled the accept loop stops at once;
//! every open connection is told to finish its in-flight requests and close
//! (HTTP/1.1 stops keep-alive, HTTP/2 sends GOAWAY); after `grace` whatever
//! is left is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::body::ClientBody;
use super::framing::FirstHead;
use super::inbound;
use super::service::{handle, ConnInfo};
use crate::config::TlsConfig;
use crate::runtime::Runtime;

/// Largest request head accepted; beyond it the client gets 431.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client that opens a connection must finish its TLS handshake and send
/// its request head within this.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("server.tls: no certificate in {0}")]
    NoCert(String),
    #[error("server.tls: no private key in {0}")]
    NoKey(String),
    #[error("server.tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the TLS acceptor with ALPN `h2` and `http/1.1`.
pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read(&tls.cert)?;
    let key_pem = read(&tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: tls.cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(tls.cert.display().to_string()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: tls.key.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(tls.key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// hyper's server, for TLS connections and for what `inbound` hands over.
pub type HyperServer = auto::Builder<TokioExecutor>;

/// Serves the proxy on `listener` until `shutdown`, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let hyper = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let shared = Arc::new(inbound::Shared {
        runtime: runtime.clone(),
        hyper: hyper.clone(),
        shutdown: shutdown.clone(),
    });

    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        match &tls {
            None => {
                tokio::spawn(inbound::serve(stream, peer, shared.clone(), watcher));
            }
            Some(acceptor) => {
                let (acceptor, runtime, hyper) = (acceptor.clone(), runtime.clone(), hyper.clone());
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    serve_with_hyper(
                        &hyper,
                        stream,
                        Bytes::new(),
                        runtime,
                        peer,
                        "https",
                        watcher,
                    )
                    .await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!("proxy listener closed; draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "shutdown grace elapsed; closing remaining connections"),
    }
}

/// Serves one connection with hyper's automatic HTTP/1.1-or-HTTP/2
/// detection, its first request head checked for ambiguous framing.
/// `read`: bytes already read from `stream`, which hyper reads first.
pub async fn serve_with_hyper<S>(
    hyper: &HyperServer,
    stream: S,
    read: Bytes,
    runtime: Arc<Runtime>,
    peer: SocketAddr,
    scheme: &'static str,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stream, ambiguous) = FirstHead::new(stream, read);
    let conn = Arc::new(ConnInfo::new(peer, scheme, ambiguous));
    let service = service_fn(move |request: Request<Incoming>| {
        let (runtime, conn) = (runtime.clone(), conn.clone());
        let request = request.map(|body| ClientBody::Hyper { body });
        async move { Ok::<_, Infallible>(handle(runtime, conn, request).await) }
    });
    let connection = hyper.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    }
}
