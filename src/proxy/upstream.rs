//! Upstreams: one pooled keep-alive client per configured upstream.
//!
//! Clients are built when a configuration is loaded and reused across
//! reloads when the upstream's settings did not change, so a reload keeps
//! warm connections. `https://` upstreams go through rustls with the
//! system's roots (Mozilla's when the system has none) plus the optional
//! `ca` file.

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use super::body::UpstreamBody;
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
    pub client: HttpClient,
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
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub original_host: Option<HeaderValue>,
}

impl Upstream {
    /// The request as this upstream gets it: its URL, `Host` per its policy.
    pub fn request(&self, head: &RequestHead, body: UpstreamBody) -> Option<Request<UpstreamBody>> {
        let path_and_query = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let builder = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        let uri = if self.base_path.is_empty() {
            builder.path_and_query(path_and_query).build()
        } else {
            builder
                .path_and_query(format!("{}{}", self.base_path, path_and_query))
                .build()
        }
        .ok()?;
        let mut request = Request::new(body);
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = uri;
        let mut headers = head.headers.clone();
        let host = match &self.config.host {
            HostPolicy::Preserve => head.original_host.clone(),
            HostPolicy::Upstream => HeaderValue::from_str(self.authority.as_str()).ok(),
            HostPolicy::Fixed(value) => HeaderValue::from_str(value).ok(),
        };
        match host {
            Some(host) => {
                headers.insert(HOST, host);
            }
            None => {
                headers.remove(HOST);
            }
        }
        *request.headers_mut() = headers;
        Some(request)
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

        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(Duration::from_secs(60)));

        let tls = tls_config(config)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = match config.protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
                builder.enable_http2().wrap_connector(http)
            }
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
        Ok(Arc::new(Upstream {
            config: config.clone(),
            name: Name::from(config.name.as_str()),
            scheme,
            authority,
            base_path,
            client: client.build(connector),
        }))
    }
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
