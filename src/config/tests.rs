//! Tests of the whole pipeline (text → `Config` or positioned errors),
//! one per class of error, each checking the key path and the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod errors;

/// The SPEC §2 example, with every optional key set.
const FULL: &str = r#"
[server]
listen = "0.0.0.0:8080"
tls = { cert = "cert.pem", key = "/etc/strangler/key.pem" }
max_body_buffer = "2MiB"
shadow_memory = 1048576
shutdown_grace = "15s"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]
override_token = "${OVERRIDE}"

[admin]
listen = "0.0.0.0:9090"
token = "${ADMIN_TOKEN}"   # comments with ${NOT_EXPANDED} are fine
allowed_hosts = ["Strangler.Internal:9090"]

[store]
url = "sqlite://strangler.db"
max_samples_per_endpoint = 50
redact_headers = ["X-Api-Key"]
redact_json = ["$..password", "$..card_number"]
redact_params = ["token", "api_key"]
retention = "14d"
max_bytes = "1GiB"

[upstreams.legacy]
url = "http://127.0.0.1:8001"
connect_timeout = "1s"
timeout = "30s"
idle_timeout = "60s"
host = "upstream"
protocol = "http1"
health = "/healthz"
health_interval = "2s"

[upstreams.candidate]
url = "https://rewrite.internal:8443"
protocol = "h2"
ca = "ca.pem"
host = "api.example.com"

[upstreams.candidate_sandbox]
url = "http://127.0.0.1:8003"
protocol = "h2c"

[upstreams.legacy2]
url = "http://127.0.0.1:8004"

[defaults]
upstream = "legacy"

[[routes]]
name = "orders"
path_prefix = "/api/v1/orders"
methods = ["get", "POST"]
headers = { "X-Tenant" = "beta" }
legacy = "legacy"
candidate = "candidate"
stage = "shadow"
weight = 0
sticky = "header:X-User-Id"
sticky_missing = "legacy"
sticky_salt = "s1"
fallback_statuses = [404, 501]
endpoints = ["/api/v1/orders/{id}/items"]
max_endpoints = 50

[routes.shadow]
sample = 0.5
methods = ["GET", "HEAD", "POST"]
allow_writes = true
upstream = "candidate_sandbox"
exclude = ["/api/v1/orders/export"]
secondary = "legacy2"
noise_sample = 0.02
timeout = "250ms"
max_in_flight = 64

[routes.compare]
ignore_headers = ["Date", "server"]
ignore_json = ["$.meta.request_id", "$..created_at"]
unordered_arrays = ["$.items"]
float_tolerance = 1e-6

[routes.rollout]
auto = false
steps = [1, 2.5, 50, 100]
interval = "2m"
warmup = "10s"
min_requests = 5000
min_match_rate = 0.999
max_error_rate = 0.02
max_error_rate_increase = 0.01
max_4xx_rate_increase = 0.01
max_p99_ratio = 2
p99_slack = "10ms"
rollback_window = "1m"
failure_limit = 3
bake = "1h"
max_p99 = "10ms"

[[routes.rollout.criteria]]
name = "candidate-memory"
url = "http://127.0.0.1:8002/metrics"
metric = 'process_resident_memory_bytes{job="api"}'
max = 500e6

[[routes]]
name = "health"
path = "/health"
legacy = "legacy"
candidate = "candidate"

[[routes]]
name = "items"
path_regex = "^/api/v1/items/[0-9]+$"
legacy = "legacy"
candidate = "candidate"
stage = "canary"
weight = 12.5
sticky = "cookie:session"

[notify]
webhooks = ["https://hooks.example.com/strangler"]
"#;

/// Two upstreams and one route: everything else is a default.
pub(super) const MINIMAL: &str = r#"
[upstreams.legacy]
url = "http://127.0.0.1:8001"

[upstreams.candidate]
url = "http://127.0.0.1:8002"

[[routes]]
name = "orders"
path_prefix = "/api/v1/orders"
legacy = "legacy"
candidate = "candidate"
"#;

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("OVERRIDE".to_owned(), "qa-token".to_owned()),
        ("ADMIN_TOKEN".to_owned(), "admin-secret".to_owned()),
    ])
}

pub(super) fn parse_text(text: &str) -> Result<Loaded, ConfigErrors> {
    parse(Path::new("conf/strangler.toml"), text, &env())
}

