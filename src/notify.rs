//! Webhooks: every rollout transition POSTed as JSON to each
//! `notify.webhooks` URL (SPEC §3: bounded retries, never blocking the
//! controller).
//!
//! The controller calls [`Notifier::send`] on the path that applies a
//! transition, so `send` must not wait for anything: it serializes the event
//! once and offers it to one bounded queue per URL with `try_send`. A full
//! queue means that URL has been failing or slow for a long while; the event
//! is dropped for that URL and counted (see [`Notifier::dropped`]) rather
//! than letting memory grow or the controller stall.
//!
//! Behind each queue sits one task per URL. Having one task per URL is what
//! keeps URLs independent: a webhook that hangs for its whole timeout delays
//! only its own later events, never another URL's. Within a URL the task
//! delivers one event at a time, so events arrive in the order they were
//! sent. Each delivery gets [`NotifyOptions::attempts`] tries, waiting
//! `backoff`, then twice that, between them; connection errors, timeouts and
//! 5xx answers are retried, other non-2xx answers are not (the receiver said
//! no). An event that runs out of tries is counted in [`Notifier::failed`]
//! and logged.
//!
//! [`Notifier::set_webhooks`] (reload) keeps the queue and task of every URL
//! that stays, starts tasks for new URLs and stops removed ones, dropping
//! what was still queued for them. Shutdown stops every task the same way:
//! events not yet delivered are lost, which is acceptable because every
//! event is also persisted in the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::proxy::body::UpstreamBody;
use crate::rollout::criteria::{error_chain, http_client, HttpClient};

/// How deliveries are queued, timed and retried.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// Events waiting per URL before new ones are dropped.
    pub queue: usize,
    /// Tries per event and URL (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub backoff: Duration,
    /// Budget of one try: connect, request and the response.
    pub timeout: Duration,
}

impl Default for NotifyOptions {
    /// 1,000 queued events per URL, 3 tries 1 s then 2 s apart, 5 s each.
    fn default() -> Self {
        NotifyOptions {
            queue: 1_000,
            attempts: 3,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Sends events to the configured webhooks in the background.
pub struct Notifier {
    /// Parent of every URL task's token.
    shutdown: CancellationToken,
    /// Where URL tasks are spawned, so `set_webhooks` works off the runtime.
    runtime: tokio::runtime::Handle,
    /// Shared by all URL tasks: one pool, one TLS setup.
    client: HttpClient,
    options: NotifyOptions,
    /// The current URLs and their queues; `send` reads it without locking.
    workers: ArcSwap<Vec<Arc<Worker>>>,
    /// Serialises `set_webhooks`; `send` never takes it.
    writer: Mutex<()>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<_> = self.workers.load().iter().map(|w| w.url.clone()).collect();
        f.debug_struct("Notifier")
            .field("webhooks", &urls)
            .field("delivered", &self.delivered())
            .field("failed", &self.failed())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// One URL: the sending half of its queue and the token that stops its task.
struct Worker {
    url: String,
    queue: mpsc::Sender<Bytes>,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Why one try to deliver an event failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(StatusCode),
}

impl DeliveryError {
    /// Worth another try: the receiver may be back in a moment.
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Unreachable(_) | DeliveryError::Timeout(_) => true,
            DeliveryError::Status(status) => status.is_server_error(),
        }
    }
}

// === impl Notifier ===

impl Notifier {
    /// A notifier with no webhooks yet (see [`Notifier::set_webhooks`]) and
    /// the default [`NotifyOptions`]. Must be called within a tokio runtime.
    pub fn start(shutdown: CancellationToken) -> Arc<Notifier> {
        Notifier::with_options(shutdown, NotifyOptions::default())
    }

    /// Like [`Notifier::start`], with other queue, retry and timeout settings.
    pub fn with_options(shutdown: CancellationToken, options: NotifyOptions) -> Arc<Notifier> {
        Arc::new(Notifier {
            shutdown,
            runtime: tokio::runtime::Handle::current(),
            client: http_client(),
            options,
            workers: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
            counters: Arc::default(),
        })
    }

    /// Sets the webhook URLs (start and reload). An invalid URL is logged
    /// and skipped; configuration validation should have refused it.
    pub fn set_webhooks(&self, urls: Vec<String>) {
        // The guard protects no data, only the read-modify-write of `workers`.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.workers.load_full();
        let mut next: Vec<Arc<Worker>> = Vec::with_capacity(urls.len());
        for url in urls {
            if next.iter().any(|worker| worker.url == url) {
                continue;
            }
            if let Some(worker) = old.iter().find(|worker| worker.url == url) {
                next.push(Arc::clone(worker));
                continue;
            }
            let uri = match url.parse::<Uri>() {
                Ok(uri)
                    if uri.authority().is_some()
                        && matches!(uri.scheme_str(), Some("http" | "https")) =>
                {
                    uri
                }
                _ => {
                    tracing::warn!(%url, "webhook url is not an absolute http(s) url, skipped");
                    continue;
                }
            };
            let (queue, receiver) = mpsc::channel(self.options.queue.max(1));
            let stop = self.shutdown.child_token();
            let task = UrlTask {
                url: url.clone(),
                uri,
                client: self.client.clone(),
                options: self.options.clone(),
                counters: Arc::clone(&self.counters),
            };
            self.runtime.spawn(task.run(receiver, stop.clone()));
            next.push(Arc::new(Worker { url, queue, stop }));
        }
        for worker in old.iter() {
            if !next.iter().any(|kept| Arc::ptr_eq(kept, worker)) {
                worker.stop.cancel();
            }
        }
        self.workers.store(Arc::new(next));
    }

    /// Queues `event` for every webhook. Never blocks: a URL whose queue is
    /// full does not get this event (counted in [`Notifier::dropped`]).
    pub fn send(&self, event: &serde_json::Value) {
        let workers = self.workers.load();
        if workers.is_empty() {
            return;
        }
        // A `Value` always serializes (its map keys are strings).
        let body = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
        for worker in workers.iter() {
            if worker.queue.try_send(body.clone()).is_err() {
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Warn on the 1st, 2nd, 4th, 8th… drop: visible, not a flood.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        url = %worker.url,
                        dropped,
                        "webhook queue full, event dropped"
                    );
                }
            }
        }
    }

