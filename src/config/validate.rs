//! Raw file structs → validated [`Config`]: defaults, units, ranges and
//! cross-references.
//!
//! Every check records its problem against a key path and carries on with a
//! placeholder value, so one run reports every error in the file, not just
//! the first. Routes are checked in `route.rs`; the shared checks live on
//! [`Checker`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

use super::file::{
    FileAdmin, FileConfig, FileServer, FileStore, FileUpstream, RawDuration, RawSize,
};
use super::locate::{KeyPath, Target};
use super::model::*;
use super::suggest::suggest;
use super::units;

/// One error or warning, before it is given a file position.
#[derive(Debug)]
pub(super) struct Problem {
    pub path: KeyPath,
    pub target: Target,
    pub message: String,
}

/// Collects problems and holds what cross-reference checks need.
pub(super) struct Checker<'a> {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// Relative paths in the file (`tls`, `ca`) are relative to its folder.
    base_dir: &'a Path,
    /// Names of the `[upstreams.*]`, in file order.
    upstreams: Vec<String>,
}

/// Formats names as "`a`, `b`" for messages.
fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'a> Checker<'a> {
    fn new(base_dir: &'a Path) -> Self {
        Checker {
            errors: Vec::new(),
            warnings: Vec::new(),
            base_dir,
            upstreams: Vec::new(),
        }
    }

    /// Records an error about the value at `path`.
    pub fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.errors.push(Problem {
            path,
            target: Target::Value,
            message: message.into(),
        });
    }

    /// Records a warning about the value at `path`.
    pub fn warn(&mut self, path: KeyPath, message: impl Into<String>) {
        self.warnings.push(Problem {
            path,
            target: Target::Value,
            message: message.into(),
        });
    }

    /// A duration, or `default` when absent or invalid.
    pub fn duration(
        &mut self,
        path: KeyPath,
        raw: &Option<RawDuration>,
        default: Duration,
    ) -> Duration {
        match raw {
            None => default,
            Some(RawDuration(text)) => units::parse_duration(text).unwrap_or_else(|e| {
                self.error(path, e);
                default
            }),
        }
    }

    /// A duration that must be longer than zero.
    pub fn positive_duration(
        &mut self,
        path: KeyPath,
        raw: &Option<RawDuration>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path.clone(), raw, default);
        if d.is_zero() {
            self.error(path, "must be longer than zero (e.g. \"5s\")");
            return default;
        }
        d
    }

    /// A byte size, or `default` when absent or invalid.
    pub fn size(&mut self, path: KeyPath, raw: &Option<RawSize>, default: u64) -> u64 {
        let parsed = match raw {
            None => return default,
            Some(RawSize::Bytes(n)) => units::size_from_int(*n),
            Some(RawSize::Text(text)) => units::parse_size(text),
        };
        parsed.unwrap_or_else(|e| {
            self.error(path, e);
            default
        })
    }

    /// A fraction in [0, 1] (sample rates, thresholds on rates).
    pub fn fraction(&mut self, path: KeyPath, raw: Option<f64>, default: f64) -> f64 {
        match raw {
            None => default,
            Some(v) if (0.0..=1.0).contains(&v) => v,
            Some(v) => {
                self.error(path, format!("{v} is not a fraction between 0 and 1"));
                default
            }
        }
    }

    /// An integer at least `min` that fits `T`, or `default`.
    pub fn count<T: TryFrom<i64> + Copy>(
        &mut self,
        path: KeyPath,
        raw: Option<i64>,
        default: T,
        min: i64,
    ) -> T {
        let Some(v) = raw else { return default };
        match T::try_from(v) {
            Ok(n) if v >= min => n,
            Ok(_) => {
                self.error(path, format!("{v} is too small: the least is {min}"));
                default
            }
            Err(_) => {
                self.error(path, format!("{v} is out of range"));
                default
            }
        }
    }

    /// A socket address such as `127.0.0.1:8080` (`localhost:PORT` is read
    /// as `127.0.0.1:PORT`; no other name is resolved).
    pub fn socket_addr(
        &mut self,
        path: KeyPath,
        raw: &Option<String>,
        default: SocketAddr,
    ) -> SocketAddr {
        let Some(text) = raw else { return default };
        let trimmed = text.trim();
        let localhost = trimmed
            .strip_prefix("localhost:")
            .and_then(|port| port.parse::<u16>().ok())
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        if let Some(addr) = localhost {
            return addr;
        }
        trimmed.parse().unwrap_or_else(|_| {
            self.error(
                path,
                format!(
                    "`{text}` is not a socket address (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"
                ),
            );
            default
        })
    }

    /// An `http://` or `https://` URL with a host.
    pub fn http_url(&mut self, path: KeyPath, text: &str) -> Option<http::Uri> {
        let example = "e.g. \"http://127.0.0.1:8001\"";
        let Ok(uri) = text.parse::<http::Uri>() else {
            self.error(path, format!("`{text}` is not a URL ({example})"));
            return None;
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            self.error(
                path,
                format!("`{text}` must start with http:// or https:// ({example})"),
            );
            return None;
        }
        if uri.host().is_none_or(str::is_empty) {
            self.error(path, format!("`{text}` has no host ({example})"));
            return None;
        }
        Some(uri)
    }

    /// A required string key: an error at the enclosing table when absent.
    pub fn required<'v>(
        &mut self,
        table: &KeyPath,
        key: &str,
        raw: &'v Option<String>,
    ) -> Option<&'v str> {
        if raw.is_none() {
            self.error(table.clone(), format!("missing required key `{key}`"));
        }
        raw.as_deref()
    }

    /// A reference to an upstream by name; returns whether it is defined.
    pub fn upstream_ref(&mut self, path: KeyPath, name: &str) -> bool {
        if self.upstreams.iter().any(|u| u == name) {
            return true;
        }
        let message = match suggest(name, self.upstreams.iter().map(String::as_str)) {
            Some(s) => format!("unknown upstream `{name}`; did you mean `{s}`?"),
            None if self.upstreams.is_empty() => {
                format!("unknown upstream `{name}` (no upstream is defined)")
            }
            None => format!(
                "unknown upstream `{name}` (defined: {})",
                list(&self.upstreams)
            ),
        };
        self.error(path, message);
        false
    }

    /// HTTP method tokens, uppercased.
    pub fn methods(&mut self, path: KeyPath, raw: &[String]) -> Vec<Method> {
        let mut out = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
                Ok(method) if !out.contains(&method) => out.push(method),
                Ok(_) => {}
                Err(_) => self.error(path.index(i), format!("`{m}` is not an HTTP method")),
            }
        }
        out
    }

    /// Header names, lowercased.
    pub fn header_names(&mut self, path: KeyPath, raw: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, h) in raw.iter().enumerate() {
            match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(name) => out.push(name.as_str().to_owned()),
                Err(_) => self.error(path.index(i), format!("`{h}` is not a header name")),
            }
        }
        out
    }

    /// JSONPath expressions: each must start with `$`.
    pub fn json_paths(&mut self, path: KeyPath, raw: &[String]) -> Vec<String> {
        for (i, p) in raw.iter().enumerate() {
            if !p.starts_with('$') {
                self.error(path.index(i), format!("`{p}` is not a JSONPath: it must start with `$` (e.g. \"$.meta.request_id\")"));
            }
        }
        raw.to_vec()
    }

    /// URL paths or path prefixes: each must start with `/`.
    pub fn url_paths(&mut self, path: KeyPath, raw: &[String]) -> Vec<String> {
        for (i, p) in raw.iter().enumerate() {
            self.url_path(path.index(i), p);
        }
        raw.to_vec()
    }

    /// One URL path: must start with `/`.
    pub fn url_path(&mut self, path: KeyPath, p: &str) {
        if !p.starts_with('/') {
            self.error(path, format!("`{p}` must start with `/`"));
        }
    }

    /// A secret (token) that, when given, must not be empty.
    pub fn secret(&mut self, path: KeyPath, raw: &Option<String>) -> Option<String> {
        match raw {
            Some(t) if t.is_empty() => {
                self.error(path, "must not be empty (remove the key to turn this off)");
                None
            }
            other => other.clone(),
        }
    }

    /// A path from the file, relative to the file's folder.
    fn file_path(&self, raw: &str) -> PathBuf {
        self.base_dir.join(raw)
    }
}

