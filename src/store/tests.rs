//! Store tests, on real SQLite files in a temporary directory (one test on
//! `sqlite::memory:`). They go through [`super::open`] and the [`Store`]
//! trait; the round trips live in `tests/shared.rs` as bodies taking an
//! `Arc<dyn Store>`, which `tests/postgres.rs` runs on PostgreSQL too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;

use super::sqlite::{Target, MIGRATOR};
use super::*;

mod postgres;
mod shared;

use crate::runtime::now_rfc3339;
use shared::*;

struct TestDb {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TestDb {
    fn new() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let path = dir.path().join("strangler.db");
        TestDb { _dir: dir, path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn open(&self) -> Arc<dyn Store> {
        open(&self.url()).await.expect("the store opens")
    }

    /// A raw connection, for checks below the API.
    async fn raw(&self) -> SqliteConnection {
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&self.path))
            .await
            .expect("raw connection")
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

// --- URLs and opening ---

#[test]
fn sqlite_urls_parse() {
    let parse = |url: &str| Target::parse(url).map(|r| r.map_err(|e| e.to_string()));
    assert_eq!(parse("sqlite::memory:"), Some(Ok(Target::Memory)));
    assert_eq!(parse("sqlite://:memory:"), Some(Ok(Target::Memory)));
    assert_eq!(
        parse("sqlite://strangler.db"),
        Some(Ok(Target::File("strangler.db".into())))
    );
    assert_eq!(
        parse("sqlite:///var/lib/strangler/s.db"),
        Some(Ok(Target::File("/var/lib/strangler/s.db".into())))
    );
    assert_eq!(
        parse("sqlite:data/s.db"),
        Some(Ok(Target::File("data/s.db".into())))
    );
    assert!(matches!(parse("sqlite://"), Some(Err(e)) if e.contains("names no file")));
    assert!(matches!(parse("sqlite://x.db?mode=rwc"), Some(Err(e)) if e.contains("x.db?mode=rwc")));
    assert_eq!(parse("postgres://db/strangler"), None);
    assert_eq!(parse("mysql://db"), None);
}

#[tokio::test]
async fn unknown_schemes_are_clear_errors() {
    let err = open("mysql://db/strangler").await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("\"mysql://db/strangler\" is not supported"),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_naming_the_path() {
    let db = TestDb::new();
    std::fs::write(&db.path, b"this is not a database, just text. ".repeat(200)).unwrap();
    let err = open(&db.url())
        .await
        .err()
        .expect("a corrupt file is refused");
    let msg = err.to_string();
    assert!(msg.contains(&db.path.display().to_string()), "{msg}");
    assert!(msg.contains("not a database"), "{msg}");
}

#[tokio::test]
async fn a_missing_directory_is_an_error_naming_the_path() {
    let db = TestDb::new();
    let path = db.path.with_file_name("no-such-dir").join("s.db");
    let err = open(&format!("sqlite://{}", path.display()))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn the_file_and_its_siblings_are_owner_only() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();
    assert_eq!(mode(&db.path), 0o600);
    let wal = sibling(&db.path, "-wal");
    assert!(
        wal.exists(),
        "WAL mode keeps a -wal file while connections are open"
    );
    assert_eq!(mode(&wal), 0o600);

    // A sibling left wider (by another tool, an older version) is tightened
    // on the next open.
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(mode(&wal), 0o644);
    let again = db.open().await;
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(again.load_route_states().await.unwrap().len(), 1);
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_run_once() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();
    let id = store
        .append_event(&event("orders", &now_rfc3339(), "manual promotion"))
        .await
        .unwrap();
    store.close().await;
    drop(store);

    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(
            store.load_route_states().await.unwrap(),
            vec![route_state("orders")]
        );
        let events = store.events(None, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, id);
        store.close().await;
    }

    let mut raw = db.raw().await;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let known: Vec<(i64, bool)> = MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert_eq!(applied, known);
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let db = TestDb::new();
    let store = db.open().await;
    store.ping().await.expect("an open store answers");
    store.close().await;
    let err = store
        .ping()
        .await
        .expect_err("a closed store does not answer");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().contains(&db.path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn the_memory_store_works() {
    let store = open("sqlite::memory:").await.unwrap();
    store.save_route_state(&route_state("a")).await.unwrap();
    store.save_route_state(&route_state("b")).await.unwrap();
    let routes: Vec<String> = store
        .load_route_states()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.route)
        .collect();
    assert_eq!(routes, ["a", "b"]);
    // Two memory stores are separate databases.
    let other = open("sqlite::memory:").await.unwrap();
    assert!(other.load_route_states().await.unwrap().is_empty());
}

// --- round trips and pruning (the shared bodies, on SQLite) ---

/// Runs each shared body on a fresh SQLite file.
macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let db = TestDb::new();
            shared::$name(db.open().await).await;
        }
    )*};
}

