//! The validated configuration: what the rest of strangler reads.
//!
//! Every value here has been checked (ranges, cross-references, compiled
//! regexes), so code that holds a `Config` never re-validates. The raw file
//! shapes live in `file.rs`; `validate.rs` turns one into the other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

/// The whole configuration, after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub path: PathBuf,
    /// xxh3 of the file's text before `${VAR}` substitution (SPEC §9).
    pub config_hash: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    /// Upstreams by name, in file order of names (BTreeMap: stable output).
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub defaults: DefaultsConfig,
    /// Routes in file order (regex routes are tried in this order).
    pub routes: Vec<RouteConfig>,
    pub notify: NotifyConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub max_body_buffer: u64,
    pub shadow_memory: u64,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub override_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// `host:port` entries accepted as `Host` besides loopback ones, lowercased.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub max_samples_per_endpoint: u32,
    pub redact_headers: Vec<String>,
    pub redact_json: Vec<String>,
    pub redact_params: Vec<String>,
    pub retention: Duration,
    pub max_bytes: u64,
}

/// How the `Host` header sent upstream is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// The client's `Host` (default).
    Preserve,
    /// The upstream URL's authority.
    Upstream,
    /// A fixed value.
    Fixed(String),
}

/// Which HTTP version is spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// ALPN for https, HTTP/1.1 for http.
    Auto,
    Http1,
    /// HTTP/2 over cleartext (prior knowledge).
    H2c,
    /// HTTP/2 over TLS.
    H2,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// Parsed and checked: scheme http or https, with an authority.
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub host: HostPolicy,
    pub protocol: UpstreamProtocol,
    pub ca: Option<PathBuf>,
    pub health: Option<String>,
    pub health_interval: Duration,
}

impl UpstreamConfig {
    /// True when the upstream is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }
}

#[derive(Debug, Clone)]
pub struct DefaultsConfig {
    pub upstream: String,
}

/// The four stages of SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Legacy,
    Shadow,
    Canary,
    Candidate,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Legacy,
        Stage::Shadow,
        Stage::Canary,
        Stage::Candidate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Legacy => "legacy",
            Stage::Shadow => "shadow",
            Stage::Canary => "canary",
            Stage::Candidate => "candidate",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a route's path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Matches on whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    Prefix(String),
    Regex(regex::Regex),
}

/// What identifies a user for the sticky canary split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// Each request is its own cohort.
    None,
    /// A request header (lowercased name).
    Header(http::HeaderName),
    /// A cookie by name.
    Cookie(String),
    /// The client address (through `trusted_proxies`).
    Ip,
}

/// What to do with a request that has no sticky key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyMissing {
    Random,
    Legacy,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Vec<Method>,
    /// Exact-match header conditions (lowercased names).
    pub headers: Vec<(http::HeaderName, String)>,
    pub legacy: String,
    pub candidate: String,
    pub stage: Stage,
    /// Candidate share in percent, 0–100.
    pub weight: f64,
    pub sticky: StickyKey,
    pub sticky_missing: StickyMissing,
    pub sticky_salt: String,
    pub fallback_statuses: Vec<u16>,
    pub endpoints: Vec<String>,
    pub max_endpoints: u32,
    pub shadow: ShadowConfig,
    pub compare: CompareConfig,
    pub rollout: RolloutConfig,
}

#[derive(Debug, Clone)]
pub struct ShadowConfig {
    pub sample: f64,
    pub methods: Vec<Method>,
    pub allow_writes: bool,
    pub upstream: Option<String>,
    pub exclude: Vec<String>,
    pub secondary: Option<String>,
    pub noise_sample: f64,
    pub timeout: Duration,
    pub max_in_flight: u32,
}

#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// Lowercased header names.
    pub ignore_headers: Vec<String>,
    pub ignore_json: Vec<String>,
    pub unordered_arrays: Vec<String>,
    pub float_tolerance: f64,
}

#[derive(Debug, Clone)]
pub struct CriterionConfig {
    pub name: String,
    pub url: String,
    pub metric: String,
    pub max: Option<f64>,
    pub min: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct RolloutConfig {
    pub auto: bool,
    pub steps: Vec<f64>,
    pub interval: Duration,
    pub warmup: Duration,
    pub min_requests: u64,
    pub min_match_rate: f64,
    pub max_error_rate: f64,
    pub max_error_rate_increase: f64,
    pub max_4xx_rate_increase: Option<f64>,
    pub max_p99_ratio: f64,
    pub p99_slack: Duration,
    pub rollback_window: Duration,
    pub failure_limit: u32,
    pub bake: Duration,
    pub max_p99: Option<Duration>,
    pub criteria: Vec<CriterionConfig>,
}

#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub webhooks: Vec<String>,
}
