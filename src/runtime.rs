//! The shared state of a running proxy.
//!
//! The request path reads one [`Snapshot`] through `ArcSwap` (no lock) and
//! works with it to the end, even if a reload publishes a newer one
//! meanwhile: that is what makes a reload drop no request. Snapshots are
//! built off the request path, by [`Runtime::install`].
//!
//! A route's live rollout status and its window of counters live in a
//! [`RouteControl`] kept by route name across reloads, so a stage or weight
//! set through the admin API survives a reload: the file's `stage` and
//! `weight` are initial values only.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use crate::compare::{Accepted, CompareError, EndpointTemplates, NoiseModel, Redactor, Rules};
use crate::config::{Config, RouteConfig, Stage};
use crate::fleet::{self, Fleet};
use crate::health::{HealthChecker, HealthStatus};
use crate::measure::Measure;
use crate::metrics::{
    Metrics, Name, RequestMetrics, RouteLabels, RouteStageLabels, TransitionLabels,
};
use crate::notify::Notifier;
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::report::{self, Report};
use crate::rollout::criteria;
use crate::rollout::gates::{CriterionInput, Health};
use crate::rollout::state::{apply, Actor, Command, Conflict, RolloutState, RouteStatus};
use crate::rollout::window::{PersistedWindow, Window};
use crate::routing::RoutingTable;
use crate::shadow::executor::ShadowExecutor;
use crate::shadow::slots::MirrorSlots;
use crate::shadow::tee::MemoryBudget;
use crate::shadow::{DropCounters, RouteShadow};
use crate::store::writer::StoreHandle;
use crate::store::{
    AcceptedRow, EventRow, Fence, RouteStateRow, SampleKind, SampleRow, Store, StoreError,
};

/// The route name used for requests that match no route.
pub const DEFAULT_ROUTE: &str = "_default";
/// Endpoint templates kept for unmatched traffic.
const DEFAULT_MAX_ENDPOINTS: u32 = 200;

/// Live rollout status, counters and what shadowing learned about one
/// route; survives reloads.
pub struct RouteControl {
    pub status: ArcSwap<RouteStatus>,
    pub window: ArcSwap<Window>,
    /// Differences a person accepted (`strangler accept`), by endpoint.
    pub accepted: ArcSwap<Accepted>,
    /// The last reading of each success criterion (refreshed by the controller).
    pub criteria: ArcSwap<Vec<CriterionInput>>,
    /// Why the route last changed (shown with its status).
    pub reason: ArcSwap<Option<String>>,
    noise: Mutex<NoiseModel>,
}

impl RouteControl {
    fn new(status: RouteStatus, window: Window) -> Self {
        RouteControl {
            status: ArcSwap::from_pointee(status),
            window: ArcSwap::from_pointee(window),
            accepted: ArcSwap::from_pointee(Accepted::default()),
            criteria: ArcSwap::from_pointee(Vec::new()),
            reason: ArcSwap::from_pointee(None),
            noise: Mutex::new(NoiseModel::default()),
        }
    }

    /// The route's noise model (comparisons are off the request path).
    pub fn noise(&self) -> std::sync::MutexGuard<'_, NoiseModel> {
        self.noise.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A route as the request path needs it.
pub struct RouteRuntime {
    pub config: RouteConfig,
    pub name: Name,
    pub control: Arc<RouteControl>,
    pub legacy: Arc<Upstream>,
    pub candidate: Arc<Upstream>,
    pub shadow: RouteShadow,
    /// Request metrics of the legacy and the candidate side.
    pub legacy_metrics: RequestMetrics,
    pub candidate_metrics: RequestMetrics,
    /// `strangler_sticky_missing_total` of this route, resolved once.
    pub sticky_missing: prometheus_client::metrics::counter::Counter,
}

/// Where unmatched requests go.
pub struct DefaultTarget {
    pub name: Name,
    pub upstream: Arc<Upstream>,
    pub control: Arc<RouteControl>,
    /// Endpoint templates of unmatched traffic (for the measure view).
    pub endpoints: Arc<EndpointTemplates>,
    pub metrics: RequestMetrics,
}

/// One immutable, consistent view of the configuration and its upstreams.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// Redaction of stored exchanges (`store.redact_*`).
    pub redactor: Redactor,
    pub table: RoutingTable,
    pub routes: Vec<RouteRuntime>,
    pub default: DefaultTarget,
    pub upstreams: HashMap<String, Arc<Upstream>>,
}

impl Snapshot {
    pub fn route(&self, name: &str) -> Option<&RouteRuntime> {
        self.routes.iter().find(|r| r.config.name == name)
    }
}

/// A rollout transition (SPEC §3).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: String,
    pub route: String,
    pub from: Stage,
    pub to: Stage,
    pub weight: f64,
    pub state: RolloutState,
    pub reason: String,
    pub actor: Actor,
}

/// Why a configuration could not be put to work.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("routes.{route}.compare: {source}")]
    Compare { route: String, source: CompareError },
    #[error("store: {0}")]
    Redact(CompareError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the shadow runtime: {0}")]
    ShadowExecutor(std::io::Error),
}