pub(super) fn load_ok(text: &str) -> Loaded {
    match parse_text(text) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected a valid configuration, got:\n{errors}"),
    }
}

pub(super) fn errors(text: &str) -> Vec<ConfigError> {
    match parse_text(text) {
        Ok(_) => panic!("expected errors, the configuration was accepted"),
        Err(ConfigErrors(errors)) => errors,
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
pub(super) fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("test text has no line with {needle:?}"))
}

/// The one error at `key_path`, which must be on `line`.
pub(super) fn expect_error<'a>(
    errors: &'a [ConfigError],
    key_path: &str,
    line: usize,
) -> &'a ConfigError {
    let found = errors
        .iter()
        .find(|e| e.key_path == key_path)
        .unwrap_or_else(|| {
            panic!(
                "no error at {key_path}; got:\n{}",
                ConfigErrors(errors.to_vec())
            )
        });
    assert_eq!(found.line, Some(line), "line of {found}");
    assert_eq!(found.file, "conf/strangler.toml");
    found
}

/// MINIMAL with `extra` appended to the (only) route.
pub(super) fn minimal_with_route(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

#[test]
fn full_config_parses_with_the_right_values() {
    let loaded = load_ok(FULL);
    let c = &loaded.config;
    assert_eq!(c.path, PathBuf::from("conf/strangler.toml"));
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    let tls = c.server.tls.as_ref().expect("tls is set");
    assert_eq!(tls.cert, PathBuf::from("conf/cert.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/strangler/key.pem"));
    assert_eq!(c.server.max_body_buffer, 2 << 20);
    assert_eq!(c.server.shadow_memory, 1 << 20);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(15));
    let proxies: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
    assert_eq!(c.server.override_token.as_deref(), Some("qa-token"));

    assert_eq!(c.admin.token.as_deref(), Some("admin-secret"));
    assert_eq!(c.admin.allowed_hosts, ["strangler.internal:9090"]);

    assert_eq!(c.store.max_samples_per_endpoint, 50);
    assert_eq!(c.store.redact_headers, ["x-api-key"]);
    assert_eq!(c.store.redact_json, ["$..password", "$..card_number"]);
    assert_eq!(c.store.redact_params, ["token", "api_key"]);
    assert_eq!(c.store.retention, Duration::from_secs(14 * 86_400));
    assert_eq!(c.store.max_bytes, 1 << 30);

    assert_eq!(c.upstreams.len(), 4);
    let legacy = &c.upstreams["legacy"];
    assert_eq!(legacy.name, "legacy");
    assert_eq!(legacy.url.to_string(), "http://127.0.0.1:8001/");
    assert_eq!(legacy.host, HostPolicy::Upstream);
    assert_eq!(legacy.protocol, UpstreamProtocol::Http1);
    assert_eq!(legacy.health.as_deref(), Some("/healthz"));
    assert_eq!(legacy.health_interval, Duration::from_secs(2));
    let candidate = &c.upstreams["candidate"];
    assert!(candidate.is_https());
    assert_eq!(candidate.protocol, UpstreamProtocol::H2);
    assert_eq!(candidate.host, HostPolicy::Fixed("api.example.com".into()));
    assert_eq!(candidate.ca, Some(PathBuf::from("conf/ca.pem")));
    assert_eq!(
        c.upstreams["candidate_sandbox"].protocol,
        UpstreamProtocol::H2c
    );
    assert_eq!(c.defaults.upstream, "legacy");

    assert_eq!(c.routes.len(), 3);
    let r = &c.routes[0];
    assert_eq!(r.name, "orders");
    assert!(matches!(&r.path, PathMatch::Prefix(p) if p == "/api/v1/orders"));
    assert_eq!(r.methods, [http::Method::GET, http::Method::POST]);
    assert_eq!(r.headers.len(), 1);
    assert_eq!(r.headers[0].0.as_str(), "x-tenant");
    assert_eq!(r.headers[0].1, "beta");
    assert_eq!(
        (r.legacy.as_str(), r.candidate.as_str()),
        ("legacy", "candidate")
    );
    assert_eq!(r.stage, Stage::Shadow);
    assert_eq!(r.weight, 0.0);
    assert_eq!(
        r.sticky,
        StickyKey::Header(http::HeaderName::from_static("x-user-id"))
    );
    assert_eq!(r.sticky_missing, StickyMissing::Legacy);
    assert_eq!(r.sticky_salt, "s1");
    assert_eq!(r.fallback_statuses, [404, 501]);
    assert_eq!(r.endpoints, ["/api/v1/orders/{id}/items"]);
    assert_eq!(r.max_endpoints, 50);

    let s = &r.shadow;
    assert_eq!(s.sample, 0.5);
    assert_eq!(
        s.methods,
        [http::Method::GET, http::Method::HEAD, http::Method::POST]
    );
    assert!(s.allow_writes);
    assert_eq!(s.upstream.as_deref(), Some("candidate_sandbox"));
    assert_eq!(s.exclude, ["/api/v1/orders/export"]);
    assert_eq!(s.secondary.as_deref(), Some("legacy2"));
    assert_eq!(s.noise_sample, 0.02);
    assert_eq!(s.timeout, Duration::from_millis(250));
    assert_eq!(s.max_in_flight, 64);

    assert_eq!(r.compare.ignore_headers, ["date", "server"]);
    assert_eq!(
        r.compare.ignore_json,
        ["$.meta.request_id", "$..created_at"]
    );
    assert_eq!(r.compare.unordered_arrays, ["$.items"]);
    assert_eq!(r.compare.float_tolerance, 1e-6);

    let ro = &r.rollout;
    assert!(!ro.auto);
    assert_eq!(ro.steps, [1.0, 2.5, 50.0, 100.0]);
    assert_eq!(ro.interval, Duration::from_secs(120));
    assert_eq!(ro.warmup, Duration::from_secs(10));
    assert_eq!(ro.min_requests, 5000);
    assert_eq!(ro.max_error_rate, 0.02);
    assert_eq!(ro.max_error_rate_increase, 0.01);
    assert_eq!(ro.max_4xx_rate_increase, Some(0.01));
    assert_eq!(ro.max_p99_ratio, 2.0);
    assert_eq!(ro.p99_slack, Duration::from_millis(10));
    assert_eq!(ro.rollback_window, Duration::from_secs(60));
    assert_eq!(ro.failure_limit, 3);
    assert_eq!(ro.bake, Duration::from_secs(3600));
    assert_eq!(ro.max_p99, Some(Duration::from_millis(10)));
    assert_eq!(ro.criteria.len(), 1);
    let cr = &ro.criteria[0];
    assert_eq!(cr.name, "candidate-memory");
    assert_eq!(cr.metric, "process_resident_memory_bytes{job=\"api\"}");
    assert_eq!((cr.max, cr.min), (Some(500e6), None));

    assert!(matches!(&c.routes[1].path, PathMatch::Exact(p) if p == "/health"));
    let items = &c.routes[2];
    assert!(matches!(&items.path, PathMatch::Regex(re) if re.is_match("/api/v1/items/42")));
    assert_eq!((items.stage, items.weight), (Stage::Canary, 12.5));
    assert_eq!(items.sticky, StickyKey::Cookie("session".into()));
    assert_eq!(c.notify.webhooks, ["https://hooks.example.com/strangler"]);

    // The hash is of the text before substitution.
    let expected = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(FULL.as_bytes()));
    assert_eq!(c.config_hash, expected);
    let other_env = HashMap::from([
        ("OVERRIDE".to_owned(), "x".to_owned()),
        ("ADMIN_TOKEN".to_owned(), "y".to_owned()),
    ]);
    let again = parse(Path::new("conf/strangler.toml"), FULL, &other_env).expect("valid");
    assert_eq!(again.config.config_hash, expected);
}

