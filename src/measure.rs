//! Measure: which endpoints carry the traffic and the time (SPEC §6).
//!
//! Every client request is counted per route, endpoint template and side:
//! requests, errors, response bytes (from `content-length` when known) and
//! latency. Lookups take a read lock on a map of `Arc`ed counters that are
//! updated with atomics; only a request to a template never seen before
//! takes the write lock. Every 10 seconds [`Measure::flush`] hands the
//! increments to the store (`endpoint_stats`, cumulative across restarts)
//! and one 10-second aggregate per route and side (`aggregates`, the time
//! series behind the dashboard's charts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::rollout::window::Side;
use crate::store::{AggregateRow, EndpointStatRow};

/// The resolution of the stored time series.
pub const BUCKET: Duration = Duration::from_secs(10);

/// Counters of one side of one endpoint template.
struct SideCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Latency since the last flush (reset at each flush).
    latency_us: Mutex<Histogram<u64>>,
    /// Latency since the start (for the API).
    total_latency_us: Mutex<Histogram<u64>>,
    /// What the last flush already handed to the store.
    flushed: Mutex<[u64; 4]>,
}

impl SideCounters {
    fn new() -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("static histogram bounds are valid")
        };
        SideCounters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_us: Mutex::new(histogram()),
            total_latency_us: Mutex::new(histogram()),
            flushed: Mutex::new([0; 4]),
        }
    }
}

struct Counters {
    legacy: SideCounters,
    candidate: SideCounters,
}

impl Counters {
    fn side(&self, side: Side) -> &SideCounters {
        match side {
            Side::Legacy => &self.legacy,
            Side::Candidate => &self.candidate,
        }
    }
}

type Key = (Arc<str>, Arc<str>);

/// Per-endpoint traffic of the whole proxy.
pub struct Measure {
    /// Looked up on every request: foldhash instead of SipHash (the keys
    /// are bounded by `max_endpoints`, so flooding is not a concern).
    endpoints: RwLock<HashMap<Key, Arc<Counters>, foldhash::fast::RandomState>>,
    started: tokio::time::Instant,
}

impl Default for Measure {
    fn default() -> Self {
        Measure {
            endpoints: RwLock::new(HashMap::default()),
            started: tokio::time::Instant::now(),
        }
    }
}

