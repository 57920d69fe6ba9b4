//! Fleet mode (SPEC §9): many proxies sharing one PostgreSQL store act as
//! one.
//!
//! [`Fleet`] is what one instance knows about its fleet, and [`spawn`]
//! starts the loops that keep it current, each once a [`PERIOD`]:
//! - **registry and reports**: a heartbeat in the instance registry, then
//!   this instance's window of every route, published as a
//!   [`WindowReport`] (stage totals with their latency histograms, plus a
//!   summary of its last `rollback_window`: the one-second ring stays
//!   local); then the other instances' reports written within
//!   [`FRESH_WITHIN`] and the registry (who leads, whose configuration
//!   hash differs). Gates are judged on this instance's live window plus
//!   the others' last reports of the same stage ([`Fleet::figures`]);
//! - **lease**: the leader lease, taken or renewed for [`LEASE_TTL`]; only
//!   the holder runs the controller, and every state change it writes is
//!   fenced by its epoch, so a paused or partitioned former leader can
//!   never act. A new leader first reloads every route's state;
//! - **changes**: `LISTEN`/`NOTIFY` on the store's changes reload the
//!   route's state into the local control at once; when notifications are
//!   unavailable, the state is polled every second instead (and every few
//!   seconds regardless, in case a notification was lost).
//!
//! Losing the store (a heartbeat that fails or does not answer in time)
//! is logged loudly: the instance keeps proxying with what it knows,
//! `/readyz` says `"store": "unreachable"`, admin writes answer 503,
//! nothing is promoted, and the controller guards only this instance's own
//! traffic, rolling a route back locally when it breaks a rollback gate.
//! Such a rollback is recorded (state and event, its reason naming the
//! instance) when the store returns, before the instance takes the
//! fleet's state again.
//!
//! With SQLite the instance is alone: it is always the leader, its windows
//! are its own, and only the heartbeat runs (for `GET /api/instances`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::last_reads::LastReads;
use crate::rollout::window::{Figures, ShadowSummary, SideSummary, WindowReport};
use crate::runtime::{now_ms, RouteRuntime, Runtime};
use crate::store::{EventRow, Fence, InstanceInfo, InstanceRow, StoreError};

/// How often an instance reports, renews the lease and (as a fallback)
/// polls the state.
pub const PERIOD: Duration = Duration::from_secs(1);
/// How long the leader lease lasts without a renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Reports older than this (by the database's clock) leave the sum.
pub const FRESH_WITHIN: Duration = Duration::from_secs(3);
/// Instances seen within this long count when comparing configuration
/// hashes.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(10);
/// The longest a fleet operation may take before the store counts as lost.
pub const OP_DEADLINE: Duration = Duration::from_secs(2);
/// The lease is trusted locally until this long before it would expire,
/// measured from when the renewal was sent.
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// A full reload of the state every this many periods, notifications or not.
const SYNC_EVERY: u32 = 5;
/// How often the admin API's reads are made and remembered, to answer
/// from while the store is lost (first at the start, see `app`).
const REMEMBER_EVERY: Duration = Duration::from_secs(30);
/// While the store is lost, the loss is logged again this often.
const LOST_LOG_EVERY: Duration = Duration::from_secs(10);

/// A lease this instance holds.
struct Lease {
    fence: Fence,
    valid_until: Instant,
}

/// Another instance's latest report of a route.
struct Peer {
    id: String,
    figures: Figures,
}

/// A rollback made while the store was lost, to record when it returns.
struct PendingRollback {
    event: EventRow,
}

/// One instance's share of a route's figures (`GET /api/routes`).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceFigures {
    pub id: String,
    pub legacy: SideSummary,
    pub candidate: SideSummary,
    pub shadow: ShadowSummary,
}

impl InstanceFigures {
    fn of(id: &str, figures: &Figures) -> Self {
        let stage = figures.stage();
        InstanceFigures {
            id: id.to_string(),
            legacy: SideSummary::from(&stage.legacy),
            candidate: SideSummary::from(&stage.candidate),
            shadow: figures.shadow_summary(),
        }
    }
}

/// What this instance knows about its fleet.
pub struct Fleet {
    instance_id: String,
    shared: bool,
    lease: Mutex<Option<Lease>>,
    store_ok: AtomicBool,
    hashes_agree: AtomicBool,
    instances: ArcSwap<Vec<InstanceInfo>>,
    /// Other instances' fresh reports, by route.
    peers: Mutex<HashMap<String, Vec<Peer>>>,
    pending: Mutex<Vec<PendingRollback>>,
    /// The admin API's last reads of the store, answered while it is lost.
    pub reads: LastReads,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `future`, or an unavailable store when it takes longer than
/// [`OP_DEADLINE`].
pub async fn within<T>(
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OP_DEADLINE, future)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                location: "(fleet store)".into(),
                reason: format!("no answer within {OP_DEADLINE:?}"),
            })
        })
}