/// Validates `raw`, read from `path`; `config_hash` is the hash of the text.
/// Returns the configuration (meaningful only without errors) and the
/// problems found.
pub(super) fn validate(
    raw: &FileConfig,
    path: &Path,
    config_hash: String,
) -> (Config, Vec<Problem>, Vec<Problem>) {
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let mut c = Checker::new(base_dir);
    let root = KeyPath::default();

    let server = server(&mut c, &root.key("server"), &raw.server);
    let admin = admin(&mut c, &root.key("admin"), &raw.admin);
    let store = store(&mut c, &root.key("store"), &raw.store);

    c.upstreams = raw.upstreams.0.iter().map(|(n, _)| n.clone()).collect();
    let upstreams = raw
        .upstreams
        .0
        .iter()
        .map(|(name, u)| {
            (
                name.clone(),
                upstream(&mut c, &root.key("upstreams").key(name), name, u),
            )
        })
        .collect();

    let defaults_path = root.key("defaults").key("upstream");
    let default_upstream = raw.defaults.as_ref().and_then(|d| d.upstream.clone());
    let defaults = match default_upstream {
        Some(name) => {
            c.upstream_ref(defaults_path, &name);
            DefaultsConfig { upstream: name }
        }
        None => {
            if !c.upstreams.iter().any(|u| u == "legacy") {
                c.error(
                    defaults_path,
                    "no upstream is named `legacy`, the default for requests that match no route: set defaults.upstream",
                );
            }
            DefaultsConfig {
                upstream: "legacy".to_owned(),
            }
        }
    };

    let routes = super::route::routes(&mut c, &root.key("routes"), &raw.routes);

    let webhooks_path = root.key("notify").key("webhooks");
    for (i, url) in raw.notify.webhooks.iter().enumerate() {
        c.http_url(webhooks_path.index(i), url);
    }

    let config = Config {
        path: path.to_path_buf(),
        config_hash,
        server,
        admin,
        store,
        upstreams,
        defaults,
        routes,
        notify: NotifyConfig {
            webhooks: raw.notify.webhooks.clone(),
        },
    };
    (config, c.errors, c.warnings)
}

