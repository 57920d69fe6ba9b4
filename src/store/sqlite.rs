//! The embedded SQLite store (`store.url = "sqlite://PATH"`).
//!
//! One database file, in WAL mode so that readers (the admin API) never wait
//! for the writer (the controller, the sample flusher), with a busy timeout
//! for the rare writer-writer overlap and a small pool of connections.
//!
//! Opening goes: resolve the path → create the file with mode 0600 (the
//! store holds request samples, so only its owner may read it, SPEC §4) and
//! tighten any `-wal`/`-shm` siblings → open one connection, switch to WAL
//! and run the embedded migrations (`migrations/sqlite/`) → open the pool.
//! Every failure becomes a [`StoreError`] naming the file; nothing panics.
//!
//! Queries are checked at run time (`sqlx::query` + `bind`), so building
//! needs no database. Counts are `u64` in the API and `INTEGER` (i64) here:
//! they are converted with a check, never cast.

use std::fs::Permissions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};

use super::local::LocalFleet;
use super::model::{
    AcceptedRow, AggregateRow, EndpointStatRow, EventRow, InstanceInfo, InstanceRow, PruneStats,
    RouteStateRow, SampleKind, SampleRow,
};
use super::values::{finite, finite_opt, now_ms, parse_at, to_i64};
use super::{Store, StoreError};

/// The schema migrations, embedded at build time.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections in the pool of a file database: SQLite has one writer at a
/// time anyway; a few readers keep the admin API responsive.
const POOL_SIZE: u32 = 4;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Mode of the database file and its siblings: owner read/write only.
const FILE_MODE: u32 = 0o600;

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A private in-memory database (tests).
    Memory,
    /// A database file, as given (relative to the current directory).
    File(PathBuf),
}

impl Target {
    /// Parses a `sqlite:` URL; `None` when the URL is not a SQLite one.
    ///
    /// `sqlite::memory:` and `sqlite://:memory:` are in memory;
    /// `sqlite://PATH` and `sqlite:PATH` name a file (`sqlite:///abs/path`
    /// is absolute, `sqlite://strangler.db` relative).
    pub fn parse(url: &str) -> Option<Result<Target, StoreError>> {
        let rest = url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        if rest == ":memory:" {
            return Some(Ok(Target::Memory));
        }
        let invalid = |reason: &str| StoreError::Open {
            location: url.to_string(),
            reason: reason.to_string(),
        };
        if rest.is_empty() {
            return Some(Err(invalid("the URL names no file")));
        }
        if rest.contains('?') || rest.contains('#') {
            return Some(Err(invalid(
                "options after `?` are not supported; give the file path only",
            )));
        }
        Some(Ok(Target::File(PathBuf::from(rest))))
    }
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// The file's absolute path (or `:memory:`), for error messages.
    location: String,
    /// The instance registry and windows of this one process.
    fleet: LocalFleet,
}

impl SqliteStore {
    /// Opens, creating and migrating as needed.
    pub async fn open(target: Target) -> Result<SqliteStore, StoreError> {
        match target {
            Target::Memory => Self::open_memory().await,
            Target::File(path) => Self::open_file(&path).await,
        }
    }

    async fn open_memory() -> Result<SqliteStore, StoreError> {
        let location = ":memory:".to_string();
        let open_err = |e: sqlx::Error| StoreError::Open {
            location: location.clone(),
            reason: e.to_string(),
        };
        // Each `sqlite::memory:` gets its own shared-cache database, which
        // lives while one connection does: a single connection that is
        // never closed keeps it (and avoids shared-cache table locks).
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(open_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Migrate {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        Ok(SqliteStore {
            pool,
            location,
            fleet: LocalFleet::default(),
        })
    }

    async fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = absolute(path)?;
        let location = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };

        // Create the file ourselves so that it is born owner-only; SQLite
        // gives its -wal and -shm files the mode of the database file.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| open_err(e.to_string()))?;
        restrict_permissions(&path).map_err(open_err)?;

        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            // Before any table exists, so that deleted pages can later be
            // handed back to the file system by `prune`.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        // One connection switches the file to WAL (which needs the only
        // lock) and migrates, before the pool opens the others.
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let migrated = MIGRATOR.run(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| StoreError::Migrate {
            location: location.clone(),
            reason: e.to_string(),
        })?;

        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        restrict_permissions(&path).map_err(open_err)?;
        Ok(SqliteStore {
            pool,
            location,
            fleet: LocalFleet::default(),
        })
    }