    /// Events that ran out of tries, per URL.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Events dropped because a URL's queue was full, per URL.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Events a webhook accepted (2xx), per URL.
    pub fn delivered(&self) -> u64 {
        self.counters.delivered.load(Ordering::Relaxed)
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for worker in self.workers.load().iter() {
            worker.stop.cancel();
        }
    }
}

// === the per-URL task ===

/// Everything one URL's task needs.
struct UrlTask {
    url: String,
    uri: Uri,
    client: HttpClient,
    options: NotifyOptions,
    counters: Arc<Counters>,
}

impl UrlTask {
    /// Delivers queued events one at a time, in order, until stopped (or
    /// until the queue's sender is gone).
    async fn run(self, mut events: mpsc::Receiver<Bytes>, stop: CancellationToken) {
        loop {
            let body = tokio::select! {
                () = stop.cancelled() => return,
                body = events.recv() => match body {
                    Some(body) => body,
                    None => return,
                },
            };
            // Stopping mid-delivery abandons it (and its retries) at once.
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = self.deliver(body) => outcome,
            };
            match outcome {
                Ok(()) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %self.url, %error, "webhook delivery failed");
                }
            }
        }
    }

    /// Up to `attempts` tries with doubling backoff between retryable ones.
    async fn deliver(&self, body: Bytes) -> Result<(), DeliveryError> {
        let attempts = self.options.attempts.max(1);
        let mut backoff = self.options.backoff;
        let mut attempt = 1;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) if error.retryable() && attempt < attempts => {
                    tracing::debug!(url = %self.url, attempt, %error, "webhook try failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One POST within the timeout; only a 2xx is a success.
    async fn post(&self, body: Bytes) -> Result<(), DeliveryError> {
        let mut request = Request::new(UpstreamBody::bytes(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("strangler/", env!("CARGO_PKG_VERSION"))),
        );
        let timeout = self.options.timeout;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| DeliveryError::Unreachable(error_chain(&error)))?;
            let status = response.status();
            // Read a little of the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Status(status))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(DeliveryError::Timeout(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::Router;
    use serde_json::{json, Value};
    use tokio::time::Instant;

    use super::*;

    /// A webhook receiver: answers the scripted statuses first, then 200;
    /// keeps the events it accepted and counts every request.
    #[derive(Clone, Default)]
    struct Receiver {
        script: Arc<Mutex<VecDeque<u16>>>,
        accepted: Arc<Mutex<Vec<Value>>>,
        requests: Arc<AtomicU64>,
        content_types: Arc<Mutex<Vec<String>>>,
    }

    impl Receiver {
        fn accepted(&self) -> Vec<Value> {
            self.accepted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    async fn hook(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        receiver.requests.fetch_add(1, Ordering::SeqCst);
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        receiver
            .content_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(content_type);
        let scripted = receiver
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let status = StatusCode::from_u16(scripted.unwrap_or(200))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_success() {
            let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
            receiver
                .accepted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event);
        }
        status
    }

    async fn receiver(script: &[u16]) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(script);
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{addr}/hook"))
    }

    /// A URL that accepts connections and never answers.
    async fn black_hole() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("bound listener has an address");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        format!("http://{addr}/hook")
    }

    /// Fast retries so tests do not wait seconds.
    fn quick() -> NotifyOptions {
        NotifyOptions {
            queue: 1_000,
            attempts: 3,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        }
    }

    /// Polls `done` every 5 ms; fails the test after 10 s.
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn event(seq: u64) -> Value {
        json!({"route": "orders", "from": "shadow", "to": "canary", "weight": 1.0, "seq": seq})
    }

    #[tokio::test]
    async fn delivers_events_in_order_as_json() {
        let (receiver, url) = receiver(&[]).await;
        let notifier = Notifier::with_options(CancellationToken::new(), quick());
        notifier.set_webhooks(vec![url]);
        for seq in 0..20 {
            notifier.send(&event(seq));
        }
        wait_for("20 events", || receiver.accepted().len() == 20).await;
        let seqs: Vec<_> = receiver
            .accepted()
            .iter()
            .map(|e| e["seq"].clone())
            .collect();
        assert_eq!(seqs, (0..20).map(Value::from).collect::<Vec<_>>());
        assert_eq!(receiver.accepted()[0], event(0));
        let content_types = receiver
            .content_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(
            content_types.iter().all(|ct| ct == "application/json"),
            "{content_types:?}"
        );
        wait_for("counted", || notifier.delivered() == 20).await;
        assert_eq!((notifier.failed(), notifier.dropped()), (0, 0));
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_delivered_once() {
        let (receiver, url) = receiver(&[500]).await;
        let notifier = Notifier::with_options(CancellationToken::new(), quick());
        notifier.set_webhooks(vec![url]);
        notifier.send(&event(1));
        wait_for("delivered", || notifier.delivered() == 1).await;
        assert_eq!(receiver.accepted(), vec![event(1)]);
        assert_eq!(receiver.requests.load(Ordering::SeqCst), 2, "one retry");
        assert_eq!(notifier.failed(), 0);
    }

    #[tokio::test]
    async fn a_4xx_is_not_retried_and_runs_out_of_tries_counts() {
        let (receiver, url) = receiver(&[400, 500, 500, 500]).await;
        let notifier = Notifier::with_options(CancellationToken::new(), quick());
        notifier.set_webhooks(vec![url]);
        notifier.send(&event(1)); // 400: refused, no retry
        notifier.send(&event(2)); // 500 × 3: out of tries
        notifier.send(&event(3)); // 200
        wait_for("third delivered", || notifier.delivered() == 1).await;
        assert_eq!(notifier.failed(), 2);
        assert_eq!(receiver.requests.load(Ordering::SeqCst), 5);
        assert_eq!(receiver.accepted(), vec![event(3)]);
    }

    #[tokio::test]
    async fn a_dead_url_does_not_hold_up_a_live_one() {
        let (receiver, live) = receiver(&[]).await;
        let hung = black_hole().await;
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let addr = listener
                .local_addr()
                .expect("bound listener has an address");
            format!("http://{addr}/hook")
        }; // dropped: connection refused from now on
        let options = NotifyOptions {
            timeout: Duration::from_secs(60),
            ..quick()
        };
        let notifier = Notifier::with_options(CancellationToken::new(), options);
        notifier.set_webhooks(vec![hung, closed, live]);
        for seq in 0..5 {
            notifier.send(&event(seq));
        }
        wait_for("live got all", || receiver.accepted().len() == 5).await;
        // The refused URL runs out of tries for each event; the hung one is
        // still waiting on its first (60 s timeout) and has failed nothing.
        wait_for("refused url failed 5", || notifier.failed() == 5).await;
        wait_for("live counted", || notifier.delivered() == 5).await;
        assert_eq!(notifier.failed(), 5, "the hung url failed nothing");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let hung = black_hole().await;
        let options = NotifyOptions {
            queue: 2,
            timeout: Duration::from_secs(60),
            ..quick()
        };
        let notifier = Notifier::with_options(CancellationToken::new(), options);
        notifier.set_webhooks(vec![hung]);
        // No await between sends: on this current-thread runtime the URL
        // task cannot take an event meanwhile, so exactly 2 fit.
        for seq in 0..10 {
            notifier.send(&event(seq));
        }
        assert_eq!(notifier.dropped(), 8);
    }

    #[tokio::test]
    async fn set_webhooks_follows_reloads() {
        let (first, first_url) = receiver(&[]).await;
        let (second, second_url) = receiver(&[]).await;
        let notifier = Notifier::with_options(CancellationToken::new(), quick());
        notifier.set_webhooks(vec![first_url.clone(), "not a url".into()]);
        notifier.send(&event(1));
        wait_for("first got 1", || first.accepted().len() == 1).await;

        notifier.set_webhooks(vec![second_url, first_url]);
        notifier.send(&event(2));
        wait_for("both got 2", || {
            second.accepted() == vec![event(2)] && first.accepted().len() == 2
        })
        .await;

        notifier.set_webhooks(Vec::new());
        notifier.send(&event(3));
        assert_eq!(notifier.dropped(), 0, "no webhooks: nothing to drop");
        wait_for("3 counted", || notifier.delivered() == 3).await;
        assert_eq!(first.accepted().len(), 2, "nothing after removal");
    }
}