fn server(c: &mut Checker<'_>, p: &KeyPath, raw: &FileServer) -> ServerConfig {
    let listen = c.socket_addr(
        p.key("listen"),
        &raw.listen,
        SocketAddr::from(([127, 0, 0, 1], 8080)),
    );
    let tls = raw.tls.as_ref().map(|t| TlsConfig {
        cert: c.file_path(&t.cert),
        key: c.file_path(&t.key),
    });
    let mut trusted_proxies = Vec::new();
    for (i, entry) in raw.trusted_proxies.iter().enumerate() {
        let text = entry.trim();
        if let Ok(net) = IpNet::from_str(text) {
            trusted_proxies.push(net.trunc());
        } else if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            trusted_proxies.push(IpNet::from(ip));
        } else {
            c.error(
                p.key("trusted_proxies").index(i),
                format!("`{entry}` is not an IP address or CIDR network (e.g. \"10.0.0.0/8\")"),
            );
        }
    }
    ServerConfig {
        listen,
        tls,
        max_body_buffer: c.size(p.key("max_body_buffer"), &raw.max_body_buffer, 1 << 20),
        shadow_memory: c.size(p.key("shadow_memory"), &raw.shadow_memory, 256 << 20),
        shutdown_grace: c.duration(
            p.key("shutdown_grace"),
            &raw.shutdown_grace,
            Duration::from_secs(10),
        ),
        trusted_proxies,
        override_token: c.secret(p.key("override_token"), &raw.override_token),
    }
}

fn admin(c: &mut Checker<'_>, p: &KeyPath, raw: &FileAdmin) -> AdminConfig {
    let listen = c.socket_addr(
        p.key("listen"),
        &raw.listen,
        SocketAddr::from(([127, 0, 0, 1], 9090)),
    );
    let token = c.secret(p.key("token"), &raw.token);
    if raw.token.is_none() && !listen.ip().is_loopback() {
        c.error(
            p.key("token"),
            format!("required when admin.listen ({listen}) is not a loopback address"),
        );
    }
    let mut allowed_hosts = Vec::new();
    for (i, entry) in raw.allowed_hosts.iter().enumerate() {
        let host = entry.trim().to_ascii_lowercase();
        let valid = !host.contains('@')
            && http::uri::Authority::from_str(&host)
                .is_ok_and(|a| a.port_u16().is_some() && !a.host().is_empty());
        if valid {
            allowed_hosts.push(host);
        } else {
            c.error(
                p.key("allowed_hosts").index(i),
                format!("`{entry}` is not host:port (e.g. \"strangler.internal:9090\")"),
            );
        }
    }
    AdminConfig {
        listen,
        token,
        allowed_hosts,
    }
}

