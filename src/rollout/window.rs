//! The counters a route's gates are judged on (SPEC §3).
//!
//! A [`Window`] belongs to one stage of one route: every transition opens a
//! new, empty one (it is replaced, never cleared, so a reader never sees
//! half-reset numbers). It keeps two views of the same traffic:
//! - the **stage totals**, everything since the stage began minus its
//!   `warmup`, on which promotion is judged;
//! - a ring of one-second buckets covering the last `rollback_window`, on
//!   which rollback is judged. Their latencies are kept to 2 significant
//!   digits (1%), the stage totals' to 3.
//!
//! Counts are exact (atomics or integers), not decayed averages, as in
//! linkerd's success-rate window: a gate's Wilson interval needs the real
//! number of trials. Latencies go into HDR histograms (a real histogram,
//! not sorted samples) behind short, uncontended std mutexes: they are held
//! for a few instructions and never across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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

/// How one live request ended, as the gates see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// 5xx, transport error, timeout, fallback, non-zero `grpc-status`.
    pub error: bool,
    /// 4xx (for `max_4xx_rate_increase`).
    pub client_error: bool,
    /// Left out of latency (upgrades, event streams).
    pub no_latency: bool,
}

/// The longest rollback window kept in one-second buckets.
const MAX_RING_SECONDS: u64 = 3600;
/// Most endpoint templates tracked per window (`max_endpoints` already
/// bounds them; this guards memory whatever the configuration says).
const MAX_TRACKED_ENDPOINTS: usize = 10_000;

