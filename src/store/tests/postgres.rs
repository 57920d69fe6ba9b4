//! The store on a real PostgreSQL server.
//!
//! Set `STRANGLER_TEST_POSTGRES_URL` to a server where the user may create
//! databases (`.ci/postgres.sh` starts one and prints the line to export).
//! Each test creates its own database, `strangler_test_<random>`, and drops
//! it afterwards, so the tests run in parallel. Without the variable, each
//! test says on stderr why it skips and passes; a configured server that
//! does not answer fails the tests.
//!
//! Besides the shared round trips (`shared.rs`) they cover the fleet: the
//! lease and its fencing, the instance registry, shared windows, change
//! notifications, and a database lost and found again, simulated by a TCP
//! relay in front of the server that the test cuts and restores.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::shared;
use super::shared::*;
use crate::runtime::now_rfc3339;
use crate::store::postgres::{PostgresStore, MIGRATOR};
use crate::store::*;

const URL_VAR: &str = "STRANGLER_TEST_POSTGRES_URL";
const HOUR_MS: i64 = 3_600_000;
/// Long enough never to expire during a test.
const LONG: Duration = Duration::from_secs(60);

/// A database of its own for one test, dropped at the end (even when the
/// test panics).
struct PgTestDb {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl PgTestDb {
    /// A fresh, empty database, or `None` (saying why on stderr) when no
    /// server is configured.
    async fn new(test: &str) -> Option<PgTestDb> {
        let Ok(admin_url) = std::env::var(URL_VAR) else {
            eprintln!(
                "skipping {test}: {URL_VAR} is not set (run .ci/postgres.sh for a throwaway server)"
            );
            return None;
        };
        let admin = PgConnectOptions::from_str(&admin_url)
            .unwrap_or_else(|e| panic!("{URL_VAR} is not a PostgreSQL URL: {e}"));
        let name = format!("strangler_test_{:016x}", rand::random::<u64>());
        let mut conn = admin
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{URL_VAR} is set but the server does not answer: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("the test user may create databases");
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        Some(PgTestDb { admin, name, url })
    }

    async fn open(&self) -> Arc<dyn Store> {
        open(&self.url).await.expect("the store opens")
    }

    /// A raw connection, for checks and changes below the API.
    async fn raw(&self) -> PgConnection {
        self.admin
            .clone()
            .database(&self.name)
            .connect()
            .await
            .expect("raw connection")
    }

