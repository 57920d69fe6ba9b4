//! Upstreams: one pooled keep-alive transport per configured upstream.
//!
//! Transports are built when a configuration is loaded and reused across
//! reloads when the upstream's settings did not change, so a reload keeps
//! warm connections. Plain `http://` HTTP/1.1 upstreams, the common case,
//! use the lean [`Http1Pool`]; `https://` and HTTP/2 upstreams use
//! hyper-util's client, through rustls with the system's roots (Mozilla's
//! when the system has none) plus the optional `ca` file.

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

pub use super::body::UpstreamBody;
use super::pool::{Http1Pool, PoolError, PooledBody};
use crate::config::{HostPolicy, UpstreamConfig, UpstreamProtocol};
use crate::metrics::Name;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// A configured upstream with its connection pool.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub name: Name,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's path without a trailing `/`, prefixed to every request path.
    pub base_path: String,
    /// The `Host` sent under the `upstream` and fixed host policies.
    host_header: Option<HeaderValue>,
    transport: Transport,
    /// The same, for mirrors only: driven by the shadow runtime, so client
    /// requests never share a connection with it (see `shadow::executor`).
    mirror_transport: Transport,
}

/// How requests reach the upstream.
enum Transport {
    /// Plain HTTP/1.1: the lean pool, origin-form request targets.
    Http1(Arc<Http1Pool>),
    /// TLS or HTTP/2: hyper-util's client, absolute request URIs.
    Client(Box<HttpClient>),
}

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
    #[error("no answer before the upstream's timeout")]
    Timeout,
}

impl SendError {
    /// The upstream could not be reached at all (no request was sent).
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Pool(error) => error.is_connect(),
            SendError::Client(error) => error.is_connect(),
            SendError::Timeout => false,
        }
    }

    /// No answer came by the deadline.
    pub fn is_timeout(&self) -> bool {
        match self {
            SendError::Pool(error) => error.is_timeout(),
            SendError::Client(_) => false,
            SendError::Timeout => true,
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name.0)
            .finish_non_exhaustive()
    }
}

/// Why an upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {name}: cannot read ca {path}: {source}")]
    Ca {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("upstream {name}: no certificate in ca {path}")]
    CaEmpty { name: String, path: String },
    #[error("upstream {name}: url {url} has no host")]
    NoAuthority { name: String, url: String },
}

/// The parts of a client request every upstream copy is built from: the
/// headers after hygiene, and the `Host` the client asked for.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub original_host: Option<HeaderValue>,
}

impl Upstream {
    /// The request as this upstream gets it: its URL, `Host` per its policy.
    pub fn request(&self, head: &RequestHead, body: UpstreamBody) -> Option<Request<UpstreamBody>> {
        self.build(
            &head.method,
            &head.uri,
            head.headers.clone(),
            head.original_host.as_ref(),
            body,
        )
    }

    /// As [`Upstream::request`], taking the head (no header copy).
    pub fn request_from(
        &self,
        head: RequestHead,
        body: UpstreamBody,
    ) -> Option<Request<UpstreamBody>> {
        self.build(
            &head.method,
            &head.uri,
            head.headers,
            head.original_host.as_ref(),
            body,
        )
    }

    fn build(
        &self,
        method: &Method,
        uri: &Uri,
        mut headers: HeaderMap,
        original_host: Option<&HeaderValue>,
        body: UpstreamBody,
    ) -> Option<Request<UpstreamBody>> {
        let path_and_query = match uri.path_and_query() {
            Some(pq) if self.base_path.is_empty() => pq.clone(),
            pq => PathAndQuery::try_from(format!(
                "{}{}",
                self.base_path,
                pq.map_or("/", |pq| pq.as_str())
            ))
            .ok()?,
        };
        let target = match &self.transport {
            // The pool speaks to the upstream directly: origin-form.
            Transport::Http1(_) => Uri::from(path_and_query),
            Transport::Client(_) => {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(self.authority.clone());
                parts.path_and_query = Some(path_and_query);
                Uri::from_parts(parts).ok()?
            }
        };
        let host = match &self.config.host {
            HostPolicy::Preserve => original_host.cloned(),
            HostPolicy::Upstream | HostPolicy::Fixed(_) => self.host_header.clone(),
        };
        match host {
            Some(host) => {
                headers.insert(HOST, host);
            }
            None => {
                headers.remove(HOST);
            }
        }
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = target;
        *request.headers_mut() = headers;
        Some(request)
    }