    /// The database file's path, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Maps a driver error to a [`StoreError`] naming this database.
    fn err(&self, e: sqlx::Error) -> StoreError {
        let location = self.location.clone();
        let reason = e.to_string();
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable { location, reason },
            sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => {
                StoreError::Unavailable { location, reason }
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt {
                location,
                what: "value",
                reason,
            },
            _ => StoreError::Database { location, reason },
        }
    }

    fn corrupt(&self, what: &'static str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            location: self.location.clone(),
            what,
            reason: reason.to_string(),
        }
    }

    /// Pages in use × page size: what the rows take, free pages excluded.
    async fn used_bytes(&self) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT page_count FROM pragma_page_count()) \
                  - (SELECT freelist_count FROM pragma_freelist_count()), \
                    (SELECT page_size FROM pragma_page_size())",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let pages: i64 = row.try_get(0).map_err(|e| self.err(e))?;
        let page_size: i64 = row.try_get(1).map_err(|e| self.err(e))?;
        Ok(u64::try_from(pages.saturating_mul(page_size)).unwrap_or(0))
    }

    // --- row decoding ---

    fn get<'r, T>(&self, row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        row.try_get(column).map_err(|e| self.err(e))
    }

    fn get_u64(&self, row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
        let v: i64 = self.get(row, column)?;
        u64::try_from(v).map_err(|_| self.corrupt("count", format!("{column} is {v}")))
    }

    fn get_json(&self, row: &SqliteRow, column: &str) -> Result<serde_json::Value, StoreError> {
        let text: String = self.get(row, column)?;
        serde_json::from_str(&text)
            .map_err(|e| self.corrupt("JSON value", format!("{column}: {e}")))
    }

    fn get_enum<T: serde::de::DeserializeOwned>(
        &self,
        row: &SqliteRow,
        column: &str,
    ) -> Result<T, StoreError> {
        let text: String = self.get(row, column)?;
        serde_json::from_value(serde_json::Value::String(text.clone()))
            .map_err(|_| self.corrupt("name", format!("{column} is {text:?}")))
    }

    fn route_state_row(&self, row: &SqliteRow) -> Result<RouteStateRow, StoreError> {
        let window: Option<String> = self.get(row, "window_json")?;
        let window = window
            .map(|w| serde_json::from_str(&w))
            .transpose()
            .map_err(|e| self.corrupt("JSON value", format!("window_json: {e}")))?;
        Ok(RouteStateRow {
            route: self.get(row, "route")?,
            stage: self.get_enum(row, "stage")?,
            weight: self.get(row, "weight")?,
            state: self.get_enum(row, "state")?,
            reason: self.get(row, "reason")?,
            stage_started_at_ms: self.get(row, "stage_started_at_ms")?,
            window,
            updated_at_ms: self.get(row, "updated_at_ms")?,
        })
    }

    fn event_row(&self, row: &SqliteRow) -> Result<EventRow, StoreError> {
        Ok(EventRow {
            id: self.get(row, "id")?,
            at: self.get(row, "at")?,
            route: self.get(row, "route")?,
            from: self.get_enum(row, "from_stage")?,
            to: self.get_enum(row, "to_stage")?,
            weight: self.get(row, "weight")?,
            state: self.get_enum(row, "state")?,
            reason: self.get(row, "reason")?,
            actor: self.get_enum(row, "actor")?,
            instance: self.get(row, "instance")?,
        })
    }

    fn sample_row(&self, row: &SqliteRow) -> Result<SampleRow, StoreError> {
        Ok(SampleRow {
            id: self.get(row, "id")?,
            at: self.get(row, "at")?,
            route: self.get(row, "route")?,
            endpoint: self.get(row, "endpoint")?,
            kind: self.get_enum(row, "kind")?,
            method: self.get(row, "method")?,
            path: self.get(row, "path")?,
            request: self.get_json(row, "request")?,
            legacy_response: self.get_json(row, "legacy_response")?,
            candidate_response: self.get_json(row, "candidate_response")?,
            differences: self.get_json(row, "differences")?,
        })
    }

    fn accepted_row(&self, row: &SqliteRow) -> Result<AcceptedRow, StoreError> {
        Ok(AcceptedRow {
            route: self.get(row, "route")?,
            endpoint: self.get(row, "endpoint")?,
            path: self.get(row, "path")?,
            note: self.get(row, "note")?,
            at: self.get(row, "at")?,
        })
    }

    fn aggregate_row(&self, row: &SqliteRow) -> Result<AggregateRow, StoreError> {
        Ok(AggregateRow {
            route: self.get(row, "route")?,
            bucket_start_ms: self.get(row, "bucket_start_ms")?,
            side: self.get(row, "side")?,
            requests: self.get_u64(row, "requests")?,
            errors: self.get_u64(row, "errors")?,
            p50_ms: self.get(row, "p50_ms")?,
            p99_ms: self.get(row, "p99_ms")?,
            compared: self.get_u64(row, "compared")?,
            matched: self.get_u64(row, "matched")?,
            mismatched: self.get_u64(row, "mismatched")?,
        })
    }

    fn endpoint_stat_row(&self, row: &SqliteRow) -> Result<EndpointStatRow, StoreError> {
        Ok(EndpointStatRow {
            route: self.get(row, "route")?,
            endpoint: self.get(row, "endpoint")?,
            side: self.get(row, "side")?,
            requests: self.get_u64(row, "requests")?,
            errors: self.get_u64(row, "errors")?,
            bytes: self.get_u64(row, "bytes")?,
            latency_sum_ms: self.get(row, "latency_sum_ms")?,
            p50_ms: self.get(row, "p50_ms")?,
            p99_ms: self.get(row, "p99_ms")?,
            last_bucket_ms: self.get(row, "last_bucket_ms")?,
        })
    }

    /// Deletes up to `batch` of the oldest rows of `table` (samples or
    /// aggregates); returns how many went.
    async fn delete_oldest(&self, table: OldestTable, batch: u64) -> Result<u64, StoreError> {
        let sql = match table {
            OldestTable::Samples => {
                "DELETE FROM samples WHERE id IN \
                 (SELECT id FROM samples ORDER BY at_ms, id LIMIT ?)"
            }
            OldestTable::Aggregates => {
                "DELETE FROM aggregates WHERE rowid IN \
                 (SELECT rowid FROM aggregates ORDER BY bucket_start_ms LIMIT ?)"
            }
        };
        let done = sqlx::query(sql)
            .bind(to_i64(batch, "a batch size")?)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    async fn count(&self, table: OldestTable) -> Result<u64, StoreError> {
        let sql = match table {
            OldestTable::Samples => "SELECT COUNT(*) FROM samples",
            OldestTable::Aggregates => "SELECT COUNT(*) FROM aggregates",
        };
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[derive(Debug, Clone, Copy)]
enum OldestTable {
    Samples,
    Aggregates,
}

// === impl Store ===

const EVENT_COLUMNS: &str =
    "id, at, route, from_stage, to_stage, weight, state, reason, actor, instance";
const SAMPLE_COLUMNS: &str = "id, at, route, endpoint, kind, method, path, request, \
     legacy_response, candidate_response, differences";
const AGGREGATE_COLUMNS: &str = "route, bucket_start_ms, side, requests, errors, p50_ms, \
     p99_ms, compared, matched, mismatched";
const ENDPOINT_STAT_COLUMNS: &str = "route, endpoint, side, requests, errors, bytes, \
     latency_sum_ms, p50_ms, p99_ms, last_bucket_ms";

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_route_states(&self) -> Result<Vec<RouteStateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT route, stage, weight, state, reason, stage_started_at_ms, window_json, \
             updated_at_ms FROM route_state ORDER BY route",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.route_state_row(r)).collect()
    }

    async fn save_route_state(&self, row: &RouteStateRow) -> Result<(), StoreError> {
        finite(row.weight, "a route state", "weight")?;
        let window = row.window.as_ref().map(serde_json::Value::to_string);
        sqlx::query(
            "INSERT INTO route_state (route, stage, weight, state, reason, stage_started_at_ms, \
             window_json, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (route) DO UPDATE SET stage = excluded.stage, \
             weight = excluded.weight, state = excluded.state, reason = excluded.reason, \
             stage_started_at_ms = excluded.stage_started_at_ms, \
             window_json = excluded.window_json, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&row.route)
        .bind(row.stage.as_str())
        .bind(row.weight)
        .bind(row.state.as_str())
        .bind(&row.reason)
        .bind(row.stage_started_at_ms)
        .bind(window)
        .bind(row.updated_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delete_route_state(&self, route: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM route_state WHERE route = ?")
            .bind(route)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_event(&self, event: &EventRow) -> Result<i64, StoreError> {
        let at_ms = parse_at(&event.at, "an event")?;
        finite(event.weight, "an event", "weight")?;
        let done = sqlx::query(
            "INSERT INTO events (at, at_ms, route, from_stage, to_stage, weight, state, reason, \
             actor, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&event.at)
        .bind(at_ms)
        .bind(&event.route)
        .bind(event.from.as_str())
        .bind(event.to.as_str())
        .bind(event.weight)
        .bind(event.state.as_str())
        .bind(&event.reason)
        .bind(event.actor.as_str())
        .bind(&event.instance)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.last_insert_rowid())
    }

    async fn events(&self, route: Option<&str>, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE route = ? ORDER BY id DESC LIMIT ?"
                ))
                .bind(route)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.event_row(r)).collect()
    }

    async fn insert_sample(
        &self,
        sample: &SampleRow,
        max_per_endpoint: u32,
    ) -> Result<Option<i64>, StoreError> {
        let at_ms = parse_at(&sample.at, "a sample")?;
        if max_per_endpoint == 0 {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let done = sqlx::query(
            "INSERT INTO samples (at, at_ms, route, endpoint, kind, method, path, request, \
             legacy_response, candidate_response, differences) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&sample.at)
        .bind(at_ms)
        .bind(&sample.route)
        .bind(&sample.endpoint)
        .bind(sample.kind.as_str())
        .bind(&sample.method)
        .bind(&sample.path)
        .bind(sample.request.to_string())
        .bind(sample.legacy_response.to_string())
        .bind(sample.candidate_response.to_string())
        .bind(sample.differences.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let id = done.last_insert_rowid();
        // Keep the newest `max_per_endpoint`: everything older than the
        // max-th newest goes (nothing when there are fewer).
        sqlx::query(
            "DELETE FROM samples WHERE route = ?1 AND endpoint = ?2 AND kind = ?3 AND id < \
             (SELECT id FROM samples WHERE route = ?1 AND endpoint = ?2 AND kind = ?3 \
              ORDER BY id DESC LIMIT 1 OFFSET ?4)",
        )
        .bind(&sample.route)
        .bind(&sample.endpoint)
        .bind(sample.kind.as_str())
        .bind(i64::from(max_per_endpoint) - 1)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Some(id))
    }

    async fn samples(
        &self,
        route: &str,
        kind: Option<SampleKind>,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let rows = match kind {
            Some(kind) => {
                sqlx::query(&format!(
                    "SELECT {SAMPLE_COLUMNS} FROM samples WHERE route = ? AND kind = ? \
                     ORDER BY id DESC LIMIT ?"
                ))
                .bind(route)
                .bind(kind.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SAMPLE_COLUMNS} FROM samples WHERE route = ? \
                     ORDER BY id DESC LIMIT ?"
                ))
                .bind(route)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.sample_row(r)).collect()
    }

    async fn sample(&self, id: i64) -> Result<Option<SampleRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SAMPLE_COLUMNS} FROM samples WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|r| self.sample_row(&r)).transpose()
    }

    async fn accept(&self, row: &AcceptedRow) -> Result<AcceptedRow, StoreError> {
        parse_at(&row.at, "an accepted difference")?;
        let stored = sqlx::query(
            "INSERT INTO accepted (route, endpoint, path, note, at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (route, endpoint, path) DO UPDATE SET note = excluded.note \
             RETURNING route, endpoint, path, note, at",
        )
        .bind(&row.route)
        .bind(&row.endpoint)
        .bind(&row.path)
        .bind(&row.note)
        .bind(&row.at)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        self.accepted_row(&stored)
    }

    async fn accepted(&self, route: Option<&str>) -> Result<Vec<AcceptedRow>, StoreError> {
        const COLUMNS: &str = "route, endpoint, path, note, at";
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM accepted WHERE route = ? ORDER BY endpoint, path"
                ))
                .bind(route)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM accepted ORDER BY route, endpoint, path"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.accepted_row(r)).collect()
    }

    async fn record_aggregates(&self, rows: &[AggregateRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for row in rows {
            finite_opt(row.p50_ms, "an aggregate", "p50_ms")?;
            finite_opt(row.p99_ms, "an aggregate", "p99_ms")?;
            sqlx::query(
                "INSERT INTO aggregates (route, bucket_start_ms, side, requests, errors, p50_ms, \
                 p99_ms, compared, matched, mismatched) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (route, bucket_start_ms, side) DO UPDATE SET \
                 requests = requests + excluded.requests, \
                 errors = errors + excluded.errors, \
                 p50_ms = max(coalesce(p50_ms, excluded.p50_ms), \
                              coalesce(excluded.p50_ms, p50_ms)), \
                 p99_ms = max(coalesce(p99_ms, excluded.p99_ms), \
                              coalesce(excluded.p99_ms, p99_ms)), \
                 compared = compared + excluded.compared, \
                 matched = matched + excluded.matched, \
                 mismatched = mismatched + excluded.mismatched",
            )
            .bind(&row.route)
            .bind(row.bucket_start_ms)
            .bind(&row.side)
            .bind(to_i64(row.requests, "an aggregate's requests")?)
            .bind(to_i64(row.errors, "an aggregate's errors")?)
            .bind(row.p50_ms)
            .bind(row.p99_ms)
            .bind(to_i64(row.compared, "an aggregate's compared")?)
            .bind(to_i64(row.matched, "an aggregate's matched")?)
            .bind(to_i64(row.mismatched, "an aggregate's mismatched")?)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn aggregates(
        &self,
        route: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<AggregateRow>, StoreError> {
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {AGGREGATE_COLUMNS} FROM aggregates \
                     WHERE route = ? AND bucket_start_ms >= ? ORDER BY bucket_start_ms, side"
                ))
                .bind(route)
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {AGGREGATE_COLUMNS} FROM aggregates WHERE bucket_start_ms >= ? \
                     ORDER BY route, bucket_start_ms, side"
                ))
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.aggregate_row(r)).collect()
    }

    async fn add_endpoint_stats(&self, rows: &[EndpointStatRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for row in rows {
            finite(row.latency_sum_ms, "endpoint stats", "latency_sum_ms")?;
            finite_opt(row.p50_ms, "endpoint stats", "p50_ms")?;
            finite_opt(row.p99_ms, "endpoint stats", "p99_ms")?;
            // In an UPSERT's SET, bare column names are the stored values
            // (all of them from before the update), `excluded.*` the new ones.
            sqlx::query(
                "INSERT INTO endpoint_stats (route, endpoint, side, requests, errors, bytes, \
                 latency_sum_ms, p50_ms, p99_ms, last_bucket_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (route, endpoint, side) DO UPDATE SET \
                 requests = requests + excluded.requests, \
                 errors = errors + excluded.errors, \
                 bytes = bytes + excluded.bytes, \
                 latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms, \
                 p50_ms = CASE \
                   WHEN p50_ms IS NULL THEN excluded.p50_ms \
                   WHEN excluded.p50_ms IS NULL THEN p50_ms \
                   WHEN requests + excluded.requests = 0 THEN excluded.p50_ms \
                   ELSE (p50_ms * requests + excluded.p50_ms * excluded.requests) \
                        / (requests + excluded.requests) END, \
                 p99_ms = CASE \
                   WHEN p99_ms IS NULL THEN excluded.p99_ms \
                   WHEN excluded.p99_ms IS NULL THEN p99_ms \
                   WHEN requests + excluded.requests = 0 THEN excluded.p99_ms \
                   ELSE (p99_ms * requests + excluded.p99_ms * excluded.requests) \
                        / (requests + excluded.requests) END, \
                 last_bucket_ms = max(last_bucket_ms, excluded.last_bucket_ms)",
            )
            .bind(&row.route)
            .bind(&row.endpoint)
            .bind(&row.side)
            .bind(to_i64(row.requests, "an endpoint's requests")?)
            .bind(to_i64(row.errors, "an endpoint's errors")?)
            .bind(to_i64(row.bytes, "an endpoint's bytes")?)
            .bind(row.latency_sum_ms)
            .bind(row.p50_ms)
            .bind(row.p99_ms)
            .bind(row.last_bucket_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn endpoint_stats(
        &self,
        route: Option<&str>,
    ) -> Result<Vec<EndpointStatRow>, StoreError> {
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_STAT_COLUMNS} FROM endpoint_stats WHERE route = ? \
                     ORDER BY endpoint, side"
                ))
                .bind(route)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_STAT_COLUMNS} FROM endpoint_stats \
                     ORDER BY route, endpoint, side"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.endpoint_stat_row(r)).collect()
    }

    async fn prune(&self, retention: Duration, max_bytes: u64) -> Result<PruneStats, StoreError> {
        let mut stats = PruneStats {
            bytes_before: self.used_bytes().await?,
            ..PruneStats::default()
        };
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(retention_ms);

        // 1. Age: samples and aggregates older than the retention (SPEC §2).
        // Events are the audit trail of the rollout and are kept.
        let by_age: [(&str, &mut u64); 3] = [
            ("DELETE FROM samples WHERE at_ms < ?", &mut stats.samples),
            (
                "DELETE FROM aggregates WHERE bucket_start_ms < ?",
                &mut stats.aggregates,
            ),
            (
                "DELETE FROM endpoint_stats WHERE last_bucket_ms < ?",
                &mut stats.endpoint_stats,
            ),
        ];
        for (sql, counter) in by_age {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            *counter += done.rows_affected();
        }

        // 2. Size: the oldest samples first, then the oldest aggregates.
        // Each batch is sized from the share of the excess, so a large
        // overshoot converges in a few rounds.
        let mut used = self.used_bytes().await?;
        while used > max_bytes {
            let (table, counter) = match self.count(OldestTable::Samples).await? {
                0 => (OldestTable::Aggregates, &mut stats.aggregates),
                _ => (OldestTable::Samples, &mut stats.samples),
            };
            let rows = self.count(table).await?;
            if rows == 0 {
                break; // only state, events and accepted rows left: kept
            }
            let excess_share = (used - max_bytes) as f64 / used as f64;
            let batch = ((rows as f64 * excess_share).ceil() as u64).clamp(16, 5_000);
            let deleted = self.delete_oldest(table, batch).await?;
            if deleted == 0 {
                break;
            }
            *counter += deleted;
            used = self.used_bytes().await?;
        }

        // Give freed pages back to the file system and fold the WAL in.
        let deleted = stats.samples + stats.aggregates + stats.events + stats.endpoint_stats;
        if deleted > 0 {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        stats.bytes_after = self.used_bytes().await?;
        Ok(stats)
    }

    // --- fleet: one process, so the registry and windows live in memory;
    // the lease, fenced writes and notifications keep the trait's
    // single-instance defaults (this proxy always leads) ---

    async fn register_instance(&self, row: &InstanceRow) -> Result<(), StoreError> {
        self.fleet.register(row);
        Ok(())
    }

    async fn heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.fleet.heartbeat(id))
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        Ok(self.fleet.instances())
    }

    async fn write_window(
        &self,
        instance_id: &str,
        route: &str,
        window: &serde_json::Value,
        _at_ms: i64,
    ) -> Result<(), StoreError> {
        self.fleet.write_window(instance_id, route, window);
        Ok(())
    }

    async fn windows(
        &self,
        route: &str,
        fresh_within: Duration,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        Ok(self.fleet.windows(route, fresh_within))
    }

    async fn subscribe_changes(&self) -> Result<tokio::sync::mpsc::Receiver<String>, StoreError> {
        // Only this process writes the file: it knows its own changes.
        Err(StoreError::Unsupported {
            backend: "SQLite",
            what: "change notifications",
        })
    }
}

