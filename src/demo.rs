//! `strangler demo`: the whole migration on loopback, with nothing installed.
//!
//! It starts a built-in "legacy" orders service and its "candidate" rewrite
//! (with a real behavioural bug: the rewrite forgets the tax in `total`),
//! then strangler on an embedded SQLite store in a temporary folder, drives
//! traffic through it and walks every phase, printing what happens:
//! measure → shadow (the bug is found and shown as a diff, the noisy
//! `request_id` is learned as noise) → the fix → canary steps → an injected
//! fault rolled back automatically → resume → 100% → the report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::client::AdminClient;
use crate::config::{self, EnvSource};

/// How the candidate behaves right now.
#[derive(Default)]
struct Behaviour {
    /// The bug: `total` without tax.
    forgets_tax: AtomicBool,
    /// The injected fault: every answer is a 500.
    failing: AtomicBool,
}

#[derive(Clone)]
struct Service {
    rewrite: bool,
    behaviour: Arc<Behaviour>,
    counter: Arc<AtomicU64>,
}

/// `GET /api/orders/{id}` of both services.
async fn order(State(service): State<Service>, Path(id): Path<u64>) -> Response {
    if service.rewrite && service.behaviour.failing.load(Ordering::Relaxed) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database connection pool exhausted",
        )
            .into_response();
    }
    let n = service.counter.fetch_add(1, Ordering::Relaxed);
    let items = (id % 3 + 1) as usize;
    let subtotal = 10.0 * items as f64 + (id % 7) as f64;
    let tax = (subtotal * 0.2 * 100.0).round() / 100.0;
    let total = if service.rewrite && service.behaviour.forgets_tax.load(Ordering::Relaxed) {
        subtotal
    } else {
        subtotal + tax
    };
    let server = server_name(&service);
    let body = Json(json!({
        "id": id,
        "status": "shipped",
        "created_at": format!("2026-11-{:02}T09:{:02}:00Z", id % 28 + 1, id % 60),
        "generated_at": now(),
        "items": (0..items).map(|i| json!({"sku": format!("SKU-{}", id * 10 + i as u64), "qty": 1})).collect::<Vec<_>>(),
        "subtotal": subtotal,
        "tax": tax,
        "total": total,
        "currency": "EUR",
        // Differs between two legacy answers too: noise, not a bug.
        "request_id": format!("{:x}", (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id),
    }));
    ([("server", server)], body).into_response()
}

/// The moment of an answer, RFC 3339: differs on every call, and the demo's
/// `ignore_json` rule says so.
fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The server header differs between the two builds: a harmless difference
/// that the default `ignore_headers` leave out.
fn server_name(service: &Service) -> &'static str {
    if service.rewrite {
        "orders-rs/0.1"
    } else {
        "orders-java/8.4"
    }
}

/// `GET /api/inventory/{sku}`: stock levels, identical in both builds.
async fn inventory(State(service): State<Service>, Path(sku): Path<String>) -> Response {
    if service.rewrite && service.behaviour.failing.load(Ordering::Relaxed) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database connection pool exhausted",
        )
            .into_response();
    }
    let seed = sku.bytes().map(u64::from).sum::<u64>();
    (
        [("server", server_name(&service))],
        Json(json!({
            "sku": sku,
            "warehouses": [
                {"id": "ams-1", "available": seed % 50, "reserved": seed % 7},
                {"id": "fra-2", "available": seed % 30, "reserved": 0},
            ],
            "generated_at": now(),
        })),
    )
        .into_response()
}

/// `GET /api/payments/{id}`: a payment with money amounts and timestamps.
async fn payment(State(service): State<Service>, Path(id): Path<u64>) -> Response {
    if service.rewrite && service.behaviour.failing.load(Ordering::Relaxed) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database connection pool exhausted",
        )
            .into_response();
    }
    (
        [("server", server_name(&service))],
        Json(json!({
            "id": id,
            "order_id": id * 3 % 1000,
            "amount": {"value": 12.5 + (id % 40) as f64, "currency": "EUR"},
            "method": if id % 2 == 0 { "card" } else { "sepa" },
            "captured_at": format!("2026-11-{:02}T10:{:02}:00Z", id % 28 + 1, id % 60),
            "generated_at": now(),
        })),
    )
        .into_response()
}

async fn health() -> &'static str {
    "ok"
}