impl Fleet {
    pub fn new(instance_id: String, shared: bool) -> Fleet {
        Fleet {
            instance_id,
            shared,
            lease: Mutex::new(None),
            store_ok: AtomicBool::new(true),
            // Not known before the registry was read once.
            hashes_agree: AtomicBool::new(!shared),
            instances: ArcSwap::from_pointee(Vec::new()),
            peers: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            reads: LastReads::default(),
        }
    }

    /// True when several proxies share the store (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.shared
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// False while a fleet's store cannot be reached.
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Acquire)
    }

    /// The lease while this instance holds it (always with SQLite).
    pub fn fence(&self) -> Option<Fence> {
        if !self.shared {
            return Some(Fence {
                holder: self.instance_id.clone(),
                epoch: 1,
            });
        }
        let lease = lock(&self.lease);
        lease
            .as_ref()
            .filter(|l| Instant::now() < l.valid_until)
            .map(|l| l.fence.clone())
    }

    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// Forgets the lease (a fenced write was refused: someone else leads).
    pub fn drop_lease(&self) -> bool {
        lock(&self.lease).take().is_some()
    }

    /// False while the live instances' configuration hashes differ: no
    /// promotion then.
    pub fn hashes_agree(&self) -> bool {
        self.hashes_agree.load(Ordering::Acquire)
    }

    /// The registry as last read.
    pub fn instances(&self) -> Arc<Vec<InstanceInfo>> {
        self.instances.load_full()
    }

    /// Whether a local rollback of `route` still waits to be recorded.
    pub fn has_pending(&self, route: &str) -> bool {
        lock(&self.pending).iter().any(|p| p.event.route == route)
    }

    pub(crate) fn push_pending(&self, event: EventRow) {
        lock(&self.pending).push(PendingRollback { event });
    }

    /// `events` (newest first) with this instance's rollbacks not yet
    /// recorded in front, while the store is lost.
    pub(crate) fn with_pending(
        &self,
        route: Option<&str>,
        events: Vec<EventRow>,
        limit: u32,
    ) -> Vec<EventRow> {
        let pending = lock(&self.pending);
        let mut all: Vec<EventRow> = pending
            .iter()
            .rev()
            .filter(|p| route.is_none_or(|r| r == p.event.route))
            .map(|p| p.event.clone())
            .collect();
        drop(pending);
        all.extend(events);
        all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        all
    }

    /// Notes whether the live instances' configuration hashes agree, from
    /// a fresh read of the registry; returns it.
    pub fn note_hashes(&self, instances: &[InstanceInfo]) -> bool {
        // Generous, so that a late heartbeat does not let a promotion
        // through.
        let fresh_ms = i64::try_from(ALIVE_WITHIN.as_millis()).unwrap_or(i64::MAX);
        let mut hashes = instances
            .iter()
            .filter(|i| i.seen_ago_ms <= fresh_ms)
            .map(|i| i.config_hash.as_str());
        let first = hashes.next();
        let agree = hashes.all(|h| Some(h) == first);
        let before = self.hashes_agree.swap(agree, Ordering::AcqRel);
        if before && !agree {
            tracing::warn!(
                "the fleet's instances run different configurations: no promotion until they agree"
            );
        } else if !before && agree {
            tracing::info!("the fleet's instances agree on the configuration");
        }
        agree
    }

    /// Notes a store failure; true when it is news (the store was fine).
    pub fn store_lost(&self, error: &StoreError) -> bool {
        let was = self.store_ok.swap(false, Ordering::AcqRel);
        if was {
            tracing::error!(
                instance = %self.instance_id, %error,
                "FLEET STORE UNREACHABLE: proxying on with the last known stages and weights; \
                 no promotion, admin writes answer 503, rollbacks are local until it returns"
            );
        }
        was
    }

    /// The figures the gates of `route` read: with a reachable shared
    /// store, this instance's live window plus the other instances' fresh
    /// reports of the same stage; otherwise this instance's window alone.
    /// Also each instance's share.
    pub fn figures(&self, route: &RouteRuntime) -> (Figures, Vec<InstanceFigures>) {
        let window = route.control.window.load();
        let mut sum = window.figures(route.config.rollout.rollback_window);
        let mut breakdown = vec![InstanceFigures::of(&self.instance_id, &sum)];
        if self.shared && self.store_ok() {
            let peers = lock(&self.peers);
            for peer in peers.get(&route.config.name).into_iter().flatten() {
                if peer.figures.opened_at_ms == sum.opened_at_ms {
                    breakdown.push(InstanceFigures::of(&peer.id, &peer.figures));
                    sum.add(&peer.figures);
                }
            }
        }
        (sum, breakdown)
    }
}

