//! Prometheus metrics (SPEC §7), through `prometheus-client`.
//!
//! Label values are closed sets bounded by the configuration (route and
//! upstream names, status codes, error kinds): no metric ever carries a path.
//! Route and upstream names are `Arc<str>` so recording clones no string.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A route or upstream name used as a label value without copying it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Name,
    pub upstream: Name,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteUpstreamLabels {
    pub route: Name,
    pub upstream: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub route: Name,
    pub upstream: Name,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCodeLabels {
    pub route: Name,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStageLabels {
    pub route: Name,
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub route: Name,
    pub to: &'static str,
    pub actor: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowResultLabels {
    pub route: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowDropLabels {
    pub route: Name,
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s in factors of 2: covers a loopback hop and a slow batch job.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric strangler exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RouteUpstreamLabels>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub shadow_comparisons: Family<ShadowResultLabels, Counter>,
    pub shadow_dropped: Family<ShadowDropLabels, Counter>,
    pub shadow_duration: HistogramFamily<RouteUpstreamLabels>,
    pub fallbacks: Family<RouteCodeLabels, Counter>,
    pub route_weight: Family<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub route_stage: Family<RouteStageLabels, Gauge>,
    pub transitions: Family<TransitionLabels, Counter>,
    /// Canary requests without the route's sticky key (SPEC: "counted").
    pub sticky_missing: Family<RouteLabels, Counter>,
    /// Requests the QA override sent to a side (SPEC: "counted apart").
    pub overrides: Family<RouteUpstreamLabels, Counter>,
    /// Kept exchanges dropped because the store writer was behind.
    pub store_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let request_duration: HistogramFamily<RouteUpstreamLabels> =
            Family::new_with_constructor(latency_histogram);
        let upstream_errors = Family::default();
        let shadow_comparisons = Family::default();
        let shadow_dropped = Family::default();
        let shadow_duration: HistogramFamily<RouteUpstreamLabels> =
            Family::new_with_constructor(latency_histogram);
        let fallbacks = Family::default();
        let route_weight = Family::default();
        let route_stage = Family::default();
        let transitions = Family::default();
        let sticky_missing = Family::default();
        let overrides = Family::default();
        let store_dropped = Counter::default();
        // prometheus-client appends `_total` to counters itself.
        registry.register("strangler_requests", "Client requests", requests.clone());
        registry.register(
            "strangler_request_duration_seconds",
            "Client request duration until the response headers",
            request_duration.clone(),
        );
        registry.register(
            "strangler_upstream_errors",
            "Upstream failures by kind (connect, timeout, reset, protocol)",
            upstream_errors.clone(),
        );
        registry.register(
            "strangler_shadow_comparisons",
            "Shadow comparisons by result",
            shadow_comparisons.clone(),
        );
        registry.register(
            "strangler_shadow_dropped",
            "Mirrored requests not compared, by reason",
            shadow_dropped.clone(),
        );
        registry.register(
            "strangler_shadow_duration_seconds",
            "Mirrored request duration",
            shadow_duration.clone(),
        );
        registry.register(
            "strangler_fallbacks",
            "Candidate answers replaced by legacy's through fallback_statuses",
            fallbacks.clone(),
        );
        registry.register(
            "strangler_route_weight",
            "Candidate share of a route in percent",
            route_weight.clone(),
        );
        registry.register(
            "strangler_route_stage",
            "1 for the route's current stage",
            route_stage.clone(),
        );
        registry.register(
            "strangler_rollout_transitions",
            "Rollout transitions",
            transitions.clone(),
        );
        registry.register(
            "strangler_sticky_missing",
            "Canary requests without the route's sticky key (sent as sticky_missing says)",
            sticky_missing.clone(),
        );
        registry.register(
            "strangler_override_requests",
            "Requests served by the side x-strangler-side chose (QA override), left out of the gates",
            overrides.clone(),
        );
        registry.register(
            "strangler_store_dropped",
            "Shadow exchanges not stored because the store writer was behind",
            store_dropped.clone(),
        );
        Metrics {
            store_dropped,
            registry,
            requests,
            request_duration,
            upstream_errors,
            shadow_comparisons,
            shadow_dropped,
            shadow_duration,
            fallbacks,
            route_weight,
            route_stage,
            transitions,
            sticky_missing,
            overrides,
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut open = String::new();
        if prometheus_client::encoding::text::encode(&mut open, &self.registry).is_err() {
            // Encoding into a String cannot fail; keep the scrape answerable anyway.
            let _ = writeln!(open, "# metrics encoding failed");
        }
        prometheus_text(&open)
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// prometheus-client writes OpenMetrics text; SPEC asks for the Prometheus
/// text format. For what strangler exposes they differ in three ways: a
/// counter's `# HELP` and `# TYPE` lines name the family without `_total`
/// (its samples have it), OpenMetrics may add `# UNIT` lines, and it ends
/// with `# EOF`. Samples are the same in both.
fn prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 8 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match comment {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push_str(&rest[name.len()..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The request metrics of one route and upstream, resolved when a snapshot
/// is built: recording a request then costs no label hashing, only a short
/// scan of the status codes seen so far.
pub struct RequestMetrics {
    route: Name,
    upstream: Name,
    duration: Histogram,
    requests: Family<RequestLabels, Counter>,
    /// `strangler_requests_total` per status code, a handful per pair.
    by_code: std::sync::RwLock<Vec<(u16, Counter)>>,
}

impl RequestMetrics {
    pub fn new(metrics: &Metrics, route: &Name, upstream: &Name) -> RequestMetrics {
        let duration = metrics
            .request_duration
            .get_or_create(&RouteUpstreamLabels {
                route: route.clone(),
                upstream: upstream.clone(),
            })
            .clone();
        RequestMetrics {
            route: route.clone(),
            upstream: upstream.clone(),
            duration,
            requests: metrics.requests.clone(),
            by_code: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Counts one answered request and its duration.
    pub fn record(&self, code: u16, elapsed: std::time::Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let known = self
            .by_code
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, counter)| counter.inc());
        if known.is_none() {
            let counter = self
                .requests
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    upstream: self.upstream.clone(),
                    code,
                })
                .clone();
            counter.inc();
            self.by_code
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((code, counter));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_prometheus_text_not_openmetrics() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: Name::from("orders"),
                upstream: Name::from("legacy"),
                code: 200,
            })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE strangler_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP strangler_requests_total Client requests"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"strangler_requests_total{route="orders",upstream="legacy",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE strangler_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
