//! One mirrored request, from the copy of its body to the recorded outcome.
//!
//! The task is spawned when the primary request starts, so the mirror runs
//! alongside it. It waits for the request body copy, sends the copy (with
//! `x-strangler-shadow: 1`) within `shadow.timeout`, waits for the primary's
//! response copy, compares, and records. It holds the route's in-flight
//! slot to the end. Whatever goes wrong ends here, counted, never seen by
//! the client.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::keep;
use super::slots::Slot;
use super::tee::{BodyCapture, CopyFailure, MemoryBudget, RequestCopy, Reservation, ResponseCopy};
use super::{count_drop, Direction, DropReason};
use crate::compare::{self, Captured, Verdict};
use crate::metrics::{RouteUpstreamLabels, ShadowResultLabels};
use crate::proxy::headers::X_STRANGLER_SHADOW;
use crate::proxy::upstream::{RequestHead, Upstream, UpstreamBody};
use crate::runtime::{Runtime, Snapshot};
use crate::store::SampleKind;

/// The request body copy: known now, or delivered when the body ends.
pub enum BodySource {
    Ready(Bytes),
    Pending(oneshot::Receiver<Result<RequestCopy, CopyFailure>>),
}

/// What the primary side answered, sent to the mirror task.
pub struct PrimaryAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: oneshot::Receiver<Result<ResponseCopy, CopyFailure>>,
}

/// Everything a mirror needs, taken from the request path.
pub struct MirrorJob {
    pub runtime: Arc<Runtime>,
    pub snapshot: Arc<Snapshot>,
    pub route_index: usize,
    pub direction: Direction,
    pub learn_noise: bool,
    pub slot: Slot,
    pub head: Arc<RequestHead>,
    pub body: BodySource,
    pub endpoint: Arc<str>,
}

/// How a mirrored exchange failed.
enum MirrorFailure {
    Timeout,
    Transport,
    Memory,
}

impl MirrorJob {
    /// Starts the mirror; the returned sender takes the primary's answer.
    /// Dropping it (primary failed, client gone) abandons the comparison.
    pub fn spawn(self) -> oneshot::Sender<PrimaryAnswer> {
        let (tx, rx) = oneshot::channel();
        let executor = self.runtime.shadow_executor.clone();
        // Boxed: the mirror's future is several KiB, and a task stores its
        // future inline, so unboxed it was copied whole on spawn and again
        // on completion (a third of all instructions under a 1 s candidate).
        executor.spawn(Box::pin(self.run(rx)));
        tx
    }