async fn serve(service: Service, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let router = Router::new()
        .route("/api/orders/{id}", get(order))
        .route("/api/inventory/{sku}", get(inventory))
        .route("/api/payments/{id}", get(payment))
        .route("/healthz", get(health))
        .with_state(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

fn configuration(legacy: SocketAddr, candidate: SocketAddr, store: &std::path::Path) -> String {
    format!(
        r#"# Written by `strangler demo`.
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[store]
url = "sqlite://{store}"

[upstreams.legacy]
url = "http://{legacy}"

[upstreams.candidate]
url = "http://{candidate}"
health = "/healthz"
health_interval = "1s"

[[routes]]
name = "orders"
path_prefix = "/api"
legacy = "legacy"
candidate = "candidate"
stage = "legacy"
sticky = "header:x-user-id"

[routes.shadow]
noise_sample = 0.5

[routes.compare]
ignore_headers = ["date", "server", "x-request-id"]
ignore_json = ["$..generated_at"]

[routes.rollout]
steps = [1, 10, 50, 100]
interval = "3s"
min_requests = 20
min_match_rate = 0.95
max_error_rate = 0.05
max_error_rate_increase = 0.05
max_p99_ratio = 5.0
p99_slack = "50ms"
rollback_window = "5s"
bake = "3s"
"#,
        store = store.display()
    )
}

/// Sends a steady trickle of requests from a few hundred users.
fn drive_traffic(proxy: SocketAddr, shutdown: CancellationToken) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        let mut n: u64 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let batch = (0..12).map(|_| {
                n += 1;
                let id = (n * 7919) % 1000;
                let user = (n * 104_729) % 2000;
                let path = match n % 6 {
                    0..=2 => format!("/api/orders/{id}"),
                    3 | 4 => format!("/api/inventory/SKU-{}", id % 97),
                    _ => format!("/api/payments/{id}"),
                };
                let request = http::Request::get(format!("http://{proxy}{path}"))
                    .header("x-user-id", format!("user-{user}"))
                    .body(Empty::<Bytes>::new());
                let client = client.clone();
                async move {
                    if let Ok(request) = request {
                        if let Ok(response) = client.request(request).await {
                            let _ = response.into_body().collect().await;
                        }
                    }
                }
            });
            futures_util::future::join_all(batch).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

struct Tour {
    admin: AdminClient,
    started: tokio::time::Instant,
}

/// The phases, for the progress strip.
const PHASES: u32 = 6;

impl Tour {
    fn say(&self, text: &str) {
        outln!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    /// One line per phase, with a progress strip.
    fn phase(&self, number: u32, text: &str) {
        let done = "■".repeat(number as usize);
        let todo = "□".repeat((PHASES - number) as usize);
        outln!();
        self.say(&format!("{done}{todo} {number}/{PHASES} {text}"));
    }

    async fn route(&self) -> anyhow::Result<Value> {
        Ok(self.admin.get("/api/routes/orders").await?)
    }

    async fn post(&self, verb: &str) -> anyhow::Result<Value> {
        Ok(self
            .admin
            .post(&format!("/api/routes/orders/{verb}"), None)
            .await?)
    }

    /// Waits until the route satisfies `done`, printing each new stage.
    async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let mut last = String::new();
        for _ in 0..600 {
            let route = self.route().await?;
            let now = format!(
                "{} {}% {}",
                route["stage"].as_str().unwrap_or("?"),
                route["weight"],
                route["state"].as_str().unwrap_or("?")
            );
            if now != last {
                self.say(&format!(
                    "  orders: {now}  (next step held by: {})",
                    route["blocked_by"].as_str().unwrap_or("nothing")
                ));
                last = now;
            }
            if done(&route) {
                return Ok(route);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!(
            "the demo waited two minutes for {what}; the route is {}",
            self.route().await?
        )
    }
}

/// Runs the tour. With `keep`, everything stays up until Ctrl-C.
pub async fn run(keep: bool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let behaviour = Arc::new(Behaviour::default());
    behaviour.forgets_tax.store(true, Ordering::Relaxed);
    let legacy = serve(
        Service {
            rewrite: false,
            behaviour: behaviour.clone(),
            counter: Arc::default(),
        },
        shutdown.clone(),
    )
    .await
    .context("cannot start the demo's legacy service")?;
    let candidate = serve(
        Service {
            rewrite: true,
            behaviour: behaviour.clone(),
            counter: Arc::default(),
        },
        shutdown.clone(),
    )
    .await
    .context("cannot start the demo's candidate service")?;

    let dir = tempfile_dir()?;
    let config_path = dir.join("strangler.toml");
    std::fs::write(
        &config_path,
        configuration(legacy, candidate, &dir.join("strangler.db")),
    )
    .with_context(|| format!("cannot write {}", config_path.display()))?;
    let env: Arc<dyn EnvSource + Send + Sync> = Arc::new(config::ProcessEnv);
    let loaded = config::load(&config_path, env.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = App::start(loaded.config, config_path.clone(), env, Some("demo".into())).await?;
    let tour = Tour {
        admin: AdminClient::new(&format!("http://{}", app.admin_addr), None),
        started: tokio::time::Instant::now(),
    };
    outln!("strangler demo: legacy orders service on {legacy}, its rewrite on {candidate}");
    outln!(
        "proxy on http://{}, dashboard on http://{}/",
        app.proxy_addr,
        app.admin_addr
    );
    outln!("configuration and store in {}\n", dir.display());
    drive_traffic(app.proxy_addr, shutdown.clone());

    tour.phase(
        1,
        "Measure: every request goes to legacy; strangler counts what matters.",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let endpoints = tour.admin.get("/api/endpoints").await?;
    for e in endpoints.as_array().into_iter().flatten().take(3) {
        tour.say(&format!(
            "  {} {}: {} requests, p99 {} ms, {:.0}% of the time",
            e["route"].as_str().unwrap_or("?"),
            e["endpoint"].as_str().unwrap_or("?"),
            e["requests"],
            e["legacy"]["p99_ms"],
            e["share"].as_f64().unwrap_or(0.0) * 100.0
        ));
    }

    tour.phase(
        2,
        "Shadow: legacy still answers; every request is also sent to the rewrite and compared.",
    );
    tour.post("promote").await?;
    let route = tour
        .wait_for("comparisons", |r| {
            r["shadow"]["compared"].as_u64().unwrap_or(0) >= 200
        })
        .await?;
    tour.say(&format!(
        "  match rate {:.1}% over {} comparisons: the rewrite differs",
        route["shadow"]["match_rate"].as_f64().unwrap_or(0.0) * 100.0,
        route["shadow"]["compared"]
    ));
    let diffs = tour.admin.get("/api/routes/orders/diffs?limit=1").await?;
    if let Some(diff) = diffs.as_array().and_then(|d| d.first()) {
        tour.say(&format!(
            "  a stored mismatch: {} {}",
            diff["method"].as_str().unwrap_or("?"),
            diff["path"].as_str().unwrap_or("?")
        ));
        for d in diff["differences"].as_array().into_iter().flatten() {
            tour.say(&format!(
                "    {} {}: legacy {} vs rewrite {}",
                d["kind"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or("?"),
                d["legacy"],
                d["candidate"]
            ));
        }
    }
    tour.say("  (request_id differs between two legacy answers too: strangler learns it as noise, not a bug;");
    tour.say(
        "   generated_at and the server header differ by design: the compare rules ignore them)",
    );

    tour.phase(
        3,
        "The rewrite is fixed and redeployed; the shadow window starts again.",
    );
    behaviour.forgets_tax.store(false, Ordering::Relaxed);
    tour.post("reset").await?;
    tour.post("promote").await?;

    tour.phase(
        4,
        "Canary 1% → 10% → 50%: the controller promotes by itself while every gate holds.",
    );
    tour.wait_for("the 50% canary step", |r| {
        r["stage"] == "canary" && r["weight"] == 50.0
    })
    .await?;

    tour.phase(
        5,
        "A fault is injected in the rewrite: its answers become 500s.",
    );
    behaviour.failing.store(true, Ordering::Relaxed);
    let route = tour
        .wait_for("the automatic rollback", |r| r["state"] == "rolled_back")
        .await?;
    tour.say(&format!(
        "  rolled back automatically: {}",
        route["reason"].as_str().unwrap_or("?")
    ));

    tour.phase(
        6,
        "The fault is fixed; a person resumes the rollout from shadow.",
    );
    behaviour.failing.store(false, Ordering::Relaxed);
    tour.post("resume").await?;
    tour.wait_for("completion", |r| r["state"] == "complete")
        .await?;
    tour.say("  100% of users are on the rewrite; the rollout is complete.");

    let report = tour.admin.get("/api/report").await?;
    outln!();
    match serde_json::from_value::<crate::report::Report>(report) {
        Ok(report) => outln!("{}", crate::report::markdown(&report)),
        Err(error) => outln!("(the report could not be read: {error})"),
    }
    outln!(
        "Legacy can be decommissioned once a whole report window (store.retention) passes with \
         nothing under \"What legacy still serves\": here it served the earlier stages minutes ago."
    );
    outln!("Dashboard: http://{}/", app.admin_addr);
    if keep {
        outln!("Everything keeps running (--keep); press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
    app.stop().await;
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// A fresh folder under the system's temporary directory.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("strangler-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
