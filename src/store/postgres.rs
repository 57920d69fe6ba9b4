//! The PostgreSQL store (`store.url = "postgres://…"`), shared by a fleet
//! of proxies (SPEC §9).
//!
//! Opening goes: parse the URL → one connection (within 5 s), which runs
//! the embedded migrations (`migrations/postgres/`; sqlx serialises
//! concurrent migrators with an advisory lock) → a pool whose
//! `acquire_timeout` is short (2 s), so a caller notices a lost database
//! within that and keeps serving from what it knows. Each statement is
//! also bounded on the client side (12 s), for a network partition that
//! leaves a connection open but silent. Messages
//! name the database as `postgres://user@host:port/db`, never with the
//! password, and every error that means "the database is out of reach"
//! (I/O, pool timeout or closed, server shutting down, too many
//! connections, a read-only standby after a failover) becomes
//! [`StoreError::Unavailable`].
//!
//! The fleet sits on three tables and one channel:
//!
//! - `instances`: registration and heartbeats;
//! - `lease`: the leader lease. [`Store::try_acquire_lease`] is one UPSERT
//!   that takes a free or expired lease (epoch + 1) or renews the holder's
//!   own (same epoch). A fenced write is one statement whose CTE selects the
//!   lease row `FOR SHARE` where holder, epoch and expiry still match: when
//!   a successor took over first, the row no longer matches and nothing is
//!   written; when the successor comes second, its UPDATE waits for the
//!   fenced write's commit, so it then reads what its predecessor wrote;
//! - `instance_windows`: each instance's window per route;
//! - `NOTIFY strangler_state, '<route>'`, sent by the statement that
//!   changes a route's state (delivered when it commits), received through
//!   a `PgListener` by [`Store::subscribe_changes`].
//!
//! Every expiry and freshness bound uses the database's clock
//! (`clock_timestamp()`), so instances with skewed clocks agree.
//!
//! Queries are checked at run time (`sqlx::query` + `bind`), as in
//! [`super::sqlite`], so building needs no database.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::mpsc;

use super::model::{
    AcceptedRow, AggregateRow, EndpointStatRow, EventRow, Fence, InstanceInfo, InstanceRow,
    PruneStats, RouteStateRow, SampleKind, SampleRow,
};
use super::values::{finite, finite_opt, now_ms, parse_at, to_i64};
use super::{Store, StoreError, CHANGES_CHANNEL};

/// The schema migrations, embedded at build time.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per instance: the controller, the sample writer, the admin
/// API and the change listener (which keeps one for itself).
const POOL_SIZE: u32 = 8;
/// How long a caller waits for a connection, including a new one to a
/// database that stopped answering: short, so that a lost database is
/// noticed and reported as [`StoreError::Unavailable`] quickly.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening waits for the first connection (and its login).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Server-side bound on one statement (a stuck lock, an overloaded server).
const STATEMENT_TIMEOUT: &str = "10s";
/// Client-side bound on one statement: a connection whose peer vanished
/// without a reset (a network partition) would otherwise hang until TCP
/// gives up, minutes later.
const QUERY_DEADLINE: Duration = Duration::from_secs(12);
/// The name of the leader lease row.
const LEADER: &str = "leader";
/// Change notifications waiting for the caller; the listener waits when
/// they are not read.
const CHANGES_QUEUE: usize = 256;

/// "Now" in epoch milliseconds by the database's clock. `clock_timestamp()`
/// rather than `now()`: the latter is frozen at the start of a transaction.
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

mod fleet;

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// `postgres://user@host:port/db`, without the password, for messages.
    location: String,
    /// [`QUERY_DEADLINE`], shorter in tests.
    deadline: Duration,
}

