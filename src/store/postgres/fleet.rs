//! The fleet half of the PostgreSQL store (SPEC §9): the instance
//! registry, the leader lease, shared windows and change notifications.
//! The fenced writes live beside the plain ones in the parent module, as
//! they share their statements. Every time here is the database's clock.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgRow};
use tokio::sync::mpsc;

use super::{PostgresStore, Within, CHANGES_QUEUE, LEADER, QUERY_DEADLINE};
use crate::store::model::{Fence, InstanceInfo, InstanceRow};
use crate::store::{StoreError, CHANGES_CHANNEL};

/// Backoff of the change listener after its connection failed.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(250);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

// === instances ===

pub(super) async fn register_instance(
    store: &PostgresStore,
    row: &InstanceRow,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO instances (id, config_hash, version, started_at_ms, last_seen_ms) \
         VALUES ($1, $2, $3, $4, ",
        db_now_ms!(),
        ") ON CONFLICT (id) DO UPDATE SET config_hash = excluded.config_hash, \
         version = excluded.version, started_at_ms = excluded.started_at_ms, \
         last_seen_ms = excluded.last_seen_ms"
    ))
    .bind(&row.id)
    .bind(&row.config_hash)
    .bind(&row.version)
    .bind(row.started_at_ms)
    .execute(&store.pool)
    .within(store)
    .await?;
    Ok(())
}

pub(super) async fn heartbeat(store: &PostgresStore, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(concat!(
        "UPDATE instances SET last_seen_ms = ",
        db_now_ms!(),
        " WHERE id = $1"
    ))
    .bind(id)
    .execute(&store.pool)
    .within(store)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn instances(store: &PostgresStore) -> Result<Vec<InstanceInfo>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT i.id, i.config_hash, i.version, i.started_at_ms, i.last_seen_ms, \
         GREATEST(",
        db_now_ms!(),
        " - i.last_seen_ms, 0) AS seen_ago_ms, \
         EXISTS (SELECT 1 FROM lease l WHERE l.name = $1 AND l.holder = i.id \
                 AND l.expires_at_ms > ",
        db_now_ms!(),
        ") AS leader FROM instances i ORDER BY i.id"
    ))
    .bind(LEADER)
    .fetch_all(&store.pool)
    .within(store)
    .await?;
    rows.iter().map(|r| instance_info(store, r)).collect()
}

pub(super) async fn try_acquire_lease(
    store: &PostgresStore,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Fence>, StoreError> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ttl_ms <= 0 {
        return Err(StoreError::Invalid {
            what: "a lease",
            reason: format!("the time to live {ttl:?} is not positive"),
        });
    }
    // One statement, so two instances racing for a free lease are
    // serialised by the row lock: the second sees the first's row and,
    // not being its holder, gets nothing. A holder renewing an expired
    // lease gets a new epoch: anything it began under the old one is
    // void.
    let epoch: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO lease AS l (name, holder, epoch, expires_at_ms) VALUES ($1, $2, 1, ",
        db_now_ms!(),
        " + $3) ON CONFLICT (name) DO UPDATE SET \
         epoch = CASE WHEN l.holder = excluded.holder AND l.expires_at_ms > ",
        db_now_ms!(),
        " THEN l.epoch ELSE l.epoch + 1 END, \
         holder = excluded.holder, expires_at_ms = excluded.expires_at_ms \
         WHERE l.holder = excluded.holder OR l.expires_at_ms <= ",
        db_now_ms!(),
        " RETURNING l.epoch"
    ))
    .bind(LEADER)
    .bind(holder)
    .bind(ttl_ms)
    .fetch_optional(&store.pool)
    .within(store)
    .await?;
    epoch
        .map(|epoch| {
            let epoch = u64::try_from(epoch)
                .map_err(|_| store.corrupt("lease epoch", format!("epoch is {epoch}")))?;
            Ok(Fence {
                holder: holder.to_string(),
                epoch,
            })
        })
        .transpose()
}