// === helpers ===

/// `path` made absolute against the current directory (for messages; SQLite
/// would resolve it the same way).
fn absolute(path: &Path) -> Result<PathBuf, StoreError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .map_err(|e| StoreError::Open {
            location: path.display().to_string(),
            reason: format!("the current directory cannot be read ({e})"),
        })
}

/// Makes the `-wal` and `-shm` siblings of `path` owner-only when they
/// exist (files left by an older process may be wider), and warns about a
/// database file that others can read.
fn restrict_permissions(path: &Path) -> Result<(), String> {
    for suffix in ["-wal", "-shm"] {
        let mut sibling = path.as_os_str().to_owned();
        sibling.push(suffix);
        let sibling = PathBuf::from(sibling);
        match std::fs::metadata(&sibling) {
            Ok(meta) if meta.permissions().mode() & 0o777 != FILE_MODE => {
                std::fs::set_permissions(&sibling, Permissions::from_mode(FILE_MODE))
                    .map_err(|e| format!("cannot make {} owner-only ({e})", sibling.display()))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot inspect {} ({e})", sibling.display())),
        }
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the store database can be read by other users; consider chmod 600"
            );
        }
    }
    Ok(())
}

/// SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR and SQLITE_CANTOPEN (and their
/// extended codes): the database is out of reach, not refusing the query.
fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code.and_then(|c| c.parse::<i64>().ok()) else {
        return false;
    };
    matches!(code & 0xff, 5 | 6 | 10 | 14)
}