/// One side of one endpoint, as `GET /api/endpoints` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideView {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One endpoint template, as `GET /api/endpoints` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointView {
    pub route: String,
    pub endpoint: String,
    pub requests: u64,
    pub rps: f64,
    pub error_rate: Option<f64>,
    pub bytes: u64,
    /// Seconds spent answering it (both sides).
    pub time_seconds: f64,
    /// Its share of the total latency-seconds of the proxy.
    pub share: f64,
    pub legacy: SideView,
    pub candidate: SideView,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Measure {
    /// Counts one client request.
    pub fn record(
        &self,
        route: &Arc<str>,
        endpoint: Arc<str>,
        side: Side,
        latency: Duration,
        error: bool,
        bytes: u64,
    ) {
        let counters = self.counters(route, endpoint);
        let side = counters.side(side);
        side.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            side.errors.fetch_add(1, Ordering::Relaxed);
        }
        side.bytes.fetch_add(bytes, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        side.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        lock(&side.latency_us).saturating_record(micros);
        lock(&side.total_latency_us).saturating_record(micros);
    }

    fn counters(&self, route: &Arc<str>, endpoint: Arc<str>) -> Arc<Counters> {
        let key = (route.clone(), endpoint);
        if let Some(found) = self
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return found.clone();
        }
        let mut endpoints = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        endpoints
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Counters {
                    legacy: SideCounters::new(),
                    candidate: SideCounters::new(),
                })
            })
            .clone()
    }

    /// Every endpoint since the start, ranked by its share of total time.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        let elapsed = self.started.elapsed().as_secs_f64().max(1.0);
        let endpoints = self.endpoints.read().unwrap_or_else(|p| p.into_inner());
        let mut views: Vec<EndpointView> = endpoints
            .iter()
            .map(|((route, endpoint), c)| {
                let side = |s: &SideCounters| {
                    let h = lock(&s.total_latency_us);
                    let requests = s.requests.load(Ordering::Relaxed);
                    let errors = s.errors.load(Ordering::Relaxed);
                    SideView {
                        requests,
                        errors,
                        error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
                        p50_ms: (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64 / 1000.0),
                        p99_ms: (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0),
                    }
                };
                let (legacy, candidate) = (side(&c.legacy), side(&c.candidate));
                let requests = legacy.requests + candidate.requests;
                let errors = legacy.errors + candidate.errors;
                let time_us = c.legacy.latency_sum_us.load(Ordering::Relaxed)
                    + c.candidate.latency_sum_us.load(Ordering::Relaxed);
                EndpointView {
                    route: route.to_string(),
                    endpoint: endpoint.to_string(),
                    requests,
                    rps: requests as f64 / elapsed,
                    error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
                    bytes: c.legacy.bytes.load(Ordering::Relaxed)
                        + c.candidate.bytes.load(Ordering::Relaxed),
                    time_seconds: time_us as f64 / 1e6,
                    share: 0.0,
                    legacy,
                    candidate,
                }
            })
            .collect();
        let total: f64 = views.iter().map(|v| v.time_seconds).sum();
        for v in &mut views {
            v.share = if total > 0.0 {
                v.time_seconds / total
            } else {
                0.0
            };
        }
        views.sort_by(|a, b| {
            b.share
                .total_cmp(&a.share)
                .then_with(|| a.endpoint.cmp(&b.endpoint))
        });
        views
    }

    /// The increments since the last flush, as store rows: per-endpoint
    /// totals and one aggregate per route and side for `bucket_ms`.
    pub fn flush(&self, bucket_ms: i64) -> (Vec<EndpointStatRow>, Vec<AggregateRow>) {
        let endpoints = self.endpoints.read().unwrap_or_else(|p| p.into_inner());
        let mut stats = Vec::new();
        let mut per_route: HashMap<(String, &'static str), (u64, u64, Histogram<u64>)> =
            HashMap::new();
        for ((route, endpoint), c) in endpoints.iter() {
            for (name, side) in [("legacy", &c.legacy), ("candidate", &c.candidate)] {
                let now = [
                    side.requests.load(Ordering::Relaxed),
                    side.errors.load(Ordering::Relaxed),
                    side.bytes.load(Ordering::Relaxed),
                    side.latency_sum_us.load(Ordering::Relaxed),
                ];
                let mut flushed = lock(&side.flushed);
                let delta: Vec<u64> = now
                    .iter()
                    .zip(flushed.iter())
                    .map(|(n, f)| n.saturating_sub(*f))
                    .collect();
                if delta[0] == 0 {
                    continue;
                }
                *flushed = now;
                let mut histogram = lock(&side.latency_us);
                let quantile = |q: f64| {
                    (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1000.0)
                };
                stats.push(EndpointStatRow {
                    route: route.to_string(),
                    endpoint: endpoint.to_string(),
                    side: name.to_string(),
                    requests: delta[0],
                    errors: delta[1],
                    bytes: delta[2],
                    latency_sum_ms: delta[3] as f64 / 1000.0,
                    p50_ms: quantile(0.5),
                    p99_ms: quantile(0.99),
                    last_bucket_ms: bucket_ms,
                });
                let entry = per_route
                    .entry((route.to_string(), name))
                    .or_insert_with(|| {
                        (
                            0,
                            0,
                            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                                .expect("static histogram bounds are valid"),
                        )
                    });
                entry.0 += delta[0];
                entry.1 += delta[1];
                let _ = entry.2.add(&*histogram);
                histogram.reset();
            }
        }
        let aggregates = per_route
            .into_iter()
            .map(|((route, side), (requests, errors, h))| AggregateRow {
                route,
                bucket_start_ms: bucket_ms,
                side: side.to_string(),
                requests,
                errors,
                p50_ms: (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64 / 1000.0),
                p99_ms: (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0),
                compared: 0,
                matched: 0,
                mismatched: 0,
            })
            .collect();
        (stats, aggregates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_are_ranked_by_share_of_time_and_flushed_as_increments() {
        let m = Measure::default();
        let route: Arc<str> = Arc::from("orders");
        for _ in 0..10 {
            m.record(
                &route,
                Arc::from("GET /orders/{id}"),
                Side::Legacy,
                Duration::from_millis(10),
                false,
                100,
            );
        }
        m.record(
            &route,
            Arc::from("GET /orders/export"),
            Side::Candidate,
            Duration::from_millis(500),
            true,
            5,
        );
        let views = m.endpoints();
        assert_eq!(
            views[0].endpoint, "GET /orders/export",
            "500 ms beats 10 × 10 ms"
        );
        assert!(
            (views[0].share - 500.0 / 600.0).abs() < 1e-3,
            "{}",
            views[0].share
        );
        assert_eq!(views[1].bytes, 1000);
        assert_eq!(views[0].error_rate, Some(1.0));

        let (stats, aggregates) = m.flush(10_000);
        assert_eq!(stats.len(), 2);
        assert_eq!(aggregates.len(), 2, "one per route and side");
        let (again, _) = m.flush(20_000);
        assert!(again.is_empty(), "nothing new since the last flush");
        m.record(
            &route,
            Arc::from("GET /orders/{id}"),
            Side::Legacy,
            Duration::from_millis(1),
            false,
            1,
        );
        let (third, _) = m.flush(30_000);
        assert_eq!((third.len(), third[0].requests), (1, 1));
    }
}
