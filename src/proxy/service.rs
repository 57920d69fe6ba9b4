//! One client request, phase by phase:
//!
//! 1. **read** the snapshot (lock-free) and refuse ambiguous framing;
//! 2. **route**: the most specific route, or `_default`;
//! 3. **choose a side** from the live stage and weight (sticky split), or
//!    the QA override; strip `x-strangler-*`;
//! 4. **forward** with hygienic headers; a candidate transport failure on an
//!    idempotent request whose body we could keep is retried on legacy, and
//!    a candidate answer in `fallback_statuses` is replaced by legacy's;
//! 5. **answer**: stream the body back (idle timeout), or 502/504;
//! 6. **record** metrics and the route's window (always, whatever happened).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;

use super::body::{BoxError, ClientBody, IdleTimeout, ProxyBody};
use super::error::{plain, upstream_failure_response, UpstreamFailure};
use super::headers::{self, GRPC_STATUS, X_STRANGLER_SIDE, X_STRANGLER_TOKEN};
use super::pool::PooledBody;
use super::upstream::{RequestHead, Upstream, UpstreamBody};
use crate::config::{Stage, StickyMissing};
use crate::metrics::{Name, RequestMetrics, RouteCodeLabels, UpstreamErrorLabels};
use crate::rollout::state::RouteStatus;
use crate::rollout::window::{Outcome, Side, Window};
use crate::routing::split;
use crate::runtime::{Runtime, Snapshot};
use crate::shadow::mirror::{BodySource, MirrorJob, PrimaryAnswer};
use crate::shadow::tee::{BodyCapture, RequestTee, ResponseTee};
use crate::shadow::{self, Plan};

/// What the listener knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as `x-forwarded-for` shows it, formatted once.
    pub peer_header: HeaderValue,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    /// Set when the connection's first request carried both
    /// `Content-Length` and `Transfer-Encoding` (see `framing`).
    pub ambiguous: Arc<std::sync::atomic::AtomicBool>,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        scheme: &'static str,
        ambiguous: Arc<std::sync::atomic::AtomicBool>,
    ) -> ConnInfo {
        let peer_header = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo {
            peer,
            peer_header,
            scheme,
            ambiguous,
        }
    }
}

/// Where one request goes.
struct Target<'a> {
    route: &'a Name,
    /// The route's index in the snapshot (`None` for `_default`).
    route_index: Option<usize>,
    /// The route's live status when the request was routed.
    status: Option<Arc<RouteStatus>>,
    side: Side,
    upstream: &'a Arc<Upstream>,
    /// The other side, for retries and fallbacks (candidate requests only).
    legacy: Option<&'a Arc<Upstream>>,
    fallback_statuses: &'a [u16],
    window: Option<Arc<Window>>,
    /// Request metrics when legacy, or the candidate, answers.
    legacy_metrics: &'a RequestMetrics,
    candidate_metrics: &'a RequestMetrics,
}

