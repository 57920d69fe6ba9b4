//! The rows the store keeps, as the rest of strangler sees them.
//!
//! These types are the store's API, not its schema: a backend maps them to
//! its own columns (SQLite keeps JSON as text, enums as their lowercase
//! names, counts as signed 64-bit integers). They derive serde so the admin
//! API and `export` can hand them out as they are.
//!
//! Timestamps named `at` are RFC 3339 UTC strings with milliseconds
//! (`2024-05-01T12:00:00.123Z`, as [`crate::runtime::now_rfc3339`] writes
//! them); the store parses them to order and prune rows and refuses anything
//! else. Times named `*_ms` are milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

use crate::config::Stage;
use crate::rollout::state::{Actor, RolloutState};

/// The persisted rollout position of one route (SPEC §3: stage, weight,
/// state and the current window's counters survive a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStateRow {
    pub route: String,
    pub stage: Stage,
    /// Candidate share in percent.
    pub weight: f64,
    pub state: RolloutState,
    /// Why the route is in this state (e.g. the failing gate of a rollback).
    pub reason: Option<String>,
    /// When the current stage (and so its window) began.
    pub stage_started_at_ms: i64,
    /// The current window's counters, an opaque blob owned by the rollout
    /// controller; the store keeps it as JSON and never looks inside.
    pub window: Option<serde_json::Value>,
    pub updated_at_ms: i64,
}

/// A rollout transition (SPEC §3), as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// Assigned by the store; ignored by [`super::Store::append_event`].
    pub id: i64,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    pub route: String,
    pub from: Stage,
    pub to: Stage,
    pub weight: f64,
    pub state: RolloutState,
    pub reason: String,
    pub actor: Actor,
    /// The proxy instance that made the change (fleet), when known.
    pub instance: Option<String>,
}

/// Why an exchange was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleKind {
    /// A comparison that differed (after noise and accepted differences).
    Mismatch,
    /// A matching exchange kept in the per-endpoint reservoir for `export`
    /// and `replay`.
    Match,
}

impl SampleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleKind::Mismatch => "mismatch",
            SampleKind::Match => "match",
        }
    }
}

impl std::fmt::Display for SampleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored exchange: the (already redacted) request, both responses and
/// the differences between them. The JSON shapes belong to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    /// Assigned by the store; ignored by [`super::Store::insert_sample`].
    pub id: i64,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    pub route: String,
    /// The endpoint template, e.g. `GET /api/v1/orders/{id}`.
    pub endpoint: String,
    pub kind: SampleKind,
    pub method: String,
    pub path: String,
    pub request: serde_json::Value,
    pub legacy_response: serde_json::Value,
    pub candidate_response: serde_json::Value,
    /// `[{kind, path, change, legacy, candidate}]` (SPEC §4); empty for a match.
    pub differences: serde_json::Value,
}

/// A known, intended difference (`strangler accept`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRow {
    pub route: String,
    pub endpoint: String,
    /// A JSONPath (`$.meta.version`) or, for status and headers, the
    /// difference's `path` as SPEC §4 writes it.
    pub path: String,
    pub note: String,
    /// RFC 3339 UTC with milliseconds: when it was first accepted.
    pub at: String,
}

/// Per-route, per-side counters of one 10-second bucket, for history and
/// the report. Writing the same (route, bucket, side) again adds the counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateRow {
    pub route: String,
    /// Start of the bucket, a multiple of 10 000 ms.
    pub bucket_start_ms: i64,
    /// `legacy` or `candidate`.
    pub side: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
}

/// Accumulated traffic of one endpoint template and side, for the report's
/// ranking of endpoints by their share of latency-seconds. Writes pass
/// increments; the store adds them up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatRow {
    pub route: String,
    pub endpoint: String,
    /// `legacy` or `candidate`.
    pub side: String,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency_sum_ms: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The latest bucket these numbers include.
    pub last_bucket_ms: i64,
}

/// What [`super::Store::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    pub samples: u64,
    pub aggregates: u64,
    pub events: u64,
    pub endpoint_stats: u64,
    /// The store's size in bytes before and after, as the backend counts it
    /// (SQLite: pages in use × page size).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

// --- fleet (SPEC §9) ---

/// A proxy instance as it registers itself in a fleet's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    /// `--instance-id`, by default host name and port.
    pub id: String,
    /// Hash of the configuration file's text before `${VAR}` substitution:
    /// no promotion while the live instances' hashes differ.
    pub config_hash: String,
    /// strangler's version.
    pub version: String,
    pub started_at_ms: i64,
}

/// A registered instance as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub config_hash: String,
    pub version: String,
    pub started_at_ms: i64,
    /// The last registration or heartbeat, by the database's clock.
    pub last_seen_ms: i64,
    /// How long ago that was, by the database's clock: compare this, not
    /// `last_seen_ms`, with a freshness bound, so that an instance whose
    /// clock is off still judges its peers right.
    pub seen_ago_ms: i64,
    /// True when this instance holds the unexpired leader lease.
    pub leader: bool,
}

/// Proof of leadership handed out by [`super::Store::try_acquire_lease`]:
/// a fenced write succeeds only while the lease is still held by `holder`
/// at this `epoch` and has not expired, so a paused former leader can never
/// overwrite what its successor decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub holder: String,
    /// Grows by one each time the lease changes hands (or is taken again
    /// after it expired); renewing keeps it.
    pub epoch: u64,
}
