//! `strangler replay`: send stored exchanges to a candidate build and
//! compare its answers with the stored legacy answers, the way the proxy
//! compares (the route's rules, accepted differences, learned noise), so a
//! rewrite's CI can fail on a regression before any traffic sees it.
//!
//! Stored exchanges were redacted, so the candidate's answers are redacted
//! the same way (and decoded, as stored bodies are) before comparing;
//! credentials removed from stored requests can be put back with
//! `--header`.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::admin::diffs::{ExportExchange, ExportHeader};
use crate::compare::{
    self, Accepted, Captured, CapturedBody, Difference, Redactor, Rules, REDACTED,
};
use crate::config::{CompareConfig, HostPolicy, StoreConfig, UpstreamConfig, UpstreamProtocol};
use crate::proxy::upstream::{RequestHead, Upstream, UpstreamBody};
use crate::shadow::tee::{BodyCapture, MemoryBudget};

/// Why a replay could not run (exit status 1 or 2, not 3).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Input(String),
    #[error("invalid candidate URL {0}: use http://host:port or https://host:port")]
    Url(String),
}

/// The outcome of one replayed exchange.
#[derive(Debug)]
pub struct Replayed {
    pub endpoint: String,
    pub method: String,
    pub path: String,
    /// `None` when the exchange could not be sent (reason given).
    pub differences: Result<Vec<Difference>, String>,
}

/// Parses an export (JSON lines: one `rules` line, then `exchange` lines).
pub fn parse_export(text: &str) -> Result<(ExportHeader, Vec<ExportExchange>), ReplayError> {
    let mut header = None;
    let mut exchanges = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: Value = serde_json::from_str(line)
            .map_err(|e| ReplayError::Input(format!("line {}: not JSON: {e}", i + 1)))?;
        match value.get("type").and_then(Value::as_str) {
            Some("rules") => {
                header = Some(serde_json::from_value(value).map_err(|e| {
                    ReplayError::Input(format!("line {}: bad rules line: {e}", i + 1))
                })?);
            }
            Some("exchange") => exchanges.push(serde_json::from_value(value).map_err(|e| {
                ReplayError::Input(format!("line {}: bad exchange line: {e}", i + 1))
            })?),
            _ => {
                return Err(ReplayError::Input(format!(
                    "line {}: neither a rules nor an exchange line",
                    i + 1
                )))
            }
        }
    }
    let header = header
        .ok_or_else(|| ReplayError::Input("no rules line: is this a `strangler export`?".into()))?;
    Ok((header, exchanges))
}

/// Replays every exchange against `candidate`.
pub async fn replay(
    header: &ExportHeader,
    exchanges: &[ExportExchange],
    candidate: &str,
    extra_headers: &[(HeaderName, HeaderValue)],
) -> Result<Vec<Replayed>, ReplayError> {
    let url: Uri = candidate
        .parse()
        .map_err(|_| ReplayError::Url(candidate.into()))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err(ReplayError::Url(candidate.into()));
    }
    let upstream = Upstream::new(&UpstreamConfig {
        name: "replay".into(),
        url,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        host: HostPolicy::Upstream,
        protocol: UpstreamProtocol::Auto,
        ca: None,
        health: None,
        health_interval: Duration::from_secs(5),
    })
    .map_err(|e| ReplayError::Input(e.to_string()))?;
    let rules = Rules::new(
        &CompareConfig {
            ignore_headers: header.ignore_headers.clone(),
            ignore_json: header.ignore_json.clone(),
            unordered_arrays: header.unordered_arrays.clone(),
            float_tolerance: header.float_tolerance,
        },
        header.max_body_buffer,
    )
    .map_err(|e| ReplayError::Input(e.to_string()))?;
    let redactor = Redactor::new(&StoreConfig {
        url: String::new(),
        max_samples_per_endpoint: 0,
        redact_headers: header.redact_headers.clone(),
        redact_json: header.redact_json.clone(),
        redact_params: header.redact_params.clone(),
        retention: Duration::ZERO,
        max_bytes: 0,
    })
    .map_err(|e| ReplayError::Input(e.to_string()))?;
    let accepted = Accepted::new(
        header
            .accepted
            .iter()
            .map(|a| (a.endpoint.as_str(), a.path.as_str())),
    )
    .map_err(|e| ReplayError::Input(e.to_string()))?;
    let noise: HashSet<(String, String, String)> = header
        .noise
        .iter()
        .map(|n| {
            (
                n.endpoint.clone(),
                n.kind.as_str().to_string(),
                n.path.clone(),
            )
        })
        .collect();
    let budget = MemoryBudget::new(u64::MAX);

    let mut out = Vec::with_capacity(exchanges.len());
    for exchange in exchanges {
        let method = exchange.request["method"]
            .as_str()
            .unwrap_or("GET")
            .to_string();
        let path = exchange.request["path"].as_str().unwrap_or("/").to_string();
        let differences = async {
            let (head, body) = request_of(&exchange.request, extra_headers)?;
            let legacy = captured_of(&exchange.legacy_response)?;
            let candidate = send(
                &upstream,
                &head,
                body,
                header.max_body_buffer,
                &budget,
                &redactor,
            )
            .await?;
            let mut diffs = compare::compare(&legacy, &candidate, &rules);
            accepted.retain_unaccepted(&exchange.endpoint, &mut diffs);
            diffs.retain(|d| {
                !noise.contains(&(
                    exchange.endpoint.clone(),
                    d.kind.as_str().to_string(),
                    compare::normalize_path(&d.path),
                ))
            });
            Ok::<_, String>(diffs)
        }
        .await;
        out.push(Replayed {
            endpoint: exchange.endpoint.clone(),
            method,
            path,
            differences,
        });
    }
    Ok(out)
}