/// Serves one request. Never fails: every problem becomes an answer.
pub async fn handle(
    runtime: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    request: Request<ClientBody>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let snapshot = runtime.snapshot.load_full();

    // Phase 1: framing. hyper's HTTP/1 parser already resolves a request
    // carrying both Content-Length and Transfer-Encoding as RFC 9112 §6.3
    // asks (chunked wins, Content-Length is dropped, the connection closes
    // after the answer); this refuses whatever still looks ambiguous.
    if conn
        .ambiguous
        .swap(false, std::sync::atomic::Ordering::AcqRel)
        || (request.headers().contains_key(TRANSFER_ENCODING)
            && request.headers().contains_key(CONTENT_LENGTH))
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "strangler: both content-length and transfer-encoding are set\n".into(),
        );
    }
    let mut request = request;
    let upgrade = request.version() == Version::HTTP_11 && headers::is_upgrade(request.headers());
    // hyper hands the upgraded client connection to whoever holds this future.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();

    // Phases 2 and 3.
    let (target, overridden) = choose_target(&snapshot, &parts, &conn);
    headers::remove_strangler_headers(&mut parts.headers);
    let peer_trusted = split::is_trusted(conn.peer.ip(), &snapshot.config.server.trusted_proxies);
    let original_host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let event_stream = headers::accepts_event_stream(&parts.headers);
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(
        &mut parts.headers,
        &conn.peer_header,
        peer_trusted,
        conn.scheme,
        original_host.clone(),
    );
    let mut head = Head::Own(RequestHead {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        original_host,
    });

    // The endpoint template, once: for the measure view and the mirror.
    let endpoint = match target.route_index {
        Some(index) => &snapshot.routes[index].shadow.endpoints,
        None => &snapshot.default.endpoints,
    }
    .template(head.method.as_str(), head.uri.path());

    // Shadowing: decided from the head, the body copied as it streams.
    let (body, mirror) = shadow_request(
        &runtime,
        &snapshot,
        &target,
        &mut head,
        &endpoint,
        body,
        overridden || upgrade || event_stream,
    );

    // Phase 4. The head goes with the request when nothing else holds it.
    let logged =
        tracing::enabled!(tracing::Level::DEBUG).then(|| (head.method.clone(), head.uri.clone()));
    let outcome = forward(&runtime, &snapshot, &target, head, body).await;

    // Phases 5 and 6.
    let elapsed = started.elapsed();
    let (mut response, served_by, error) = match outcome {
        Forwarded::Response {
            response,
            served_by,
            candidate_failed,
        } => {
            let status = response.status();
            let mut response = response;
            headers::remove_hop_by_hop(
                response.headers_mut(),
                status == StatusCode::SWITCHING_PROTOCOLS,
            );
            if status == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade {
                    splice_upgrade(client_upgrade, &mut response);
                }
            }
            let idle = served_by.config.idle_timeout;
            let (response_parts, body) = response.into_parts();
            let body = IdleTimeout::new(body, idle);
            // The answer is compared only when the side we expected gave it.
            let body = match mirror.filter(|_| !candidate_failed) {
                Some(mirror) => {
                    let capture = BodyCapture::new(
                        snapshot.config.server.max_body_buffer,
                        runtime.shadow_budget.clone(),
                    );
                    let (teed, copy) = ResponseTee::new(body, capture);
                    let _ = mirror.send(PrimaryAnswer {
                        status,
                        headers: response_parts.headers.clone(),
                        body: copy,
                    });
                    ProxyBody::Teed {
                        body: Box::pin(teed),
                    }
                }
                None => ProxyBody::Streamed { body },
            };
            (
                Response::from_parts(response_parts, body),
                served_by,
                candidate_failed || status.is_server_error(),
            )
        }
        Forwarded::Failed { failure, upstream } => {
            record_upstream_error(&runtime, target.route, &upstream.name, failure);
            (
                upstream_failure_response(failure, &target.route.0, &upstream.config.name),
                upstream,
                true,
            )
        }
        Forwarded::BadRequest(text) => (
            plain(StatusCode::BAD_REQUEST, text),
            target.upstream.clone(),
            false,
        ),
    };
    let code = response.status().as_u16();
    let served_side = served_side(&target, &served_by);
    if overridden {
        record_override(&runtime, target.route, &served_by.name);
    }
    match served_side {
        Side::Legacy => target.legacy_metrics,
        Side::Candidate => target.candidate_metrics,
    }
    .record(code, elapsed);
    if let (Some(window), false) = (&target.window, overridden) {
        let status = response.status();
        let outcome = Outcome {
            error: error || grpc_failed(response.headers()),
            client_error: status.is_client_error(),
            // Upgrades and event streams are long-lived: no latency.
            no_latency: upgrade || event_stream,
        };
        if grpc_status_in_trailers(&response) {
            // Judged when the trailers pass (SPEC: a non-zero grpc-status is an error).
            let (window, side) = (window.clone(), target.side);
            response = response.map(|body| {
                body.with_grpc_verdict(Box::new(move |failed| {
                    let outcome = Outcome {
                        error: outcome.error || failed,
                        ..outcome
                    };
                    window.record(side, elapsed, outcome);
                }))
            });
        } else {
            window.record(target.side, elapsed, outcome);
        }
    }
    let bytes = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    runtime.measure.record(
        &target.route.0,
        endpoint,
        served_side,
        elapsed,
        error,
        bytes,
    );
    if let Some((method, uri)) = logged {
        tracing::debug!(
            route = %target.route.0, side = target.side.as_str(), upstream = %served_by.config.name,
            method = %method, path = uri.path(), status = code,
            ms = elapsed.as_secs_f64() * 1000.0, "request"
        );
    }
    response
}