    /// One exchange: the answer's head, its body streaming behind.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        self.send_on(&self.transport, request, None).await
    }

    /// As [`Upstream::send`], failing with [`SendError::Timeout`] when the
    /// answer's head has not come by `deadline`.
    pub async fn send_by(
        &self,
        request: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Result<Response<PooledBody>, SendError> {
        self.send_on(&self.transport, request, Some(deadline)).await
    }

    /// As [`Upstream::send`], on the connections kept for mirrors. Call it
    /// from the shadow runtime only.
    pub async fn send_mirror(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        self.send_on(&self.mirror_transport, request, None).await
    }

    async fn send_on(
        &self,
        transport: &Transport,
        mut request: Request<UpstreamBody>,
        deadline: Option<Instant>,
    ) -> Result<Response<PooledBody>, SendError> {
        match transport {
            Transport::Http1(pool) => {
                // HTTP/1.1 needs a `Host`; hyper-util's client adds it too.
                if !request.headers().contains_key(HOST) {
                    if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
                        request.headers_mut().insert(HOST, host);
                    }
                }
                // The pool bounds the exchange on the connection's own timer.
                Ok(pool.send(request, deadline).await?)
            }
            Transport::Client(client) => {
                let answering = client.request(request);
                let response = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, answering)
                        .await
                        .map_err(|_| SendError::Timeout)??,
                    None => answering.await?,
                };
                Ok(response.map(PooledBody::unpooled))
            }
        }
    }

    pub fn new(config: &UpstreamConfig) -> Result<Arc<Upstream>, UpstreamError> {
        let authority =
            config
                .url
                .authority()
                .cloned()
                .ok_or_else(|| UpstreamError::NoAuthority {
                    name: config.name.clone(),
                    url: config.url.to_string(),
                })?;
        let scheme = config.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let base_path = config.url.path().trim_end_matches('/').to_string();

        let host_header = match &config.host {
            HostPolicy::Preserve => None,
            HostPolicy::Upstream => HeaderValue::from_str(authority.as_str()).ok(),
            HostPolicy::Fixed(value) => HeaderValue::from_str(value).ok(),
        };
        let plain_http1 = !config.is_https()
            && matches!(
                config.protocol,
                UpstreamProtocol::Http1 | UpstreamProtocol::Auto
            );
        let (transport, mirror_transport) = if plain_http1 {
            let port = authority.port_u16().unwrap_or(80);
            let address = format!("{}:{port}", authority.host());
            (
                Transport::Http1(Http1Pool::new(address.clone(), config.connect_timeout)),
                Transport::Http1(Http1Pool::new(address, config.connect_timeout)),
            )
        } else {
            let tls = tls_config(config)?;
            (
                Transport::Client(Box::new(hyper_util_client(config, tls.clone()))),
                Transport::Client(Box::new(hyper_util_client(config, tls))),
            )
        };
        Ok(Arc::new(Upstream {
            config: config.clone(),
            name: Name::from(config.name.as_str()),
            scheme,
            authority,
            base_path,
            host_header,
            transport,
            mirror_transport,
        }))
    }
}

/// hyper-util's client, for TLS and HTTP/2 upstreams.
fn hyper_util_client(config: &UpstreamConfig, tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = match config.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => builder.enable_http2().wrap_connector(http),
        UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(http),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(matches!(
            config.protocol,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c
        ))
        .http2_keep_alive_interval(Some(Duration::from_secs(30)));
    client.build(connector)
}

fn tls_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    if config.is_https() {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(path) = &config.ca {
            let ca_error = |source| UpstreamError::Ca {
                name: config.name.clone(),
                path: path.display().to_string(),
                source,
            };
            let pem = std::fs::read(path).map_err(ca_error)?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                if roots.add(cert.map_err(ca_error)?).is_ok() {
                    added += 1;
                }
            }
            if added == 0 {
                return Err(UpstreamError::CaEmpty {
                    name: config.name.clone(),
                    path: path.display().to_string(),
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