impl PostgresStore {
    /// Connects, then applies the migrations. An unreachable server is
    /// [`StoreError::Unavailable`]; a refused login or a missing database
    /// is [`StoreError::Open`].
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Open {
            location: redact(url),
            reason: format!("the URL cannot be read ({e})"),
        })?;
        let location = location(&options);
        let options = options
            .application_name("strangler")
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let open_err = |e: sqlx::Error| match classify(&location, e) {
            unavailable @ StoreError::Unavailable { .. } => unavailable,
            other => StoreError::Open {
                location: location.clone(),
                reason: reason_of(other),
            },
        };

        // One connection first, to report the server's (or the network's)
        // own words, e.g. "Connection refused", rather than the pool's
        // "timed out", and to migrate before the pool opens.
        let mut first = match tokio::time::timeout(OPEN_TIMEOUT, options.connect()).await {
            Ok(connected) => connected.map_err(open_err)?,
            Err(_) => {
                return Err(StoreError::Unavailable {
                    location,
                    reason: format!("no answer within {OPEN_TIMEOUT:?}"),
                })
            }
        };
        let migrated = MIGRATOR.run(&mut first).await;
        let _ = first.close().await;
        migrated.map_err(|e| StoreError::Migrate {
            location: location.clone(),
            reason: e.to_string(),
        })?;

        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Lost connections are found by the ping before each use (the
            // default), replaced, or reported within the acquire timeout.
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        Ok(PostgresStore {
            pool,
            location,
            deadline: QUERY_DEADLINE,
        })
    }

    /// `postgres://user@host:port/db`, without the password.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        classify(&self.location, e)
    }

    /// The error of a statement that did not answer within the deadline.
    fn no_answer(&self) -> StoreError {
        StoreError::Unavailable {
            location: self.location.clone(),
            reason: format!("no answer within {:?}", self.deadline),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_deadline(mut self, deadline: Duration) -> PostgresStore {
        self.deadline = deadline;
        self
    }

    fn corrupt(&self, what: &'static str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            location: self.location.clone(),
            what,
            reason: reason.to_string(),
        }
    }

    /// What the rows take, TOAST-compressed, by `pg_column_size`; unlike
    /// the relations' sizes this shrinks as soon as rows are deleted
    /// (autovacuum hands the space back to PostgreSQL later). Samples are
    /// summed column by column, which reads TOAST pointers, not bodies.
    async fn used_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT (\
               COALESCE((SELECT SUM(24 + pg_column_size(at) + pg_column_size(route) \
                 + pg_column_size(endpoint) + pg_column_size(kind) + pg_column_size(method) \
                 + pg_column_size(path) + pg_column_size(request) \
                 + pg_column_size(legacy_response) + pg_column_size(candidate_response) \
                 + pg_column_size(differences) + 24) FROM samples), 0) \
             + COALESCE((SELECT SUM(pg_column_size(t.*)) FROM aggregates t), 0) \
             + COALESCE((SELECT SUM(pg_column_size(t.*)) FROM events t), 0) \
             + COALESCE((SELECT SUM(pg_column_size(t.*)) FROM endpoint_stats t), 0) \
             + COALESCE((SELECT SUM(pg_column_size(t.*)) FROM route_state t), 0) \
             + COALESCE((SELECT SUM(pg_column_size(t.*)) FROM accepted t), 0) \
             )::BIGINT",
        )
        .fetch_one(&self.pool)
        .within(self)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    // --- row decoding ---

    fn get<'r, T>(&self, row: &'r PgRow, column: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(column).map_err(|e| self.err(e))
    }

    fn get_u64(&self, row: &PgRow, column: &str) -> Result<u64, StoreError> {
        let v: i64 = self.get(row, column)?;
        u64::try_from(v).map_err(|_| self.corrupt("count", format!("{column} is {v}")))
    }

    fn get_json_text(&self, row: &PgRow, column: &str) -> Result<serde_json::Value, StoreError> {
        let text: String = self.get(row, column)?;
        serde_json::from_str(&text)
            .map_err(|e| self.corrupt("JSON value", format!("{column}: {e}")))
    }

    fn get_enum<T: serde::de::DeserializeOwned>(
        &self,
        row: &PgRow,
        column: &str,
    ) -> Result<T, StoreError> {
        let text: String = self.get(row, column)?;
        serde_json::from_value(serde_json::Value::String(text.clone()))
            .map_err(|_| self.corrupt("name", format!("{column} is {text:?}")))
    }

    fn route_state_row(&self, row: &PgRow) -> Result<RouteStateRow, StoreError> {
        Ok(RouteStateRow {
            route: self.get(row, "route")?,
            stage: self.get_enum(row, "stage")?,
            weight: self.get(row, "weight")?,
            state: self.get_enum(row, "state")?,
            reason: self.get(row, "reason")?,
            stage_started_at_ms: self.get(row, "stage_started_at_ms")?,
            window: self.get(row, "window_json")?,
            updated_at_ms: self.get(row, "updated_at_ms")?,
        })
    }

    fn event_row(&self, row: &PgRow) -> Result<EventRow, StoreError> {
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

    fn sample_row(&self, row: &PgRow) -> Result<SampleRow, StoreError> {
        Ok(SampleRow {
            id: self.get(row, "id")?,
            at: self.get(row, "at")?,
            route: self.get(row, "route")?,
            endpoint: self.get(row, "endpoint")?,
            kind: self.get_enum(row, "kind")?,
            method: self.get(row, "method")?,
            path: self.get(row, "path")?,
            request: self.get_json_text(row, "request")?,
            legacy_response: self.get_json_text(row, "legacy_response")?,
            candidate_response: self.get_json_text(row, "candidate_response")?,
            differences: self.get_json_text(row, "differences")?,
        })
    }

    fn accepted_row(&self, row: &PgRow) -> Result<AcceptedRow, StoreError> {
        Ok(AcceptedRow {
            route: self.get(row, "route")?,
            endpoint: self.get(row, "endpoint")?,
            path: self.get(row, "path")?,
            note: self.get(row, "note")?,
            at: self.get(row, "at")?,
        })
    }

    fn aggregate_row(&self, row: &PgRow) -> Result<AggregateRow, StoreError> {
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

    fn endpoint_stat_row(&self, row: &PgRow) -> Result<EndpointStatRow, StoreError> {
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

    /// Deletes up to `batch` of the oldest rows of `table`; returns how
    /// many went.
    async fn delete_oldest(&self, table: OldestTable, batch: u64) -> Result<u64, StoreError> {
        let sql = match table {
            OldestTable::Samples => {
                "DELETE FROM samples WHERE id IN \
                 (SELECT id FROM samples ORDER BY at_ms, id LIMIT $1)"
            }
            OldestTable::Aggregates => {
                "DELETE FROM aggregates WHERE ctid IN \
                 (SELECT ctid FROM aggregates ORDER BY bucket_start_ms LIMIT $1)"
            }
        };
        let done = sqlx::query(sql)
            .bind(to_i64(batch, "a batch size")?)
            .execute(&self.pool)
            .within(self)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count(&self, table: OldestTable) -> Result<u64, StoreError> {
        let sql = match table {
            OldestTable::Samples => "SELECT COUNT(*) FROM samples",
            OldestTable::Aggregates => "SELECT COUNT(*) FROM aggregates",
        };
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .within(self)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Every statement runs through [`Within::within`]: bounded by the
/// store's deadline, its error mapped to a [`StoreError`] naming the
/// database. Dropping a sqlx future midway is safe: the connection is
/// resynchronised, or closed, before it is used again.
trait Within<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    async fn within(self, store: &PostgresStore) -> Result<T, StoreError> {
        match tokio::time::timeout(store.deadline, self).await {
            Ok(result) => result.map_err(|e| store.err(e)),
            Err(_) => Err(store.no_answer()),
        }
    }
}

impl<T, F: Future<Output = Result<T, sqlx::Error>>> Within<T> for F {}

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

/// The UPSERT of a route's state from `$1..$8`, written by a CTE named
/// `saved` returning the route; the caller adds what comes first (a fence)
/// and what follows (the notification).
const UPSERT_ROUTE_STATE: &str = "\
    INSERT INTO route_state AS rs (route, stage, weight, state, reason, stage_started_at_ms, \
      window_json, updated_at_ms) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM fence \
    ON CONFLICT (route) DO UPDATE SET stage = excluded.stage, weight = excluded.weight, \
      state = excluded.state, reason = excluded.reason, \
      stage_started_at_ms = excluded.stage_started_at_ms, \
      window_json = excluded.window_json, updated_at_ms = excluded.updated_at_ms \
    RETURNING rs.route";

/// The lease row, locked against a takeover until the statement's
/// transaction ends, when `$h` holds it at epoch `$e` and it has not
/// expired. Parameters: lease name, holder, epoch.
macro_rules! fence_cte {
    ($name:literal, $holder:literal, $epoch:literal) => {
        concat!(
            "fence AS (SELECT 1 FROM lease WHERE name = ",
            $name,
            " AND holder = ",
            $holder,
            " AND epoch = ",
            $epoch,
            " AND expires_at_ms > ",
            db_now_ms!(),
            " FOR SHARE)"
        )
    };
}

impl PostgresStore {
    /// Saves a route's state, fenced or not, and notifies the change in the
    /// same statement; false when fenced out.
    async fn upsert_route_state(
        &self,
        row: &RouteStateRow,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        finite(row.weight, "a route state", "weight")?;
        let sql = match fence {
            None => format!(
                "WITH fence AS (SELECT 1), saved AS ({UPSERT_ROUTE_STATE}) \
                 SELECT pg_notify('{CHANGES_CHANNEL}', route) FROM saved"
            ),
            Some(_) => format!(
                "WITH {}, saved AS ({UPSERT_ROUTE_STATE}) \
                 SELECT pg_notify('{CHANGES_CHANNEL}', route) FROM saved",
                fence_cte!("$9", "$10", "$11")
            ),
        };
        let mut query = sqlx::query(&sql)
            .bind(&row.route)
            .bind(row.stage.as_str())
            .bind(row.weight)
            .bind(row.state.as_str())
            .bind(&row.reason)
            .bind(row.stage_started_at_ms)
            .bind(&row.window)
            .bind(row.updated_at_ms);
        if let Some(fence) = fence {
            query = query
                .bind(LEADER)
                .bind(&fence.holder)
                .bind(to_i64(fence.epoch, "a lease epoch")?);
        }
        let saved = query.fetch_optional(&self.pool).within(self).await?;
        Ok(saved.is_some())
    }

    /// Appends an event, fenced or not; `None` when fenced out.
    async fn insert_event(
        &self,
        event: &EventRow,
        fence: Option<&Fence>,
    ) -> Result<Option<i64>, StoreError> {
        let at_ms = parse_at(&event.at, "an event")?;
        finite(event.weight, "an event", "weight")?;
        const INSERT: &str = "INSERT INTO events (at, at_ms, route, from_stage, to_stage, \
             weight, state, reason, actor, instance) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM fence RETURNING id";
        let sql = match fence {
            None => format!("WITH fence AS (SELECT 1) {INSERT}"),
            Some(_) => format!("WITH {} {INSERT}", fence_cte!("$11", "$12", "$13")),
        };
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(&event.at)
            .bind(at_ms)
            .bind(&event.route)
            .bind(event.from.as_str())
            .bind(event.to.as_str())
            .bind(event.weight)
            .bind(event.state.as_str())
            .bind(&event.reason)
            .bind(event.actor.as_str())
            .bind(&event.instance);
        if let Some(fence) = fence {
            query = query
                .bind(LEADER)
                .bind(&fence.holder)
                .bind(to_i64(fence.epoch, "a lease epoch")?);
        }
        query.fetch_optional(&self.pool).within(self).await
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .within(self)
            .await?;
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
        .within(self)
        .await?;
        rows.iter().map(|r| self.route_state_row(r)).collect()
    }

    async fn save_route_state(&self, row: &RouteStateRow) -> Result<(), StoreError> {
        self.upsert_route_state(row, None).await.map(|_| ())
    }

    async fn delete_route_state(&self, route: &str) -> Result<bool, StoreError> {
        let gone = sqlx::query(&format!(
            "WITH gone AS (DELETE FROM route_state WHERE route = $1 RETURNING route) \
             SELECT pg_notify('{CHANGES_CHANNEL}', route) FROM gone"
        ))
        .bind(route)
        .fetch_optional(&self.pool)
        .within(self)
        .await?;
        Ok(gone.is_some())
    }

    async fn append_event(&self, event: &EventRow) -> Result<i64, StoreError> {
        let id = self.insert_event(event, None).await?;
        id.ok_or_else(|| self.corrupt("event id", "the insert returned no id"))
    }

    async fn events(&self, route: Option<&str>, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE route = $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(route)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
        }?;
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
        let mut tx = self.pool.begin().within(self).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO samples (at, at_ms, route, endpoint, kind, method, path, request, \
             legacy_response, candidate_response, differences) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
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
        .fetch_one(&mut *tx)
        .within(self)
        .await?;
        // Keep the newest `max_per_endpoint`: everything older than the
        // max-th newest goes (nothing when there are fewer).
        sqlx::query(
            "DELETE FROM samples WHERE route = $1 AND endpoint = $2 AND kind = $3 AND id < \
             (SELECT id FROM samples WHERE route = $1 AND endpoint = $2 AND kind = $3 \
              ORDER BY id DESC LIMIT 1 OFFSET $4)",
        )
        .bind(&sample.route)
        .bind(&sample.endpoint)
        .bind(sample.kind.as_str())
        .bind(i64::from(max_per_endpoint) - 1)
        .execute(&mut *tx)
        .within(self)
        .await?;
        tx.commit().within(self).await?;
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
                    "SELECT {SAMPLE_COLUMNS} FROM samples WHERE route = $1 AND kind = $2 \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(route)
                .bind(kind.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SAMPLE_COLUMNS} FROM samples WHERE route = $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(route)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
        }?;
        rows.iter().map(|r| self.sample_row(r)).collect()
    }

    async fn sample(&self, id: i64) -> Result<Option<SampleRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SAMPLE_COLUMNS} FROM samples WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .within(self)
        .await?;
        row.map(|r| self.sample_row(&r)).transpose()
    }

    async fn accept(&self, row: &AcceptedRow) -> Result<AcceptedRow, StoreError> {
        parse_at(&row.at, "an accepted difference")?;
        let stored = sqlx::query(
            "INSERT INTO accepted (route, endpoint, path, note, at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (route, endpoint, path) DO UPDATE SET note = excluded.note \
             RETURNING route, endpoint, path, note, at",
        )
        .bind(&row.route)
        .bind(&row.endpoint)
        .bind(&row.path)
        .bind(&row.note)
        .bind(&row.at)
        .fetch_one(&self.pool)
        .within(self)
        .await?;
        self.accepted_row(&stored)
    }

    async fn accepted(&self, route: Option<&str>) -> Result<Vec<AcceptedRow>, StoreError> {
        const COLUMNS: &str = "route, endpoint, path, note, at";
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM accepted WHERE route = $1 ORDER BY endpoint, path"
                ))
                .bind(route)
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM accepted ORDER BY route, endpoint, path"
                ))
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
        }?;
        rows.iter().map(|r| self.accepted_row(r)).collect()
    }

    async fn record_aggregates(&self, rows: &[AggregateRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().within(self).await?;
        for row in rows {
            finite_opt(row.p50_ms, "an aggregate", "p50_ms")?;
            finite_opt(row.p99_ms, "an aggregate", "p99_ms")?;
            // GREATEST ignores NULLs: a side without latencies keeps the
            // other's.
            sqlx::query(
                "INSERT INTO aggregates AS a (route, bucket_start_ms, side, requests, errors, \
                 p50_ms, p99_ms, compared, matched, mismatched) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (route, bucket_start_ms, side) DO UPDATE SET \
                 requests = a.requests + excluded.requests, \
                 errors = a.errors + excluded.errors, \
                 p50_ms = GREATEST(a.p50_ms, excluded.p50_ms), \
                 p99_ms = GREATEST(a.p99_ms, excluded.p99_ms), \
                 compared = a.compared + excluded.compared, \
                 matched = a.matched + excluded.matched, \
                 mismatched = a.mismatched + excluded.mismatched",
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
            .within(self)
            .await?;
        }
        tx.commit().within(self).await
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
                     WHERE route = $1 AND bucket_start_ms >= $2 ORDER BY bucket_start_ms, side"
                ))
                .bind(route)
                .bind(since_ms)
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {AGGREGATE_COLUMNS} FROM aggregates WHERE bucket_start_ms >= $1 \
                     ORDER BY route, bucket_start_ms, side"
                ))
                .bind(since_ms)
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
        }?;
        rows.iter().map(|r| self.aggregate_row(r)).collect()
    }

    async fn add_endpoint_stats(&self, rows: &[EndpointStatRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().within(self).await?;
        for row in rows {
            finite(row.latency_sum_ms, "endpoint stats", "latency_sum_ms")?;
            finite_opt(row.p50_ms, "endpoint stats", "p50_ms")?;
            finite_opt(row.p99_ms, "endpoint stats", "p99_ms")?;
            // `s.*` are the stored values (all of them from before the
            // update), `excluded.*` the new ones.
            sqlx::query(
                "INSERT INTO endpoint_stats AS s (route, endpoint, side, requests, errors, bytes, \
                 latency_sum_ms, p50_ms, p99_ms, last_bucket_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (route, endpoint, side) DO UPDATE SET \
                 requests = s.requests + excluded.requests, \
                 errors = s.errors + excluded.errors, \
                 bytes = s.bytes + excluded.bytes, \
                 latency_sum_ms = s.latency_sum_ms + excluded.latency_sum_ms, \
                 p50_ms = CASE \
                   WHEN s.p50_ms IS NULL THEN excluded.p50_ms \
                   WHEN excluded.p50_ms IS NULL THEN s.p50_ms \
                   WHEN s.requests + excluded.requests = 0 THEN excluded.p50_ms \
                   ELSE (s.p50_ms * s.requests + excluded.p50_ms * excluded.requests) \
                        / (s.requests + excluded.requests) END, \
                 p99_ms = CASE \
                   WHEN s.p99_ms IS NULL THEN excluded.p99_ms \
                   WHEN excluded.p99_ms IS NULL THEN s.p99_ms \
                   WHEN s.requests + excluded.requests = 0 THEN excluded.p99_ms \
                   ELSE (s.p99_ms * s.requests + excluded.p99_ms * excluded.requests) \
                        / (s.requests + excluded.requests) END, \
                 last_bucket_ms = GREATEST(s.last_bucket_ms, excluded.last_bucket_ms)",
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
            .within(self)
            .await?;
        }
        tx.commit().within(self).await
    }

    async fn endpoint_stats(
        &self,
        route: Option<&str>,
    ) -> Result<Vec<EndpointStatRow>, StoreError> {
        let rows = match route {
            Some(route) => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_STAT_COLUMNS} FROM endpoint_stats WHERE route = $1 \
                     ORDER BY endpoint, side"
                ))
                .bind(route)
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_STAT_COLUMNS} FROM endpoint_stats \
                     ORDER BY route, endpoint, side"
                ))
                .fetch_all(&self.pool)
                .within(self)
                .await
            }
        }?;
        rows.iter().map(|r| self.endpoint_stat_row(r)).collect()
    }

    async fn prune(&self, retention: Duration, max_bytes: u64) -> Result<PruneStats, StoreError> {
        let mut stats = PruneStats {
            bytes_before: self.used_bytes().await?,
            ..PruneStats::default()
        };
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(retention_ms);

        // 1. Age: samples, aggregates and idle endpoint stats older than
        // the retention (SPEC §2). Events are the audit trail and are kept.
        let by_age: [(&str, &mut u64); 3] = [
            ("DELETE FROM samples WHERE at_ms < $1", &mut stats.samples),
            (
                "DELETE FROM aggregates WHERE bucket_start_ms < $1",
                &mut stats.aggregates,
            ),
            (
                "DELETE FROM endpoint_stats WHERE last_bucket_ms < $1",
                &mut stats.endpoint_stats,
            ),
        ];
        for (sql, counter) in by_age {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .execute(&self.pool)
                .within(self)
                .await?;
            *counter += done.rows_affected();
        }
        // Instances gone for longer than the retention, and their windows
        // (by the database's clock, as they were written).
        for sql in [
            concat!(
                "DELETE FROM instances WHERE last_seen_ms < ",
                db_now_ms!(),
                " - $1"
            ),
            concat!(
                "DELETE FROM instance_windows WHERE updated_at_ms < ",
                db_now_ms!(),
                " - $1"
            ),
        ] {
            sqlx::query(sql)
                .bind(retention_ms)
                .execute(&self.pool)
                .within(self)
                .await?;
        }

        // 2. Size: the oldest samples first, then the oldest aggregates,
        // in batches sized from the share of the excess.
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
        stats.bytes_after = used;
        Ok(stats)
    }

    // --- fleet (the shared parts are in fleet.rs) ---

    fn shared(&self) -> bool {
        true
    }

    async fn save_route_state_fenced(
        &self,
        row: &RouteStateRow,
        fence: &Fence,
    ) -> Result<bool, StoreError> {
        self.upsert_route_state(row, Some(fence)).await
    }

    async fn append_event_fenced(
        &self,
        event: &EventRow,
        fence: &Fence,
    ) -> Result<Option<i64>, StoreError> {
        self.insert_event(event, Some(fence)).await
    }

    async fn register_instance(&self, row: &InstanceRow) -> Result<(), StoreError> {
        fleet::register_instance(self, row).await
    }

    async fn heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        fleet::heartbeat(self, id).await
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        fleet::instances(self).await
    }

    async fn try_acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, StoreError> {
        fleet::try_acquire_lease(self, holder, ttl).await
    }

    async fn release_lease(&self, holder: &str) -> Result<bool, StoreError> {
        fleet::release_lease(self, holder).await
    }

    async fn write_window(
        &self,
        instance_id: &str,
        route: &str,
        window: &serde_json::Value,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        fleet::write_window(self, instance_id, route, window, at_ms).await
    }

    async fn windows(
        &self,
        route: &str,
        fresh_within: Duration,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        fleet::windows(self, route, fresh_within).await
    }

    async fn subscribe_changes(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        fleet::subscribe_changes(self).await
    }
}

