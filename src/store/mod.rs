//! The persistent store: rollout state, events, stored exchanges, accepted
//! differences and traffic aggregates.
//!
//! Everything that must outlive the process goes through the [`Store`]
//! trait, an object-safe async trait so that the rest of strangler holds an
//! `Arc<dyn Store>` and never knows which database sits behind it (the
//! dependency-injection shape of axum's examples). [`open`] picks the
//! backend from the URL of `store.url`:
//!
//! - `sqlite://PATH` (a relative PATH is relative to the current directory)
//!   or `sqlite::memory:` (tests): the embedded default, [`sqlite`];
//! - `postgres://…` or `postgresql://…`: a fleet of proxies sharing one
//!   database, [`postgres`].
//!
//! The writers are the rollout controller and the admin API (state, events,
//! accepted differences) and the shadow pipeline's background flusher
//! (samples, aggregates, endpoint stats). The request path never awaits the
//! store. The trait keeps to semantics both SQLite and PostgreSQL have: ids
//! are 64-bit and grow with insertion, counts are 64-bit, timestamps are
//! RFC 3339 strings or epoch milliseconds, JSON stays JSON.
//!
//! The fleet methods (SPEC §9: instance registry, leader lease with
//! fencing, shared windows, change notifications) have defaults for a
//! single proxy, which is always its own leader; [`sqlite`] keeps the
//! registry and windows in memory so the admin API looks the same, and
//! [`postgres`] shares them through the database, judging every expiry and
//! freshness bound by the database's clock so that instances whose clocks
//! disagree still agree on who leads and who is alive.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

mod local;
pub mod model;
pub mod postgres;
pub mod sqlite;
mod values;
pub mod writer;

#[cfg(test)]
mod tests;

pub use model::{
    AcceptedRow, AggregateRow, EndpointStatRow, EventRow, Fence, InstanceInfo, InstanceRow,
    PruneStats, RouteStateRow, SampleKind, SampleRow,
};

/// The `LISTEN`/`NOTIFY` channel that carries the name of a route whose
/// persisted state changed.
pub const CHANGES_CHANNEL: &str = "strangler_state";

/// Why a store operation failed. Each message is one sentence that names
/// the database and says what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store URL {url:?} is not supported: use sqlite://PATH, sqlite::memory: or postgres://…"
    )]
    UnsupportedUrl { url: String },
    #[error("cannot open the store database {location}: {reason}")]
    Open { location: String, reason: String },
    #[error("cannot apply the schema migrations to the store database {location}: {reason}")]
    Migrate { location: String, reason: String },
    /// The database cannot be reached right now (I/O, pool exhausted or
    /// closed); the operation may succeed later.
    #[error("the store database {location} cannot be reached: {reason}")]
    Unavailable { location: String, reason: String },
    #[error("the store database {location} refused an operation: {reason}")]
    Database { location: String, reason: String },
    /// A stored value cannot be read back (e.g. edited by hand).
    #[error("the store database {location} holds an unreadable {what}: {reason}")]
    Corrupt {
        location: String,
        what: &'static str,
        reason: String,
    },
    /// The caller passed a value the store cannot keep.
    #[error("cannot store {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The backend has no such feature (e.g. change notifications in
    /// SQLite); the caller does without or falls back to polling.
    #[error("the {backend} store does not support {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
}

impl StoreError {
    /// True when the database is out of reach rather than refusing the
    /// request: the caller keeps serving from what it knows (SPEC §9).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The persistent store. Object safe: use it as `Arc<dyn Store>`.
///
/// "Newest first" means most recently stored first (descending id).
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connections, flushing what the backend buffers. Later
    /// calls fail with [`StoreError::Unavailable`].
    async fn close(&self);

    // --- rollout state ---

    /// Every route's persisted rollout state, ordered by route name.
    async fn load_route_states(&self) -> Result<Vec<RouteStateRow>, StoreError>;
    /// Inserts or replaces the state of `row.route`.
    async fn save_route_state(&self, row: &RouteStateRow) -> Result<(), StoreError>;
    /// Forgets a route's state (`strangler reset`); true when there was one.
    async fn delete_route_state(&self, route: &str) -> Result<bool, StoreError>;

    // --- events ---

    /// Appends a transition and returns its id (`event.id` is ignored).
    async fn append_event(&self, event: &EventRow) -> Result<i64, StoreError>;
    /// At most `limit` events, newest first, of one route or of all.
    async fn events(&self, route: Option<&str>, limit: u32) -> Result<Vec<EventRow>, StoreError>;

    // --- stored exchanges ---

