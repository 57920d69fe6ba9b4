//! Shadow comparison (SPEC §4): is the candidate's answer the same as legacy's?
//!
//! This module is pure — no tokio, no IO — so the proxy, an offline
//! `replay` and a fuzzer can all call it. Data flows like this:
//!
//! 1. The proxy captures both responses into [`Captured`] values (bodies
//!    over `max_body_buffer` arrive as a length and SHA-256 computed while
//!    streaming).
//! 2. [`compare`] turns the pair into a list of [`Difference`]s under the
//!    route's compiled [`Rules`]: status, then headers (`headers.rs`), then
//!    trailers, then the body (`body.rs` decodes, `json.rs` diffs JSON).
//! 3. The caller groups requests by endpoint template (`endpoint.rs`),
//!    feeds the differences to the [`NoiseModel`] (`noise.rs`) and calls
//!    [`classify`], which drops accepted differences (`accept.rs`) and
//!    noise, giving a [`Verdict`].
//! 4. A stored mismatch is redacted first (`redact.rs`).

mod accept;
mod body;
mod endpoint;
mod headers;
mod json;
mod noise;
mod path;
mod redact;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::config::CompareConfig;

pub use accept::Accepted;
pub use body::{decode_body, is_json_content_type, text_diff, DecodeError};
pub use endpoint::{EndpointTemplates, OTHER as OTHER_ENDPOINT};
pub use noise::{FieldRate, LearnedNoise, NoiseModel, MIN_LEGACY_PAIRS};
pub use path::normalize_path;
pub use redact::{Redactor, REDACTED};

/// A response body as the proxy kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapturedBody {
    /// The whole body, as received (still content-encoded).
    Full(bytes::Bytes),
    /// A body bigger than `max_body_buffer`: its length and the SHA-256 of
    /// its bytes as received, computed by the caller while streaming.
    Hashed { len: u64, sha256: [u8; 32] },
}

/// One side's response, ready to compare.
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
    pub body: CapturedBody,
}

/// Which part of the response differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    Status,
    Header,
    Trailer,
    Body,
}

impl DiffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Status => "status",
            DiffKind::Header => "header",
            DiffKind::Trailer => "trailer",
            DiffKind::Body => "body",
        }
    }
}

/// How a location differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Present on both sides with different values.
    Changed,
    /// Only legacy has it (`candidate` is `null`).
    MissingInCandidate,
    /// Only the candidate has it (`legacy` is `null`).
    ExtraInCandidate,
}

/// One difference, in the shape SPEC §4 fixes for the store and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: DiffKind,
    /// `status`, a lowercase header or trailer name, or a concrete JSONPath
    /// (`$.items[3].price`; `$` for a whole non-JSON body).
    pub path: String,
    pub change: Change,
    pub legacy: serde_json::Value,
    pub candidate: serde_json::Value,
}

impl Difference {
    /// A difference where both sides are present.
    pub(crate) fn changed(
        kind: DiffKind,
        path: String,
        legacy: serde_json::Value,
        candidate: serde_json::Value,
    ) -> Self {
        Difference {
            kind,
            path,
            change: Change::Changed,
            legacy,
            candidate,
        }
    }

    /// A difference where one side is absent: `legacy` or `candidate` is
    /// `None`.
    pub(crate) fn one_sided(
        kind: DiffKind,
        path: String,
        legacy: Option<serde_json::Value>,
        candidate: Option<serde_json::Value>,
    ) -> Self {
        let change = match (&legacy, &candidate) {
            (Some(_), None) => Change::MissingInCandidate,
            (None, Some(_)) => Change::ExtraInCandidate,
            _ => Change::Changed,
        };
        Difference {
            kind,
            path,
            change,
            legacy: legacy.unwrap_or(serde_json::Value::Null),
            candidate: candidate.unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Errors building comparison rules.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("`{path}` in `{key}` is not a valid JSONPath: {reason}")]
    JsonPath {
        key: &'static str,
        path: String,
        reason: String,
    },
}

/// A route's `[routes.compare]` section, compiled once per configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Lowercase header (and trailer) names never compared.
    ignore_headers: HashSet<String>,
    ignore_json: path::PathList,
    unordered_arrays: path::PathList,
    float_tolerance: f64,
    /// Largest decoded body (`server.max_body_buffer`).
    decode_limit: u64,
}

impl Rules {
    /// Compiles the route's compare section; `max_body_buffer` caps how far
    /// a content-encoded body is decoded.
    pub fn new(config: &CompareConfig, max_body_buffer: u64) -> Result<Rules, CompareError> {
        Ok(Rules {
            ignore_headers: config
                .ignore_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            ignore_json: path::PathList::compile("ignore_json", &config.ignore_json)?,
            unordered_arrays: path::PathList::compile(
                "unordered_arrays",
                &config.unordered_arrays,
            )?,
            float_tolerance: config.float_tolerance,
            decode_limit: max_body_buffer,
        })
    }
}

/// Compares two responses to the same request. The result is ordered:
/// status, headers (by name), trailers (by name), then body differences.
/// An empty list means the answers match.
pub fn compare(legacy: &Captured, candidate: &Captured, rules: &Rules) -> Vec<Difference> {
    let mut out = Vec::new();
    if legacy.status != candidate.status {
        out.push(Difference::changed(
            DiffKind::Status,
            "status".to_owned(),
            legacy.status.into(),
            candidate.status.into(),
        ));
    }
    out.extend(headers::diff(
        DiffKind::Header,
        &legacy.headers,
        &candidate.headers,
        &rules.ignore_headers,
    ));
    let empty = http::HeaderMap::new();
    out.extend(headers::diff(
        DiffKind::Trailer,
        legacy.trailers.as_ref().unwrap_or(&empty),
        candidate.trailers.as_ref().unwrap_or(&empty),
        &rules.ignore_headers,
    ));
    out.extend(body::diff(legacy, candidate, rules));
    out
}

/// What a comparison amounts to once accepted differences and noise are
/// set aside.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No difference left (accepted ones count as none).
    Match,
    /// Every remaining difference is learned noise.
    Noise,
    /// These differences are neither noise nor accepted: store them.
    Mismatch(Vec<Difference>),
}

/// Classifies a comparison's differences for `endpoint` (a template from
/// [`EndpointTemplates`]). Record the comparison in `noise` first
/// ([`NoiseModel::record_comparison`]) so its rates include it.
pub fn classify(
    endpoint: &str,
    diffs: Vec<Difference>,
    noise: &NoiseModel,
    accepted: &Accepted,
) -> Verdict {
    let remaining: Vec<Difference> = diffs
        .into_iter()
        .filter(|d| !accepted.is_accepted(endpoint, d))
        .collect();
    if remaining.is_empty() {
        return Verdict::Match;
    }
    let real: Vec<Difference> = remaining
        .into_iter()
        .filter(|d| !noise.is_noise(endpoint, d))
        .collect();
    if real.is_empty() {
        Verdict::Noise
    } else {
        Verdict::Mismatch(real)
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