    async fn exec(&self, sql: &str) {
        let mut raw = self.raw().await;
        sqlx::query(sql).execute(&mut raw).await.expect(sql);
        let _ = raw.close().await;
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        // Drop may run during a panic, outside any runtime: use a thread
        // with a runtime of its own.
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(async move {
                let mut conn = admin.connect().await?;
                sqlx::query(&sql).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

/// `url` with its database (path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

macro_rules! pg_test_db {
    ($test:expr) => {
        match PgTestDb::new($test).await {
            Some(db) => db,
            None => return,
        }
    };
}

// --- the shared round trips ---

/// Runs each shared body on a fresh PostgreSQL database.
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let db = pg_test_db!(stringify!($name));
            let store = db.open().await;
            shared::$name(store.clone()).await;
            store.close().await;
        }
    )*};
}

postgres_tests!(
    route_state_upserts_and_deletes,
    events_are_newest_first_filtered_and_limited,
    samples_round_trip_and_filter_by_kind,
    samples_are_bounded_per_endpoint_and_kind_newest_win,
    accept_is_an_idempotent_upsert,
    aggregates_upsert_adds_counts,
    endpoint_stats_accumulate,
    prune_deletes_what_is_older_than_the_retention,
);

#[tokio::test]
async fn prune_by_size_drops_the_oldest_samples_first() {
    let db = pg_test_db!("prune_by_size_drops_the_oldest_samples_first");
    let store = db.open().await;
    let before = shared::prune_by_size_drops_the_oldest_samples_first(store.clone()).await;
    assert!(before.bytes_after > 0, "{before:?}");
    store.close().await;
}

// --- opening ---

#[tokio::test]
async fn a_closed_port_is_unavailable_and_names_the_host_not_the_password() {
    // Runs without a server: a port that was just free is closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    };
    for scheme in ["postgres", "postgresql"] {
        let started = Instant::now();
        let err = open(&format!(
            "{scheme}://strangler:s3cret@127.0.0.1:{port}/fleet"
        ))
        .await
        .err()
        .expect("nothing listens there");
        assert!(err.is_unavailable(), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("Connection refused"), "{msg}");
        assert!(
            msg.contains(&format!("postgres://strangler@127.0.0.1:{port}/fleet")),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a refusal is reported at once, took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_unparsable_url_is_an_open_error_without_the_password() {
    let err = open("postgres://strangler:s3cret@127.0.0.1:notaport/fleet")
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[tokio::test]
async fn a_missing_database_is_an_open_error_naming_it() {
    let Ok(admin_url) = std::env::var(URL_VAR) else {
        eprintln!("skipping a_missing_database_is_an_open_error_naming_it: {URL_VAR} is not set");
        return;
    };
    let url = with_database(&admin_url, "strangler_no_such_database");
    let err = open(&url).await.err().expect("refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/strangler_no_such_database"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn concurrent_opens_migrate_once_and_reopening_keeps_data() {
    let db = pg_test_db!("concurrent_opens_migrate_once_and_reopening_keeps_data");
    let (a, b, c) = tokio::join!(db.open(), db.open(), db.open());
    a.save_route_state(&route_state("orders")).await.unwrap();
    assert_eq!(
        b.load_route_states().await.unwrap(),
        vec![route_state("orders")]
    );
    for store in [a, b, c] {
        store.close().await;
    }
    let again = db.open().await;
    assert_eq!(again.load_route_states().await.unwrap().len(), 1);
    again.close().await;

    let mut raw = db.raw().await;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let known: Vec<(i64, bool)> = MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert_eq!(applied, known);
}

#[tokio::test]
async fn an_unreadable_stored_value_is_a_corrupt_error() {
    let db = pg_test_db!("an_unreadable_stored_value_is_a_corrupt_error");
    let store = db.open().await;
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();
    db.exec("UPDATE route_state SET stage = 'sideways'").await;
    let err = store.load_route_states().await.expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("\"sideways\""), "{err}");
    store.close().await;
}

/// Rows written by schema version 1 (the shared ones plus the fleet's),
/// pinned as raw SQL: they must read back the same after every migration.
#[tokio::test]
async fn rows_of_schema_v1_still_read_back() {
    let db = pg_test_db!("rows_of_schema_v1_still_read_back");
    {
        let first = MIGRATOR
            .iter()
            .find(|m| m.version == 1)
            .expect("migration 1 exists")
            .clone();
        let v1 = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(vec![first]),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let mut raw = db.raw().await;
        v1.run(&mut raw).await.unwrap();
        sqlx::raw_sql(V1_ROWS).execute(&mut raw).await.unwrap();
        sqlx::raw_sql(
            r#"
            INSERT INTO instances (id, config_hash, version, started_at_ms, last_seen_ms)
            VALUES ('host-a:8080', 'c0ffee', '0.1.0', 1714564800000, 1714564801000);
            INSERT INTO lease (name, holder, epoch, expires_at_ms)
            VALUES ('leader', 'host-a:8080', 41, 1714564802000);
            INSERT INTO instance_windows (instance_id, route, window_json, at_ms, updated_at_ms)
            VALUES ('host-a:8080', 'orders', '{"requests": 3}', 1714564801000, 1714564801000);
            "#,
        )
        .execute(&mut raw)
        .await
        .unwrap();
        raw.close().await.unwrap();
    }

    let store = db.open().await;
    shared::rows_of_schema_v1_read_back(store.clone()).await;
    let instances = store.instances().await.unwrap();
    assert_eq!(
        (
            instances[0].id.as_str(),
            instances[0].config_hash.as_str(),
            instances[0].version.as_str(),
            instances[0].started_at_ms,
            instances[0].last_seen_ms,
            instances[0].leader,
        ),
        (
            "host-a:8080",
            "c0ffee",
            "0.1.0",
            1_714_564_800_000,
            1_714_564_801_000,
            false
        ),
        "the lease expired in 2024"
    );
    assert!(
        store.windows("orders", LONG).await.unwrap().is_empty(),
        "stale"
    );
    assert_eq!(
        store
            .windows("orders", Duration::from_secs(u32::MAX.into()))
            .await
            .unwrap(),
        vec![("host-a:8080".to_string(), json!({"requests": 3}))]
    );
    // The epoch continues from the stored one.
    let fence = store.try_acquire_lease("host-b:8080", LONG).await.unwrap();
    assert_eq!(fence.map(|f| f.epoch), Some(42));
    store.close().await;
}

/// Editing an applied migration makes sqlx refuse every database that ran
/// it: migration 1 is frozen. Change the schema with a new file instead.
#[test]
fn migration_1_is_frozen() {
    let first = MIGRATOR
        .iter()
        .find(|m| m.version == 1)
        .expect("migration 1");
    let hex: String = first.checksum.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "78fab7628a6b8dcada8cbb390ebede9a13bda0fbd73e3f6ec6f9b039dee5bcaf0c8eca773eda6da69ca2cdbaf1746155");
}

// --- the leader lease ---

#[tokio::test]
async fn the_lease_is_taken_renewed_and_taken_over_with_a_new_epoch() {
    let db = pg_test_db!("the_lease_is_taken_renewed_and_taken_over_with_a_new_epoch");
    let store = db.open().await;
    let fence = |holder: &str, epoch| Fence {
        holder: holder.into(),
        epoch,
    };

    // Free: taken at epoch 1; renewing keeps the epoch; others get nothing.
    assert_eq!(
        store.try_acquire_lease("a", LONG).await.unwrap(),
        Some(fence("a", 1))
    );
    assert_eq!(
        store.try_acquire_lease("a", LONG).await.unwrap(),
        Some(fence("a", 1))
    );
    assert_eq!(store.try_acquire_lease("b", LONG).await.unwrap(), None);

    // Expired (by the database's clock): taken over at epoch 2, and the
    // former holder cannot have it back while b renews.
    db.exec(&format!(
        "UPDATE lease SET expires_at_ms = expires_at_ms - {HOUR_MS}"
    ))
    .await;
    assert_eq!(
        store.try_acquire_lease("b", LONG).await.unwrap(),
        Some(fence("b", 2))
    );
    assert_eq!(store.try_acquire_lease("a", LONG).await.unwrap(), None);
    assert_eq!(
        store.try_acquire_lease("b", LONG).await.unwrap(),
        Some(fence("b", 2))
    );

    // Released: free at once for the next taker, at epoch 3.
    assert!(
        !store.release_lease("a").await.unwrap(),
        "a does not hold it"
    );
    assert!(store.release_lease("b").await.unwrap());
    assert_eq!(
        store.try_acquire_lease("a", LONG).await.unwrap(),
        Some(fence("a", 3))
    );

    // A holder whose own lease ran out gets a new epoch too: whatever it
    // began under the old one is void.
    db.exec(&format!(
        "UPDATE lease SET expires_at_ms = expires_at_ms - {HOUR_MS}"
    ))
    .await;
    assert_eq!(
        store.try_acquire_lease("a", LONG).await.unwrap(),
        Some(fence("a", 4))
    );

    // A real expiry, on the database's clock: a short lease lapses.
    assert_eq!(
        store
            .try_acquire_lease("a", Duration::from_millis(50))
            .await
            .unwrap(),
        Some(fence("a", 4)),
        "renewing with a shorter time to live keeps the epoch"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.try_acquire_lease("b", LONG).await.unwrap(),
        Some(fence("b", 5))
    );

    let err = store
        .try_acquire_lease("b", Duration::ZERO)
        .await
        .expect_err("a zero time to live is refused");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    store.close().await;
}

#[tokio::test]
async fn two_instances_racing_for_a_free_lease_get_one_winner() {
    let db = pg_test_db!("two_instances_racing_for_a_free_lease_get_one_winner");
    let stores: Vec<Arc<dyn Store>> = vec![db.open().await, db.open().await, db.open().await];
    for round in 0..5 {
        let results = futures_util::future::join_all(
            stores
                .iter()
                .enumerate()
                .map(|(i, s)| async move { s.try_acquire_lease(&format!("i{i}"), LONG).await }),
        )
        .await;
        let winners: Vec<Fence> = results.into_iter().filter_map(|r| r.unwrap()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(winners[0].epoch, round + 1);
        assert!(stores[0].release_lease(&winners[0].holder).await.unwrap());
    }
    for store in stores {
        store.close().await;
    }
}

#[tokio::test]
async fn fenced_writes_are_refused_for_a_stale_epoch_or_an_expired_lease() {
    let db = pg_test_db!("fenced_writes_are_refused_for_a_stale_epoch_or_an_expired_lease");
    let store = db.open().await;
    let old = store
        .try_acquire_lease("a", LONG)
        .await
        .unwrap()
        .expect("free");
    let mut first = route_state("orders");
    assert!(store.save_route_state_fenced(&first, &old).await.unwrap());
    let id = store
        .append_event_fenced(&event("orders", &now_rfc3339(), "by a"), &old)
        .await
        .unwrap()
        .expect("a leads");

    // a pauses; its lease lapses and b takes over.
    db.exec(&format!(
        "UPDATE lease SET expires_at_ms = expires_at_ms - {HOUR_MS}"
    ))
    .await;
    let new = store
        .try_acquire_lease("b", LONG)
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(new.epoch, old.epoch + 1);

    // a wakes up and writes with its old epoch: nothing lands.
    let mut stale = first.clone();
    stale.weight = 100.0;
    assert!(!store.save_route_state_fenced(&stale, &old).await.unwrap());
    assert_eq!(
        store
            .append_event_fenced(&event("orders", &now_rfc3339(), "stale"), &old)
            .await
            .unwrap(),
        None
    );
    // Right epoch, wrong holder: refused as well.
    let forged = Fence {
        holder: "a".into(),
        epoch: new.epoch,
    };
    assert!(!store
        .save_route_state_fenced(&stale, &forged)
        .await
        .unwrap());
    assert_eq!(
        store.load_route_states().await.unwrap(),
        vec![first.clone()]
    );
    let events = store.events(None, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);

    // b writes.
    first.weight = 25.0;
    assert!(store.save_route_state_fenced(&first, &new).await.unwrap());
    assert!(store
        .append_event_fenced(&event("orders", &now_rfc3339(), "by b"), &new)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.load_route_states().await.unwrap(),
        vec![first.clone()]
    );

    // Holder and epoch right but the lease expired (b paused too long).
    db.exec(&format!(
        "UPDATE lease SET expires_at_ms = expires_at_ms - {HOUR_MS}"
    ))
    .await;
    assert!(!store.save_route_state_fenced(&stale, &new).await.unwrap());
    assert_eq!(store.load_route_states().await.unwrap(), vec![first]);
    store.close().await;
}

/// Guards the `FOR SHARE` of the fence: without it, a fenced write whose
/// check passed just before the takeover commits after it, behind the new
/// leader's back (this test then fails nearly every time).
#[tokio::test]
async fn no_fenced_write_of_a_former_leader_lands_after_a_takeover() {
    let db = pg_test_db!("no_fenced_write_of_a_former_leader_lands_after_a_takeover");
    let a = db.open().await;
    let b = db.open().await;
    let fence = a.try_acquire_lease("a", LONG).await.unwrap().expect("free");
    // Each write takes a while, so that the takeover happens while one is
    // under way: it must wait for it rather than let it land afterwards.
    db.exec(
        "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.1); RETURN NEW; END $$",
    )
    .await;
    db.exec(
        "CREATE TRIGGER slow_write BEFORE INSERT OR UPDATE ON route_state \
         FOR EACH ROW EXECUTE FUNCTION slow_write()",
    )
    .await;

    // a writes as fast as it can until it is fenced out.
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut last_landed = None;
            for i in 0..100_000 {
                let mut row = route_state("orders");
                row.updated_at_ms = i;
                if !a.save_route_state_fenced(&row, &fence).await.unwrap() {
                    return last_landed;
                }
                last_landed = Some(i);
            }
            panic!("a was never fenced out");
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    db.exec(&format!(
        "UPDATE lease SET expires_at_ms = expires_at_ms - {HOUR_MS}"
    ))
    .await;
    b.try_acquire_lease("b", LONG)
        .await
        .unwrap()
        .expect("expired");
    // What b sees once it leads is final: a cannot add to it.
    let seen_by_b = b.load_route_states().await.unwrap();
    let last_landed = writer
        .await
        .expect("the writer ends")
        .expect("a wrote first");
    assert_eq!(seen_by_b.len(), 1);
    assert_eq!(seen_by_b[0].updated_at_ms, last_landed);
    assert_eq!(b.load_route_states().await.unwrap(), seen_by_b);
    a.close().await;
    b.close().await;
}

// --- instances and windows ---

#[tokio::test]
async fn instances_are_listed_with_the_leader_flag() {
    let db = pg_test_db!("instances_are_listed_with_the_leader_flag");
    let store = db.open().await;
    assert!(store.shared());
    let row = |id: &str, hash: &str| InstanceRow {
        id: id.into(),
        config_hash: hash.into(),
        version: "0.1.0".into(),
        started_at_ms: 1_700_000_000_000,
    };
    store.register_instance(&row("b:8080", "h1")).await.unwrap();
    store.register_instance(&row("a:8080", "h1")).await.unwrap();
    assert!(store.heartbeat("a:8080").await.unwrap());
    assert!(
        !store.heartbeat("ghost:1").await.unwrap(),
        "unknown: register again"
    );

    let listed = store.instances().await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a:8080", "b:8080"]
    );
    assert!(
        listed.iter().all(|i| !i.leader),
        "nobody holds the lease yet"
    );
    assert!(
        listed.iter().all(|i| (0..60_000).contains(&i.seen_ago_ms)),
        "{listed:?}"
    );

    store
        .try_acquire_lease("b:8080", LONG)
        .await
        .unwrap()
        .expect("free");
    // Registering again (a restart with another configuration) replaces.
    store.register_instance(&row("a:8080", "h2")).await.unwrap();
    let listed = store.instances().await.unwrap();
    let leaders: Vec<(&str, bool, &str)> = listed
        .iter()
        .map(|i| (i.id.as_str(), i.leader, i.config_hash.as_str()))
        .collect();
    assert_eq!(leaders, [("a:8080", false, "h2"), ("b:8080", true, "h1")]);

    // A silent instance ages; an expired lease makes no leader.
    db.exec(&format!(
        "UPDATE instances SET last_seen_ms = last_seen_ms - {HOUR_MS} WHERE id = 'a:8080'"
    ))
    .await;
    db.exec(&format!(
        "UPDATE lease SET expires_at_ms = expires_at_ms - {HOUR_MS}"
    ))
    .await;
    let listed = store.instances().await.unwrap();
    assert!(listed[0].seen_ago_ms >= HOUR_MS, "{listed:?}");
    assert!(listed.iter().all(|i| !i.leader), "{listed:?}");
    store.close().await;
}

#[tokio::test]
async fn windows_are_shared_and_filtered_by_freshness() {
    let db = pg_test_db!("windows_are_shared_and_filtered_by_freshness");
    let store = db.open().await;
    let fresh = Duration::from_secs(3);
    store
        .write_window("b", "orders", &json!({"requests": 2}), 1)
        .await
        .unwrap();
    store
        .write_window("a", "orders", &json!({"requests": 1}), 1)
        .await
        .unwrap();
    store
        .write_window("a", "users", &json!({"requests": 9}), 1)
        .await
        .unwrap();
    // One row per (instance, route): the next write replaces it.
    store
        .write_window(
            "a",
            "orders",
            &json!({"requests": 5, "p99": [1.5, 2.25]}),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        store.windows("orders", fresh).await.unwrap(),
        vec![
            ("a".to_string(), json!({"requests": 5, "p99": [1.5, 2.25]})),
            ("b".to_string(), json!({"requests": 2})),
        ]
    );
    assert!(store.windows("nobody", fresh).await.unwrap().is_empty());

    // b stopped reporting 10 s ago (by the database's clock; its own
    // `at_ms` does not matter).
    db.exec("UPDATE instance_windows SET updated_at_ms = updated_at_ms - 10000, at_ms = 9e15 WHERE instance_id = 'b'")
        .await;
    assert_eq!(
        store.windows("orders", fresh).await.unwrap(),
        vec![("a".to_string(), json!({"requests": 5, "p99": [1.5, 2.25]}))]
    );
    assert_eq!(
        store
            .windows("orders", Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        2
    );
    store.close().await;
}

// --- change notifications ---

#[tokio::test]
async fn a_state_change_is_notified_to_every_subscriber() {
    let db = pg_test_db!("a_state_change_is_notified_to_every_subscriber");
    // Two instances: `listener` subscribes, `writer` changes the state.
    let listener = db.open().await;
    let writer = db.open().await;
    let mut changes = listener.subscribe_changes().await.expect("LISTEN works");
    let mut own = writer.subscribe_changes().await.expect("LISTEN works");

    let mut latencies = vec![];
    for i in 0..20 {
        let mut row = route_state("orders");
        row.updated_at_ms += i;
        let sent = Instant::now();
        writer.save_route_state(&row).await.unwrap();
        let route = timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("notified within 5 s")
            .expect("the stream is open");
        latencies.push(sent.elapsed());
        assert_eq!(route, "orders");
        assert_eq!(
            own.recv().await.as_deref(),
            Some("orders"),
            "the writer hears itself too"
        );
    }
    latencies.sort();
    eprintln!(
        "NOTIFY latency over 20 saves (save start to receipt): median {:?}, max {:?}",
        latencies[10], latencies[19]
    );

    // Deletion and fenced writes notify; a fenced-out write does not.
    assert!(writer.delete_route_state("orders").await.unwrap());
    assert_eq!(changes.recv().await.as_deref(), Some("orders"));
    let fence = writer
        .try_acquire_lease("w", LONG)
        .await
        .unwrap()
        .expect("free");
    assert!(writer
        .save_route_state_fenced(&route_state("users"), &fence)
        .await
        .unwrap());
    assert_eq!(changes.recv().await.as_deref(), Some("users"));
    let stale = Fence {
        holder: "w".into(),
        epoch: fence.epoch + 7,
    };
    assert!(!writer
        .save_route_state_fenced(&route_state("fenced"), &stale)
        .await
        .unwrap());
    assert!(
        timeout(Duration::from_millis(300), changes.recv())
            .await
            .is_err(),
        "nothing was written, so nothing is notified"
    );

    // Closing the store ends the stream.
    listener.close().await;
    let end = timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("the stream ends when the store closes");
    assert_eq!(end, None);
    writer.close().await;
}

// --- a database lost while running ---

/// A TCP relay to the PostgreSQL server that can be cut (every connection
/// dropped, nothing listening) and restored on the same port, or frozen
/// (connections stay open, nothing gets through: a network partition).
struct Relay {
    port: u16,
    target: String,
    cut: CancellationToken,
    freeze: CancellationToken,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let cut = CancellationToken::new();
        let freeze = CancellationToken::new();
        tokio::spawn(Self::serve(
            listener,
            target.clone(),
            cut.clone(),
            freeze.clone(),
        ));
        Relay {
            port,
            target,
            cut,
            freeze,
        }
    }

    async fn serve(
        listener: TcpListener,
        target: String,
        cut: CancellationToken,
        freeze: CancellationToken,
    ) {
        loop {
            let mut inbound = tokio::select! {
                () = cut.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            let target = target.clone();
            let cut = cut.clone();
            let freeze = freeze.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    () = cut.cancelled() => {}
                    // Both sockets stay open, silent, until the cut.
                    () = freeze.cancelled() => cut.cancelled().await,
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    }

    fn cut(&self) {
        self.cut.cancel();
    }

    fn freeze(&self) {
        self.freeze.cancel();
    }

    async fn restore(&mut self) {
        self.cut.cancel();
        self.cut = CancellationToken::new();
        self.freeze = CancellationToken::new();
        // The old accept loop lets go of the port once it sees the cut.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the relay's port stays taken: {e}"),
            }
        };
        tokio::spawn(Self::serve(
            listener,
            self.target.clone(),
            self.cut.clone(),
            self.freeze.clone(),
        ));
    }
}

#[tokio::test]
async fn a_lost_database_is_unavailable_and_work_resumes_when_it_returns() {
    let db = pg_test_db!("a_lost_database_is_unavailable_and_work_resumes_when_it_returns");
    let target = format!("{}:{}", db.admin.get_host(), db.admin.get_port());
    let mut relay = Relay::start(target).await;
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        db.admin.get_username(),
        relay.port,
        db.name
    );
    let store = open(&url).await.expect("opens through the relay");
    let mut changes = store.subscribe_changes().await.unwrap();
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();
    assert_eq!(changes.recv().await.as_deref(), Some("orders"));

    relay.cut();
    let started = Instant::now();
    let err = store.ping().await.expect_err("the database is gone");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", relay.port)),
        "{err}"
    );
    let noticed = started.elapsed();
    let err = store
        .save_route_state(&route_state("orders"))
        .await
        .expect_err("writes fail too");
    assert!(err.is_unavailable(), "{err:?}");
    let err = store
        .try_acquire_lease("a", LONG)
        .await
        .expect_err("no lease without the database");
    assert!(err.is_unavailable(), "{err:?}");
    eprintln!("a lost database was reported unavailable after {noticed:?}");
    assert!(noticed < Duration::from_secs(10), "{noticed:?}");

    relay.restore().await;
    let back = Instant::now();
    store.ping().await.expect("the database is back");
    let mut row = route_state("orders");
    row.weight = 50.0;
    store.save_route_state(&row).await.unwrap();
    assert_eq!(store.load_route_states().await.unwrap(), vec![row]);

    // The listener reconnects by itself and says changes may have been
    // missed (""), then notifications flow again.
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|r: &String| r == "users") {
        store.save_route_state(&route_state("users")).await.unwrap();
        match timeout(Duration::from_millis(500), changes.recv()).await {
            Ok(Some(route)) => seen.push(route),
            Ok(None) => panic!("the change stream ended"),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no notification after the return: {seen:?}"
        );
    }
    assert!(
        seen.contains(&String::new()),
        "a resync marker first: {seen:?}"
    );
    eprintln!(
        "notifications resumed {:?} after the database returned",
        back.elapsed()
    );
    store.close().await;
}

#[tokio::test]
async fn a_partitioned_database_is_unavailable_within_the_deadline() {
    let db = pg_test_db!("a_partitioned_database_is_unavailable_within_the_deadline");
    let target = format!("{}:{}", db.admin.get_host(), db.admin.get_port());
    let mut relay = Relay::start(target).await;
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        db.admin.get_username(),
        relay.port,
        db.name
    );
    let store = PostgresStore::open(&url)
        .await
        .expect("opens through the relay")
        .with_deadline(Duration::from_secs(1));
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();

    // Packets stop flowing; no connection is reset.
    relay.freeze();
    for _ in 0..2 {
        let started = Instant::now();
        let err = store
            .load_route_states()
            .await
            .expect_err("no answer through a partition");
        assert!(err.is_unavailable(), "{err:?}");
        let took = started.elapsed();
        eprintln!("a partition was reported unavailable after {took:?}: {err}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the database never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.load_route_states().await.unwrap().len(), 1);
    store.close().await;
}