    async fn run(self, primary: oneshot::Receiver<PrimaryAnswer>) {
        let route = &self.snapshot.routes[self.route_index];
        let metrics = &self.runtime.metrics;
        let budget = self.runtime.shadow_budget.clone();
        let max = self.snapshot.config.server.max_body_buffer;
        let timeout = route.config.shadow.timeout;
        let _slot = &self.slot;

        let (body, _request_reservation) = match self.body {
            BodySource::Ready(bytes) => (bytes, None),
            BodySource::Pending(rx) => match rx.await {
                Ok(Ok(copy)) => (copy.body, Some(copy.reservation)),
                Ok(Err(CopyFailure::TooLarge)) => {
                    return count_drop(metrics, route, DropReason::TooLarge)
                }
                Ok(Err(CopyFailure::Memory)) => {
                    return count_drop(metrics, route, DropReason::Memory)
                }
                Ok(Err(CopyFailure::Broken)) | Err(_) => {
                    return count_drop(metrics, route, DropReason::PrimaryFailed);
                }
            },
        };

        let target = match self.direction {
            Direction::ToCandidate => route.shadow.target.clone(),
            Direction::ToLegacy => route.legacy.clone(),
        };
        let started = Instant::now();
        let mirrored = exchange(&target, &self.head, body.clone(), timeout, max, &budget);
        let noise_side = self.learn_noise.then(|| {
            route
                .shadow
                .secondary
                .clone()
                .unwrap_or_else(|| route.legacy.clone())
        });
        let noise = async {
            match &noise_side {
                // Boxed: an exchange's future is several KiB, and unboxed
                // this rarely taken one doubled the size of every mirror's
                // future, which `spawn` copies into its box.
                Some(upstream) => Some(
                    Box::pin(exchange(
                        upstream,
                        &self.head,
                        body.clone(),
                        timeout,
                        max,
                        &budget,
                    ))
                    .await,
                ),
                None => None,
            }
        };
        let (mirrored, noise) = tokio::join!(mirrored, noise);
        let mirror_elapsed = started.elapsed();
        metrics
            .shadow_duration
            .get_or_create(&RouteUpstreamLabels {
                route: route.name.clone(),
                upstream: target.name.clone(),
            })
            .observe(mirror_elapsed.as_secs_f64());

        // The primary's answer, complete with its body.
        let Ok(answer) = primary.await else {
            return count_drop(metrics, route, DropReason::PrimaryFailed);
        };
        let primary_copy = match answer.body.await {
            Ok(Ok(copy)) => copy,
            Ok(Err(CopyFailure::Memory)) => return count_drop(metrics, route, DropReason::Memory),
            _ => return count_drop(metrics, route, DropReason::PrimaryFailed),
        };
        let primary = Captured {
            status: answer.status.as_u16(),
            headers: answer.headers,
            trailers: primary_copy.trailers,
            body: primary_copy.body,
        };

        let window = route.control.window.load_full();
        if self.direction == Direction::ToCandidate && mirrored.is_ok() {
            window.record_mirror_latency(mirror_elapsed);
        }
        let mirrored = match mirrored {
            Ok((captured, _reservation)) => captured,
            Err(failure) => {
                // The metric first: whoever sees the window's count sees it too.
                match failure {
                    MirrorFailure::Timeout => count_drop(metrics, route, DropReason::Timeout),
                    MirrorFailure::Memory => count_drop(metrics, route, DropReason::Memory),
                    MirrorFailure::Transport => count_result(&self.runtime, route, "error"),
                }
                // A candidate that never answers must never look good.
                window.record_failure(&self.endpoint);
                return;
            }
        };

        let rules = &route.shadow.rules;
        let accepted = route.control.accepted.load_full();
        if let Some(Ok((second, _reservation))) = noise {
            // Two legacy answers to one request: what differs is noise.
            let mut pair = compare::compare(&primary, &second, rules);
            accepted.retain_unaccepted(&self.endpoint, &mut pair);
            route
                .control
                .noise()
                .record_legacy_pair(&self.endpoint, &pair);
        }
        let (legacy, candidate) = match self.direction {
            Direction::ToCandidate => (&primary, &mirrored),
            Direction::ToLegacy => (&mirrored, &primary),
        };
        let differences = compare::compare(legacy, candidate, rules);
        let verdict = {
            let mut noise = route.control.noise();
            let mut counted = differences.clone();
            accepted.retain_unaccepted(&self.endpoint, &mut counted);
            noise.record_comparison(&self.endpoint, &counted);
            compare::classify(&self.endpoint, differences, &noise, &accepted)
        };
        let result = match &verdict {
            Verdict::Match => "match",
            Verdict::Noise => "noise",
            Verdict::Mismatch(_) => "mismatch",
        };
        // The metric first: whoever sees the window's count sees it too.
        count_result(&self.runtime, route, result);
        window.record_comparison(&self.endpoint, result);
        let kept = match verdict {
            Verdict::Mismatch(real) => Some((SampleKind::Mismatch, real)),
            // A small reservoir of matching exchanges, for export and replay.
            Verdict::Match if route.shadow.match_samples.offer() => {
                Some((SampleKind::Match, Vec::new()))
            }
            _ => None,
        };
        if let Some((kind, differences)) = kept {
            let sample = keep::sample(
                &self.snapshot.redactor,
                route,
                &self.endpoint,
                kind,
                &self.head,
                &body,
                legacy,
                candidate,
                &differences,
                max,
            );
            let per_endpoint = self.snapshot.config.store.max_samples_per_endpoint;
            self.runtime.store.keep_sample(sample, per_endpoint);
        }
    }
}

fn count_result(runtime: &Runtime, route: &crate::runtime::RouteRuntime, result: &'static str) {
    runtime
        .metrics
        .shadow_comparisons
        .get_or_create(&ShadowResultLabels {
            route: route.name.clone(),
            result,
        })
        .inc();
}

/// Sends a mirrored request and captures the whole answer within `timeout`.
async fn exchange(
    upstream: &Upstream,
    head: &RequestHead,
    body: Bytes,
    timeout: std::time::Duration,
    max: u64,
    budget: &Arc<MemoryBudget>,
) -> Result<(Captured, Reservation), MirrorFailure> {
    let Some(mut request) = upstream.request(head, UpstreamBody::bytes(body)) else {
        return Err(MirrorFailure::Transport);
    };
    let headers = request.headers_mut();
    headers.insert(X_STRANGLER_SHADOW, HeaderValue::from_static("1"));
    // `Expect: 100-continue` is answered by the primary only.
    headers.remove(http::header::EXPECT);
    let work = async {
        let response = upstream
            .send_mirror(request)
            .await
            .map_err(|_| MirrorFailure::Transport)?;
        let (parts, mut body) = response.into_parts();
        let mut capture =
            BodyCapture::new(max, budget.clone()).expecting(&http_body::Body::size_hint(&body));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| MirrorFailure::Transport)?;
            capture.push(&frame).map_err(|_| MirrorFailure::Memory)?;
        }
        let copy = capture.finish();
        Ok((
            Captured {
                status: parts.status.as_u16(),
                headers: parts.headers,
                trailers: copy.trailers,
                body: copy.body,
            },
            copy.reservation,
        ))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(MirrorFailure::Timeout),
    }
}
