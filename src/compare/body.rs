//! Body comparison: decode, pick a method, diff.
//!
//! A body as captured is still content-encoded. It is decoded first
//! (`gzip`, `deflate`, `br`, `zstd`, stacked in the order the
//! `content-encoding` lists them) with the decoded size capped at
//! `max_body_buffer`: a decompression bomb stops at the cap and yields
//! [`DecodeError::TooLarge`] instead of growing memory. Then:
//! - bodies that were too large to buffer ([`CapturedBody::Hashed`]) compare
//!   by length and SHA-256 of their bytes as received;
//! - bodies that cannot be decoded compare the same way, raw, and say why;
//! - bodies that both parse as JSON (whatever the content type, which makes
//!   the `application/json` / `*+json` rule hold too) are diffed
//!   structurally by `json.rs`;
//! - everything else compares byte for byte, reported at path `$`.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::json::{self, JsonRules};
use super::{Captured, CapturedBody, DiffKind, Difference, Rules};

/// Longest text shown on each side of a non-JSON body difference.
const MAX_TEXT_SHOWN: usize = 4096;
/// Longest binary body shown as base64; longer ones are shown as a hash.
const MAX_BASE64_SHOWN: usize = 1024;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("too large to decode: more than {limit} bytes once decoded")]
    TooLarge { limit: u64 },
    #[error("corrupt {coding} data: {reason}")]
    Corrupt { coding: String, reason: String },
    #[error("unsupported content-encoding `{coding}`")]
    Unsupported { coding: String },
}

/// Decodes a body according to its `content-encoding` header values (each
/// possibly a comma-separated list, applied in order, so decoded in
/// reverse). The output, and every intermediate stage, holds at most
/// `limit` bytes.
pub fn decode_body<'a>(
    headers: &http::HeaderMap,
    body: &'a [u8],
    limit: u64,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let codings: Vec<String> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let mut data = Cow::Borrowed(body);
    for coding in codings.iter().rev() {
        data = Cow::Owned(decode_one(coding, &data, limit)?);
    }
    Ok(data)
}

/// Undoes one content coding, reading at most `limit + 1` bytes so that an
/// oversized result is detected without being materialized.
fn decode_one(coding: &str, input: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let reader: Box<dyn Read + '_> = match coding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
        // RFC 9110 says zlib-wrapped; some servers send raw deflate.
        "deflate" if looks_like_zlib(input) => Box::new(flate2::read::ZlibDecoder::new(input)),
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(input)),
        "br" => Box::new(brotli::Decompressor::new(input, 4096)),
        "zstd" => Box::new(
            ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| corrupt(coding, e))?,
        ),
        other => {
            return Err(DecodeError::Unsupported {
                coding: other.to_owned(),
            })
        }
    };
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| corrupt(coding, e))?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

fn corrupt(coding: &str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt {
        coding: coding.to_owned(),
        reason: e.to_string(),
    }
}

/// A zlib header: deflate method, window ≤ 32K, and a valid check value.
fn looks_like_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// `application/json` or any `*+json` media type, parameters ignored.
pub fn is_json_content_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.contains('/') && media.ends_with("+json"))
}

/// Compares the bodies of two captured responses.
pub(crate) fn diff(legacy: &Captured, candidate: &Captured, rules: &Rules) -> Vec<Difference> {
    let (l, c) = match (&legacy.body, &candidate.body) {
        (CapturedBody::Full(l), CapturedBody::Full(c)) => (l, c),
        (lb, cb) => return hash_diff(Hashed::of(lb, None), Hashed::of(cb, None)),
    };
    let decoded = (
        decode_body(&legacy.headers, l, rules.decode_limit),
        decode_body(&candidate.headers, c, rules.decode_limit),
    );
    let (ld, cd) = match decoded {
        (Ok(ld), Ok(cd)) => (ld, cd),
        (le, ce) => {
            let lh = Hashed::of(&legacy.body, le.err());
            let ch = Hashed::of(&candidate.body, ce.err());
            return hash_diff(lh, ch);
        }
    };
    if ld == cd {
        return Vec::new();
    }
    if let Some((lj, cj)) = both_json(legacy, &ld, candidate, &cd) {
        let json_rules = JsonRules {
            ignore: &rules.ignore_json,
            unordered: &rules.unordered_arrays,
            float_tolerance: rules.float_tolerance,
        };
        return json::diff(&lj, &cj, &json_rules);
    }
    let (lv, cv) = match (std::str::from_utf8(&ld), std::str::from_utf8(&cd)) {
        (Ok(lt), Ok(ct)) => (shown_text(lt), shown_text(ct)),
        _ => (shown_binary(&ld), shown_binary(&cd)),
    };
    vec![Difference::changed(DiffKind::Body, "$".to_owned(), lv, cv)]
}