/// Rebuilds the request of a stored exchange.
fn request_of(
    request: &Value,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<(RequestHead, Bytes), String> {
    if request["body_truncated"].as_bool() == Some(true) {
        return Err("the stored request body was truncated (over 64 KiB): not replayed".into());
    }
    let method: Method = request["method"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .ok_or("the stored request has no valid method")?;
    let path = request["path"].as_str().unwrap_or("/");
    let target = match request["query"].as_str() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    };
    let uri: Uri = target
        .parse()
        .map_err(|e| format!("the stored path is not valid: {e}"))?;
    let mut headers = headers_of(&request["headers"]);
    // Framing, routing and redacted values are not replayed.
    for name in ["host", "content-length", "transfer-encoding", "connection"] {
        headers.remove(name);
    }
    let redacted: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| v.as_bytes() == REDACTED.as_bytes())
        .map(|(k, _)| k.clone())
        .collect();
    for name in redacted {
        headers.remove(name);
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let body = body_of(request)?;
    Ok((
        RequestHead {
            method,
            uri,
            headers,
            original_host: None,
        },
        body,
    ))
}

fn headers_of(value: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Some(object) = value.as_object() else {
        return headers;
    };
    for (name, value) in object {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<&Value> = match value {
            Value::Array(values) => values.iter().collect(),
            single => vec![single],
        };
        for v in values {
            if let Some(Ok(v)) = v.as_str().map(HeaderValue::from_str) {
                headers.append(name.clone(), v);
            }
        }
    }
    headers
}

fn body_of(stored: &Value) -> Result<Bytes, String> {
    if let Some(text) = stored["body"].as_str() {
        return Ok(Bytes::from(text.to_string()));
    }
    if let Some(encoded) = stored["body_base64"].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|e| format!("the stored body is not valid base64: {e}"));
    }
    Ok(Bytes::new())
}

/// The stored legacy answer as the comparison sees it.
fn captured_of(response: &Value) -> Result<Captured, String> {
    let status = response["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or("the stored response has no status")?;
    let body = match response["body_sha256"].as_str() {
        Some(hex_digest) => {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut sha256)
                .map_err(|e| format!("bad stored hash: {e}"))?;
            CapturedBody::Hashed {
                len: response["body_len"].as_u64().unwrap_or(0),
                sha256,
            }
        }
        None => CapturedBody::Full(body_of(response)?),
    };
    Ok(Captured {
        status,
        headers: headers_of(&response["headers"]),
        trailers: response.get("trailers").map(headers_of),
        body,
    })
}

/// Sends one request and captures the answer, decoded and redacted like
/// a stored one.
async fn send(
    upstream: &Upstream,
    head: &RequestHead,
    body: Bytes,
    max: u64,
    budget: &std::sync::Arc<MemoryBudget>,
    redactor: &Redactor,
) -> Result<Captured, String> {
    let request = upstream
        .request(head, UpstreamBody::bytes(body))
        .ok_or("cannot build the request")?;
    let response = tokio::time::timeout(upstream.config.timeout, upstream.send(request))
        .await
        .map_err(|_| "the candidate did not answer in time".to_string())?
        .map_err(|e| format!("the candidate could not be reached: {e}"))?;
    let (parts, mut body) = response.into_parts();
    let mut capture =
        BodyCapture::new(max, budget.clone()).expecting(&http_body::Body::size_hint(&body));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the candidate's body broke: {e}"))?;
        capture
            .push(&frame)
            .map_err(|_| "out of memory".to_string())?;
    }
    let copy = capture.finish();
    let mut headers = parts.headers;
    let body = match copy.body {
        CapturedBody::Full(bytes) => {
            let decoded = if headers.contains_key(http::header::CONTENT_ENCODING) {
                match compare::decode_body(&headers, &bytes, max) {
                    Ok(decoded) => {
                        let decoded = Bytes::from(decoded.into_owned());
                        headers.remove(http::header::CONTENT_ENCODING);
                        headers.remove(http::header::CONTENT_LENGTH);
                        decoded
                    }
                    Err(_) => bytes,
                }
            } else {
                bytes
            };
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            CapturedBody::Full(Bytes::from(
                redactor
                    .body(content_type.as_deref(), &decoded)
                    .into_owned(),
            ))
        }
        hashed => hashed,
    };
    let mut redacted = HeaderMap::new();
    for (name, value) in redactor.headers(&headers) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            redacted.append(name, value);
        }
    }
    Ok(Captured {
        status: parts.status.as_u16(),
        headers: redacted,
        trailers: copy.trailers,
        body,
    })
}