/// Decides whether to mirror the request; when it does, wraps the body so a
/// copy is kept while it streams and starts the mirror task.
fn shadow_request(
    runtime: &Arc<Runtime>,
    snapshot: &Arc<Snapshot>,
    target: &Target<'_>,
    head: &mut Head,
    endpoint: &Arc<str>,
    body: ClientBody,
    special: bool,
) -> (
    UpstreamBody,
    Option<tokio::sync::oneshot::Sender<PrimaryAnswer>>,
) {
    use http_body::Body as _;
    let (Some(index), Some(status)) = (target.route_index, target.status.as_ref()) else {
        return (UpstreamBody::Streamed { body }, None);
    };
    let route = &snapshot.routes[index];
    let (direction, slot, learn_noise) = match shadow::plan(
        &route.config,
        &route.shadow,
        status,
        target.side,
        &head.method,
        head.uri.path(),
        special,
    ) {
        Plan::Off => return (UpstreamBody::Streamed { body }, None),
        Plan::Dropped(reason) => {
            shadow::count_drop(&runtime.metrics, route, reason);
            return (UpstreamBody::Streamed { body }, None);
        }
        Plan::Mirror {
            direction,
            slot,
            learn_noise,
        } => (direction, slot, learn_noise),
    };
    let (upstream_body, source) = if body.is_end_stream() {
        (
            UpstreamBody::Streamed { body },
            BodySource::Ready(Bytes::new()),
        )
    } else {
        let max = snapshot.config.server.max_body_buffer;
        let (teed, copy) = RequestTee::new(body, max, runtime.shadow_budget.clone());
        (
            UpstreamBody::Teed {
                body: Box::pin(teed),
            },
            BodySource::Pending(copy),
        )
    };
    let job = MirrorJob {
        runtime: runtime.clone(),
        snapshot: snapshot.clone(),
        route_index: index,
        direction,
        learn_noise,
        slot,
        head: head.share(),
        body: source,
        endpoint: endpoint.clone(),
    };
    (upstream_body, Some(job.spawn()))
}

/// Picks the route and the side. Returns whether the QA override decided.
fn choose_target<'a>(
    snapshot: &'a Snapshot,
    parts: &http::request::Parts,
    conn: &ConnInfo,
) -> (Target<'a>, bool) {
    let Some(index) = snapshot.table.lookup(parts) else {
        let default = &snapshot.default;
        return (
            Target {
                route: &default.name,
                route_index: None,
                status: None,
                side: Side::Legacy,
                upstream: &default.upstream,
                legacy: None,
                fallback_statuses: &[],
                window: Some(default.control.window.load_full()),
                legacy_metrics: &default.metrics,
                candidate_metrics: &default.metrics,
            },
            false,
        );
    };
    let route = &snapshot.routes[index];
    let status = route.control.status.load_full();
    let overridden = override_side(snapshot, &parts.headers);
    let side = overridden.unwrap_or_else(|| match status.stage {
        Stage::Legacy | Stage::Shadow => Side::Legacy,
        Stage::Candidate => Side::Candidate,
        Stage::Canary => canary_side(route, status.weight, parts, conn, snapshot),
    });
    let (upstream, legacy, fallback_statuses) = match side {
        Side::Legacy => (&route.legacy, None, &[][..]),
        Side::Candidate => (
            &route.candidate,
            Some(&route.legacy),
            &route.config.fallback_statuses[..],
        ),
    };
    let target = Target {
        route: &route.name,
        route_index: Some(index),
        status: Some(status),
        side,
        upstream,
        legacy,
        fallback_statuses,
        window: Some(route.control.window.load_full()),
        legacy_metrics: &route.legacy_metrics,
        candidate_metrics: &route.candidate_metrics,
    };
    (target, overridden.is_some())
}

