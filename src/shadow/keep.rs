//! Turning a compared exchange into a stored sample (SPEC §4): the request
//! (method, path, query, headers, body up to 64 KiB) and both responses,
//! redacted before they leave memory.
//!
//! Compressed bodies are stored decoded (and their `content-encoding`
//! dropped) so that redaction sees inside them and `replay` can compare
//! them again; bodies that are not UTF-8 text are stored as base64, and a
//! body that was only hashed keeps its hash and length.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::compare::{decode_body, Captured, CapturedBody, Difference, Redactor};
use crate::proxy::upstream::RequestHead;
use crate::runtime::{now_rfc3339, RouteRuntime};
use crate::store::{SampleKind, SampleRow};

/// Request bodies are stored up to this size (SPEC §4).
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// One matching exchange in this many is offered to the reservoir (which
/// keeps the newest `max_samples_per_endpoint` per endpoint)...
const MATCH_SAMPLE_ONE_IN: u32 = 16;
/// ...and at most one per route in this time. A stored exchange costs its
/// JSON and a database write of up to three bodies (two 16 KiB answers:
/// about 20% of a mirror's instructions when one in 16 was kept). Behind
/// 1,000 comparisons a second that kept 60 a second, churning a reservoir
/// that only has to stay fresh; the cap keeps 10.
const MATCH_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Which matching exchanges of a route are kept.
pub struct MatchSampling {
    start: Instant,
    /// When the last one was kept, in ms since `start` (plus one interval,
    /// so that the first is always kept).
    last_ms: AtomicU64,
}

impl Default for MatchSampling {
    fn default() -> Self {
        MatchSampling {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl MatchSampling {
    /// Whether to keep this matching exchange.
    pub fn offer(&self) -> bool {
        if rand::random_range(0..MATCH_SAMPLE_ONE_IN) != 0 {
            return false;
        }
        let every = MATCH_SAMPLE_EVERY.as_millis() as u64;
        let now = self.start.elapsed().as_millis() as u64 + every;
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last + every
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A stored exchange, redacted.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    redactor: &Redactor,
    route: &RouteRuntime,
    endpoint: &str,
    kind: SampleKind,
    head: &RequestHead,
    request_body: &Bytes,
    legacy: &Captured,
    candidate: &Captured,
    differences: &[Difference],
    decode_limit: u64,
) -> SampleRow {
    let query = head.uri.query().map(|q| redactor.query(q).into_owned());
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let truncated = request_body.len() > MAX_REQUEST_BODY;
    let shown = &request_body[..request_body.len().min(MAX_REQUEST_BODY)];
    let mut request = Map::new();
    request.insert("method".into(), json!(head.method.as_str()));
    request.insert("path".into(), json!(head.uri.path()));
    request.insert("query".into(), json!(query));
    request.insert("headers".into(), headers_json(redactor, &head.headers));
    body_json(&mut request, &redactor.body(content_type, shown));
    if truncated {
        request.insert("body_truncated".into(), json!(true));
    }
    SampleRow {
        id: 0,
        at: now_rfc3339(),
        route: route.config.name.clone(),
        endpoint: endpoint.to_string(),
        kind,
        method: head.method.as_str().to_string(),
        path: head.uri.path().to_string(),
        request: Value::Object(request),
        legacy_response: response_json(redactor, legacy, decode_limit),
        candidate_response: response_json(redactor, candidate, decode_limit),
        differences: serde_json::to_value(differences).unwrap_or(Value::Null),
    }
}

/// Headers as an object; a repeated header becomes an array of its values.
fn headers_json(redactor: &Redactor, headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in redactor.headers(headers) {
        match out.get_mut(&name) {
            Some(Value::Array(values)) => values.push(json!(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = json!([first, value]);
            }
            None => {
                out.insert(name, json!(value));
            }
        }
    }
    Value::Object(out)
}

/// `body` when the bytes are UTF-8 text, else `body_base64`.
fn body_json(into: &mut Map<String, Value>, body: &[u8]) {
    match std::str::from_utf8(body) {
        Ok(text) => into.insert("body".into(), json!(text)),
        Err(_) => into.insert(
            "body_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
}

fn response_json(redactor: &Redactor, response: &Captured, decode_limit: u64) -> Value {
    let mut out = Map::new();
    out.insert("status".into(), json!(response.status));
    let mut headers = response.headers.clone();
    match &response.body {
        CapturedBody::Full(bytes) => {
            let decoded = if headers.contains_key(http::header::CONTENT_ENCODING) {
                match decode_body(&headers, bytes, decode_limit) {
                    Ok(decoded) => {
                        let coding = headers.remove(http::header::CONTENT_ENCODING);
                        headers.remove(http::header::CONTENT_LENGTH);
                        out.insert(
                            "decoded_from".into(),
                            json!(coding.and_then(|c| c.to_str().ok().map(str::to_string))),
                        );
                        Some(decoded.into_owned())
                    }
                    Err(_) => None,
                }
            } else {
                None
            };
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let raw: &[u8] = decoded.as_deref().unwrap_or(bytes);
            body_json(&mut out, &redactor.body(content_type, raw));
        }
        CapturedBody::Hashed { len, sha256 } => {
            out.insert("body_sha256".into(), json!(hex::encode(sha256)));
            out.insert("body_len".into(), json!(len));
        }
    }
    out.insert("headers".into(), headers_json(redactor, &headers));
    if let Some(trailers) = &response.trailers {
        out.insert("trailers".into(), headers_json(redactor, trailers));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_exchanges_are_kept_one_in_sixteen_and_at_most_ten_a_second() {
        let sampling = MatchSampling::default();
        let started = Instant::now();
        let kept = (0..20_000).filter(|_| sampling.offer()).count();
        let allowed = 1 + started.elapsed().as_millis() / MATCH_SAMPLE_EVERY.as_millis();
        // The first offer that passes one-in-16 is kept (all 20,000 failing
        // it has a probability of about 1e-561).
        assert!(kept >= 1);
        assert!(
            kept as u128 <= allowed,
            "{kept} kept, {allowed} allowed by the time cap"
        );
        assert!(kept < 20_000 / 16, "{kept}: the time cap applies");
    }
}
