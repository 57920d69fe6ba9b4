//! The dashboard in a real browser: headless Chromium, driven over the
//! DevTools protocol (a few commands over a WebSocket), loads the admin page
//! of a strangler under traffic and checks what it shows against the API.
//!
//! Without `/usr/bin/chromium` (or `STRANGLER_CHROMIUM`) the tests say why and
//! pass; `.ci/run` installs Debian's `chromium`. Screenshots of each page go
//! to `target/dashboard-screenshots/` (under `CARGO_TARGET_DIR` when set);
//! `STRANGLER_DASHBOARD_DOCS=docs` also refreshes the README's copies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use http::Response;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::{full, Backend};
use crate::support::{client, upstreams, Proxy};

/// How long any one wait may take before the test gives up (a hang guard).
const DEADLINE: Duration = Duration::from_secs(60);

fn chromium_path() -> Option<PathBuf> {
    let path = std::env::var_os("STRANGLER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.exists().then_some(path)
}

/// `STRANGLER_DASHBOARD_DOCS=docs` refreshes the README's screenshots
/// (`docs/dashboard-*.png`), after a longer run of traffic.
fn docs_dir() -> Option<PathBuf> {
    std::env::var_os("STRANGLER_DASHBOARD_DOCS")
        .map(|d| Path::new(env!("CARGO_MANIFEST_DIR")).join(d))
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("dashboard-screenshots")
}

// ------------------------------------------------------------------ DevTools

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A headless Chromium and one page of it, attached with a flat session.
struct Browser {
    child: tokio::process::Child,
    sink: tokio::sync::Mutex<WsSink>,
    pending: Pending,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    next_id: AtomicU64,
    session: String,
    reader: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("a temporary profile folder");
        let child = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        // Chromium writes its port and browser endpoint path to this file.
        let port_file = profile.path().join("DevToolsActivePort");
        let url = wait_for("chromium's DevTools endpoint", || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            let mut lines = text.lines();
            let port = lines.next()?.trim().to_string();
            let path = lines.next()?.trim().to_string();
            Some(format!("ws://127.0.0.1:{port}{path}"))
        })
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools WebSocket connects");
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let waiting = pending.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = value["id"].as_u64() {
                    if let Some(tx) = waiting.lock().expect("test mutex").remove(&id) {
                        let _ = tx.send(value);
                    }
                } else {
                    let _ = events_tx.send(value);
                }
            }
        });
        let mut browser = Browser {
            child,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            events: tokio::sync::Mutex::new(events),
            next_id: AtomicU64::new(1),
            session: String::new(),
            reader,
            _profile: profile,
        };
        let target = browser
            .send(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser
    }

    /// Sends one DevTools command and returns its `result` (panics on an error).
    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("test mutex").insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("DevTools command sent");
        let answer = tokio::time::timeout(DEADLINE, rx)
            .await
            .unwrap_or_else(|_| panic!("{method} answered within the deadline"))
            .expect("DevTools connection stays open");
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// A command to the page.
    async fn call(&self, method: &str, params: Value) -> Value {
        self.send(Some(&self.session.clone()), method, params).await
    }

    /// Evaluates `expression` in the page (awaiting a promise): its value,
    /// or the exception it threw.
    async fn try_eval(&self, expression: &str) -> Result<Value, Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{expression} threw: {e}"))
    }

    async fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Evaluates `expression` until it gives something other than null or
    /// false (an exception, e.g. while the page loads, counts as not yet).
    async fn wait_until(&self, what: &str, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let value = self.try_eval(expression).await;
            match value {
                Ok(value) if !(value.is_null() || value == json!(false)) => return value,
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {what} (last: {value:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the page's next `confirm()` and accepts it; returns its text.
    async fn accept_dialog(&self) -> String {
        let mut events = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("a confirmation dialog opens")
                .expect("DevTools connection stays open");
            if event["method"] == "Page.javascriptDialogOpening" {
                drop(events);
                self.call("Page.handleJavaScriptDialog", json!({ "accept": true }))
                    .await;
                return event["params"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
        }
    }

    /// Saves a full-page PNG.
    async fn screenshot(&self, path: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let width = size["width"].as_f64().unwrap_or(1440.0).ceil();
        let height = size["height"].as_f64().unwrap_or(1000.0).ceil();
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 },
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("screenshot folder");
        std::fs::write(path, png).expect("screenshot written");
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.send(None, "Browser.close", json!({})),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
        self.reader.abort();
    }
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------ fixtures

/// A JSON service: `/orders/{id}` and `/users/{id}`. The candidate has a bug
/// (`total` off by one for ids 7, 27, 47…); both have a noisy `trace` field
/// that differs between any two calls (learned as noise).
async fn service(candidate: bool) -> Backend {
    let counter = Arc::new(AtomicU64::new(0));
    Backend::start(move |req| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let path = req.uri().path().to_string();
            let id: u64 = path
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = if path.starts_with("/orders") {
                let buggy = candidate && id % 20 == 7;
                json!({
                    "id": id,
                    "status": "open",
                    "total": id * 10 + u64::from(buggy),
                    "items": [{ "sku": "A-1", "qty": 1 }, { "sku": format!("B-{id}"), "qty": 2 }],
                    "trace": format!("t-{n}"),
                })
            } else {
                json!({ "id": id, "name": format!("user {id}") })
            };
            // Some latency, varying a little (the charts show it).
            let base = if candidate { 2 } else { 4 };
            tokio::time::sleep(Duration::from_millis(
                base + n % 5 + 8 * u64::from(n % 97 == 0),
            ))
            .await;
            Response::builder()
                .header("content-type", "application/json")
                .body(full(body.to_string()))
                .expect("a valid response")
        }
    })
    .await
}

fn config(legacy: &Backend, candidate: &Backend, token: Option<&str>) -> String {
    let admin = token.map_or(String::new(), |t| {
        format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{t}\"\n")
    });
    format!(
        r#"{admin}{upstreams}
[[routes]]
name = "orders"
path_prefix = "/orders"
legacy = "legacy"
candidate = "candidate"
stage = "shadow"

[routes.shadow]
noise_sample = 0.3

[routes.rollout]
auto = false
min_requests = 50

[[routes]]
name = "users"
path_prefix = "/users"
legacy = "legacy"
candidate = "candidate"
stage = "canary"
weight = 10

[routes.rollout]
auto = false
min_requests = 50
"#,
        upstreams = upstreams(legacy.addr, candidate.addr)
    )
}

/// Sends requests to both routes until `stop` is set.
fn traffic(proxy: &Proxy, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let base = proxy.url("");
    tokio::spawn(async move {
        let http = client();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let path = if sent % 3 == 0 {
                format!("/users/{}", sent % 50)
            } else {
                format!("/orders/{}", sent % 40)
            };
            if let Ok(response) = http.get(format!("{base}{path}")).send().await {
                let _ = response.bytes().await;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        sent
    })
}

/// What the overview table shows, row by row.
const OVERVIEW_ROWS: &str = r#"(() => {
  const rows = [...document.querySelectorAll('#routes tbody tr[data-route]')];
  if (!rows.length) return null;
  const cell = (tr, f) => tr.querySelector(`[data-field="${f}"]`).textContent.trim();
  return rows.map((tr) => ({
    name: cell(tr, 'name'), stage: cell(tr, 'stage'), weight: cell(tr, 'weight'),
    state: cell(tr, 'state'),
    legacy: cell(tr, 'legacy.requests'), candidate: cell(tr, 'candidate.requests'),
  }));
})()"#;

