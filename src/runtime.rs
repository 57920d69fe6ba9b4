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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, RouteConfig, Stage};
use crate::metrics::{Metrics, Name, RouteLabels, RouteStageLabels, TransitionLabels};
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::rollout::state::{apply, Actor, Command, Conflict, RolloutState, RouteStatus};
use crate::rollout::window::Window;
use crate::routing::RoutingTable;

/// Events kept in memory (the store will keep them durably).
const MAX_EVENTS: usize = 10_000;

/// The route name used for requests that match no route.
pub const DEFAULT_ROUTE: &str = "_default";

/// Live rollout status and counters of one route; survives reloads.
pub struct RouteControl {
    pub status: ArcSwap<RouteStatus>,
    pub window: ArcSwap<Window>,
}

impl RouteControl {
    fn new(status: RouteStatus) -> Self {
        RouteControl {
            status: ArcSwap::from_pointee(status),
            window: ArcSwap::from_pointee(Window::default()),
        }
    }
}

/// A route as the request path needs it.
pub struct RouteRuntime {
    pub config: RouteConfig,
    pub name: Name,
    pub control: Arc<RouteControl>,
    pub legacy: Arc<Upstream>,
    pub candidate: Arc<Upstream>,
}

/// Where unmatched requests go.
pub struct DefaultTarget {
    pub name: Name,
    pub upstream: Arc<Upstream>,
    pub control: Arc<RouteControl>,
}

/// One immutable, consistent view of the configuration and its upstreams.
pub struct Snapshot {
    pub config: Arc<Config>,
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

/// Why a manual action failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route named {0}")]
    UnknownRoute(String),
    #[error(transparent)]
    Conflict(#[from] Conflict),
}

/// Everything shared between the proxy, the admin API and the controller.
pub struct Runtime {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    controls: Mutex<HashMap<String, Arc<RouteControl>>>,
    events: Mutex<Vec<Event>>,
    /// Serialises writers (reload, admin actions) so they never interleave.
    write_lock: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    pub instance_id: String,
    pub started_at: SystemTime,
}

impl Runtime {
    pub fn new(config: Config, instance_id: String) -> Result<Arc<Runtime>, UpstreamError> {
        let metrics = Metrics::new();
        let controls = Mutex::new(HashMap::new());
        let snapshot = build_snapshot(config, None, &controls, &mut Vec::new())?;
        let runtime = Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            controls,
            events: Mutex::new(Vec::new()),
            write_lock: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
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
    pub async fn install(&self, config: Config) -> Result<(), UpstreamError> {
        let _writer = self.write_lock.lock().await;
        let old = self.snapshot.load_full();
        let mut paused = Vec::new();
        let snapshot = build_snapshot(config, Some(&old), &self.controls, &mut paused)?;
        self.snapshot.store(Arc::new(snapshot));
        for (route, from) in paused {
            self.record_event(Event {
                at: now_rfc3339(),
                route,
                from: from.stage,
                to: from.stage,
                weight: from.weight,
                state: RolloutState::Paused,
                reason: "reload changed the route's matching, upstreams or sticky key".into(),
                actor: Actor::Admin,
            });
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
        let snapshot = self.snapshot.load();
        let runtime = snapshot
            .route(route)
            .ok_or_else(|| ControlError::UnknownRoute(route.to_string()))?;
        let current = runtime.control.status.load_full();
        let (next, reason) = apply(&current, &command, &runtime.config.rollout.steps)?;
        self.transition(runtime, &current, next.clone(), reason, Actor::Admin);
        Ok(next)
    }

    /// Forgets a route's live status and starts again from the file's values.
    pub async fn reset(&self, route: &str) -> Result<RouteStatus, ControlError> {
        let _writer = self.write_lock.lock().await;
        let snapshot = self.snapshot.load();
        let runtime = snapshot
            .route(route)
            .ok_or_else(|| ControlError::UnknownRoute(route.to_string()))?;
        let current = runtime.control.status.load_full();
        let next = RouteStatus::initial(runtime.config.stage, runtime.config.weight);
        self.transition(
            runtime,
            &current,
            next.clone(),
            "reset to the file's stage and weight".into(),
            Actor::Admin,
        );
        Ok(next)
    }

    fn transition(
        &self,
        route: &RouteRuntime,
        from: &RouteStatus,
        to: RouteStatus,
        reason: String,
        actor: Actor,
    ) {
        if from.stage != to.stage {
            // Every stage change opens a new, empty window.
            route.control.window.store(Arc::new(Window::default()));
        }
        route.control.status.store(Arc::new(to.clone()));
        self.metrics
            .transitions
            .get_or_create(&TransitionLabels {
                route: route.name.clone(),
                to: to.stage.as_str(),
                actor: actor.as_str(),
            })
            .inc();
        self.record_event(Event {
            at: now_rfc3339(),
            route: route.config.name.clone(),
            from: from.stage,
            to: to.stage,
            weight: to.weight,
            state: to.state,
            reason,
            actor,
        });
        self.publish_gauges();
    }

    fn record_event(&self, event: Event) {
        tracing::info!(route = %event.route, from = %event.from, to = %event.to, weight = event.weight,
            state = event.state.as_str(), actor = event.actor.as_str(), reason = %event.reason, "rollout transition");
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() >= MAX_EVENTS {
            events.remove(0);
        }
        events.push(event);
    }

    /// Events, newest first, optionally for one route.
    pub fn events(&self, route: Option<&str>) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .rev()
            .filter(|e| route.is_none_or(|r| e.route == r))
            .cloned()
            .collect()
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
    old: Option<&Snapshot>,
    controls: &Mutex<HashMap<String, Arc<RouteControl>>>,
    paused: &mut Vec<(String, RouteStatus)>,
) -> Result<Snapshot, UpstreamError> {
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
                let created = Arc::new(RouteControl::new(RouteStatus::initial(
                    route.stage,
                    route.weight,
                )));
                controls.insert(route.name.clone(), created.clone());
                created
            }
        };
        routes.push(RouteRuntime {
            config: route.clone(),
            name: Name::from(route.name.as_str()),
            control,
            legacy: lookup(&route.legacy),
            candidate: lookup(&route.candidate),
        });
    }
    let default_control = controls
        .entry(DEFAULT_ROUTE.to_string())
        .or_insert_with(|| Arc::new(RouteControl::new(RouteStatus::initial(Stage::Legacy, 0.0))))
        .clone();
    let default = DefaultTarget {
        name: Name::from(DEFAULT_ROUTE),
        upstream: lookup(&config.defaults.upstream),
        control: default_control,
    };
    Ok(Snapshot {
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

/// Now in RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