sqlite_tests!(
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
    let db = TestDb::new();
    let before = shared::prune_by_size_drops_the_oldest_samples_first(db.open().await).await;
    // The file shrank too (incremental vacuum).
    let file = std::fs::metadata(&db.path).unwrap().len();
    assert!(
        file < before.bytes_after,
        "file {file} vs {}",
        before.bytes_after
    );
}

// --- persisted data ---

/// Rows written by schema version 1, pinned as raw SQL: whatever later
/// migrations do, a database holding these rows must still read back the
/// same through the API.
#[tokio::test]
async fn rows_of_schema_v1_still_read_back() {
    let db = TestDb::new();
    {
        // A database at schema version 1 exactly, as the first release
        // left it.
        let first = MIGRATOR
            .iter()
            .find(|m| m.version == 1)
            .expect("migration 1 exists")
            .clone();
        let v1 = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(vec![first]),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let mut raw = SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&db.path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        v1.run(&mut raw).await.unwrap();
        sqlx::raw_sql(V1_ROWS).execute(&mut raw).await.unwrap();
        raw.close().await.unwrap();
    }

    let store = db.open().await;
    shared::rows_of_schema_v1_read_back(store.clone()).await;
    // New rows continue after the pinned ids.
    let id = store
        .append_event(&event("orders", &now_rfc3339(), "next"))
        .await
        .unwrap();
    assert!(id > 7);
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
    assert_eq!(
        hex,
        "3796b9a55028b0184d0c070d84b6a4beca0750c017faef7132302a08bd5a06e2bf198e79e2c4549dfadb57d79869209b"
    );
}

#[tokio::test]
async fn an_unreadable_stored_value_is_a_corrupt_error() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .save_route_state(&route_state("orders"))
        .await
        .unwrap();
    let mut raw = db.raw().await;
    sqlx::query("UPDATE route_state SET stage = 'sideways'")
        .execute(&mut raw)
        .await
        .unwrap();
    let err = store.load_route_states().await.expect_err("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("\"sideways\""), "{err}");
}

// --- fleet: a single instance ---

#[tokio::test]
async fn a_single_instance_is_always_the_leader() {
    let db = TestDb::new();
    let store = db.open().await;
    assert!(!store.shared());
    store
        .register_instance(&InstanceRow {
            id: "host:8080".into(),
            config_hash: "h1".into(),
            version: "0.1.0".into(),
            started_at_ms: 1,
        })
        .await
        .unwrap();
    assert!(store.heartbeat("host:8080").await.unwrap());
    assert!(!store.heartbeat("other:1").await.unwrap());
    let listed = store.instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].leader && listed[0].id == "host:8080",
        "{listed:?}"
    );

    let fence = store
        .try_acquire_lease("host:8080", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("always granted");
    assert!(store
        .save_route_state_fenced(&route_state("orders"), &fence)
        .await
        .unwrap());
    assert!(store
        .append_event_fenced(&event("orders", &now_rfc3339(), "x"), &fence)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.load_route_states().await.unwrap().len(), 1);
    assert!(store.release_lease("host:8080").await.unwrap());

    // Its own window reads back; there is nobody else's.
    store
        .write_window("host:8080", "orders", &json!({"requests": 3}), 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .windows("orders", Duration::from_secs(3))
            .await
            .unwrap(),
        vec![("host:8080".to_string(), json!({"requests": 3}))]
    );
    assert!(store
        .windows("users", Duration::from_secs(3))
        .await
        .unwrap()
        .is_empty());

    let err = store
        .subscribe_changes()
        .await
        .expect_err("nothing else writes the file");
    assert!(matches!(err, StoreError::Unsupported { .. }), "{err:?}");
}