fn store(c: &mut Checker<'_>, p: &KeyPath, raw: &FileStore) -> StoreConfig {
    let url = raw
        .url
        .clone()
        .unwrap_or_else(|| "sqlite://strangler.db".to_owned());
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|k| url.starts_with(k)) {
        c.error(
            p.key("url"),
            format!("`{url}` is not a store URL (\"sqlite://FILE\" or \"postgres://…\")"),
        );
    }
    for (i, param) in raw.redact_params.iter().enumerate() {
        if param.is_empty() {
            c.error(p.key("redact_params").index(i), "must not be empty");
        }
    }
    StoreConfig {
        url,
        max_samples_per_endpoint: c.count(
            p.key("max_samples_per_endpoint"),
            raw.max_samples_per_endpoint,
            100,
            0,
        ),
        redact_headers: c.header_names(p.key("redact_headers"), &raw.redact_headers),
        redact_json: c.json_paths(p.key("redact_json"), &raw.redact_json),
        redact_params: raw.redact_params.clone(),
        retention: c.duration(
            p.key("retention"),
            &raw.retention,
            Duration::from_secs(14 * 86_400),
        ),
        max_bytes: c.size(p.key("max_bytes"), &raw.max_bytes, 1 << 30),
    }
}

fn upstream(c: &mut Checker<'_>, p: &KeyPath, name: &str, raw: &FileUpstream) -> UpstreamConfig {
    if name.is_empty() {
        c.error(p.clone(), "an upstream name must not be empty");
    }
    let url = c
        .required(p, "url", &raw.url)
        .map(str::to_owned)
        .and_then(|u| c.http_url(p.key("url"), &u));
    let https = url.as_ref().map(|u| u.scheme_str() == Some("https"));

    let host = match raw.host.as_deref() {
        None | Some("preserve") => HostPolicy::Preserve,
        Some("upstream") => HostPolicy::Upstream,
        Some(fixed) => {
            if fixed.is_empty()
                || fixed.contains(char::is_whitespace)
                || http::HeaderValue::from_str(fixed).is_err()
            {
                c.error(
                    p.key("host"),
                    format!("`{fixed}` is not a host: use \"preserve\", \"upstream\" or a fixed host name"),
                );
            }
            HostPolicy::Fixed(fixed.to_owned())
        }
    };

    let protocol = match raw.protocol.as_deref() {
        None | Some("auto") => UpstreamProtocol::Auto,
        Some("http1") => UpstreamProtocol::Http1,
        Some("h2c") => UpstreamProtocol::H2c,
        Some("h2") => UpstreamProtocol::H2,
        Some(other) => {
            c.error(
                p.key("protocol"),
                format!("`{other}` is not a protocol (auto, http1, h2c or h2)"),
            );
            UpstreamProtocol::Auto
        }
    };
    let url_text = raw.url.as_deref().unwrap_or_default();
    match (protocol, https) {
        (UpstreamProtocol::H2, Some(false)) => c.error(
            p.key("protocol"),
            format!("h2 needs an https:// url (url is {url_text}); use h2c for HTTP/2 without TLS"),
        ),
        (UpstreamProtocol::H2c, Some(true)) => c.error(
            p.key("protocol"),
            format!("h2c needs an http:// url (url is {url_text}); use h2 for HTTP/2 over TLS"),
        ),
        _ => {}
    }

    let ca = raw.ca.as_deref().map(|ca| c.file_path(ca));
    if ca.is_some() && https == Some(false) {
        c.warn(p.key("ca"), "ca is only used for https upstreams");
    }
    if let Some(health) = &raw.health {
        c.url_path(p.key("health"), health);
    }

    UpstreamConfig {
        name: name.to_owned(),
        url: url.unwrap_or_else(|| http::Uri::from_static("http://invalid.invalid")),
        connect_timeout: c.positive_duration(
            p.key("connect_timeout"),
            &raw.connect_timeout,
            Duration::from_secs(1),
        ),
        timeout: c.positive_duration(p.key("timeout"), &raw.timeout, Duration::from_secs(30)),
        idle_timeout: c.positive_duration(
            p.key("idle_timeout"),
            &raw.idle_timeout,
            Duration::from_secs(60),
        ),
        host,
        protocol,
        ca,
        health: raw.health.clone(),
        health_interval: c.positive_duration(
            p.key("health_interval"),
            &raw.health_interval,
            Duration::from_secs(5),
        ),
    }
}