/// Both bodies parsed, when both are JSON. Parsing is only attempted when a
/// content type says JSON or both bodies start like a JSON document.
fn both_json(lc: &Captured, ld: &[u8], cc: &Captured, cd: &[u8]) -> Option<(Value, Value)> {
    let declared = [lc, cc].iter().any(|c| {
        c.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_content_type)
    });
    let looks_like_json = starts_like_json(ld) && starts_like_json(cd);
    if !(declared || looks_like_json) {
        return None;
    }
    let l = serde_json::from_slice(ld).ok()?;
    let c = serde_json::from_slice(cd).ok()?;
    Some((l, c))
}

fn starts_like_json(data: &[u8]) -> bool {
    data.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| {
            matches!(
                b,
                b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
            )
        })
}

/// Text for a difference, cut at [`MAX_TEXT_SHOWN`] bytes with a marker.
fn shown_text(text: &str) -> Value {
    if text.len() <= MAX_TEXT_SHOWN {
        return Value::String(text.to_owned());
    }
    let mut cut = MAX_TEXT_SHOWN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Value::String(format!(
        "{}… [truncated: {} bytes in all]",
        &text[..cut],
        text.len()
    ))
}

/// Binary data for a difference: base64 when short, a hash otherwise.
fn shown_binary(data: &[u8]) -> Value {
    if data.len() <= MAX_BASE64_SHOWN {
        Value::String(format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        ))
    } else {
        Value::String(format!(
            "binary, {}",
            hash_text(data.len() as u64, &Sha256::digest(data).into())
        ))
    }
}

/// `sha256:HEX (N bytes)`, the SPEC's form for a body compared by hash.
fn hash_text(len: u64, sha256: &[u8; 32]) -> String {
    format!("sha256:{} ({len} bytes)", hex::encode(sha256))
}

/// One side of a comparison by hash.
struct Hashed {
    len: u64,
    sha256: [u8; 32],
    /// Why the body was compared by hash rather than decoded, if it failed.
    not_decoded: Option<DecodeError>,
}

impl Hashed {
    /// Hashes a full body's bytes as received, or takes the streamed hash.
    fn of(body: &CapturedBody, not_decoded: Option<DecodeError>) -> Hashed {
        match body {
            CapturedBody::Full(b) => Hashed {
                len: b.len() as u64,
                sha256: Sha256::digest(b).into(),
                not_decoded,
            },
            CapturedBody::Hashed { len, sha256 } => Hashed {
                len: *len,
                sha256: *sha256,
                not_decoded,
            },
        }
    }

    fn shown(&self) -> Value {
        let text = hash_text(self.len, &self.sha256);
        Value::String(match &self.not_decoded {
            Some(e) => format!("{text} [not decoded: {e}]"),
            None => text,
        })
    }
}

fn hash_diff(l: Hashed, c: Hashed) -> Vec<Difference> {
    if l.len == c.len && l.sha256 == c.sha256 {
        return Vec::new();
    }
    vec![Difference::changed(
        DiffKind::Body,
        "$".to_owned(),
        l.shown(),
        c.shown(),
    )]
}

/// A unified line diff (`--- legacy` / `+++ candidate`) of two texts, for
/// showing a non-JSON body difference in a terminal or the dashboard.
pub fn text_diff(legacy: &str, candidate: &str) -> String {
    similar::TextDiff::from_lines(legacy, candidate)
        .unified_diff()
        .context_radius(3)
        .header("legacy", "candidate")
        .to_string()
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