/// Registers this instance (at start: an unreachable store is fatal then).
pub async fn register(runtime: &Runtime) -> Result<(), StoreError> {
    let config_hash = runtime.snapshot.load().config.config_hash.clone();
    let started_at_ms = runtime
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let row = InstanceRow {
        id: runtime.instance_id.clone(),
        config_hash,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_ms,
    };
    within(runtime.store.store().register_instance(&row)).await
}

/// Continues this instance's own counts of the current stages after a
/// restart with the same id (its last reports, if still of that stage).
pub async fn restore_own_windows(runtime: &Runtime) {
    if !runtime.fleet.shared() {
        return;
    }
    let snapshot = runtime.snapshot.load_full();
    let store = runtime.store.store();
    for route in &snapshot.routes {
        let Ok(reports) =
            within(store.windows(&route.config.name, Duration::from_secs(86_400))).await
        else {
            return;
        };
        let own = reports
            .into_iter()
            .find(|(id, _)| *id == runtime.instance_id)
            .and_then(|(_, json)| serde_json::from_value::<WindowReport>(json).ok());
        let Some(report) = own else { continue };
        let window = route.control.window.load();
        if report.opened_at_ms != window.opened_at_ms {
            continue;
        }
        let rollout = &route.config.rollout;
        let restored = crate::rollout::window::Window::restore(
            &report.persisted(),
            rollout.warmup,
            rollout.rollback_window,
            now_ms(),
        );
        route.control.window.store(Arc::new(restored));
        tracing::info!(route = %route.config.name, "continuing this instance's counts of the stage");
    }
}

/// Starts the fleet loops; the returned task ends (releasing the lease)
/// after `shutdown`.
pub fn spawn(runtime: Arc<Runtime>, shutdown: CancellationToken) -> JoinHandle<()> {
    let report = tokio::spawn(report_loop(runtime.clone(), shutdown.clone()));
    if !runtime.fleet.shared() {
        return report;
    }
    tokio::spawn(changes_loop(runtime.clone(), shutdown.clone()));
    tokio::spawn(remember_loop(runtime.clone(), shutdown.clone()));
    let lease = tokio::spawn(lease_loop(runtime, shutdown));
    tokio::spawn(async move {
        let _ = report.await;
        let _ = lease.await;
    })
}

/// Makes the admin API's reads now and then, so that a store lost before
/// anyone read still leaves a last known state to answer from. Apart from
/// the heartbeat: a slow store must not delay it.
async fn remember_loop(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let start = Instant::now() + REMEMBER_EVERY;
    let mut tick = tokio::time::interval_at(start, REMEMBER_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if runtime.fleet.store_ok() {
            runtime.remember_reads().await;
        }
    }
}

/// Heartbeat, reports, peers' reports and the registry, once a period.
async fn report_loop(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let fleet = &runtime.fleet;
    let store = runtime.store.store().clone();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let mut lost_logged = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks = ticks.wrapping_add(1);
        let beat = match within(store.heartbeat(&runtime.instance_id)).await {
            Ok(true) => Ok(()),
            Ok(false) => register(&runtime).await,
            Err(e) => Err(e),
        };
        if let Err(error) = beat {
            if !fleet.store_lost(&error) && lost_logged.elapsed() >= LOST_LOG_EVERY {
                lost_logged = Instant::now();
                tracing::error!(instance = %runtime.instance_id, %error,
                    "the fleet store is still unreachable");
            }
            continue;
        }
        if !fleet.store_ok() {
            // Back: record what was decided alone, then take the fleet's state.
            if !flush_pending(&runtime).await {
                continue;
            }
            if let Err(error) = runtime.sync_from_store(None).await {
                tracing::warn!(%error, "could not reload the rollout state");
                continue;
            }
            fleet.store_ok.store(true, Ordering::Release);
            tracing::warn!(instance = %runtime.instance_id,
                "the fleet store is reachable again: normal work resumes");
        }
        if fleet.shared() {
            publish(&runtime).await;
            if ticks % SYNC_EVERY == 0 {
                if let Err(error) = runtime.sync_from_store(None).await {
                    tracing::warn!(%error, "could not reload the rollout state");
                }
            }
        }
        match within(store.instances()).await {
            Ok(instances) => {
                fleet.note_hashes(&instances);
                fleet.instances.store(Arc::new(instances));
            }
            Err(error) => tracing::warn!(%error, "could not read the instance registry"),
        }
    }
}

