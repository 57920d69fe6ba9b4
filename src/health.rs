//! Active health checks of upstreams that have a `health` path (SPEC §2, §3).
//!
//! The rollout's `health` gate asks "is the candidate up?" without waiting
//! for live traffic to fail. Each upstream with a `health` path gets one
//! background task that GETs the path every `health_interval` through the
//! upstream's own pooled client (so checks see the same TLS, protocol and
//! `Host` settings as real requests). A 2xx answer within the budget (the
//! upstream's `timeout` or `health_interval`, whichever is smaller) is a good
//! check; anything else is a failed one.
//!
//! Rules: [`HealthStatus::Unhealthy`] after 3 failed checks in a row, back to
//! [`HealthStatus::Healthy`] after one good check, and
//! [`HealthStatus::Unknown`] (not judged) until there is evidence: before the
//! first check, and after fewer than 3 failures with no good check yet, so
//! an upstream that has never answered is never called healthy.
//!
//! Readers (the controller, the admin API) never wait: the set of checks is
//! an `ArcSwap`ped map, and each check publishes its status through its own
//! `ArcSwap`. [`HealthChecker::update`] (start and every reload) rebuilds the
//! map off to the side and swaps it in: new upstreams start being checked,
//! removed ones and ones whose settings changed are stopped (a changed
//! upstream starts again from `Unknown`), unchanged ones keep their task and
//! state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use http_body_util::{BodyExt, Limited};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::proxy::upstream::{RequestHead, Upstream, UpstreamBody};
use crate::rollout::criteria::error_chain;

/// Failed checks in a row before an upstream is unhealthy (SPEC §3).
pub const UNHEALTHY_AFTER: u32 = 3;

/// The shortest interval between checks; `tokio::time::interval` refuses 0.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A health answer's body is read (to keep the connection reusable) up to
/// this size, then dropped.
const MAX_BODY: usize = 64 * 1024;

/// What the checks say about one upstream. Serialized for the admin API as
/// `{"status": "unknown" | "healthy" | "unhealthy", …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not judged: no `health` path, no check yet, or a few failures and no
    /// good check so far.
    #[default]
    Unknown,
    Healthy,
    /// `failures` checks in a row failed; `detail` says how the last one did.
    Unhealthy {
        failures: u32,
        detail: String,
    },
}

impl HealthStatus {
    /// `"unknown"`, `"healthy"` or `"unhealthy"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy { .. } => "unhealthy",
        }
    }
}