// === helpers ===

/// Maps a driver error to a [`StoreError`] naming the database.
fn classify(location: &str, e: sqlx::Error) -> StoreError {
    let location = location.to_string();
    let reason = e.to_string();
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable { location, reason },
        sqlx::Error::Database(db) if is_unreachable(db.code().as_deref()) => {
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

/// SQLSTATEs that mean "out of reach for now", not "refused": connection
/// exceptions (08…), insufficient resources (53…: too many connections,
/// disk full), operator intervention (57…: shutdown, crash recovery, the
/// statement timeout) and a read-only standby (25006, right after a
/// failover).
fn is_unreachable(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "25006"
}

fn reason_of(e: StoreError) -> String {
    match e {
        StoreError::Unavailable { reason, .. }
        | StoreError::Database { reason, .. }
        | StoreError::Corrupt { reason, .. }
        | StoreError::Open { reason, .. }
        | StoreError::Migrate { reason, .. }
        | StoreError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// `postgres://user@host:port/db`: what the options point at, without the
/// password (or a Unix socket's directory in place of host and port).
fn location(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or(options.get_username());
    match options.get_socket() {
        Some(socket) => format!(
            "postgres://{}@[{}]/{database}",
            options.get_username(),
            socket.display()
        ),
        None => format!(
            "postgres://{}@{}:{}/{database}",
            options.get_username(),
            options.get_host(),
            options.get_port()
        ),
    }
}

/// A URL that could not be parsed, shown without anything that may be a
/// password: the scheme, then the host part after the last `@`, up to the
/// path.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let after_at = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = after_at.split(['/', '?']).next().unwrap_or("");
    format!("{scheme}://…@{host}")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn locations_never_show_the_password() {
        let options = PgConnectOptions::from_str("postgres://app:s3cret@db.internal:6543/fleet")
            .expect("a valid URL");
        assert_eq!(location(&options), "postgres://app@db.internal:6543/fleet");
        assert_eq!(
            redact("postgres://app:s3cret@db.internal:6543/fleet?x"),
            "postgres://…@db.internal:6543"
        );
        assert!(!redact("postgresql://a:p@ss@h/d").contains("p@ss"));
    }

    #[tokio::test]
    async fn a_statement_without_an_answer_is_unavailable_after_the_deadline() {
        let options = PgConnectOptions::from_str("postgres://app:s3cret@192.0.2.1/fleet")
            .expect("a valid URL");
        let store = PostgresStore {
            location: location(&options),
            pool: PgPoolOptions::new().connect_lazy_with(options),
            deadline: Duration::from_millis(50),
        };
        let hung = std::future::pending::<Result<(), sqlx::Error>>();
        let err = hung.within(&store).await.expect_err("no answer");
        assert!(err.is_unavailable(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the store database postgres://app@192.0.2.1:5432/fleet cannot be reached: \
             no answer within 50ms"
        );
    }

    #[test]
    fn unreachable_codes() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "25006", "57014",
        ] {
            assert!(is_unreachable(Some(code)), "{code}");
        }
        for code in ["23505", "42P01", "28P01", "3D000", "40001"] {
            assert!(!is_unreachable(Some(code)), "{code}");
        }
        assert!(!is_unreachable(None));
    }
}