fn new_histogram() -> Histogram<u64> {
    // 1 µs … 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// A one-second bucket's histogram: 2 significant digits (values within
/// 1%), 3.3 k counters (26 KiB) instead of 23.5 k (188 KiB). The rollback
/// view adds up one per second of `rollback_window`, twice a second; at 3
/// digits that sum was a millisecond of a client worker's time.
fn new_bucket_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static histogram bounds are valid")
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// === impl SideCounts ===

/// Stage totals of one side.
pub struct SideCounts {
    requests: AtomicU64,
    errors: AtomicU64,
    client_errors: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Default for SideCounts {
    fn default() -> Self {
        SideCounts {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            latency_us: Mutex::new(new_histogram()),
        }
    }
}

impl SideCounts {
    fn record(&self, latency: Duration, outcome: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.client_error {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        if !outcome.no_latency {
            lock(&self.latency_us).saturating_record(micros(latency));
        }
    }

    fn stats(&self) -> SideStats {
        SideStats::from_parts(
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.client_errors.load(Ordering::Relaxed),
            &lock(&self.latency_us),
        )
    }
}

/// Counts and latency of one side over some span.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideStats {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    /// Requests with a latency (upgrades and event streams have none).
    pub latency_samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl SideStats {
    fn from_parts(
        requests: u64,
        errors: u64,
        client_errors: u64,
        latency: &Histogram<u64>,
    ) -> Self {
        let (p50_ms, p99_ms) = if latency.is_empty() {
            (None, None)
        } else {
            (
                Some(latency.value_at_quantile(0.5) as f64 / 1000.0),
                Some(latency.value_at_quantile(0.99) as f64 / 1000.0),
            )
        };
        SideStats {
            requests,
            errors,
            client_errors,
            latency_samples: latency.len(),
            p50_ms,
            p99_ms,
        }
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
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

impl From<&SideStats> for SideSummary {
    fn from(s: &SideStats) -> Self {
        SideSummary {
            requests: s.requests,
            errors: s.errors,
            error_rate: s.error_rate(),
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
        }
    }
}

// === impl ShadowCounts ===

/// Shadow counters of one endpoint template (or of a whole route).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointShadow {
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub noise: u64,
    /// Mirrors the candidate never answered (timeout, transport error).
    pub failed: u64,
}

impl EndpointShadow {
    /// `(matched + noise) / (compared + failed)`: a candidate that never
    /// answers never passes.
    pub fn match_rate(&self) -> Option<f64> {
        let trials = self.trials();
        (trials > 0).then(|| self.successes() as f64 / trials as f64)
    }

    pub fn trials(&self) -> u64 {
        self.compared + self.failed
    }

    pub fn successes(&self) -> u64 {
        self.matched + self.noise
    }

    fn add_result(&mut self, result: &str) {
        self.compared += 1;
        match result {
            "match" => self.matched += 1,
            "noise" => self.noise += 1,
            _ => self.mismatched += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: &EndpointShadow) {
        self.compared += other.compared;
        self.matched += other.matched;
        self.mismatched += other.mismatched;
        self.noise += other.noise;
        self.failed += other.failed;
    }
}

/// Shadow counters of a stage. Comparisons finish off the request path, so
/// plain mutexes are fine here.
pub struct ShadowWindow {
    totals: Mutex<EndpointShadow>,
    pub dropped: AtomicU64,
    endpoints: Mutex<HashMap<Arc<str>, EndpointShadow>>,
    /// Latency of mirrored candidate requests (for `max_p99` in `shadow`,
    /// where the candidate has no live traffic).
    mirror_latency_us: Mutex<Histogram<u64>>,
}

/// What `GET /api/routes` shows of the shadow.
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
    fn new() -> Self {
        ShadowWindow {
            totals: Mutex::new(EndpointShadow::default()),
            dropped: AtomicU64::new(0),
            endpoints: Mutex::new(HashMap::new()),
            mirror_latency_us: Mutex::new(new_histogram()),
        }
    }

    fn endpoint(&self, endpoint: &Arc<str>, update: impl FnOnce(&mut EndpointShadow)) {
        let mut endpoints = lock(&self.endpoints);
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
        let mut all: Vec<_> = lock(&self.endpoints)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn totals(&self) -> EndpointShadow {
        *lock(&self.totals)
    }

    pub fn summary(&self) -> ShadowSummary {
        let t = self.totals();
        ShadowSummary {
            compared: t.compared,
            matched: t.matched,
            mismatched: t.mismatched,
            noise: t.noise,
            dropped: self.dropped.load(Ordering::Relaxed),
            match_rate: t.match_rate(),
        }
    }

    /// p99 of mirrored candidate requests, with the number of samples.
    pub fn mirror_p99(&self) -> (u64, Option<f64>) {
        let h = lock(&self.mirror_latency_us);
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
        (h.len(), p99)
    }
}

// === impl Window ===

/// One second of traffic, for the rollback window.
struct Bucket {
    second: u64,
    legacy: Tally,
    candidate: Tally,
    shadow: EndpointShadow,
}

/// Counts of one side in one bucket. The histogram is shared so that the
/// rollback view can take the buckets under the ring's lock by reference
/// and add them up after releasing it: requests record into the current
/// bucket under that lock and must not wait for the sum. A request that
/// records while a sum still holds the current bucket copies it (26 KiB),
/// once.
#[derive(Clone)]
struct Tally {
    requests: u64,
    errors: u64,
    client_errors: u64,
    latency_us: Option<Arc<Histogram<u64>>>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            requests: 0,
            errors: 0,
            client_errors: 0,
            latency_us: None,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
        self.requests += 1;
        self.errors += u64::from(outcome.error);
        self.client_errors += u64::from(outcome.client_error);
        if !outcome.no_latency {
            let histogram = self
                .latency_us
                .get_or_insert_with(|| Arc::new(new_bucket_histogram()));
            Arc::make_mut(histogram).saturating_record(micros(latency));
        }
    }
}

/// The stage's window of one route.
pub struct Window {
    opened_at: Instant,
    /// Wall-clock opening time (ms since the epoch), for the API and the store.
    pub opened_at_ms: i64,
    warmup: Duration,
    ring_seconds: u64,
    pub legacy: SideCounts,
    pub candidate: SideCounts,
    pub shadow: ShadowWindow,
    recent: Mutex<VecDeque<Bucket>>,
}

impl Default for Window {
    fn default() -> Self {
        Window::open(
            Duration::ZERO,
            Duration::from_secs(30),
            crate::runtime::now_ms(),
        )
    }
}

/// The counts over some span of a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub legacy: SideStats,
    pub candidate: SideStats,
    pub shadow: EndpointShadow,
}

impl Window {
    /// A new, empty window opened now. `rollback_window` sizes the ring.
    pub fn open(warmup: Duration, rollback_window: Duration, opened_at_ms: i64) -> Window {
        Window {
            opened_at: Instant::now(),
            opened_at_ms,
            warmup,
            ring_seconds: rollback_window.as_secs().clamp(1, MAX_RING_SECONDS),
            legacy: SideCounts::default(),
            candidate: SideCounts::default(),
            shadow: ShadowWindow::new(),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// How long the stage has lasted.
    pub fn age(&self) -> Duration {
        self.opened_at.elapsed()
    }

    /// Whether the stage is still warming up (nothing is counted then).
    pub fn warming_up(&self) -> bool {
        self.age() < self.warmup
    }

    pub fn side(&self, side: Side) -> &SideCounts {
        match side {
            Side::Legacy => &self.legacy,
            Side::Candidate => &self.candidate,
        }
    }

    /// The current one-second bucket, created (and the oldest dropped) as
    /// time moves on.
    fn with_bucket(&self, update: impl FnOnce(&mut Bucket)) {
        let second = self.opened_at.elapsed().as_secs();
        let mut ring = lock(&self.recent);
        if ring.back().is_none_or(|b| b.second != second) {
            ring.push_back(Bucket {
                second,
                legacy: Tally::new(),
                candidate: Tally::new(),
                shadow: EndpointShadow::default(),
            });
            while ring
                .front()
                .is_some_and(|b| b.second + self.ring_seconds <= second)
            {
                ring.pop_front();
            }
        }
        if let Some(bucket) = ring.back_mut() {
            update(bucket);
        }
    }

    /// Records one live request.
    pub fn record(&self, side: Side, latency: Duration, outcome: Outcome) {
        if self.warming_up() {
            return;
        }
        self.side(side).record(latency, outcome);
        self.with_bucket(|b| match side {
            Side::Legacy => b.legacy.record(latency, outcome),
            Side::Candidate => b.candidate.record(latency, outcome),
        });
    }

    /// Records one comparison: `match`, `noise` or `mismatch`.
    pub fn record_comparison(&self, endpoint: &Arc<str>, result: &str) {
        if self.warming_up() {
            return;
        }
        lock(&self.shadow.totals).add_result(result);
        self.shadow.endpoint(endpoint, |e| e.add_result(result));
        self.with_bucket(|b| b.shadow.add_result(result));
    }

    /// Records a mirror the candidate never answered.
    pub fn record_failure(&self, endpoint: &Arc<str>) {
        if self.warming_up() {
            return;
        }
        lock(&self.shadow.totals).failed += 1;
        self.shadow.endpoint(endpoint, |e| e.failed += 1);
        self.with_bucket(|b| b.shadow.failed += 1);
    }

    /// Records the latency of a mirrored candidate request.
    pub fn record_mirror_latency(&self, latency: Duration) {
        if !self.warming_up() {
            lock(&self.shadow.mirror_latency_us).saturating_record(micros(latency));
        }
    }

    /// Everything since the stage began (minus warmup): promotion's view.
    pub fn stage(&self) -> WindowStats {
        WindowStats {
            legacy: self.legacy.stats(),
            candidate: self.candidate.stats(),
            shadow: self.shadow.totals(),
        }
    }

    /// The last `span` (at most the ring's length): rollback's view.
    pub fn recent(&self, span: Duration) -> WindowStats {
        let (legacy, candidate, shadow) = self.recent_sums(span);
        WindowStats {
            legacy: legacy.stats(),
            candidate: candidate.stats(),
            shadow,
        }
    }

    /// The last `span` as summable counts and histograms.
    fn recent_sums(&self, span: Duration) -> (SideSum, SideSum, EndpointShadow) {
        let now = self.opened_at.elapsed().as_secs();
        let span = span.as_secs().clamp(1, self.ring_seconds);
        let mut shadow = EndpointShadow::default();
        // Under the lock only the tallies are taken (their histograms by
        // reference); the histograms are added up after it is released.
        let tallies: Vec<(Tally, Tally)> = {
            let ring = lock(&self.recent);
            ring.iter()
                .filter(|b| b.second + span > now)
                .map(|bucket| {
                    shadow.merge(&bucket.shadow);
                    (bucket.legacy.clone(), bucket.candidate.clone())
                })
                .collect()
        };
        // At the buckets' precision, so that adding one is a plain walk
        // over equal counter arrays.
        let mut legacy = SideSum::with_latency(new_bucket_histogram());
        let mut candidate = SideSum::with_latency(new_bucket_histogram());
        for (bucket_legacy, bucket_candidate) in &tallies {
            for (sum, tally) in [
                (&mut legacy, bucket_legacy),
                (&mut candidate, bucket_candidate),
            ] {
                sum.requests += tally.requests;
                sum.errors += tally.errors;
                sum.client_errors += tally.client_errors;
                if let Some(h) = &tally.latency_us {
                    let _ = sum.latency_us.add(h.as_ref());
                }
            }
        }
        (legacy, candidate, shadow)
    }

    /// Everything the gates read, in a form that adds up across the
    /// instances of a fleet: stage totals, the last `rollback_window`, the
    /// per-endpoint shadow counts and the mirrored latency.
    pub fn figures(&self, rollback_window: Duration) -> Figures {
        let (recent_legacy, recent_candidate, recent_shadow) = self.recent_sums(rollback_window);
        Figures {
            opened_at_ms: self.opened_at_ms,
            legacy: SideSum::of(&self.legacy),
            candidate: SideSum::of(&self.candidate),
            shadow: self.shadow.totals(),
            dropped: self.shadow.dropped.load(Ordering::Relaxed),
            endpoints: self
                .shadow
                .endpoints()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            recent_legacy,
            recent_candidate,
            recent_shadow,
            mirror_latency_us: lock(&self.shadow.mirror_latency_us).clone(),
        }
    }

    /// The stage totals in a form the store keeps, so they survive a restart.
    pub fn persisted(&self) -> PersistedWindow {
        PersistedWindow {
            opened_at_ms: self.opened_at_ms,
            legacy: PersistedSide::of(&self.legacy),
            candidate: PersistedSide::of(&self.candidate),
            shadow: self.shadow.totals(),
            dropped: self.shadow.dropped.load(Ordering::Relaxed),
            endpoints: self
                .shadow
                .endpoints()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// A new, empty window of a stage that began at `opened_at_ms` (e.g.
    /// on another instance of a fleet): its age counts from then.
    pub fn open_at(
        warmup: Duration,
        rollback_window: Duration,
        opened_at_ms: i64,
        now_ms: i64,
    ) -> Window {
        let mut window = Window::open(warmup, rollback_window, opened_at_ms);
        let age = Duration::from_millis(u64::try_from(now_ms - opened_at_ms).unwrap_or(0));
        window.opened_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        window
    }

    /// A window restored from the store: its totals and its age.
    pub fn restore(
        saved: &PersistedWindow,
        warmup: Duration,
        rollback_window: Duration,
        now_ms: i64,
    ) -> Window {
        let mut window = Window::open(warmup, rollback_window, saved.opened_at_ms);
        let age = Duration::from_millis(u64::try_from(now_ms - saved.opened_at_ms).unwrap_or(0));
        window.opened_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        saved.legacy.restore_into(&window.legacy);
        saved.candidate.restore_into(&window.candidate);
        *lock(&window.shadow.totals) = saved.shadow;
        window
            .shadow
            .dropped
            .store(saved.dropped, Ordering::Relaxed);
        let mut endpoints = lock(&window.shadow.endpoints);
        for (k, v) in &saved.endpoints {
            endpoints.insert(Arc::from(k.as_str()), *v);
        }
        drop(endpoints);
        window
    }
}

// === impl Figures ===

/// One side's counts and latency histogram, summable.
#[derive(Debug, Clone)]
pub struct SideSum {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    latency_us: Histogram<u64>,
}

impl Default for SideSum {
    fn default() -> Self {
        SideSum::with_latency(new_histogram())
    }
}

impl SideSum {
    fn with_latency(latency_us: Histogram<u64>) -> Self {
        SideSum {
            requests: 0,
            errors: 0,
            client_errors: 0,
            latency_us,
        }
    }

    fn of(side: &SideCounts) -> Self {
        SideSum {
            requests: side.requests.load(Ordering::Relaxed),
            errors: side.errors.load(Ordering::Relaxed),
            client_errors: side.client_errors.load(Ordering::Relaxed),
            latency_us: lock(&side.latency_us).clone(),
        }
    }

    fn add(&mut self, other: &SideSum) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.client_errors += other.client_errors;
        let _ = self.latency_us.add(&other.latency_us);
    }

    pub fn stats(&self) -> SideStats {
        SideStats::from_parts(
            self.requests,
            self.errors,
            self.client_errors,
            &self.latency_us,
        )
    }

    fn persisted(&self) -> PersistedSide {
        PersistedSide {
            requests: self.requests,
            errors: self.errors,
            client_errors: self.client_errors,
            latency_hdr_base64: encode_histogram(&self.latency_us),
        }
    }

    fn from_persisted(saved: &PersistedSide) -> Self {
        let mut sum = SideSum {
            requests: saved.requests,
            errors: saved.errors,
            client_errors: saved.client_errors,
            latency_us: new_histogram(),
        };
        if let Some(h) = decode_histogram(&saved.latency_hdr_base64) {
            let _ = sum.latency_us.add(&h);
        }
        sum
    }
}

fn encode_histogram(histogram: &Histogram<u64>) -> String {
    let mut encoded = Vec::new();
    let _ = V2Serializer::new().serialize(histogram, &mut encoded);
    base64::engine::general_purpose::STANDARD.encode(encoded)
}

fn decode_histogram(text: &str) -> Option<Histogram<u64>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| {
            Deserializer::new()
                .deserialize::<u64, _>(&mut bytes.as_slice())
                .ok()
        })
}

/// What the gates read of a window, in a form that adds up: one
/// instance's live window ([`Window::figures`]), another instance's report
/// ([`Figures::from_report`]), or the sum over a fleet ([`Figures::add`]).
#[derive(Debug, Clone)]
pub struct Figures {
    /// The stage's identity: instances of a fleet that apply the same
    /// transition open their windows at the same time, so only reports of
    /// the current stage are summed.
    pub opened_at_ms: i64,
    pub legacy: SideSum,
    pub candidate: SideSum,
    pub shadow: EndpointShadow,
    pub dropped: u64,
    /// Shadow counts per endpoint template, by template.
    pub endpoints: std::collections::BTreeMap<String, EndpointShadow>,
    /// The last `rollback_window`, as of the report.
    pub recent_legacy: SideSum,
    pub recent_candidate: SideSum,
    pub recent_shadow: EndpointShadow,
    mirror_latency_us: Histogram<u64>,
}

impl Figures {
    /// Adds another instance's figures of the same stage.
    pub fn add(&mut self, other: &Figures) {
        self.legacy.add(&other.legacy);
        self.candidate.add(&other.candidate);
        self.shadow.merge(&other.shadow);
        self.dropped += other.dropped;
        for (endpoint, counts) in &other.endpoints {
            self.endpoints
                .entry(endpoint.clone())
                .or_default()
                .merge(counts);
        }
        self.recent_legacy.add(&other.recent_legacy);
        self.recent_candidate.add(&other.recent_candidate);
        self.recent_shadow.merge(&other.recent_shadow);
        let _ = self.mirror_latency_us.add(&other.mirror_latency_us);
    }

    /// Promotion's view: the stage totals.
    pub fn stage(&self) -> WindowStats {
        WindowStats {
            legacy: self.legacy.stats(),
            candidate: self.candidate.stats(),
            shadow: self.shadow,
        }
    }

    /// Rollback's view: the last `rollback_window`.
    pub fn recent(&self) -> WindowStats {
        WindowStats {
            legacy: self.recent_legacy.stats(),
            candidate: self.recent_candidate.stats(),
            shadow: self.recent_shadow,
        }
    }

    /// Per-endpoint shadow counts, by template.
    pub fn endpoints(&self) -> Vec<(Arc<str>, EndpointShadow)> {
        self.endpoints
            .iter()
            .map(|(k, v)| (Arc::from(k.as_str()), *v))
            .collect()
    }

    /// p99 of mirrored candidate requests, with the number of samples.
    pub fn mirror_p99(&self) -> (u64, Option<f64>) {
        let h = &self.mirror_latency_us;
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
        (h.len(), p99)
    }

    pub fn shadow_summary(&self) -> ShadowSummary {
        let t = self.shadow;
        ShadowSummary {
            compared: t.compared,
            matched: t.matched,
            mismatched: t.mismatched,
            noise: t.noise,
            dropped: self.dropped,
            match_rate: t.match_rate(),
        }
    }

    /// The compact form an instance publishes to its fleet every second.
    pub fn report(&self) -> WindowReport {
        WindowReport {
            opened_at_ms: self.opened_at_ms,
            legacy: self.legacy.persisted(),
            candidate: self.candidate.persisted(),
            shadow: self.shadow,
            dropped: self.dropped,
            endpoints: self
                .endpoints
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            recent: RecentReport {
                legacy: self.recent_legacy.persisted(),
                candidate: self.recent_candidate.persisted(),
                shadow: self.recent_shadow,
            },
            mirror_hdr_base64: encode_histogram(&self.mirror_latency_us),
        }
    }

    pub fn from_report(report: &WindowReport) -> Figures {
        let mut mirror_latency_us = new_histogram();
        if let Some(h) = decode_histogram(&report.mirror_hdr_base64) {
            let _ = mirror_latency_us.add(&h);
        }
        Figures {
            opened_at_ms: report.opened_at_ms,
            legacy: SideSum::from_persisted(&report.legacy),
            candidate: SideSum::from_persisted(&report.candidate),
            shadow: report.shadow,
            dropped: report.dropped,
            endpoints: report.endpoints.iter().cloned().collect(),
            recent_legacy: SideSum::from_persisted(&report.recent.legacy),
            recent_candidate: SideSum::from_persisted(&report.recent.candidate),
            recent_shadow: report.recent.shadow,
            mirror_latency_us,
        }
    }
}

/// One instance's window of one route as published to its fleet
/// (`Store::write_window`): the stage totals with their latency histograms
/// (HdrHistogram V2, base64), and a summary of its last `rollback_window`
/// computed at the time of the report, since the one-second ring itself
/// stays local. Rollback is thus judged on each instance's last report
/// (at most a second or two old), summed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowReport {
    pub opened_at_ms: i64,
    pub legacy: PersistedSide,
    pub candidate: PersistedSide,
    pub shadow: EndpointShadow,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub endpoints: Vec<(String, EndpointShadow)>,
    pub recent: RecentReport,
    #[serde(default)]
    pub mirror_hdr_base64: String,
}

impl WindowReport {
    /// The stage totals, as a restart restores them.
    pub fn persisted(&self) -> PersistedWindow {
        PersistedWindow {
            opened_at_ms: self.opened_at_ms,
            legacy: self.legacy.clone(),
            candidate: self.candidate.clone(),
            shadow: self.shadow,
            dropped: self.dropped,
            endpoints: self.endpoints.clone(),
        }
    }
}

/// The last `rollback_window` of a [`WindowReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecentReport {
    pub legacy: PersistedSide,
    pub candidate: PersistedSide,
    pub shadow: EndpointShadow,
}

/// Stage totals as stored (`RouteStateRow.window`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistedWindow {
    pub opened_at_ms: i64,
    pub legacy: PersistedSide,
    pub candidate: PersistedSide,
    pub shadow: EndpointShadow,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub endpoints: Vec<(String, EndpointShadow)>,
}

/// One side's totals as stored; the histogram in HdrHistogram's V2 format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistedSide {
    pub requests: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub latency_hdr_base64: String,
}

