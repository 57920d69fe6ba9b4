//! Per-route, per-side counters of the current stage's window.
//!
//! Recording is on the request path, so counters are atomics; latencies go
//! into an HDR histogram (3 significant digits, 1 µs … 1 h) behind a
//! short, uncontended mutex. A window is replaced, not cleared, when the
//! route changes stage, so a reader never sees half-reset numbers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Which upstream of a route served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Legacy,
    Candidate,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::Candidate => "candidate",
        }
    }
}

/// Counters of one side.
pub struct SideWindow {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Default for SideWindow {
    fn default() -> Self {
        SideWindow {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("static histogram bounds are valid"),
            ),
        }
    }
}

/// What `GET /api/routes` shows of one side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl SideWindow {
    pub fn record(&self, latency: Duration, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Ok(mut h) = self.latency_us.lock() {
            h.saturating_record(micros);
        }
    }

    pub fn summary(&self) -> SideSummary {
        let requests = self.requests.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let (p50, p99) = match self.latency_us.lock() {
            Ok(h) if !h.is_empty() => (
                Some(h.value_at_quantile(0.5) as f64 / 1000.0),
                Some(h.value_at_quantile(0.99) as f64 / 1000.0),
            ),
            _ => (None, None),
        };
        SideSummary {
            requests,
            errors,
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            p50_ms: p50,
            p99_ms: p99,
        }
    }
}

/// Shadow counters of one endpoint template.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EndpointShadow {
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub noise: u64,
    /// Mirrors the candidate never answered (timeout, transport error).
    pub failed: u64,
}

impl EndpointShadow {
    /// `(matched + noise) / (compared + failed)`.
    pub fn match_rate(&self) -> Option<f64> {
        let denominator = self.compared + self.failed;
        (denominator > 0).then(|| (self.matched + self.noise) as f64 / denominator as f64)
    }
}

/// Most endpoint templates tracked per window; `max_endpoints` already
/// bounds them, this guards memory whatever the configuration says.
const MAX_TRACKED_ENDPOINTS: usize = 10_000;

/// Shadow comparison counters. Comparisons happen off the request path, so
/// the per-endpoint map sits behind a mutex.
#[derive(Default)]
pub struct ShadowWindow {
    pub compared: AtomicU64,
    pub matched: AtomicU64,
    pub mismatched: AtomicU64,
    pub noise: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    endpoints: Mutex<HashMap<Arc<str>, EndpointShadow>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShadowSummary {
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub noise: u64,
    pub dropped: u64,
    pub match_rate: Option<f64>,
}

impl ShadowWindow {
    /// Records one comparison: `match`, `noise` or `mismatch`.
    pub fn record_comparison(&self, endpoint: &Arc<str>, result: &str) {
        self.compared.fetch_add(1, Ordering::Relaxed);
        let counter = match result {
            "match" => &self.matched,
            "noise" => &self.noise,
            _ => &self.mismatched,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.with_endpoint(endpoint, |e| {
            e.compared += 1;
            match result {
                "match" => e.matched += 1,
                "noise" => e.noise += 1,
                _ => e.mismatched += 1,
            }
        });
    }

    /// Records a mirror the candidate never answered.
    pub fn record_failure(&self, endpoint: &Arc<str>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.with_endpoint(endpoint, |e| e.failed += 1);
    }

    fn with_endpoint(&self, endpoint: &Arc<str>, update: impl FnOnce(&mut EndpointShadow)) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counts) = endpoints.get_mut(endpoint) {
            update(counts);
        } else if endpoints.len() < MAX_TRACKED_ENDPOINTS {
            let mut counts = EndpointShadow::default();
            update(&mut counts);
            endpoints.insert(endpoint.clone(), counts);
        }
    }

    /// Per-endpoint counters, by template.
    pub fn endpoints(&self) -> Vec<(Arc<str>, EndpointShadow)> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = endpoints
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn summary(&self) -> ShadowSummary {
        let compared = self.compared.load(Ordering::Relaxed);
        let matched = self.matched.load(Ordering::Relaxed);
        let noise = self.noise.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let denominator = compared + failed;
        ShadowSummary {
            compared,
            matched,
            mismatched: self.mismatched.load(Ordering::Relaxed),
            noise,
            dropped: self.dropped.load(Ordering::Relaxed),
            match_rate: (denominator > 0).then(|| (matched + noise) as f64 / denominator as f64),
        }
    }
}

/// The window of one route's current stage.
#[derive(Default)]
pub struct Window {
    pub legacy: SideWindow,
    pub candidate: SideWindow,
    pub shadow: ShadowWindow,
}

impl Window {
    pub fn side(&self, side: Side) -> &SideWindow {
        match side {
            Side::Legacy => &self.legacy,
            Side::Candidate => &self.candidate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_errors_and_percentiles() {
        let w = SideWindow::default();
        assert_eq!(w.summary().p99_ms, None);
        for i in 1..=100u64 {
            w.record(Duration::from_millis(i), i > 98);
        }
        let s = w.summary();
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 2);
        assert_eq!(s.error_rate, Some(0.02));
        let p50 = s.p50_ms.unwrap();
        let p99 = s.p99_ms.unwrap();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        assert!((98.0..=100.0).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn match_rate_counts_failures_against_the_candidate() {
        let w = ShadowWindow::default();
        let a: Arc<str> = Arc::from("GET /a");
        let b: Arc<str> = Arc::from("GET /b/{id}");
        for _ in 0..6 {
            w.record_comparison(&a, "match");
        }
        w.record_comparison(&a, "noise");
        w.record_comparison(&b, "noise");
        w.record_failure(&b);
        w.record_failure(&b);
        assert_eq!(w.summary().match_rate, Some(0.8));
        let endpoints = w.endpoints();
        assert_eq!(endpoints[0].1.match_rate(), Some(1.0));
        assert_eq!(endpoints[1].1.match_rate(), Some(1.0 / 3.0));
    }
}