/// Why a manual action failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route named {0}")]
    UnknownRoute(String),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A fleet's store did not take the change (SPEC §9: writes answer
    /// 503 while it is lost); nothing changed.
    #[error("the fleet's store is unreachable, nothing was changed: {0}")]
    StoreUnavailable(String),
    /// A fenced write was refused: another instance leads the fleet.
    #[error("this instance no longer leads the fleet")]
    NotLeader,
}

/// Everything shared between the proxy, the admin API and the controller.
pub struct Runtime {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    controls: Mutex<HashMap<String, Arc<RouteControl>>>,
    /// Serialises writers (reload, admin actions) so they never interleave.
    write_lock: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    /// All buffered shadow bodies together (`server.shadow_memory`).
    pub shadow_budget: Arc<MemoryBudget>,
    /// Where mirrors run, apart from client requests.
    pub shadow_executor: Arc<ShadowExecutor>,
    /// The store, and the background writer of kept exchanges.
    pub store: Arc<StoreHandle>,
    /// Active health checks of upstreams with a `health` path.
    pub health: Arc<HealthChecker>,
    /// Transitions POSTed to `notify.webhooks`.
    pub notifier: Arc<Notifier>,
    /// Traffic and time per endpoint template.
    pub measure: Measure,
    measure_flush: tokio::sync::Mutex<()>,
    /// Reads success criteria from Prometheus endpoints.
    pub criteria_client: criteria::HttpClient,
    pub instance_id: String,
    pub started_at: SystemTime,
    /// The fleet this instance belongs to (alone with SQLite).
    pub fleet: Fleet,
}