impl PersistedSide {
    fn of(side: &SideCounts) -> Self {
        let mut encoded = Vec::new();
        let _ = V2Serializer::new().serialize(&lock(&side.latency_us), &mut encoded);
        PersistedSide {
            requests: side.requests.load(Ordering::Relaxed),
            errors: side.errors.load(Ordering::Relaxed),
            client_errors: side.client_errors.load(Ordering::Relaxed),
            latency_hdr_base64: base64::engine::general_purpose::STANDARD.encode(encoded),
        }
    }

    fn restore_into(&self, side: &SideCounts) {
        side.requests.store(self.requests, Ordering::Relaxed);
        side.errors.store(self.errors, Ordering::Relaxed);
        side.client_errors
            .store(self.client_errors, Ordering::Relaxed);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&self.latency_hdr_base64)
            .ok()
            .and_then(|bytes| {
                Deserializer::new()
                    .deserialize::<u64, _>(&mut bytes.as_slice())
                    .ok()
            });
        if let Some(histogram) = decoded {
            let _ = lock(&side.latency_us).add(&histogram);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Outcome {
        Outcome::default()
    }

    fn error() -> Outcome {
        Outcome {
            error: true,
            ..Outcome::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stage_totals_count_everything_and_percentiles_come_from_the_histogram() {
        let w = Window::open(Duration::ZERO, Duration::from_secs(30), 0);
        for i in 1..=100u64 {
            w.record(
                Side::Candidate,
                Duration::from_millis(i),
                if i > 98 { error() } else { ok() },
            );
        }
        let s = w.stage().candidate;
        assert_eq!((s.requests, s.errors, s.latency_samples), (100, 2, 100));
        assert_eq!(s.error_rate(), Some(0.02));
        let (p50, p99) = (s.p50_ms.unwrap(), s.p99_ms.unwrap());
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        assert!((98.0..=100.0).contains(&p99), "p99 {p99}");
        assert_eq!(w.stage().legacy.requests, 0);
    }

    #[test]
    fn a_request_recorded_while_a_sum_holds_the_bucket_goes_to_the_bucket_only() {
        let mut current = Tally::new();
        current.record(Duration::from_millis(5), ok());
        // What `recent_sums` takes under the ring's lock: the histogram by reference.
        let taken = current.clone();
        let shared = |t: &Tally| t.latency_us.as_ref().map(Arc::as_ptr);
        assert_eq!(shared(&taken), shared(&current), "taken without a copy");
        current.record(Duration::from_millis(7), error());
        assert_ne!(
            shared(&taken),
            shared(&current),
            "copied on the next record"
        );
        let samples = |t: &Tally| t.latency_us.as_ref().map_or(0, |h| h.len());
        assert_eq!((taken.requests, taken.errors, samples(&taken)), (1, 0, 1));
        assert_eq!(
            (current.requests, current.errors, samples(&current)),
            (2, 1, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rollback_view_keeps_latencies_within_one_percent_across_seconds() {
        let w = Window::open(Duration::ZERO, Duration::from_secs(30), 0);
        for second in 0..3u64 {
            for i in 1..=100u64 {
                w.record(
                    Side::Legacy,
                    Duration::from_micros(i * 1_000 + second),
                    ok(),
                );
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let recent = w.recent(Duration::from_secs(30)).legacy;
        assert_eq!((recent.requests, recent.latency_samples), (300, 300));
        let (p50, p99) = (recent.p50_ms.unwrap(), recent.p99_ms.unwrap());
        assert!((50.0..=50.5).contains(&p50), "p50 {p50}");
        assert!((99.0..=100.0).contains(&p99), "p99 {p99}");
        // The stage totals keep 3 digits.
        let stage_p99 = w.stage().legacy.p99_ms.unwrap();
        assert!((99.0..=99.2).contains(&stage_p99), "stage p99 {stage_p99}");
    }

    #[tokio::test(start_paused = true)]
    async fn samples_age_out_of_the_rollback_window() {
        let w = Window::open(Duration::ZERO, Duration::from_secs(10), 0);
        for _ in 0..5 {
            w.record(Side::Candidate, Duration::from_millis(1), error());
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        w.record(Side::Candidate, Duration::from_millis(1), ok());
        assert_eq!(w.recent(Duration::from_secs(10)).candidate.requests, 6);
        assert_eq!(w.recent(Duration::from_secs(5)).candidate.requests, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        let recent = w.recent(Duration::from_secs(10)).candidate;
        assert_eq!(
            (recent.requests, recent.errors),
            (1, 0),
            "the errors aged out"
        );
        assert_eq!(
            w.stage().candidate.requests,
            6,
            "the stage keeps everything"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_counts_during_warmup() {
        let w = Window::open(Duration::from_secs(5), Duration::from_secs(30), 0);
        w.record(Side::Legacy, Duration::from_millis(1), ok());
        w.record_comparison(&Arc::from("GET /a"), "mismatch");
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(Side::Legacy, Duration::from_millis(1), ok());
        assert_eq!(w.stage().legacy.requests, 1);
        assert_eq!(w.stage().shadow.compared, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn match_rate_counts_failures_against_the_candidate() {
        let w = Window::open(Duration::ZERO, Duration::from_secs(30), 0);
        let a: Arc<str> = Arc::from("GET /a");
        let b: Arc<str> = Arc::from("GET /b/{id}");
        for _ in 0..6 {
            w.record_comparison(&a, "match");
        }
        w.record_comparison(&a, "noise");
        w.record_comparison(&b, "noise");
        w.record_failure(&b);
        w.record_failure(&b);
        assert_eq!(w.shadow.summary().match_rate, Some(0.8));
        let endpoints = w.shadow.endpoints();
        assert_eq!(endpoints[0].1.match_rate(), Some(1.0));
        assert_eq!(endpoints[1].1.match_rate(), Some(1.0 / 3.0));
        assert_eq!(w.recent(Duration::from_secs(30)).shadow.trials(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn figures_of_several_windows_add_up_through_their_reports() {
        let a = Window::open(Duration::ZERO, Duration::from_secs(30), 5);
        let b = Window::open(Duration::ZERO, Duration::from_secs(30), 5);
        let both = Window::open(Duration::ZERO, Duration::from_secs(30), 5);
        for i in 1..=40u64 {
            let (w, outcome) = if i % 2 == 0 {
                (&a, ok())
            } else {
                (&b, error())
            };
            for w in [w, &both] {
                w.record(Side::Candidate, Duration::from_millis(i), outcome);
                w.record(Side::Legacy, Duration::from_millis(i / 2 + 1), ok());
                w.record_comparison(&Arc::from("GET /a"), "match");
                w.record_mirror_latency(Duration::from_millis(i));
            }
        }
        let rollback = Duration::from_secs(30);
        let mut sum = a.figures(rollback);
        let json = serde_json::to_value(b.figures(rollback).report()).unwrap();
        let report: WindowReport = serde_json::from_value(json).unwrap();
        sum.add(&Figures::from_report(&report));
        let whole = both.figures(rollback);
        assert_eq!(sum.stage(), whole.stage());
        assert_eq!(sum.recent(), whole.recent());
        assert_eq!(sum.recent(), both.recent(rollback));
        assert_eq!(sum.endpoints(), both.shadow.endpoints());
        assert_eq!(sum.mirror_p99(), both.shadow.mirror_p99());
        assert_eq!(sum.stage().candidate.errors, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn persisted_totals_survive_a_round_trip() {
        let w = Window::open(Duration::ZERO, Duration::from_secs(30), 1_000);
        for i in 1..=50u64 {
            w.record(Side::Legacy, Duration::from_millis(i), ok());
        }
        w.record(Side::Candidate, Duration::from_millis(7), error());
        w.record_comparison(&Arc::from("GET /a"), "match");
        let saved = w.persisted();
        let json = serde_json::to_value(&saved).unwrap();
        let back: PersistedWindow = serde_json::from_value(json).unwrap();
        let restored = Window::restore(&back, Duration::ZERO, Duration::from_secs(30), 61_000);
        assert_eq!(restored.stage(), w.stage());
        assert!(
            restored.age() >= Duration::from_secs(60),
            "the stage's age is kept"
        );
        assert_eq!(restored.shadow.endpoints().len(), 1);
    }
}