/// The health checks of every upstream with a `health` path.
pub struct HealthChecker {
    /// Parent of every check's token: process shutdown stops them all.
    shutdown: CancellationToken,
    /// Where check tasks are spawned, so `update` works off the runtime too.
    runtime: tokio::runtime::Handle,
    /// Upstream name → its check. Replaced whole by `update`.
    checks: ArcSwap<HashMap<String, Arc<Check>>>,
    /// Serialises `update` calls; readers never take it.
    writer: Mutex<()>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("checks", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// One upstream's running check.
struct Check {
    /// The newest `Upstream` with these settings: a reload may hand over a
    /// new value with the same config, and the check then uses its client.
    upstream: ArcSwap<Upstream>,
    status: ArcSwap<HealthStatus>,
    /// Stops this check's task (removal, changed settings, shutdown).
    stop: CancellationToken,
}

// === impl HealthChecker ===

impl HealthChecker {
    /// A checker with nothing to check yet; call [`HealthChecker::update`].
    /// Must be called within a tokio runtime.
    pub fn start(shutdown: CancellationToken) -> Arc<HealthChecker> {
        Arc::new(HealthChecker {
            shutdown,
            runtime: tokio::runtime::Handle::current(),
            checks: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
        })
    }

    /// Makes the checks follow `upstreams` (the whole configured set): see
    /// the module docs for what is started, kept and stopped.
    pub fn update(&self, upstreams: &[Arc<Upstream>]) {
        // The guard protects no data, only the read-modify-write of `checks`.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.checks.load_full();
        let mut next: HashMap<String, Arc<Check>> = HashMap::new();
        for upstream in upstreams {
            let name = &upstream.config.name;
            if upstream.config.health.is_none() || next.contains_key(name) {
                continue;
            }
            let kept = old
                .get(name)
                .filter(|check| check.upstream.load().config == upstream.config);
            let check = match kept {
                Some(check) => {
                    check.upstream.store(Arc::clone(upstream));
                    Arc::clone(check)
                }
                None => {
                    let check = Arc::new(Check {
                        upstream: ArcSwap::new(Arc::clone(upstream)),
                        status: ArcSwap::from_pointee(HealthStatus::Unknown),
                        stop: self.shutdown.child_token(),
                    });
                    self.runtime.spawn(run(Arc::clone(&check)));
                    check
                }
            };
            next.insert(name.clone(), check);
        }
        for (name, check) in old.iter() {
            if !next.get(name).is_some_and(|kept| Arc::ptr_eq(kept, check)) {
                check.stop.cancel();
            }
        }
        self.checks.store(Arc::new(next));
    }

    /// The status of the upstream called `upstream` (`Unknown` when it is
    /// not checked).
    pub fn status(&self, upstream: &str) -> HealthStatus {
        self.checks
            .load()
            .get(upstream)
            .map_or(HealthStatus::Unknown, |check| {
                HealthStatus::clone(&check.status.load())
            })
    }

    /// Every checked upstream and its status, by name.
    pub fn snapshot(&self) -> Vec<(String, HealthStatus)> {
        let mut all: Vec<_> = self
            .checks
            .load()
            .iter()
            .map(|(name, check)| (name.clone(), HealthStatus::clone(&check.status.load())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for check in self.checks.load().values() {
            check.stop.cancel();
        }
    }
}

// === the check task ===

/// Checks one upstream until its token is cancelled. The first check runs
/// at once, then one every `health_interval` (a slow check delays the next
/// rather than piling up).
async fn run(check: Arc<Check>) {
    let interval = check
        .upstream
        .load()
        .config
        .health_interval
        .max(MIN_INTERVAL);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracker = Tracker::default();
    loop {
        tokio::select! {
            () = check.stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let upstream = check.upstream.load_full();
        let outcome = tokio::select! {
            () = check.stop.cancelled() => return,
            outcome = probe(&upstream) => outcome,
        };
        if let Err(detail) = &outcome {
            tracing::debug!(upstream = %upstream.config.name, %detail, "health check failed");
        }
        let before = check.status.load();
        let after = tracker.record(outcome);
        if **before != after {
            tracing::info!(
                upstream = %upstream.config.name,
                from = before.as_str(),
                to = after.as_str(),
                "upstream health changed"
            );
            check.status.store(Arc::new(after));
        }
    }
}

/// One health check: `Ok` for a 2xx within the budget, else why not.
async fn probe(upstream: &Upstream) -> Result<(), String> {
    let config = &upstream.config;
    let path = config.health.as_deref().unwrap_or("/");
    let uri: Uri = path
        .parse()
        .map_err(|_| format!("invalid health path {path:?}"))?;
    let head = RequestHead {
        method: Method::GET,
        uri,
        headers: HeaderMap::new(),
        original_host: None,
    };
    let request = upstream
        .request(&head, UpstreamBody::bytes(Bytes::new()))
        .ok_or_else(|| format!("invalid health path {path:?}"))?;
    let budget = config.timeout.min(config.health_interval);
    let deadline = Instant::now() + budget;
    let response = match tokio::time::timeout_at(deadline, upstream.send(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(error_chain(&error)),
        Err(_) => return Err(format!("no answer within {budget:?}")),
    };
    let status = response.status();
    // Read the (small) body so the connection goes back to the pool; its
    // fate does not change the verdict, which is the status alone.
    let drain = Limited::new(response.into_body(), MAX_BODY).collect();
    let _ = tokio::time::timeout_at(deadline, drain).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{path} answered {status}"))
    }
}

/// The pure part of the rules: consecutive failures → status.
#[derive(Debug, Default)]
struct Tracker {
    failures: u32,
    status: HealthStatus,
}

impl Tracker {
    fn record(&mut self, outcome: Result<(), String>) -> HealthStatus {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.status = HealthStatus::Healthy;
            }
            Err(detail) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= UNHEALTHY_AFTER {
                    self.status = HealthStatus::Unhealthy {
                        failures: self.failures,
                        detail,
                    };
                }
                // Fewer failures: keep what we had (healthy stays healthy,
                // unknown stays unknown).
            }
        }
        self.status.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;

    use super::*;
    use crate::config::{HostPolicy, UpstreamConfig, UpstreamProtocol};

    /// A health endpoint: answers the scripted statuses first, then
    /// `status`; counts requests.
    #[derive(Clone, Default)]
    struct Backend {
        status: Arc<AtomicU16>,
        script: Arc<Mutex<VecDeque<u16>>>,
        hits: Arc<AtomicU64>,
    }

    impl Backend {
        fn set(&self, status: u16) {
            self.status.store(status, Ordering::SeqCst);
        }
        fn hits(&self) -> u64 {
            self.hits.load(Ordering::SeqCst)
        }
    }

    async fn answer(State(backend): State<Backend>) -> StatusCode {
        backend.hits.fetch_add(1, Ordering::SeqCst);
        let scripted = backend
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let code = scripted.unwrap_or_else(|| backend.status.load(Ordering::SeqCst));
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Starts a backend answering 200 (after `script`) on 127.0.0.1:0.
    async fn backend(script: &[u16]) -> (Backend, String) {
        let backend = Backend::default();
        backend.set(200);
        backend
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(script);
        let app = Router::new()
            .route("/healthz", get(answer))
            .route("/other", get(answer))
            .with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (backend, format!("http://{addr}"))
    }

    fn upstream(name: &str, url: &str, health: Option<&str>) -> Arc<Upstream> {
        Upstream::new(&UpstreamConfig {
            name: name.to_owned(),
            url: url.parse().expect("test url parses"),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            host: HostPolicy::Preserve,
            protocol: UpstreamProtocol::Auto,
            ca: None,
            health: health.map(str::to_owned),
            health_interval: Duration::from_millis(200),
        })
        .expect("test upstream builds")
    }

    /// Polls `done` every 5 ms; fails the test after 10 s.
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn tracker_follows_the_rules() {
        let mut t = Tracker::default();
        let fail = || Err("boom".to_owned());
        assert_eq!(
            t.record(fail()),
            HealthStatus::Unknown,
            "1 failure, no evidence yet"
        );
        assert_eq!(t.record(fail()), HealthStatus::Unknown, "2 failures");
        let third = t.record(fail());
        assert_eq!(
            third,
            HealthStatus::Unhealthy {
                failures: 3,
                detail: "boom".into()
            }
        );
        assert!(matches!(
            t.record(fail()),
            HealthStatus::Unhealthy { failures: 4, .. }
        ));
        assert_eq!(
            t.record(Ok(())),
            HealthStatus::Healthy,
            "one good check heals"
        );
        assert_eq!(
            t.record(fail()),
            HealthStatus::Healthy,
            "1 failure stays healthy"
        );
        assert_eq!(
            t.record(fail()),
            HealthStatus::Healthy,
            "2 failures stay healthy"
        );
        assert!(matches!(
            t.record(fail()),
            HealthStatus::Unhealthy { failures: 3, .. }
        ));
        assert_eq!(t.record(Ok(())), HealthStatus::Healthy);
    }

    #[test]
    fn status_serializes_for_the_admin_api() {
        let json = |s: &HealthStatus| serde_json::to_value(s).expect("status serializes");
        assert_eq!(
            json(&HealthStatus::Unknown),
            serde_json::json!({"status": "unknown"})
        );
        assert_eq!(
            json(&HealthStatus::Healthy),
            serde_json::json!({"status": "healthy"})
        );
        assert_eq!(
            json(&HealthStatus::Unhealthy {
                failures: 3,
                detail: "x".into()
            }),
            serde_json::json!({"status": "unhealthy", "failures": 3, "detail": "x"})
        );
    }

    #[tokio::test]
    async fn unknown_before_the_first_check_then_healthy() {
        let (_backend, url) = backend(&[]).await;
        let checker = HealthChecker::start(CancellationToken::new());
        checker.update(&[
            upstream("cand", &url, Some("/healthz")),
            upstream("plain", &url, None),
        ]);
        // Nothing has run yet: `update` only spawned the task (current-thread
        // runtime, no await since).
        assert_eq!(checker.status("cand"), HealthStatus::Unknown);
        wait_for("cand healthy", || {
            checker.status("cand") == HealthStatus::Healthy
        })
        .await;
        // No health path: never checked, never judged.
        assert_eq!(checker.status("plain"), HealthStatus::Unknown);
        assert_eq!(
            checker.snapshot(),
            vec![("cand".to_owned(), HealthStatus::Healthy)]
        );
    }

    #[tokio::test]
    async fn three_failures_make_unhealthy_and_one_success_heals() {
        let (backend, url) = backend(&[]).await;
        let checker = HealthChecker::start(CancellationToken::new());
        checker.update(&[upstream("cand", &url, Some("/healthz"))]);
        wait_for("healthy", || {
            checker.status("cand") == HealthStatus::Healthy
        })
        .await;

        backend.set(503);
        let hits_before = backend.hits();
        wait_for("unhealthy", || {
            matches!(checker.status("cand"), HealthStatus::Unhealthy { .. })
        })
        .await;
        // The status changes after the answer, so at least 3 failing
        // requests (the one in flight at the switch may have been a 200).
        assert!(backend.hits() >= hits_before + 3, "unhealthy too early");
        match checker.status("cand") {
            HealthStatus::Unhealthy { failures, detail } => {
                assert!(failures >= 3, "{failures}");
                assert!(detail.contains("503"), "{detail}");
            }
            other => panic!("expected unhealthy, got {other:?}"),
        }

        backend.set(200);
        wait_for("healthy again", || {
            checker.status("cand") == HealthStatus::Healthy
        })
        .await;
    }

    #[tokio::test]
    async fn two_failures_stay_healthy() {
        // 200, then two 500s, then 200 for ever.
        let (backend, url) = backend(&[200, 500, 500]).await;
        let checker = HealthChecker::start(CancellationToken::new());
        checker.update(&[upstream("cand", &url, Some("/healthz"))]);
        wait_for("healthy", || {
            checker.status("cand") == HealthStatus::Healthy
        })
        .await;
        wait_for("past the failures", || {
            let status = checker.status("cand");
            assert_eq!(
                status,
                HealthStatus::Healthy,
                "after {} checks",
                backend.hits()
            );
            backend.hits() >= 5
        })
        .await;
    }

    #[tokio::test]
    async fn update_keeps_unchanged_and_stops_removed() {
        let (backend_a, url_a) = backend(&[]).await;
        let (backend_b, url_b) = backend(&[]).await;
        let checker = HealthChecker::start(CancellationToken::new());
        let a = upstream("a", &url_a, Some("/healthz"));
        checker.update(&[Arc::clone(&a), upstream("b", &url_b, Some("/healthz"))]);
        wait_for("both healthy", || {
            checker.status("a") == HealthStatus::Healthy
                && checker.status("b") == HealthStatus::Healthy
        })
        .await;

        // Reload without b; a is rebuilt with the same settings.
        checker.update(&[upstream("a", &url_a, Some("/healthz"))]);
        assert_eq!(checker.status("a"), HealthStatus::Healthy, "state kept");
        assert_eq!(checker.status("b"), HealthStatus::Unknown, "removed");
        assert_eq!(checker.snapshot().len(), 1);
        let b_hits = backend_b.hits();
        let a_hits = backend_a.hits();
        wait_for("a checked further", || backend_a.hits() >= a_hits + 4).await;
        // b's task is gone: at most the request that was in flight.
        assert!(backend_b.hits() <= b_hits + 1, "b is still being checked");

        // Changed settings start again from unknown.
        checker.update(&[upstream("a", &url_a, Some("/other"))]);
        assert_eq!(checker.status("a"), HealthStatus::Unknown);
        wait_for("a healthy again", || {
            checker.status("a") == HealthStatus::Healthy
        })
        .await;
    }

    #[tokio::test]
    async fn shutdown_stops_checks() {
        let (witness, witness_url) = backend(&[]).await;
        let (backend, url) = backend(&[]).await;
        let shutdown = CancellationToken::new();
        let checker = HealthChecker::start(shutdown.clone());
        checker.update(&[upstream("cand", &url, Some("/healthz"))]);
        // A second checker, not shut down, to measure time in checks.
        let other = HealthChecker::start(CancellationToken::new());
        other.update(&[upstream("witness", &witness_url, Some("/healthz"))]);
        wait_for("healthy", || {
            checker.status("cand") == HealthStatus::Healthy
        })
        .await;
        shutdown.cancel();
        let hits = backend.hits();
        let witness_hits = witness.hits();
        wait_for("witness checked", || witness.hits() >= witness_hits + 4).await;
        assert!(backend.hits() <= hits + 1, "still checking after shutdown");
    }
}
