//! Fleet mode (SPEC §9): several `strangler` processes sharing one
//! PostgreSQL database act as one.
//!
//! These tests need a real server: set `STRANGLER_TEST_POSTGRES_URL` to one
//! where the user may create databases (`.ci/postgres.sh` starts a
//! throwaway one and prints the line to export). Each test creates its own
//! database and drops it at the end. Without the variable each test says
//! on stderr why it skips, and passes. Timings (propagation delay,
//! failover time) are printed, e.g.
//! `cargo test --test e2e fleet:: -- --nocapture --test-threads 1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support::backend::{full, Backend};
use crate::support::client;
use crate::support::ports::{refusing, serving};

const URL_VAR: &str = "STRANGLER_TEST_POSTGRES_URL";

/// A database of one test, dropped at the end (even after a panic).
struct PgDb {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl PgDb {
    async fn new(test: &str) -> Option<PgDb> {
        let Ok(admin_url) = std::env::var(URL_VAR) else {
            eprintln!(
                "skipping {test}: {URL_VAR} is not set (run .ci/postgres.sh for a throwaway server)"
            );
            return None;
        };
        let admin = PgConnectOptions::from_str(&admin_url)
            .unwrap_or_else(|e| panic!("{URL_VAR} is not a PostgreSQL URL: {e}"));
        let name = format!("strangler_fleet_{:016x}", rand::random::<u64>());
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
        Some(PgDb { admin, name, url })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
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
    }
}

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

macro_rules! pg_db {
    ($test:expr) => {
        match PgDb::new($test).await {
            Some(db) => db,
            None => return,
        }
    };
}

/// One `strangler run` process of a fleet. The configuration text is the
/// same for every member (listen addresses and the store come from the
/// environment), so their configuration hashes agree. Each listens on port
/// 0 and logs the addresses it got (`--log-format json`): no port is found
/// in advance, so none can be taken by another socket before it binds.
struct Member {
    id: String,
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start(id: &str, store_url: &str, body: &str) -> Member {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strangler.toml");
        let text = format!(
            "[server]\nlisten = \"${{PROXY_LISTEN}}\"\n[admin]\nlisten = \"${{ADMIN_LISTEN}}\"\n[store]\nurl = \"${{STORE_URL}}\"\n{body}"
        );
        std::fs::write(&path, text).unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_strangler"))
            .args(["--log-format", "json", "run", "-c"])
            .arg(&path)
            .args(["--instance-id", id])
            .env("PROXY_LISTEN", "127.0.0.1:0")
            .env("ADMIN_LISTEN", "127.0.0.1:0")
            .env("STORE_URL", store_url)
            .env("STRANGLER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        Member {
            id: id.to_string(),
            child,
            proxy: unknown,
            admin: unknown,
            log,
            _dir: dir,
        }
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    async fn get(&self, path: &str) -> Value {
        serde_json::from_str(&self.text(path).await).expect("a JSON answer")
    }

    /// An admin answer's status and text.
    async fn answer(&self, path: &str) -> (StatusCode, String) {
        let response = client().get(self.admin_url(path)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn text(&self, path: &str) -> String {
        self.answer(path).await.1
    }

    async fn route(&self) -> Value {
        self.get("/api/routes/orders").await
    }

    /// Waits until the process says where it serves and answers there.
    async fn ready(&mut self) {
        let http = client();
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                panic!("{} exited:\n{}", self.id, self.log_text());
            }
            if let Some((proxy, admin)) = serving(&self.log_text()) {
                (self.proxy, self.admin) = (proxy, admin);
                if http
                    .get(self.admin_url("/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not start:\n{}", self.id, self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.id,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

async fn start_fleet(n: usize, store_url: &str, body: &str) -> Vec<Member> {
    let mut members: Vec<Member> = (0..n)
        .map(|i| Member::start(&format!("fleet-{i}"), store_url, body))
        .collect();
    for m in &mut members {
        m.ready().await;
    }
    members
}

/// Waits (at most `limit`) until `done` holds for what `probe` returns.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut probe: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of the instance that leads, as `member` lists the fleet (when
/// exactly one does, and every one of `expected` instances is listed).
async fn leader(member: &Member, expected: usize) -> Option<String> {
    let list = member.get("/api/instances").await;
    let list = list.as_array()?;
    let leaders: Vec<&Value> = list.iter().filter(|i| i["leader"] == true).collect();
    (list.len() >= expected && leaders.len() == 1)
        .then(|| leaders[0]["id"].as_str().unwrap().to_string())
}

/// Waits until `member` sums the windows of all `n` instances (they
/// agree on the current stage's window), so traffic sent now counts.
async fn converged(member: &Member, n: usize) {
    wait_for(
        Duration::from_secs(10),
        "the fleet's windows to add up",
        || async {
            let r = member.route().await;
            (r["instances"].as_array()?.len() == n).then_some(r)
        },
    )
    .await;
}

fn config(
    legacy: SocketAddr,
    candidate: SocketAddr,
    stage: &str,
    weight: u32,
    rollout: &str,
) -> String {
    format!(
        r#"
[upstreams.legacy]
url = "http://{legacy}"

[upstreams.candidate]
url = "http://{candidate}"

[[routes]]
name = "orders"
path_prefix = "/orders"
legacy = "legacy"
candidate = "candidate"
stage = "{stage}"
weight = {weight}

[routes.rollout]
{rollout}
"#
    )
}

async fn same() -> Backend {
    Backend::start(|_req| async { Response::new(full("same")) }).await
}

#[tokio::test]
async fn fleet_a_weight_change_reaches_every_instance_and_figures_are_fleet_wide() {
    let db = pg_db!("fleet_a_weight_change_reaches_every_instance_and_figures_are_fleet_wide");
    let (legacy, candidate) = (same().await, same().await);
    let body = config(legacy.addr, candidate.addr, "canary", 10, "auto = false");
    let fleet = start_fleet(3, &db.url, &body).await;

    // Every instance is listed, with one leader, the same hash and version.
    let list = wait_for(
        Duration::from_secs(10),
        "three instances and a leader",
        || async {
            leader(&fleet[0], 3).await?;
            Some(fleet[0].get("/api/instances").await)
        },
    )
    .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let hash = &list[0]["config_hash"];
    for i in list {
        assert_eq!(
            &i["config_hash"], hash,
            "same file text, same hash: {list:?}"
        );
        assert!(
            i["version"].is_string() && i["last_seen"].is_string(),
            "{i}"
        );
    }
    let leader_id = leader(&fleet[0], 3).await.unwrap();

    // A manual action through a follower reaches the others within 1 s.
    let via = fleet.iter().position(|m| m.id != leader_id).unwrap();
    let changed = client()
        .post(fleet[via].admin_url("/api/routes/orders/weight"))
        .json(&json!({"weight": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let sent = Instant::now();
    let mut delays = Vec::new();
    for (i, m) in fleet.iter().enumerate() {
        if i == via {
            continue;
        }
        loop {
            let r = m.route().await;
            if r["weight"] == 25.0 {
                delays.push(sent.elapsed());
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "{} never saw the new weight: {r}",
                m.id
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let worst = delays.iter().max().copied().unwrap();
    eprintln!("fleet: weight change propagation delay {delays:?} (worst {worst:?})");
    assert!(
        worst <= Duration::from_secs(1),
        "propagation took {worst:?}"
    );
    for m in &fleet {
        let r = m.route().await;
        assert_eq!(
            (r["stage"].as_str(), r["state"].as_str()),
            (Some("canary"), Some("paused"))
        );
    }

    // Traffic split across instances shows as one, with a breakdown.
    let http = client();
    for m in &fleet {
        for i in 0..10 {
            let r = http
                .get(m.url(&format!("/orders/{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let route = wait_for(Duration::from_secs(8), "fleet-wide figures", || async {
        let r = fleet[0].route().await;
        let total = r["legacy"]["requests"].as_u64()? + r["candidate"]["requests"].as_u64()?;
        (total == 30 && r["instances"].as_array()?.len() == 3).then_some(r)
    })
    .await;
    for share in route["instances"].as_array().unwrap() {
        let n = share["legacy"]["requests"].as_u64().unwrap()
            + share["candidate"]["requests"].as_u64().unwrap();
        assert_eq!(n, 10, "each instance served its own 10: {share}");
    }
}

#[tokio::test]
async fn fleet_the_leader_is_killed_and_another_takes_over_from_the_persisted_state() {
    let db = pg_db!("fleet_the_leader_is_killed_and_another_takes_over_from_the_persisted_state");
    let (legacy, candidate) = (same().await, same().await);
    // p99 gate loosened: the promotion under test must not wait on (or be
    // rolled back by) the latency noise of four processes on a shared box.
    let rollout = "interval = \"1s\"\nmin_requests = 10\nmin_match_rate = 0.9\nsteps = [10, 50, 100]\nbake = \"1h\"\nmax_error_rate = 0.05\nmax_error_rate_increase = 0.05\nmax_p99_ratio = 100.0\np99_slack = \"1s\"";
    let body = config(legacy.addr, candidate.addr, "canary", 10, rollout);
    let mut fleet = start_fleet(3, &db.url, &body).await;
    let old = wait_for(Duration::from_secs(10), "a leader", || async {
        leader(&fleet[0], 3).await.map(Value::from)
    })
    .await;
    let old = old.as_str().unwrap().to_string();
    let index = fleet.iter().position(|m| m.id == old).unwrap();
    let mut dead = fleet.remove(index);
    dead.kill(); // SIGKILL: the lease is not released, it has to expire
    let killed = Instant::now();
    let new = wait_for(Duration::from_secs(15), "a new leader", || async {
        let l = leader(&fleet[0], 2).await?;
        (l != old).then(|| Value::from(l))
    })
    .await;
    let failover = killed.elapsed();
    eprintln!("fleet: failover after the leader's SIGKILL took {failover:?} (lease ttl 3 s, renewed every 1 s)");
    assert!(
        failover < Duration::from_secs(8),
        "failover took {failover:?}"
    );
    let new = new.as_str().unwrap().to_string();
    // It continues from the persisted state: canary 10, and promotes on
    // the traffic of both survivors.
    let r = fleet[0].route().await;
    assert_eq!(
        (r["stage"].as_str(), r["weight"].as_f64()),
        (Some("canary"), Some(10.0))
    );
    converged(&fleet[0], 2).await;
    let http = client();
    let promoted = wait_for(
        Duration::from_secs(30),
        "promotion by the new leader",
        || {
            let http = http.clone();
            let fleet = &fleet;
            async move {
                for m in fleet {
                    for i in 0..5 {
                        let _ = http.get(m.url(&format!("/orders/{i}"))).send().await;
                    }
                }
                let r = fleet[1].route().await;
                (r["weight"] == 50.0).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(promoted["stage"], "canary");
    let events = fleet[0].get("/api/events?route=orders").await;
    let last = &events.as_array().unwrap()[0];
    assert_eq!(
        (last["actor"].as_str(), last["instance"].as_str()),
        (Some("auto"), Some(new.as_str())),
        "{last}"
    );
}

/// The candidate answers 500 to every POST; legacy and the candidate agree
/// on everything else.
async fn failing_writes() -> Backend {
    Backend::start(|req| async move {
        if req.method() == http::Method::POST {
            let mut r = Response::new(full("boom"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        } else {
            Response::new(full("same"))
        }
    })
    .await
}

const ROLLBACK: &str = "auto = false\nmax_error_rate = 0.6\nmax_error_rate_increase = 0.99\nfailure_limit = 1\nrollback_window = \"30s\"\nbake = \"1h\"";

#[tokio::test]
async fn fleet_a_rollback_is_decided_on_the_fleets_total_errors() {
    let db = pg_db!("fleet_a_rollback_is_decided_on_the_fleets_total_errors");
    // 4 errors in 4 requests alone: the Wilson interval still reaches
    // below 0.6, so no instance would roll back on its own; 12 in 12 lie
    // wholly above it.
    let alone = strangler::rollout::gates::wilson(4, 4).unwrap();
    let together = strangler::rollout::gates::wilson(12, 12).unwrap();
    assert!(
        alone[0] < 0.6 && together[0] > 0.6,
        "{alone:?} {together:?}"
    );
    let (legacy, candidate) = (same().await, failing_writes().await);
    let body = config(legacy.addr, candidate.addr, "candidate", 100, ROLLBACK);
    let fleet = start_fleet(3, &db.url, &body).await;
    wait_for(Duration::from_secs(10), "a leader", || async {
        leader(&fleet[0], 3).await.map(Value::from)
    })
    .await;
    for m in &fleet {
        converged(m, 3).await;
    }
    let http = client();
    for m in &fleet {
        for i in 0..4 {
            let r = http
                .post(m.url(&format!("/orders/{i}")))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 500);
        }
    }
    for m in &fleet {
        let start = Instant::now();
        loop {
            let r = m.route().await;
            if r["state"] == "rolled_back" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no rollback seen by {}: {r:#}",
                m.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let events = fleet[0].get("/api/events?route=orders").await;
    let last = &events.as_array().unwrap()[0];
    let reason = last["reason"].as_str().unwrap();
    assert!(reason.contains("error_rate"), "{reason}");
    // Judged on more requests than any instance served: the leader rolled
    // back as soon as the reports it summed held enough evidence.
    let judged: u64 = reason
        .split(" errors in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {reason}"));
    assert!(judged > 4, "judged on the fleet's requests: {reason}");
}

#[tokio::test]
async fn fleet_postgres_unreachable_at_start_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strangler.toml");
    // Never contacted: the store is checked first.
    let (legacy, candidate) = (
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    );
    // Held, never listening: refused for the whole test.
    let (closed, _held) = refusing();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"postgres://strangler@{closed}/strangler\"\n{}",
            config(legacy, candidate, "shadow", 0, "auto = false")
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store"), "a clear message: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A TCP relay in front of PostgreSQL that a test can cut and restore.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    epoch: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let epoch = Arc::new(epoch);
        let (c, e) = (cut.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut_signal = e.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_signal.changed() => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut,
            epoch,
            task,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn fleet_store_lost_while_running_keeps_serving_and_rolls_back_locally() {
    let db = pg_db!("fleet_store_lost_while_running_keeps_serving_and_rolls_back_locally");
    let server = PgConnectOptions::from_str(&db.url).unwrap();
    let target: SocketAddr = format!("{}:{}", server.get_host(), server.get_port())
        .parse()
        .expect("the test server is addressed by IP");
    let relay = Relay::start(target).await;
    let relayed = db
        .url
        .replacen(&target.to_string(), &relay.addr.to_string(), 1);
    let (legacy, candidate) = (same().await, failing_writes().await);
    let body = config(legacy.addr, candidate.addr, "candidate", 100, ROLLBACK);
    let fleet = start_fleet(2, &relayed, &body).await;
    wait_for(Duration::from_secs(10), "a leader", || async {
        leader(&fleet[0], 2).await.map(Value::from)
    })
    .await;
    converged(&fleet[0], 2).await;

    let http = client();
    // Read once, so that there is a last known state to answer from.
    let before = fleet[1].get("/api/events?route=orders").await;
    let export_before = fleet[1].text("/api/routes/orders/export").await;
    relay.cut();
    for m in &fleet {
        wait_for(
            Duration::from_secs(10),
            "store unreachable in /readyz",
            || async {
                let r = http.get(m.admin_url("/readyz")).send().await.ok()?;
                (r.status() == 200).then_some(())?;
                let v: Value = r.json().await.ok()?;
                (v["store"] == "unreachable").then_some(v)
            },
        )
        .await;
    }
    // Still proxying, reads answer, writes are refused.
    let r = http.get(fleet[0].url("/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fleet[1].route().await["stage"], "candidate");
    let refused = http
        .post(fleet[1].admin_url("/api/routes/orders/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let accept = http
        .post(fleet[1].admin_url("/api/routes/orders/accept"))
        .json(&json!({"endpoint": "GET /orders/{id}", "path": "$.at", "note": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(accept.status(), 503);
    let error = accept.json::<Value>().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing was changed")),
        "refused at once, not after a failed write: {error}"
    );
    let (status, events) = fleet[1].answer("/api/events?route=orders").await;
    assert_eq!(status, 200, "reads answer from the last known state");
    assert_eq!(serde_json::from_str::<Value>(&events).unwrap(), before);
    let export = fleet[1].answer("/api/routes/orders/export").await;
    assert_eq!(export, (StatusCode::OK, export_before));
    // Reads nobody made before the loss answer too: each instance read
    // them when it started.
    for path in ["/api/events", "/api/report", "/api/routes/orders/diffs"] {
        let (status, text) = fleet[0].answer(path).await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    let report = fleet[0].get("/api/report").await;
    assert_eq!(report["routes"][0]["name"], "orders", "{report:#}");
    assert_eq!(report["routes"][0]["stage"], "candidate", "{report:#}");
    let instances = http
        .get(fleet[1].admin_url("/api/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(instances.status(), 200);
    // The first instance's own traffic breaks the error rate: it rolls
    // back locally; the second keeps the candidate.
    for i in 0..20 {
        let _ = http
            .post(fleet[0].url(&format!("/orders/{i}")))
            .body("{}")
            .send()
            .await;
    }
    wait_for(Duration::from_secs(5), "the local rollback", || async {
        let r = fleet[0].route().await;
        (r["state"] == "rolled_back").then_some(r)
    })
    .await;
    assert_eq!(fleet[1].route().await["stage"], "candidate");

    relay.restore();
    // Back: the rollback is recorded and reaches the whole fleet.
    wait_for(
        Duration::from_secs(20),
        "the fleet to take the rollback",
        || async {
            let r = fleet[1].route().await;
            (r["state"] == "rolled_back").then_some(r)
        },
    )
    .await;
    for m in &fleet {
        wait_for(Duration::from_secs(10), "store ok in /readyz", || async {
            let v: Value = http
                .get(m.admin_url("/readyz"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["store"] == "ok").then_some(v)
        })
        .await;
    }
    let events = fleet[1].get("/api/events?route=orders").await;
    let local: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("instance fleet-0"))
        })
        .collect();
    assert_eq!(local.len(), 1, "one event, naming the instance: {events:#}");
    // Writes work again.
    let resumed = http
        .post(fleet[1].admin_url("/api/routes/orders/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
}

#[tokio::test]
async fn fleet_no_promotion_while_the_configuration_hashes_differ() {
    let db = pg_db!("fleet_no_promotion_while_the_configuration_hashes_differ");
    let (legacy, candidate) = (same().await, same().await);
    let rollout =
        "interval = \"1s\"\nmin_requests = 5\nmin_match_rate = 0.9\nsteps = [10, 50, 100]";
    let body = config(legacy.addr, candidate.addr, "shadow", 0, rollout);
    let mut a = Member::start("fleet-a", &db.url, &body);
    let mut b = Member::start("fleet-b", &db.url, &format!("# edited\n{body}"));
    a.ready().await;
    b.ready().await;
    wait_for(Duration::from_secs(10), "both instances listed", || async {
        let list = a.get("/api/instances").await;
        (list.as_array()?.len() == 2).then_some(list)
    })
    .await;
    let http = client();
    let blocked = wait_for(Duration::from_secs(15), "blocked by config_hash", || {
        let http = http.clone();
        let (a, b) = (&a, &b);
        async move {
            for m in [a, b] {
                for i in 0..5 {
                    let _ = http.get(m.url(&format!("/orders/{i}"))).send().await;
                }
            }
            let r = a.route().await;
            (r["blocked_by"] == "config_hash").then_some(r)
        }
    })
    .await;
    assert_eq!(blocked["stage"], "shadow", "{blocked:#}");
    // Held for a while: the gates hold, the hashes do not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = b.route().await;
    assert_eq!(
        (r["stage"].as_str(), r["blocked_by"].as_str()),
        (Some("shadow"), Some("config_hash")),
        "{r:#}"
    );
    let list = a.get("/api/instances").await;
    let hashes: std::collections::BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["config_hash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 2, "{list:#}");
}