/// Publishes this instance's windows and reads the others'.
async fn publish(runtime: &Runtime) {
    let snapshot = runtime.snapshot.load_full();
    let store = runtime.store.store();
    let mut peers = HashMap::new();
    for route in &snapshot.routes {
        let name = &route.config.name;
        let window = route.control.window.load_full();
        let report = window
            .figures(route.config.rollout.rollback_window)
            .report();
        let Ok(json) = serde_json::to_value(&report) else {
            continue;
        };
        if let Err(error) =
            within(store.write_window(&runtime.instance_id, name, &json, now_ms())).await
        {
            tracing::warn!(%error, route = %name, "could not publish this instance's window");
        }
        match within(store.windows(name, FRESH_WITHIN)).await {
            Ok(reports) => {
                let list: Vec<Peer> = reports
                    .into_iter()
                    .filter(|(id, _)| *id != runtime.instance_id)
                    .filter_map(|(id, json)| {
                        let report = serde_json::from_value::<WindowReport>(json).ok()?;
                        Some(Peer {
                            id,
                            figures: Figures::from_report(&report),
                        })
                    })
                    .collect();
                peers.insert(name.clone(), list);
            }
            Err(error) => {
                tracing::warn!(%error, route = %name, "could not read the fleet's windows");
            }
        }
    }
    *lock(&runtime.fleet.peers) = peers;
}

/// Records the rollbacks made while the store was lost; false when the
/// store failed again (they stay pending).
async fn flush_pending(runtime: &Runtime) -> bool {
    let pending: Vec<PendingRollback> = std::mem::take(&mut *lock(&runtime.fleet.pending));
    let mut left = Vec::new();
    let mut ok = true;
    for item in pending {
        if !ok {
            left.push(item);
            continue;
        }
        match runtime.record_local_rollback(&item.event).await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, route = %item.event.route, "could not record a local rollback yet");
                ok = false;
                left.push(item);
            }
        }
    }
    lock(&runtime.fleet.pending).extend(left);
    ok
}

/// Takes or renews the leader lease once a period; lets it go at shutdown.
async fn lease_loop(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let fleet = &runtime.fleet;
    let store = runtime.store.store().clone();
    let id = runtime.instance_id.clone();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut epoch: Option<u64> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        match within(store.try_acquire_lease(&id, LEASE_TTL)).await {
            Ok(Some(fence)) => {
                if epoch != Some(fence.epoch) || !fleet.is_leader() {
                    // Catch up with the persisted state before acting on it.
                    if let Err(error) = runtime.sync_from_store(None).await {
                        tracing::warn!(%error, "took the lease but could not reload the state; not leading yet");
                        continue;
                    }
                    tracing::info!(instance = %id, epoch = fence.epoch, "this instance now leads the fleet");
                }
                epoch = Some(fence.epoch);
                *lock(&fleet.lease) = Some(Lease {
                    fence: fence.clone(),
                    valid_until: sent + LEASE_TTL - LEASE_MARGIN,
                });
                if let Err(error) = runtime.persist_missing_states(&fence).await {
                    tracing::warn!(%error, "could not write the initial rollout states");
                }
            }
            Ok(None) => {
                if fleet.drop_lease() {
                    tracing::warn!(instance = %id, "another instance leads the fleet now");
                }
                epoch = None;
            }
            Err(error) => {
                if epoch.is_some() && !fleet.is_leader() {
                    tracing::error!(instance = %id, %error, "lost the fleet's lead: the lease could not be renewed");
                    fleet.drop_lease();
                    epoch = None;
                } else {
                    tracing::warn!(%error, "could not renew the leader lease");
                }
            }
        }
    }
    if fleet.drop_lease() {
        match within(store.release_lease(&id)).await {
            Ok(_) => tracing::info!(instance = %id, "released the fleet's lead"),
            Err(error) => tracing::warn!(%error, "could not release the leader lease"),
        }
    }
}

/// Applies state changes from other instances as they are notified, or
/// polls when notifications are unavailable.
async fn changes_loop(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let store = runtime.store.store().clone();
    loop {
        match within(store.subscribe_changes()).await {
            Ok(mut changes) => {
                tracing::debug!("listening for rollout state changes");
                loop {
                    let route = tokio::select! {
                        () = shutdown.cancelled() => return,
                        route = changes.recv() => route,
                    };
                    let Some(route) = route else { break };
                    if !runtime.fleet.store_ok() {
                        // The report loop reloads everything when it returns.
                        continue;
                    }
                    let only = (!route.is_empty()).then_some(route.as_str());
                    if let Err(error) = runtime.sync_from_store(only).await {
                        tracing::warn!(%error, "could not reload a changed rollout state");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "no change notifications from the store: polling every second");
                for _ in 0..5 {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(PERIOD) => {}
                    }
                    if runtime.fleet.store_ok() {
                        let _ = runtime.sync_from_store(None).await;
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PERIOD) => {}
        }
    }
}