/// The QA override of SPEC §8: `x-strangler-side` with the right token.
fn override_side(snapshot: &Snapshot, headers: &HeaderMap) -> Option<Side> {
    let token = snapshot.config.server.override_token.as_deref()?;
    let given = headers.get(X_STRANGLER_TOKEN)?;
    // Compare in constant time with respect to the contents.
    let given = given.as_bytes();
    if given.len() != token.len()
        || given
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    match headers.get(X_STRANGLER_SIDE)?.as_bytes() {
        b"legacy" => Some(Side::Legacy),
        b"candidate" => Some(Side::Candidate),
        _ => None,
    }
}

fn canary_side(
    route: &crate::runtime::RouteRuntime,
    weight: f64,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    snapshot: &Snapshot,
) -> Side {
    let config = &route.config;
    let client_ip = split::client_ip(
        conn.peer.ip(),
        &parts.headers,
        &snapshot.config.server.trusted_proxies,
    );
    let mut scratch = [0u8; 39];
    let bucket = match split::sticky_key(&config.sticky, &parts.headers, client_ip, &mut scratch) {
        Some(key) => split::bucket(&config.sticky_salt, key),
        None if config.sticky == crate::config::StickyKey::None => {
            // Per request by configuration: no key is missing.
            rand::random_range(0..split::BUCKETS)
        }
        None => {
            route.sticky_missing.inc();
            match config.sticky_missing {
                StickyMissing::Legacy => return Side::Legacy,
                StickyMissing::Random => rand::random_range(0..split::BUCKETS),
            }
        }
    };
    if split::bucket_is_candidate(bucket, weight) {
        Side::Candidate
    } else {
        Side::Legacy
    }
}

/// The client request's head after hygiene: owned while only the forward
/// needs it, shared once a mirror takes it too (an `Arc` is an allocation
/// that pass-through does without).
#[allow(clippy::large_enum_variant)] // Boxing the head is the allocation avoided.
enum Head {
    Own(RequestHead),
    Shared(Arc<RequestHead>),
}

impl Head {
    /// The head for a mirror; the forward keeps its own handle.
    fn share(&mut self) -> Arc<RequestHead> {
        let shared = match self {
            Head::Shared(shared) => return shared.clone(),
            Head::Own(head) => Arc::new(std::mem::take(head)),
        };
        *self = Head::Shared(shared.clone());
        shared
    }

    /// The head itself when nothing else holds it (no header copy).
    fn try_into_owned(self) -> Result<RequestHead, Arc<RequestHead>> {
        match self {
            Head::Own(head) => Ok(head),
            Head::Shared(shared) => Arc::try_unwrap(shared),
        }
    }
}

impl std::ops::Deref for Head {
    type Target = RequestHead;

    fn deref(&self) -> &RequestHead {
        match self {
            Head::Own(head) => head,
            Head::Shared(shared) => shared,
        }
    }
}

enum Forwarded {
    Response {
        response: Response<PooledBody>,
        served_by: Arc<Upstream>,
        /// The candidate failed and legacy answered instead (retry or fallback).
        candidate_failed: bool,
    },
    Failed {
        failure: UpstreamFailure,
        upstream: Arc<Upstream>,
    },
    BadRequest(String),
}