    /// Stores an exchange and keeps at most `max_per_endpoint` of its
    /// (route, endpoint, kind), deleting the oldest beyond. Returns the new
    /// id, or `None` when `max_per_endpoint` is 0 and nothing is stored.
    /// `sample.id` is ignored.
    async fn insert_sample(
        &self,
        sample: &SampleRow,
        max_per_endpoint: u32,
    ) -> Result<Option<i64>, StoreError>;
    /// At most `limit` exchanges of a route, newest first, of one kind or both.
    async fn samples(
        &self,
        route: &str,
        kind: Option<SampleKind>,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError>;
    /// One exchange by id.
    async fn sample(&self, id: i64) -> Result<Option<SampleRow>, StoreError>;

    // --- accepted differences ---

    /// Records an accepted difference; accepting the same (route, endpoint,
    /// path) again replaces the note and keeps the first `at`. Returns the
    /// row as stored.
    async fn accept(&self, row: &AcceptedRow) -> Result<AcceptedRow, StoreError>;
    /// Accepted differences of one route or all, ordered by route, endpoint
    /// and path.
    async fn accepted(&self, route: Option<&str>) -> Result<Vec<AcceptedRow>, StoreError>;

    // --- aggregates ---

    /// Adds the rows' counts to the stored (route, bucket, side) rows,
    /// creating them as needed, in one transaction. A bucket written twice
    /// (a flush split in two, or two instances of a fleet) keeps the larger
    /// p50 and p99: an upper bound of the combined percentile.
    async fn record_aggregates(&self, rows: &[AggregateRow]) -> Result<(), StoreError>;
    /// Buckets starting at or after `since_ms`, of one route or all, ordered
    /// by route, bucket and side.
    async fn aggregates(
        &self,
        route: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<AggregateRow>, StoreError>;
    /// Adds increments to the per-endpoint totals in one transaction; p50
    /// and p99 become the request-weighted mean of the stored and new values
    /// and `last_bucket_ms` the later one.
    async fn add_endpoint_stats(&self, rows: &[EndpointStatRow]) -> Result<(), StoreError>;
    /// Per-endpoint totals of one route or all, ordered by route, endpoint
    /// and side.
    async fn endpoint_stats(&self, route: Option<&str>)
        -> Result<Vec<EndpointStatRow>, StoreError>;

    // --- housekeeping ---

    /// Deletes samples, aggregates and events older than `retention` (and
    /// endpoint stats not updated within it); then, while the store is
    /// larger than `max_bytes`, deletes the oldest samples in batches, and
    /// the oldest aggregates once no sample is left. Rollout state and
    /// accepted differences are never pruned.
    async fn prune(&self, retention: Duration, max_bytes: u64) -> Result<PruneStats, StoreError>;

    // --- fleet (SPEC §9) ---
    //
    // The defaults describe a single proxy: it is always the leader, fenced
    // writes are plain writes, nobody else reports windows and nothing
    // else changes the state behind its back.

    /// True when several proxies may share this store (PostgreSQL): the
    /// caller then runs the heartbeat, lease and window loops.
    fn shared(&self) -> bool {
        false
    }

    /// Adds or refreshes an instance in the registry; it is seen now.
    async fn register_instance(&self, row: &InstanceRow) -> Result<(), StoreError> {
        let _ = row;
        Ok(())
    }
    /// Marks an instance as seen now (the database's clock). False when it
    /// is not registered (e.g. the registry was cleaned): register again.
    async fn heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        let _ = id;
        Ok(true)
    }
    /// Every registered instance, ordered by id, with the leader flag.
    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        Ok(Vec::new())
    }

    /// Takes the leader lease for `ttl` when it is free or expired (the
    /// epoch grows by one), or renews it when `holder` already has it (the
    /// epoch stays). `None` while another instance holds it.
    async fn try_acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, StoreError> {
        let _ = ttl;
        Ok(Some(Fence {
            holder: holder.to_string(),
            epoch: 1,
        }))
    }
    /// Lets the lease go at once (shutdown) so another instance can take it
    /// without waiting for the expiry; true when `holder` had it.
    async fn release_lease(&self, holder: &str) -> Result<bool, StoreError> {
        let _ = holder;
        Ok(true)
    }
    /// [`Store::save_route_state`] on condition that `fence` is still the
    /// unexpired lease, checked in the same statement; false when fenced
    /// out (nothing written).
    async fn save_route_state_fenced(
        &self,
        row: &RouteStateRow,
        fence: &Fence,
    ) -> Result<bool, StoreError> {
        let _ = fence;
        self.save_route_state(row).await.map(|()| true)
    }
    /// [`Store::append_event`] on the same condition; `None` when fenced
    /// out (nothing written).
    async fn append_event_fenced(
        &self,
        event: &EventRow,
        fence: &Fence,
    ) -> Result<Option<i64>, StoreError> {
        let _ = fence;
        self.append_event(event).await.map(Some)
    }

    /// Publishes `instance_id`'s current window of `route` (one row per
    /// instance and route, replaced on each write). `at_ms` is the
    /// caller's time of the snapshot, kept for display only.
    async fn write_window(
        &self,
        instance_id: &str,
        route: &str,
        window: &serde_json::Value,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let _ = (instance_id, route, window, at_ms);
        Ok(())
    }
    /// The windows of `route` written within `fresh_within` (the
    /// database's clock), as (instance id, window), ordered by instance id.
    async fn windows(
        &self,
        route: &str,
        fresh_within: Duration,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let _ = (route, fresh_within);
        Ok(Vec::new())
    }

    /// A stream of route names whose persisted state changed, from any
    /// instance ([`CHANGES_CHANNEL`]). An empty name means "changes may
    /// have been missed" (the connection was lost and is back): reload
    /// every route. Ends when the store closes. An error means the caller
    /// polls instead.
    async fn subscribe_changes(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        Err(StoreError::Unsupported {
            backend: "single-instance",
            what: "change notifications",
        })
    }
}

/// Opens (creating and migrating as needed) the store that `url` names.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    if let Some(target) = sqlite::Target::parse(url) {
        let store = sqlite::SqliteStore::open(target?).await?;
        return Ok(Arc::new(store));
    }
    Err(StoreError::UnsupportedUrl {
        url: url.to_string(),
    })
}