pub(super) async fn release_lease(store: &PostgresStore, holder: &str) -> Result<bool, StoreError> {
    // Expire it now; holder and epoch stay, so the next taker (this
    // instance included) gets epoch + 1.
    let done = sqlx::query(concat!(
        "UPDATE lease SET expires_at_ms = ",
        db_now_ms!(),
        " WHERE name = $1 AND holder = $2 AND expires_at_ms > ",
        db_now_ms!()
    ))
    .bind(LEADER)
    .bind(holder)
    .execute(&store.pool)
    .within(store)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn write_window(
    store: &PostgresStore,
    instance_id: &str,
    route: &str,
    window: &serde_json::Value,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO instance_windows (instance_id, route, window_json, at_ms, \
         updated_at_ms) VALUES ($1, $2, $3, $4, ",
        db_now_ms!(),
        ") ON CONFLICT (instance_id, route) DO UPDATE SET \
         window_json = excluded.window_json, at_ms = excluded.at_ms, \
         updated_at_ms = excluded.updated_at_ms"
    ))
    .bind(instance_id)
    .bind(route)
    .bind(window)
    .bind(at_ms)
    .execute(&store.pool)
    .within(store)
    .await?;
    Ok(())
}

pub(super) async fn windows(
    store: &PostgresStore,
    route: &str,
    fresh_within: Duration,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    let fresh_ms = i64::try_from(fresh_within.as_millis()).unwrap_or(i64::MAX);
    let rows = sqlx::query(concat!(
        "SELECT instance_id, window_json FROM instance_windows \
         WHERE route = $1 AND updated_at_ms >= ",
        db_now_ms!(),
        " - $2 ORDER BY instance_id"
    ))
    .bind(route)
    .bind(fresh_ms)
    .fetch_all(&store.pool)
    .within(store)
    .await?;
    rows.iter()
        .map(|r| Ok((store.get(r, "instance_id")?, store.get(r, "window_json")?)))
        .collect()
}

pub(super) async fn subscribe_changes(
    store: &PostgresStore,
) -> Result<mpsc::Receiver<String>, StoreError> {
    let listener = listen(&store.pool).within(store).await?;
    let (tx, rx) = mpsc::channel(CHANGES_QUEUE);
    tokio::spawn(forward_changes(
        listener,
        tx,
        store.pool.clone(),
        store.location.clone(),
    ));
    Ok(rx)
}

fn instance_info(store: &PostgresStore, row: &PgRow) -> Result<InstanceInfo, StoreError> {
    Ok(InstanceInfo {
        id: store.get(row, "id")?,
        config_hash: store.get(row, "config_hash")?,
        version: store.get(row, "version")?,
        started_at_ms: store.get(row, "started_at_ms")?,
        last_seen_ms: store.get(row, "last_seen_ms")?,
        seen_ago_ms: store.get(row, "seen_ago_ms")?,
        leader: store.get(row, "leader")?,
    })
}

// === change notifications ===

/// A listener on [`CHANGES_CHANNEL`], within the statement deadline.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let connect = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    };
    tokio::time::timeout(QUERY_DEADLINE, connect)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Forwards notifications until the receiver is dropped or the store is
/// closed. A lost connection is re-established (with backoff while the
/// database is away), then an empty name tells the caller that changes may
/// have been missed meanwhile.
async fn forward_changes(
    mut listener: PgListener,
    tx: mpsc::Sender<String>,
    pool: PgPool,
    location: String,
) {
    loop {
        let next = tokio::select! {
            () = tx.closed() => return,
            next = listener.try_recv() => next,
        };
        let route = match next {
            Ok(Some(notification)) => notification.payload().to_string(),
            // Lost, and already reconnected (sqlx's eager reconnect).
            Ok(None) => String::new(),
            Err(_) if pool.is_closed() => return,
            Err(error) => {
                tracing::warn!(
                    %location, %error,
                    "lost the change notifications of the store; reconnecting"
                );
                // Start afresh: the old listener may hold a dead connection.
                drop(listener);
                let mut wait = LISTEN_RETRY_MIN;
                listener = loop {
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    if pool.is_closed() {
                        return;
                    }
                    match listen(&pool).await {
                        Ok(listener) => break listener,
                        Err(_) => wait = (wait * 2).min(LISTEN_RETRY_MAX),
                    }
                };
                tracing::info!(%location, "change notifications of the store are back");
                String::new()
            }
        };
        // Not blocked on a slow reader while the store closes (the pool
        // waits for this listener's connection).
        tokio::select! {
            () = pool.close_event() => return,
            sent = tx.send(route) => if sent.is_err() { return },
        }
    }
}