/// Sends the request to the chosen side, with the legacy retry and fallback.
async fn forward(
    runtime: &Runtime,
    snapshot: &Snapshot,
    target: &Target<'_>,
    head: Head,
    body: UpstreamBody,
) -> Forwarded {
    let Some(legacy) = target.legacy.filter(|_| is_idempotent(&head.method)) else {
        let request = match head.try_into_owned() {
            Ok(head) => target.upstream.request_from(head, body),
            Err(shared) => target.upstream.request(&shared, body),
        };
        return match send(target.upstream, request).await {
            Ok(response) => Forwarded::Response {
                response,
                served_by: target.upstream.clone(),
                candidate_failed: false,
            },
            Err(failure) => Forwarded::Failed {
                failure,
                upstream: target.upstream.clone(),
            },
        };
    };
    // A candidate request that may be sent again: keep its body if it fits.
    let max = snapshot.config.server.max_body_buffer;
    let head = &*head;
    let (candidate_body, replay) = match keep_body(body, &head.headers, max).await {
        Ok(Kept::Bytes(bytes)) => (UpstreamBody::bytes(bytes.clone()), Some(bytes)),
        Ok(Kept::Stream(stream)) => (stream, None),
        Err(refused) => return refused,
    };
    let on_legacy = |bytes: Bytes| async move {
        match send(legacy, legacy.request(head, UpstreamBody::bytes(bytes))).await {
            Ok(response) => Forwarded::Response {
                response,
                served_by: legacy.clone(),
                candidate_failed: true,
            },
            Err(failure) => Forwarded::Failed {
                failure,
                upstream: legacy.clone(),
            },
        }
    };
    match send(
        target.upstream,
        target.upstream.request(head, candidate_body),
    )
    .await
    {
        Ok(response) => {
            let code = response.status().as_u16();
            match replay {
                Some(bytes) if target.fallback_statuses.contains(&code) => {
                    // The candidate does not implement this yet: legacy answers.
                    record_fallback(runtime, target, code);
                    on_legacy(bytes).await
                }
                _ => Forwarded::Response {
                    response,
                    served_by: target.upstream.clone(),
                    candidate_failed: false,
                },
            }
        }
        Err(failure) => match replay {
            Some(bytes) if failure.is_transport() => {
                tracing::warn!(route = %target.route.0, upstream = %target.upstream.config.name,
                    kind = failure.kind(), "candidate failed before answering; retrying on legacy");
                // Counted as a candidate error, then legacy gets its chance.
                record_upstream_error(runtime, target.route, &target.upstream.name, failure);
                on_legacy(bytes).await
            }
            _ => Forwarded::Failed {
                failure,
                upstream: target.upstream.clone(),
            },
        },
    }
}

enum Kept {
    /// The whole body, small enough to send twice.
    Bytes(Bytes),
    /// Too large: streamed once, no second chance.
    Stream(UpstreamBody),
}

/// Keeps a request body in memory when it fits `max`: a declared length is
/// read whole when it fits, a body of unknown length (chunked) is read
/// until it ends or exceeds `max` (then what was read goes first and the
/// rest streams). As nginx's `proxy_request_buffering`, up to `max`.
async fn keep_body(body: UpstreamBody, headers: &HeaderMap, max: u64) -> Result<Kept, Forwarded> {
    use http_body::Body as _;
    let unreadable = |e: BoxError| {
        Forwarded::BadRequest(format!("strangler: could not read the request body: {e}\n"))
    };
    if body.is_end_stream() {
        return Ok(Kept::Bytes(Bytes::new()));
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match declared {
        Some(len) if len <= max => match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(Kept::Bytes(collected.to_bytes())),
            Err(e) => Err(unreadable(e)),
        },
        Some(_) => Ok(Kept::Stream(body)),
        None => {
            let mut rest = Box::pin(body);
            let mut kept = BytesMut::new();
            loop {
                let frame = match rest.frame().await {
                    None => return Ok(Kept::Bytes(kept.freeze())),
                    Some(Err(e)) => return Err(unreadable(e)),
                    Some(Ok(frame)) => frame,
                };
                let trailers = !frame.is_data();
                if let Some(data) = frame.data_ref() {
                    kept.extend_from_slice(data);
                }
                if trailers || kept.len() > limit {
                    // Trailers are not replayed: streamed once, like a large body.
                    let mut read = VecDeque::new();
                    if !kept.is_empty() {
                        read.push_back(Frame::data(kept.freeze()));
                    }
                    if trailers {
                        read.push_back(frame);
                    }
                    return Ok(Kept::Stream(UpstreamBody::Resumed { read, rest }));
                }
            }
        }
    }
}