/// The same rows, as the page should print them, from `GET /api/routes`.
fn expected_rows(routes: &Value) -> Value {
    let weight = |w: f64| {
        if w.fract() == 0.0 {
            format!("{}%", w as i64)
        } else {
            format!("{w}%")
        }
    };
    Value::Array(
        routes
            .as_array()
            .expect("a list of routes")
            .iter()
            .map(|r| {
                json!({
                    "name": r["name"],
                    "stage": r["stage"],
                    "weight": weight(r["weight"].as_f64().unwrap_or(0.0)),
                    "state": r["state"].as_str().unwrap_or_default().replace('_', " "),
                    "legacy": r["legacy"]["requests"].to_string(),
                    "candidate": r["candidate"]["requests"].to_string(),
                })
            })
            .collect(),
    )
}

/// The endpoint templates the endpoints page should list, sorted:
/// `GET /api/endpoints` when this strangler has it, else those of each
/// route's shadow window.
async fn expected_endpoints(proxy: &Proxy) -> Value {
    let response = proxy.admin_get("/api/endpoints").await;
    let mut names: Vec<String> = if response.status() == 200 {
        let rows: Value = response.json().await.expect("JSON");
        rows.as_array()
            .expect("a list of endpoints")
            .iter()
            .filter_map(|e| e["endpoint"].as_str().map(str::to_string))
            .collect()
    } else {
        let mut names = Vec::new();
        for route in ["orders", "users"] {
            let detail = proxy
                .admin_json::<Value>(&format!("/api/routes/{route}"))
                .await;
            for e in detail["endpoints"].as_array().expect("endpoints") {
                names.push(e["endpoint"].as_str().unwrap_or_default().to_string());
            }
        }
        names
    };
    names.sort();
    json!(names)
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_api_and_promotes_in_a_real_browser() {
    let Some(chromium) = chromium_path() else {
        eprintln!(
            "skipping: no /usr/bin/chromium (apt-get install chromium, or set STRANGLER_CHROMIUM)"
        );
        return;
    };
    let legacy = service(false).await;
    let candidate = service(true).await;
    let proxy = Proxy::start(&config(&legacy, &candidate, None)).await;
    let shots = screenshot_dir();

    let browser = Browser::launch(&chromium).await;
    browser.navigate(&proxy.admin_url("/")).await;
    browser
        .wait_until(
            "the overview table",
            "document.querySelectorAll('#routes tbody tr[data-route]').length === 2",
        )
        .await;

    // Traffic while the page watches, so its charts have something to draw.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(&proxy, stop.clone());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let orders = proxy.admin_json::<Value>("/api/routes/orders").await;
        let users = proxy.admin_json::<Value>("/api/routes/users").await;
        if orders["shadow"]["compared"].as_u64().unwrap_or(0) >= 150
            && users["candidate"]["requests"].as_u64().unwrap_or(0) >= 5
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "traffic never reached the windows"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A few more polls of the page under traffic (charts need two samples).
    browser
        .wait_until(
            "request rates",
            "document.querySelector('[data-route=orders] [data-field=\"legacy.rps\"]').textContent !== '–'",
        )
        .await;
    if docs_dir().is_some() {
        // Screenshots for the README: let the charts fill up a little.
        tokio::time::sleep(Duration::from_secs(40)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.expect("traffic task");
    assert!(sent > 0);

    // The overview shows what the API says (polled: the page refreshes every 2 s).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let shown = browser.eval(OVERVIEW_ROWS).await;
        let routes: Value = proxy.admin_json("/api/routes").await;
        let expected = expected_rows(&routes);
        if shown == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the overview never matched /api/routes:\n page: {shown}\n  api: {expected}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let blocked = browser
        .eval("document.querySelector('[data-route=orders] [data-field=blocked_by]').textContent")
        .await;
    let orders = proxy.admin_json::<Value>("/api/routes/orders").await;
    assert_eq!(
        blocked,
        orders["blocked_by"]
            .as_str()
            .map_or(json!("–"), |b| json!(b))
    );
    browser.screenshot(&shots.join("overview.png")).await;

    // The route page: gates, diffs with a sample side by side, noise, events.
    browser
        .eval("location.hash = '#/routes/orders'; true")
        .await;
    browser
        .wait_until(
            "the route page with its gates and a stored sample",
            "document.querySelector('#r-badges')?.dataset.stage === 'shadow' \
             && document.querySelectorAll('#gates tbody tr').length > 0 \
             && document.querySelectorAll('#differences tbody button').length > 0 \
             && document.querySelectorAll('pre mark.diff').length > 0",
        )
        .await;
    let gates = browser
        .eval("[...document.querySelectorAll('#gates tbody tr td:first-child')].map(td => td.textContent)")
        .await;
    let api_gates: Vec<Value> = orders["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .map(|g| g["name"].clone())
        .collect();
    assert_eq!(gates, Value::Array(api_gates));
    browser.screenshot(&shots.join("route.png")).await;

    // The endpoints page: the endpoint templates the API knows, ranked.
    browser.eval("location.hash = '#/endpoints'; true").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let expected = expected_endpoints(&proxy).await;
        let shown = browser
            .eval("[...document.querySelectorAll('#endpoint-table [data-field=endpoint]')].map(td => td.textContent).sort()")
            .await;
        if shown == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoints page never matched the API:\n page: {shown}\n  api: {expected}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    browser.screenshot(&shots.join("endpoints.png")).await;

    // Back on the route page: promote, confirm, and see the stage change on
    // the page and in the API.
    browser
        .eval("location.hash = '#/routes/orders'; true")
        .await;
    browser
        .wait_until(
            "the route page again",
            "document.querySelector('#r-badges')?.dataset.stage === 'shadow'",
        )
        .await;

    // Accept the difference of the sample shown: the accept API stores it.
    browser
        .wait_until(
            "a difference to accept",
            "document.querySelector('#differences tbody button') !== null",
        )
        .await;
    let path = browser
        .eval(
            "document.querySelector('#accept-note').value = 'rounding fixed in v2'; \
             const row = document.querySelector('#differences tbody tr'); \
             setTimeout(() => row.querySelector('button').click(), 0); \
             row.querySelector('[data-field=path]').textContent",
        )
        .await;
    let question = browser.accept_dialog().await;
    assert!(question.contains("Accept differences"), "{question}");
    browser
        .wait_until(
            "the accepted difference",
            "document.querySelector('#r-accepted tbody')?.textContent.includes('rounding fixed in v2')",
        )
        .await;
    let exported = proxy
        .admin_get("/api/routes/orders/export?limit=0")
        .await
        .text()
        .await
        .unwrap();
    let header: Value =
        serde_json::from_str(exported.lines().next().expect("a header line")).unwrap();
    let accepted = &header["accepted"][0];
    assert_eq!(accepted["note"], "rounding fixed in v2");
    // The test's only real difference is `$.total` (no array index to generalize).
    assert_eq!(accepted["path"], path);
    assert_eq!(accepted["endpoint"], "GET /orders/{id}");
    browser
        .eval("setTimeout(() => document.querySelector('#btn-promote').click(), 0); true")
        .await;
    let question = browser.accept_dialog().await;
    assert!(question.contains("Promote orders"), "{question}");
    browser
        .wait_until(
            "the promoted stage",
            "document.querySelector('#r-badges')?.dataset.stage === 'canary'",
        )
        .await;
    let promoted = proxy.admin_json::<Value>("/api/routes/orders").await;
    assert_eq!(promoted["stage"], "canary");
    let weight = browser
        .eval("Number(document.querySelector('#r-badges').dataset.weight)")
        .await;
    assert_eq!(weight.as_f64(), promoted["weight"].as_f64());
    browser
        .wait_until(
            "the promotion in the event timeline",
            "document.querySelector('#r-events li')?.textContent.includes('canary')",
        )
        .await;
    browser.screenshot(&shots.join("route-promoted.png")).await;

    // A refused change shows the API's message: resuming a progressing route is a 409.
    browser
        .eval("setTimeout(() => document.querySelector('#btn-resume').click(), 0); true")
        .await;
    browser.accept_dialog().await;
    let notice = browser
        .wait_until(
            "the refusal",
            "(() => { const n = document.querySelector('#notice'); return !n.hidden && n.textContent.startsWith('Refused') ? n.textContent : null; })()",
        )
        .await;
    let refused = client()
        .post(proxy.admin_url("/api/routes/orders/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(
        notice,
        json!(format!("Refused: {}", error["error"].as_str().unwrap()))
    );

    if let Some(docs) = docs_dir() {
        for page in ["overview", "route", "endpoints"] {
            std::fs::copy(
                shots.join(format!("{page}.png")),
                docs.join(format!("dashboard-{page}.png")),
            )
            .expect("screenshot copied to the docs folder");
        }
    }
    browser.close().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_asks_for_the_token_and_sends_it() {
    let Some(chromium) = chromium_path() else {
        eprintln!(
            "skipping: no /usr/bin/chromium (apt-get install chromium, or set STRANGLER_CHROMIUM)"
        );
        return;
    };
    let legacy = service(false).await;
    let candidate = service(true).await;
    let proxy = Proxy::start(&config(&legacy, &candidate, Some("s3cret"))).await;
    let browser = Browser::launch(&chromium).await;
    browser.navigate(&proxy.admin_url("/")).await;
    browser
        .wait_until(
            "the token form",
            "!document.querySelector('#token-form').hidden",
        )
        .await;
    browser
        .eval(
            "document.querySelector('#token-input').value = 's3cret'; \
             document.querySelector('#token-form').requestSubmit(); true",
        )
        .await;
    let names = browser
        .wait_until(
            "the routes after the token",
            "(() => { const r = [...document.querySelectorAll('#routes tbody tr[data-route]')].map(tr => tr.dataset.route); return r.length ? r : null; })()",
        )
        .await;
    assert_eq!(names, json!(["orders", "users"]));
    assert_eq!(
        browser
            .eval("document.querySelector('#token-form').hidden")
            .await,
        json!(true)
    );
    browser.close().await;
    proxy.stop().await;
}

#[tokio::test]
async fn dashboard_assets_are_embedded_same_origin_and_host_checked() {
    let legacy = Backend::named("legacy").await;
    let candidate = Backend::named("candidate").await;
    let proxy = Proxy::start(&config(&legacy, &candidate, Some("s3cret"))).await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        // No token needed for the page itself: it asks for one when the API answers 401.
        let response = proxy.admin_get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert!(headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
        let body = response.text().await.unwrap();
        // Nothing loaded from elsewhere (the SVG namespace is a name, not a fetch).
        let foreign: Vec<&str> = body
            .match_indices("http")
            .map(|(i, _)| &body[i..(i + 40).min(body.len())])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(foreign.is_empty(), "{path} refers to {foreign:?}");
        let rebinding = crate::support::raw_exchange(
            proxy.admin,
            format!("GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(rebinding.starts_with("HTTP/1.1 421"), "{path}: {rebinding}");
    }
    proxy.stop().await;
}
