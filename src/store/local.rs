//! The fleet registry of a single proxy, kept in memory.
//!
//! An embedded store (SQLite) serves one process, so there is nobody to
//! share the instance registry or the windows with; keeping them in memory
//! still lets the admin API and the controller use the same [`Store`]
//! calls as in a fleet: the proxy lists itself, as leader, and reads back
//! its own window. Nothing here survives a restart, as nothing needs to.
//!
//! [`Store`]: super::Store

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::model::{InstanceInfo, InstanceRow};

/// Registry and windows of the instances of this process (normally one).
#[derive(Default)]
pub(crate) struct LocalFleet {
    // A std mutex: held for a map operation only, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By id: the registration and when it was last seen.
    instances: BTreeMap<String, (InstanceRow, i64)>,
    /// By (route, instance id): the window and when it was written.
    windows: BTreeMap<(String, String), (serde_json::Value, Instant)>,
}

impl LocalFleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half
        // updated (each operation is a single insert or lookup).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn register(&self, row: &InstanceRow) {
        self.lock()
            .instances
            .insert(row.id.clone(), (row.clone(), now_ms()));
    }

    pub(crate) fn heartbeat(&self, id: &str) -> bool {
        match self.lock().instances.get_mut(id) {
            Some((_, seen)) => {
                *seen = now_ms();
                true
            }
            None => false,
        }
    }

    /// A single proxy is its own leader: every registered instance (of
    /// this process) is listed as one.
    pub(crate) fn instances(&self) -> Vec<InstanceInfo> {
        let now = now_ms();
        self.lock()
            .instances
            .values()
            .map(|(row, seen)| InstanceInfo {
                id: row.id.clone(),
                config_hash: row.config_hash.clone(),
                version: row.version.clone(),
                started_at_ms: row.started_at_ms,
                last_seen_ms: *seen,
                seen_ago_ms: now.saturating_sub(*seen).max(0),
                leader: true,
            })
            .collect()
    }

    pub(crate) fn write_window(&self, instance_id: &str, route: &str, window: &serde_json::Value) {
        self.lock().windows.insert(
            (route.to_string(), instance_id.to_string()),
            (window.clone(), Instant::now()),
        );
    }

    pub(crate) fn windows(
        &self,
        route: &str,
        fresh_within: Duration,
    ) -> Vec<(String, serde_json::Value)> {
        let inner = self.lock();
        inner
            .windows
            .range((route.to_string(), String::new())..)
            .take_while(|((r, _), _)| r == route)
            .filter(|(_, (_, at))| at.elapsed() <= fresh_within)
            .map(|((_, id), (window, _))| (id.clone(), window.clone()))
            .collect()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