#[test]
fn minimal_config_gets_every_default() {
    let loaded = load_ok(MINIMAL);
    let c = &loaded.config;
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert!(c.server.tls.is_none());
    assert_eq!(c.server.max_body_buffer, 1 << 20);
    assert_eq!(c.server.shadow_memory, 256 << 20);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
    assert!(c.server.trusted_proxies.is_empty());
    assert!(c.server.override_token.is_none());
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert!(c.admin.token.is_none());
    assert!(c.admin.allowed_hosts.is_empty());
    assert_eq!(c.store.url, "sqlite://strangler.db");
    assert_eq!(c.store.max_samples_per_endpoint, 100);
    assert!(c.store.redact_headers.is_empty() && c.store.redact_json.is_empty());
    assert!(c.store.redact_params.is_empty());
    assert_eq!(c.store.retention, Duration::from_secs(14 * 86_400));
    assert_eq!(c.store.max_bytes, 1 << 30);

    let u = &c.upstreams["legacy"];
    assert_eq!(u.connect_timeout, Duration::from_secs(1));
    assert_eq!(u.timeout, Duration::from_secs(30));
    assert_eq!(u.idle_timeout, Duration::from_secs(60));
    assert_eq!(u.host, HostPolicy::Preserve);
    assert_eq!(u.protocol, UpstreamProtocol::Auto);
    assert!(u.ca.is_none() && u.health.is_none());
    assert_eq!(u.health_interval, Duration::from_secs(5));
    assert_eq!(c.defaults.upstream, "legacy");

    let r = &c.routes[0];
    assert!(r.methods.is_empty() && r.headers.is_empty());
    assert_eq!(r.stage, Stage::Legacy);
    assert_eq!(r.weight, 0.0);
    assert_eq!(r.sticky, StickyKey::None);
    assert_eq!(r.sticky_missing, StickyMissing::Random);
    assert_eq!(r.sticky_salt, "");
    assert!(r.fallback_statuses.is_empty() && r.endpoints.is_empty());
    assert_eq!(r.max_endpoints, 200);

    let s = &r.shadow;
    assert_eq!(s.sample, 1.0);
    assert_eq!(s.methods, [http::Method::GET, http::Method::HEAD]);
    assert!(!s.allow_writes);
    assert!(s.upstream.is_none() && s.secondary.is_none() && s.exclude.is_empty());
    assert_eq!(s.noise_sample, 0.0);
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert_eq!(s.max_in_flight, 1024);

    assert_eq!(r.compare.ignore_headers, ["date", "server", "x-request-id"]);
    assert!(r.compare.ignore_json.is_empty() && r.compare.unordered_arrays.is_empty());
    assert_eq!(r.compare.float_tolerance, 1e-9);

    let ro = &r.rollout;
    assert!(ro.auto);
    assert_eq!(ro.steps, [1.0, 10.0, 50.0, 100.0]);
    assert_eq!(ro.interval, Duration::from_secs(60));
    assert_eq!(ro.warmup, Duration::ZERO);
    assert_eq!(ro.min_requests, 200);
    assert_eq!(ro.min_match_rate, 0.999);
    assert_eq!(ro.max_error_rate, 0.01);
    assert_eq!(ro.max_error_rate_increase, 0.005);
    assert_eq!(ro.max_4xx_rate_increase, None);
    assert_eq!(ro.max_p99_ratio, 1.5);
    assert_eq!(ro.p99_slack, Duration::from_millis(5));
    assert_eq!(ro.rollback_window, Duration::from_secs(30));
    assert_eq!(ro.failure_limit, 1);
    assert_eq!(ro.bake, Duration::from_secs(7 * 86_400));
    assert_eq!(ro.max_p99, None);
    assert!(ro.criteria.is_empty());
    assert!(c.notify.webhooks.is_empty());

    // The default min_requests (200) cannot show a 99.9% match rate.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert_eq!(w.key_path, "routes[0].rollout.min_requests");
    assert!(w.message.contains("3000"), "{w}");
    // Absent from the file: it points at the route.
    assert_eq!(w.line, Some(line_of(MINIMAL, "[[routes]]")));
}

#[test]
fn min_requests_warning_is_skipped_when_enough_or_exact() {
    let enough = minimal_with_route("[routes.rollout]\nmin_requests = 3000");
    assert!(load_ok(&enough).warnings.is_empty());
    let exact = minimal_with_route("[routes.rollout]\nmin_match_rate = 1.0\nmin_requests = 1");
    assert!(load_ok(&exact).warnings.is_empty());
    let small = minimal_with_route("[routes.rollout]\nmin_requests = 10\nmin_match_rate = 0.99");
    let loaded = load_ok(&small);
    let w = &loaded.warnings[0];
    assert!(w.message.contains("300 "), "{w}");
    assert_eq!(w.line, Some(line_of(&small, "min_requests = 10")));
    assert_eq!(w.column, Some(16));
}