/// One exchange with one upstream, bounded by its `timeout`.
async fn send(
    upstream: &Arc<Upstream>,
    request: Option<Request<UpstreamBody>>,
) -> Result<Response<PooledBody>, UpstreamFailure> {
    let Some(request) = request else {
        return Err(UpstreamFailure::Connect);
    };
    let deadline = Instant::now() + upstream.config.timeout;
    match upstream.send_by(request, deadline).await {
        Ok(response) => Ok(response),
        Err(error) if error.is_timeout() => Err(UpstreamFailure::Timeout),
        Err(error) => {
            let failure = if error.is_connect() {
                UpstreamFailure::Connect
            } else {
                UpstreamFailure::Reset
            };
            tracing::warn!(upstream = %upstream.config.name, kind = failure.kind(), error = %error_chain(&error), "upstream request failed");
            Err(failure)
        }
    }
}

/// The side that actually answered (legacy after a retry or fallback).
fn served_side(target: &Target<'_>, served_by: &Arc<Upstream>) -> Side {
    if target.side == Side::Candidate && target.legacy.is_some_and(|l| Arc::ptr_eq(l, served_by)) {
        Side::Legacy
    } else {
        target.side
    }
}

/// A gRPC answer whose `grpc-status` (trailers-only, in the headers) is not 0.
fn grpc_failed(headers: &HeaderMap) -> bool {
    headers
        .get(GRPC_STATUS)
        .is_some_and(|status| status.as_bytes() != b"0")
}

/// A gRPC answer that will carry its `grpc-status` in trailers: an HTTP/2
/// 200 (gRPC needs HTTP/2, and HTTP/1 answers cost no header lookup here)
/// with a gRPC content type, no status in the head, and a body to come.
fn grpc_status_in_trailers(response: &Response<ProxyBody>) -> bool {
    use http_body::Body as _;
    response.version() == Version::HTTP_2
        && response.status() == StatusCode::OK
        && response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        && !response.headers().contains_key(GRPC_STATUS)
        && !response.body().is_end_stream()
}

/// Methods a request may be sent again with (RFC 9110 §9.2.2).
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn record_upstream_error(
    runtime: &Runtime,
    route: &Name,
    upstream: &Name,
    failure: UpstreamFailure,
) {
    runtime
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            route: route.clone(),
            upstream: upstream.clone(),
            kind: failure.kind(),
        })
        .inc();
}

fn record_override(runtime: &Runtime, route: &Name, upstream: &Name) {
    runtime
        .metrics
        .overrides
        .get_or_create(&crate::metrics::RouteUpstreamLabels {
            route: route.clone(),
            upstream: upstream.clone(),
        })
        .inc();
}

fn record_fallback(runtime: &Runtime, target: &Target<'_>, code: u16) {
    runtime
        .metrics
        .fallbacks
        .get_or_create(&RouteCodeLabels {
            route: target.route.clone(),
            code,
        })
        .inc();
}

/// Once both sides have switched protocols, copies bytes both ways until
/// either closes.
fn splice_upgrade(client: hyper::upgrade::OnUpgrade, response: &mut Response<PooledBody>) {
    let upstream = hyper::upgrade::on(&mut *response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(%error, "protocol upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%error, "upgraded connection ended");
        }
    });
}

/// An error with its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