impl Runtime {
    /// Runs CPU-bound `work` on a blocking-pool thread. Evaluating a route's
    /// gates clones and adds up latency histograms; on a worker that serves
    /// clients that would stall their requests (the controller does it twice
    /// a second per live route, the admin API on every dashboard poll).
    pub async fn off_workers<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || work(&runtime)).await
    }

    /// Builds the runtime from a configuration and what the store remembers:
    /// a route's persisted status wins over the file's `stage`/`weight`.
    /// Background tasks it starts (health checks, webhooks) end with `shutdown`.
    pub async fn start(
        config: Config,
        instance_id: String,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Runtime>, BuildError> {
        let metrics = Metrics::new();
        let shared = store.shared();
        let mut controls = HashMap::new();
        for row in store.load_route_states().await? {
            let status = RouteStatus {
                stage: row.stage,
                weight: row.weight,
                state: row.state,
            };
            let rollout = config
                .routes
                .iter()
                .find(|r| r.name == row.route)
                .map(|r| &r.rollout);
            let (warmup, rollback_window) = rollout
                .map_or((Duration::ZERO, Duration::from_secs(30)), |r| {
                    (r.warmup, r.rollback_window)
                });
            // The current window's counters survive a restart.
            let saved = row
                .window
                .as_ref()
                .and_then(|w| serde_json::from_value::<PersistedWindow>(w.clone()).ok());
            let window = match saved {
                Some(saved) => Window::restore(&saved, warmup, rollback_window, now_ms()),
                // A fleet's stage began when its transition was written.
                None if shared => {
                    Window::open_at(warmup, rollback_window, row.stage_started_at_ms, now_ms())
                }
                None => Window::open(warmup, rollback_window, row.stage_started_at_ms),
            };
            let control = RouteControl::new(status, window);
            control.reason.store(Arc::new(row.reason.clone()));
            controls.insert(row.route.clone(), Arc::new(control));
        }
        let mut accepted: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for row in store.accepted(None).await? {
            accepted
                .entry(row.route)
                .or_default()
                .push((row.endpoint, row.path));
        }
        let controls = Mutex::new(controls);
        let shadow_budget = MemoryBudget::new(config.server.shadow_memory);
        let shadow_executor =
            Arc::new(ShadowExecutor::start().map_err(BuildError::ShadowExecutor)?);
        let snapshot = build_snapshot(config, &metrics, None, &controls, &mut Vec::new())?;
        for route in &snapshot.routes {
            if let Some(entries) = accepted.remove(&route.config.name) {
                let compiled = Accepted::new(entries).map_err(|source| BuildError::Compare {
                    route: route.config.name.clone(),
                    source,
                })?;
                route.control.accepted.store(Arc::new(compiled));
            }
        }
        let store = StoreHandle::start(store, metrics.store_dropped.clone());
        let health = HealthChecker::start(shutdown.clone());
        health.update(&snapshot.upstreams.values().cloned().collect::<Vec<_>>());
        let notifier = Notifier::start(shutdown);
        notifier.set_webhooks(snapshot.config.notify.webhooks.clone());
        let runtime = Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            controls,
            write_lock: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            shadow_budget,
            shadow_executor,
            store,
            health,
            notifier,
            measure: Measure::default(),
            measure_flush: tokio::sync::Mutex::new(()),
            criteria_client: criteria::http_client(),
            fleet: Fleet::new(instance_id.clone(), shared),
            instance_id,
            started_at: SystemTime::now(),
        });
        runtime.publish_gauges();
        Ok(runtime)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Swaps in a new configuration. Routes keep their live status; a route
    /// in `canary` or `candidate` whose matching, upstreams or `sticky`
    /// changed is paused, with an event saying why.
    pub async fn install(&self, config: Config) -> Result<(), BuildError> {
        let _writer = self.write_lock.lock().await;
        let old = self.snapshot.load_full();
        let mut paused = Vec::new();
        let snapshot = build_snapshot(
            config,
            &self.metrics,
            Some(&old),
            &self.controls,
            &mut paused,
        )?;
        self.health
            .update(&snapshot.upstreams.values().cloned().collect::<Vec<_>>());
        self.notifier
            .set_webhooks(snapshot.config.notify.webhooks.clone());
        self.snapshot.store(Arc::new(snapshot));
        for (route, from) in paused {
            let reason = "reload changed the route's matching, upstreams or sticky key";
            let mut now = from.clone();
            now.state = RolloutState::Paused;
            self.persist_status(&route, &now, Some(reason.into())).await;
            self.record_event(
                Event {
                    at: now_rfc3339(),
                    route,
                    from: from.stage,
                    to: from.stage,
                    weight: from.weight,
                    state: RolloutState::Paused,
                    reason: reason.into(),
                    actor: Actor::Admin,
                },
                None,
            )
            .await;
        }
        self.publish_gauges();
        Ok(())
    }

    /// Applies a manual command to a route.
    pub async fn control(
        &self,
        route: &str,
        command: Command,
    ) -> Result<RouteStatus, ControlError> {
        let _writer = self.write_lock.lock().await;
        let snapshot = self.snapshot.load_full();
        let runtime = snapshot
            .route(route)
            .ok_or_else(|| ControlError::UnknownRoute(route.to_string()))?;
        self.check_store()?;
        let current = runtime.control.status.load_full();
        let (next, reason) = apply(&current, &command, &runtime.config.rollout.steps)?;
        self.transition(
            runtime,
            &current,
            next.clone(),
            reason,
            Actor::Admin,
            None,
            true,
        )
        .await?;
        Ok(next)
    }

    /// Applies a controller decision, unless the route changed since it was
    /// evaluated (a person acted meanwhile): then nothing happens.
    pub async fn auto_transition(
        &self,
        route: &str,
        evaluated: &RouteStatus,
        command: Command,
        reason: String,
    ) -> Option<RouteStatus> {
        let _writer = self.write_lock.lock().await;
        let snapshot = self.snapshot.load_full();
        let runtime = snapshot.route(route)?;
        let current = runtime.control.status.load_full();
        if *current != *evaluated {
            return None;
        }
        let (next, _) = apply(&current, &command, &runtime.config.rollout.steps).ok()?;
        // In a fleet only the leader acts, and only on the state the store
        // holds (a person may have acted through another instance).
        let fence = self.fleet.fence()?;
        if self.fleet.shared() {
            let rows = fleet::within(self.store.store().load_route_states())
                .await
                .ok()?;
            if let Some(row) = rows.iter().find(|r| r.route == route) {
                if (row.stage, row.weight, row.state)
                    != (current.stage, current.weight, current.state)
                {
                    return None;
                }
            }
        }
        if self.fleet.shared() && command != Command::Rollback {
            // Checked again at the moment of promoting: an instance with
            // another configuration may have joined within the last second.
            let instances = fleet::within(self.store.store().instances()).await.ok()?;
            if !self.fleet.note_hashes(&instances) {
                return None;
            }
        }
        let fence = self.fleet.shared().then_some(fence);
        match self
            .transition(
                runtime,
                &current,
                next.clone(),
                reason,
                Actor::Auto,
                fence.as_ref(),
                true,
            )
            .await
        {
            Ok(()) => Some(next),
            Err(ControlError::NotLeader) => {
                self.fleet.drop_lease();
                tracing::warn!(
                    route,
                    "fenced out: another instance leads the fleet, nothing done"
                );
                None
            }
            Err(error) => {
                tracing::error!(%error, route, "the controller's decision was not applied");
                None
            }
        }
    }

    /// Hands the traffic measured since the last flush to the store.
    pub async fn flush_measure(&self) {
        // One flush at a time: a reader that flushes (the report) must not
        // read the store while a periodic flush still holds what it took.
        let _flushing = self.measure_flush.lock().await;
        if self.fleet.shared() && !self.fleet.store_ok() {
            // Kept in memory until the store returns, rather than lost.
            return;
        }
        let bucket = crate::measure::BUCKET.as_millis() as i64;
        let now = now_ms();
        let (stats, aggregates) = self.measure.flush(now - now % bucket);
        let store = self.store.store();
        if !stats.is_empty() {
            if let Err(error) = store.add_endpoint_stats(&stats).await {
                tracing::warn!(%error, "could not store endpoint statistics");
            }
        }
        if !aggregates.is_empty() {
            if let Err(error) = store.record_aggregates(&aggregates).await {
                tracing::warn!(%error, "could not store traffic aggregates");
            }
        }
    }

    /// The migration report (SPEC §6), from the store and the live state.
    pub async fn report(&self) -> Result<Report, StoreError> {
        self.flush_measure().await;
        let snapshot = self.snapshot.load_full();
        let store = self.store.store();
        let now = now_ms();
        let retention =
            i64::try_from(snapshot.config.store.retention.as_millis()).unwrap_or(i64::MAX);
        let from = now.saturating_sub(retention);
        let stats = self
            .read("endpoint stats", store.endpoint_stats(None))
            .await?;
        let mut aggregates = self
            .read("aggregates", store.aggregates(None, from))
            .await?;
        // Remembered ones may reach back further than the window.
        aggregates.retain(|a| a.bucket_start_ms >= from);
        let accepted = self.accepted(None).await?;
        let legacy_endpoints = |route: &str| -> Vec<String> {
            stats
                .iter()
                .filter(|s| s.route == route && s.side == "legacy" && s.requests > 0)
                .map(|s| s.endpoint.clone())
                .collect()
        };
        let mut routes = Vec::new();
        let mut noise = Vec::new();
        let mut serves = Vec::new();
        for route in &snapshot.routes {
            let status = route.control.status.load_full();
            let window = route.control.window.load();
            let shadow = window.shadow.totals();
            let learned = route.control.noise();
            let mut fields: Vec<report::TopField> = window
                .shadow
                .endpoints()
                .iter()
                .flat_map(|(endpoint, _)| {
                    learned
                        .fields(endpoint, 5)
                        .into_iter()
                        .filter(|f| !f.noise)
                        .map(|f| report::TopField {
                            endpoint: endpoint.to_string(),
                            path: f.path,
                            rate: f.rate,
                        })
                })
                .collect();
            fields.sort_by(|a, b| b.rate.total_cmp(&a.rate));
            fields.truncate(5);
            noise.extend(report::noise_entries(
                &route.config.name,
                &learned.learned(),
            ));
            drop(learned);
            routes.push(report::RouteReport {
                name: route.config.name.clone(),
                stage: status.stage.as_str().to_string(),
                weight: status.weight,
                state: status.state.as_str().to_string(),
                compared: shadow.compared,
                match_rate: shadow.match_rate(),
                top_mismatching_fields: fields,
            });
            let requests = report::legacy_requests(&aggregates, &route.config.name, from);
            let reason = match status.stage {
                Stage::Legacy | Stage::Shadow => Some(format!("stage {}: legacy answers every request", status.stage)),
                Stage::Canary => Some(format!("stage canary: legacy answers {}% of cohorts", 100.0 - status.weight)),
                Stage::Candidate if requests > 0 => {
                    Some("legacy answered requests in the window (before the switch, or a fallback or retry)".to_string())
                }
                Stage::Candidate => None,
            };
            if let Some(reason) = reason {
                serves.push(report::LegacyServes {
                    route: route.config.name.clone(),
                    endpoints: legacy_endpoints(&route.config.name),
                    reason,
                    requests,
                });
            }
        }
        let unmatched = report::legacy_requests(&aggregates, DEFAULT_ROUTE, from);
        if unmatched > 0 {
            serves.push(report::LegacyServes {
                route: DEFAULT_ROUTE.to_string(),
                endpoints: legacy_endpoints(DEFAULT_ROUTE),
                reason: "requests that match no route go to defaults.upstream".to_string(),
                requests: unmatched,
            });
        }
        let traffic_seen = aggregates.iter().any(|a| a.requests > 0);
        Ok(Report {
            generated_at: now_rfc3339(),
            window_from: humantime::format_rfc3339_millis(
                SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(from).unwrap_or(0)),
            )
            .to_string(),
            endpoints: report::rank_endpoints(&stats),
            routes,
            noise,
            accepted,
            verdict: report::verdict(&serves, traffic_seen),
            legacy_still_serves: serves,
        })
    }

    /// The candidate's active health, as its gate sees it.
    pub fn candidate_health(&self, route: &RouteRuntime) -> Health {
        match self.health.status(&route.candidate.config.name) {
            HealthStatus::Unknown => Health::Unknown,
            HealthStatus::Healthy => Health::Healthy,
            HealthStatus::Unhealthy { failures, detail } => {
                Health::Unhealthy(format!("{failures} failed checks in a row: {detail}"))
            }
        }
    }

    /// Saves every route's status with its window's counters, so a restart
    /// continues the stage where it was.
    pub async fn save_windows(&self) {
        if self.fleet.shared() {
            // A fleet's windows are published every second instead.
            return;
        }
        let snapshot = self.snapshot.load_full();
        for route in &snapshot.routes {
            let status = route.control.status.load_full();
            let reason = (**route.control.reason.load()).clone();
            self.persist_status(&route.config.name, &status, reason)
                .await;
        }
    }

    /// Forgets a route's live status and starts again from the file's values.
    pub async fn reset(&self, route: &str) -> Result<RouteStatus, ControlError> {
        let _writer = self.write_lock.lock().await;
        let snapshot = self.snapshot.load_full();
        let runtime = snapshot
            .route(route)
            .ok_or_else(|| ControlError::UnknownRoute(route.to_string()))?;
        self.check_store()?;
        let current = runtime.control.status.load_full();
        let next = RouteStatus::initial(runtime.config.stage, runtime.config.weight);
        // Forget the persisted state: the file's values apply again.
        if let Err(error) = self.store.store().delete_route_state(route).await {
            tracing::error!(%error, route, "could not forget the route's persisted state");
            if self.fleet.shared() {
                return Err(self.store_failed(&error));
            }
        }
        let reason = "reset to the file's stage and weight".to_string();
        // A fleet writes the file's values, so that every instance opens
        // the new stage's window at the same time.
        let persist = self.fleet.shared();
        self.transition(
            runtime,
            &current,
            next.clone(),
            reason,
            Actor::Admin,
            None,
            persist,
        )
        .await?;
        Ok(next)
    }

    /// In a fleet, admin writes are refused while the store is lost.
    pub fn check_store(&self) -> Result<(), ControlError> {
        if self.fleet.shared() && !self.fleet.store_ok() {
            return Err(ControlError::StoreUnavailable(
                "admin writes are refused until it returns; reads show the last known state".into(),
            ));
        }
        Ok(())
    }

    fn store_failed(&self, error: &StoreError) -> ControlError {
        if error.is_unavailable() {
            self.fleet.store_lost(error);
        }
        ControlError::StoreUnavailable(error.to_string())
    }

    /// Publishes a new status (new window on a stage change), records the
    /// event and, with `persist`, saves the status. In a fleet the status is
    /// saved first (fenced by the leader's lease when `fence` is given) and
    /// nothing changes unless the store took it.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        route: &RouteRuntime,
        from: &RouteStatus,
        to: RouteStatus,
        reason: String,
        actor: Actor,
        fence: Option<&Fence>,
        persist: bool,
    ) -> Result<(), ControlError> {
        // A resume out of `rolled_back` starts again (SPEC: "resume starts
        // again from shadow"): the comparisons that rolled the route back
        // must not keep blocking it. Pausing and resuming a pause keep it.
        let restarted = from.state == RolloutState::RolledBack && to.state != from.state;
        let reopen = from.stage != to.stage || from.weight != to.weight || restarted;
        let now = now_ms();
        let opened_at_ms = if reopen {
            now
        } else {
            route.control.window.load().opened_at_ms
        };
        let shared = self.fleet.shared();
        if shared && persist {
            let row = RouteStateRow {
                route: route.config.name.clone(),
                stage: to.stage,
                weight: to.weight,
                state: to.state,
                reason: Some(reason.clone()),
                stage_started_at_ms: opened_at_ms,
                window: None,
                updated_at_ms: now,
            };
            let store = self.store.store();
            let saved = match fence {
                Some(fence) => fleet::within(store.save_route_state_fenced(&row, fence)).await,
                None => fleet::within(store.save_route_state(&row))
                    .await
                    .map(|()| true),
            };
            match saved {
                Ok(true) => {}
                Ok(false) => return Err(ControlError::NotLeader),
                Err(error) => return Err(self.store_failed(&error)),
            }
        }
        if reopen {
            // Every transition opens a new, empty window.
            let rollout = &route.config.rollout;
            route.control.window.store(Arc::new(Window::open_at(
                rollout.warmup,
                rollout.rollback_window,
                opened_at_ms,
                now,
            )));
        }
        self.apply_locally(route, to.clone(), reason.clone(), actor);
        if persist && !shared {
            self.persist_status(&route.config.name, &to, Some(reason.clone()))
                .await;
        }
        self.record_event(
            Event {
                at: now_rfc3339(),
                route: route.config.name.clone(),
                from: from.stage,
                to: to.stage,
                weight: to.weight,
                state: to.state,
                reason,
                actor,
            },
            fence,
        )
        .await;
        Ok(())
    }

    /// Publishes a route's new status and reason (its window is already
    /// right), counting the transition.
    fn apply_locally(&self, route: &RouteRuntime, to: RouteStatus, reason: String, actor: Actor) {
        route.control.reason.store(Arc::new(Some(reason)));
        let stage = to.stage;
        route.control.status.store(Arc::new(to));
        self.metrics
            .transitions
            .get_or_create(&TransitionLabels {
                route: route.name.clone(),
                to: stage.as_str(),
                actor: actor.as_str(),
            })
            .inc();
        self.publish_gauges();
    }

    /// While a fleet's store is lost: rolls a route back on this
    /// instance's own traffic (safety first), unless it changed since it
    /// was evaluated. The state and the event are recorded when the store
    /// returns.
    pub async fn local_rollback(&self, route: &str, evaluated: &RouteStatus, reason: String) {
        let _writer = self.write_lock.lock().await;
        let snapshot = self.snapshot.load_full();
        let Some(runtime) = snapshot.route(route) else {
            return;
        };
        let current = runtime.control.status.load_full();
        if *current != *evaluated {
            return;
        }
        let Ok((next, _)) = apply(&current, &Command::Rollback, &runtime.config.rollout.steps)
        else {
            return;
        };
        let reason = format!(
            "instance {} rolled back on its own traffic while the fleet's store was unreachable: {reason}",
            self.instance_id
        );
        tracing::error!(route, %reason, "LOCAL ROLLBACK while the fleet's store is unreachable");
        let rollout = &runtime.config.rollout;
        let now = now_ms();
        runtime.control.window.store(Arc::new(Window::open_at(
            rollout.warmup,
            rollout.rollback_window,
            now,
            now,
        )));
        self.apply_locally(runtime, next.clone(), reason.clone(), Actor::Auto);
        let event = EventRow {
            id: 0,
            at: now_rfc3339(),
            route: route.to_string(),
            from: current.stage,
            to: next.stage,
            weight: next.weight,
            state: next.state,
            reason,
            actor: Actor::Auto,
            instance: Some(self.instance_id.clone()),
        };
        self.notifier.send(&serde_json::json!({
            "at": event.at,
            "route": event.route,
            "from": event.from,
            "to": event.to,
            "weight": event.weight,
            "state": event.state,
            "reason": event.reason,
            "actor": event.actor,
            "instance": self.instance_id,
        }));
        self.fleet.push_pending(event);
    }

    /// Records a local rollback once the store is back: the rolled-back
    /// state (unless the route moved on since) and its event.
    pub async fn record_local_rollback(&self, event: &EventRow) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let snapshot = self.snapshot.load_full();
        let store = self.store.store();
        if let Some(route) = snapshot.route(&event.route) {
            let status = route.control.status.load_full();
            if (status.stage, status.weight, status.state) == (event.to, event.weight, event.state)
            {
                let row = RouteStateRow {
                    route: event.route.clone(),
                    stage: status.stage,
                    weight: status.weight,
                    state: status.state,
                    reason: Some(event.reason.clone()),
                    stage_started_at_ms: route.control.window.load().opened_at_ms,
                    window: None,
                    updated_at_ms: now_ms(),
                };
                fleet::within(store.save_route_state(&row)).await?;
            }
        }
        fleet::within(store.append_event(event)).await?;
        tracing::warn!(route = %event.route, "recorded the local rollback made while the store was unreachable");
        Ok(())
    }

    /// The leader writes the state of every route that has none yet (a
    /// new fleet, a route added by a reload), so that every instance opens
    /// the stage's window at the same time and their counts add up.
    pub async fn persist_missing_states(&self, fence: &Fence) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let store = self.store.store();
        let rows = fleet::within(store.load_route_states()).await?;
        let snapshot = self.snapshot.load_full();
        for route in &snapshot.routes {
            let name = &route.config.name;
            if rows.iter().any(|r| r.route == *name) || self.fleet.has_pending(name) {
                continue;
            }
            let status = route.control.status.load_full();
            let row = RouteStateRow {
                route: name.clone(),
                stage: status.stage,
                weight: status.weight,
                state: status.state,
                reason: (**route.control.reason.load()).clone(),
                stage_started_at_ms: route.control.window.load().opened_at_ms,
                window: None,
                updated_at_ms: now_ms(),
            };
            if !fleet::within(store.save_route_state_fenced(&row, fence)).await? {
                break;
            }
        }
        Ok(())
    }

    /// Takes the fleet's persisted state of one route (or all) into the
    /// local controls: another instance changed it. A route without a
    /// persisted state goes back to the file's values; a stage or weight
    /// change opens the window at the time the transition was written, as
    /// on the instance that made it, so that the fleet's windows add up.
    pub async fn sync_from_store(&self, only: Option<&str>) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let rows = fleet::within(self.store.store().load_route_states()).await?;
        let snapshot = self.snapshot.load_full();
        let mut changed = false;
        for route in &snapshot.routes {
            let name = &route.config.name;
            if only.is_some_and(|o| o != name) || self.fleet.has_pending(name) {
                continue;
            }
            let row = rows.iter().find(|r| r.route == *name);
            let (status, started, reason) = match row {
                Some(r) => (
                    RouteStatus {
                        stage: r.stage,
                        weight: r.weight,
                        state: r.state,
                    },
                    Some(r.stage_started_at_ms),
                    r.reason.clone(),
                ),
                None => (
                    RouteStatus::initial(route.config.stage, route.config.weight),
                    None,
                    None,
                ),
            };
            let current = route.control.status.load_full();
            let window = route.control.window.load_full();
            let moved = current.stage != status.stage || current.weight != status.weight;
            if moved || started.is_some_and(|s| s != window.opened_at_ms) {
                let rollout = &route.config.rollout;
                let now = now_ms();
                route.control.window.store(Arc::new(Window::open_at(
                    rollout.warmup,
                    rollout.rollback_window,
                    started.unwrap_or(now),
                    now,
                )));
            }
            if *current != status {
                tracing::info!(route = %name, stage = %status.stage, weight = status.weight,
                    state = status.state.as_str(), "rollout state changed by the fleet");
                route.control.reason.store(Arc::new(reason));
                route.control.status.store(Arc::new(status));
                changed = true;
            }
        }
        if changed {
            self.publish_gauges();
        }
        Ok(())
    }

    /// Logs and persists a transition; a store failure is logged, never
    /// fatal (the transition already happened).
    async fn record_event(&self, event: Event, fence: Option<&Fence>) {
        tracing::info!(route = %event.route, from = %event.from, to = %event.to, weight = event.weight,
            state = event.state.as_str(), actor = event.actor.as_str(), reason = %event.reason, "rollout transition");
        // Webhooks get the event as the API shows it (never blocks).
        self.notifier.send(&serde_json::json!({
            "at": event.at,
            "route": event.route,
            "from": event.from,
            "to": event.to,
            "weight": event.weight,
            "state": event.state,
            "reason": event.reason,
            "actor": event.actor,
            "instance": self.instance_id,
        }));
        let row = EventRow {
            id: 0,
            at: event.at,
            route: event.route,
            from: event.from,
            to: event.to,
            weight: event.weight,
            state: event.state,
            reason: event.reason,
            actor: event.actor,
            instance: Some(self.instance_id.clone()),
        };
        let store = self.store.store();
        let appended = match fence {
            Some(fence) => store
                .append_event_fenced(&row, fence)
                .await
                .map(|id| id.is_some()),
            None => store.append_event(&row).await.map(|_| true),
        };
        match appended {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(route = %row.route, "a rollout event was fenced out: another instance leads now")
            }
            Err(error) => {
                tracing::error!(%error, route = %row.route, "could not record a rollout event")
            }
        }
    }

    /// Persists a route's live status, so it survives restarts.
    async fn persist_status(&self, route: &str, status: &RouteStatus, reason: Option<String>) {
        let now = now_ms();
        let window = self
            .snapshot
            .load()
            .route(route)
            .map(|r| r.control.window.load().persisted());
        let row = RouteStateRow {
            route: route.to_string(),
            stage: status.stage,
            weight: status.weight,
            state: status.state,
            reason,
            stage_started_at_ms: window.as_ref().map_or(now, |w| w.opened_at_ms),
            // A fleet's counts are in the instances' published windows.
            window: window
                .filter(|_| !self.fleet.shared())
                .and_then(|w| serde_json::to_value(w).ok()),
            updated_at_ms: now,
        };
        if let Err(error) = self.store.store().save_route_state(&row).await {
            tracing::error!(%error, route, "could not persist the route's rollout state");
        }
    }

    /// The transitions, newest first. A fleet whose store is lost answers
    /// from the last read of the same filter, or of all routes, with its
    /// own rollbacks not yet recorded in front.
    pub async fn events(
        &self,
        route: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let key = format!("events {}", route.unwrap_or("*"));
        let events = match self
            .read(&key, self.store.store().events(route, limit))
            .await
        {
            Err(error) if error.is_unavailable() && self.fleet.shared() => {
                let all: Vec<EventRow> = self.fleet.reads.recall("events *").ok_or(error)?;
                all.into_iter()
                    .filter(|e| route.is_none_or(|r| e.route == r))
                    .collect()
            }
            read => read?,
        };
        if self.fleet.shared() && !self.fleet.store_ok() {
            return Ok(self.fleet.with_pending(route, events, limit));
        }
        Ok(events)
    }

    /// Stored exchanges of a route, newest first (see [`Runtime::read`]).
    pub async fn samples(
        &self,
        route: &str,
        kind: Option<SampleKind>,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let key = format!("samples {route} {kind:?}");
        let mut rows = self
            .read(&key, self.store.store().samples(route, kind, limit))
            .await?;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// Accepted differences of one route or all (see [`Runtime::read`]).
    pub async fn accepted(&self, route: Option<&str>) -> Result<Vec<AcceptedRow>, StoreError> {
        let key = format!("accepted {}", route.unwrap_or("*"));
        self.read(&key, self.store.store().accepted(route)).await
    }

    /// One read of the store for the admin API. In a fleet it gives up
    /// after the fleet's deadline, and while the store is lost it answers
    /// from the last answer of the same `key` (SPEC §9: "reads of the
    /// admin API answer from the last known state").
    pub async fn read<T>(
        &self,
        key: &str,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError>
    where
        T: Clone + serde::Serialize + Send + Sync + 'static,
    {
        if !self.fleet.shared() {
            return read.await;
        }
        let answer = if self.fleet.store_ok() {
            fleet::within(read).await
        } else {
            Err(StoreError::Unavailable {
                location: "(fleet store)".into(),
                reason: "lost".into(),
            })
        };
        match answer {
            Ok(value) => {
                self.fleet.reads.remember(key, &value);
                Ok(value)
            }
            Err(error) if error.is_unavailable() => self.fleet.reads.recall(key).ok_or(error),
            Err(error) => Err(error),
        }
    }

    /// Reads what the admin API's reads would, so that a fleet has a last
    /// known state to answer from if its store is lost before anyone read.
    pub async fn remember_reads(&self) {
        let _ = self.events(None, 1000).await;
        let _ = self.report().await;
        let snapshot = self.snapshot.load_full();
        for route in &snapshot.routes {
            let _ = self
                .samples(&route.config.name, Some(SampleKind::Mismatch), 20)
                .await;
        }
    }

    /// Sets `strangler_route_weight` and `strangler_route_stage` from the live status.
    fn publish_gauges(&self) {
        let snapshot = self.snapshot.load();
        for route in &snapshot.routes {
            let status = route.control.status.load();
            self.metrics
                .route_weight
                .get_or_create(&RouteLabels {
                    route: route.name.clone(),
                })
                .set(status.weight);
            for stage in Stage::ALL {
                self.metrics
                    .route_stage
                    .get_or_create(&RouteStageLabels {
                        route: route.name.clone(),
                        stage: stage.as_str(),
                    })
                    .set(i64::from(stage == status.stage));
            }
        }
    }
}

/// Builds a snapshot, reusing the previous one's upstream pools where the
/// upstream's settings are unchanged and the live controls by route name.
fn build_snapshot(
    config: Config,
    metrics: &Metrics,
    old: Option<&Snapshot>,
    controls: &Mutex<HashMap<String, Arc<RouteControl>>>,
    paused: &mut Vec<(String, RouteStatus)>,
) -> Result<Snapshot, BuildError> {
    let mut upstreams = HashMap::new();
    for (name, upstream) in &config.upstreams {
        let reused = old
            .and_then(|o| o.upstreams.get(name))
            .filter(|u| u.config == *upstream)
            .cloned();
        let built = match reused {
            Some(u) => u,
            None => Upstream::new(upstream)?,
        };
        upstreams.insert(name.clone(), built);
    }
    let lookup = |name: &str| {
        upstreams
            .get(name)
            .cloned()
            .expect("validation guarantees every referenced upstream exists")
    };
    let mut controls = controls.lock().unwrap_or_else(|p| p.into_inner());
    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let control = match controls.get(&route.name) {
            Some(existing) => {
                let status = existing.status.load_full();
                let changed = old
                    .and_then(|o| o.route(&route.name))
                    .is_some_and(|o| identity(&o.config) != identity(route));
                if changed
                    && matches!(status.stage, Stage::Canary | Stage::Candidate)
                    && status.state == RolloutState::Progressing
                {
                    let mut next = (*status).clone();
                    next.state = RolloutState::Paused;
                    existing.status.store(Arc::new(next));
                    paused.push((route.name.clone(), (*status).clone()));
                }
                existing.clone()
            }
            None => {
                let window = Window::open(
                    route.rollout.warmup,
                    route.rollout.rollback_window,
                    now_ms(),
                );
                let status = RouteStatus::initial(route.stage, route.weight);
                let created = Arc::new(RouteControl::new(status, window));
                controls.insert(route.name.clone(), created.clone());
                created
            }
        };
        let rules =
            Rules::new(&route.compare, config.server.max_body_buffer).map_err(|source| {
                BuildError::Compare {
                    route: route.name.clone(),
                    source,
                }
            })?;
        let shadow = RouteShadow {
            slots: MirrorSlots::new(route.shadow.max_in_flight as usize),
            rules: Arc::new(rules),
            target: lookup(route.shadow.upstream.as_deref().unwrap_or(&route.candidate)),
            secondary: route.shadow.secondary.as_deref().map(lookup),
            endpoints: Arc::new(EndpointTemplates::new(
                &route.endpoints,
                route.max_endpoints,
            )),
            drops: DropCounters::default(),
            match_samples: Default::default(),
        };
        let name = Name::from(route.name.as_str());
        let (legacy, candidate) = (lookup(&route.legacy), lookup(&route.candidate));
        routes.push(RouteRuntime {
            config: route.clone(),
            legacy_metrics: RequestMetrics::new(metrics, &name, &legacy.name),
            candidate_metrics: RequestMetrics::new(metrics, &name, &candidate.name),
            sticky_missing: metrics
                .sticky_missing
                .get_or_create(&crate::metrics::RouteLabels {
                    route: name.clone(),
                })
                .clone(),
            name,
            control,
            legacy,
            candidate,
            shadow,
        });
    }
    let default_control = controls
        .entry(DEFAULT_ROUTE.to_string())
        .or_insert_with(|| {
            Arc::new(RouteControl::new(
                RouteStatus::initial(Stage::Legacy, 0.0),
                Window::open(Duration::ZERO, Duration::from_secs(30), now_ms()),
            ))
        })
        .clone();
    let default_name = Name::from(DEFAULT_ROUTE);
    let default_upstream = lookup(&config.defaults.upstream);
    let default = DefaultTarget {
        metrics: RequestMetrics::new(metrics, &default_name, &default_upstream.name),
        name: default_name,
        upstream: default_upstream,
        control: default_control,
        endpoints: old
            .map(|o| o.default.endpoints.clone())
            .unwrap_or_else(|| Arc::new(EndpointTemplates::new(&[], DEFAULT_MAX_ENDPOINTS))),
    };
    let redactor = Redactor::new(&config.store).map_err(BuildError::Redact)?;
    Ok(Snapshot {
        redactor,
        table: RoutingTable::new(&config),
        config: Arc::new(config),
        routes,
        default,
        upstreams,
    })
}

/// What decides which requests a route takes and where they go: a reload
/// that changes it during a canary pauses the route.
fn identity(route: &RouteConfig) -> String {
    format!(
        "{:?}|{:?}|{:?}|{}|{}|{:?}|{}",
        route.path,
        route.methods,
        route.headers,
        route.legacy,
        route.candidate,
        route.sticky,
        route.sticky_salt
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Now in RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
