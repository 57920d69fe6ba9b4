//! Redaction of stored exchanges (SPEC §4).
//!
//! Mismatches and sample exchanges are persisted and exported, so secrets
//! are replaced by `[redacted]` before they leave the process:
//! - headers `authorization`, `proxy-authorization`, `cookie`, `set-cookie`
//!   and `store.redact_headers`;
//! - JSON body fields selected by `store.redact_json` (JSONPaths);
//! - query-string and `application/x-www-form-urlencoded` fields named
//!   `password`, `secret`, `token`, `api_key`, `access_token` or in
//!   `store.redact_params` (names compared case-insensitively).
//!
//! Bodies are redacted as given: decode a content-encoded body first
//! (`decode_body`), or it is stored as is.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::Value;

use super::body::is_json_content_type;
use super::path::PathList;
use super::CompareError;
use crate::config::StoreConfig;

/// The value written in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// Headers always redacted.
const BUILTIN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// Query and form fields always redacted.
const BUILTIN_PARAMS: &[&str] = &["password", "secret", "token", "api_key", "access_token"];

/// Redaction rules compiled from `[store]`.
#[derive(Debug, Clone)]
pub struct Redactor {
    headers: HashSet<String>,
    json: PathList,
    params: HashSet<String>,
}

impl Redactor {
    /// Compiles the store's redaction lists on top of the built-in ones.
    pub fn new(store: &StoreConfig) -> Result<Redactor, CompareError> {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        Ok(Redactor {
            headers: BUILTIN_HEADERS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(lower(&store.redact_headers))
                .collect(),
            json: PathList::compile("redact_json", &store.redact_json)?,
            params: BUILTIN_PARAMS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(lower(&store.redact_params))
                .collect(),
        })
    }

    /// Headers as `(lowercase name, value)` pairs in order, secrets
    /// replaced. Non-UTF-8 values are shown lossily.
    pub fn headers(&self, headers: &http::HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().to_owned();
                let value = if self.headers.contains(&name) {
                    REDACTED.to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name, value)
            })
            .collect()
    }

    /// A query string (without the `?`) with secret parameters replaced;
    /// everything else is kept byte for byte.
    pub fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        let mut changed = false;
        let parts: Vec<Cow<'a, str>> = query
            .split('&')
            .map(|pair| {
                let name = pair.split('=').next().unwrap_or_default();
                if self.is_secret_param(name) {
                    changed = true;
                    Cow::Owned(format!("{name}={REDACTED}"))
                } else {
                    Cow::Borrowed(pair)
                }
            })
            .collect();
        if changed {
            Cow::Owned(parts.join("&"))
        } else {
            Cow::Borrowed(query)
        }
    }

    /// A body with secrets replaced: JSON bodies (by content type, or when
    /// they parse) through `redact_json`, form bodies through the parameter
    /// names. Other bodies are returned unchanged.
    pub fn body<'a>(&self, content_type: Option<&str>, body: &'a [u8]) -> Cow<'a, [u8]> {
        let media = content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        if media.as_deref() == Some("application/x-www-form-urlencoded") {
            return match std::str::from_utf8(body) {
                Ok(text) => match self.query(text) {
                    Cow::Borrowed(_) => Cow::Borrowed(body),
                    Cow::Owned(s) => Cow::Owned(s.into_bytes()),
                },
                Err(_) => Cow::Borrowed(body),
            };
        }
        let json_declared = content_type.is_some_and(is_json_content_type);
        if self.json.is_empty() || !(json_declared || content_type.is_none()) {
            return Cow::Borrowed(body);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(mut doc) => {
                if self.json_value(&mut doc) {
                    Cow::Owned(serde_json::to_vec(&doc).unwrap_or_else(|_| body.to_vec()))
                } else {
                    Cow::Borrowed(body)
                }
            }
            Err(_) => Cow::Borrowed(body),
        }
    }

    /// Replaces the values selected by `redact_json` in place; true when
    /// something was replaced.
    pub fn json_value(&self, doc: &mut Value) -> bool {
        let mut changed = false;
        for pointer in self.json.pointers(doc) {
            if let Some(v) = doc.pointer_mut(&pointer) {
                *v = Value::String(REDACTED.to_owned());
                changed = true;
            }
        }
        changed
    }

    /// True for a parameter name (still percent-encoded) to redact.
    fn is_secret_param(&self, raw_name: &str) -> bool {
        let decoded: String = form_urlencoded::parse(raw_name.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default();
        self.params.contains(&decoded.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        let store = StoreConfig {
            url: "sqlite://x.db".to_owned(),
            max_samples_per_endpoint: 100,
            redact_headers: vec!["x-api-key".to_owned()],
            redact_json: vec!["$..password".to_owned(), "$.card.number".to_owned()],
            redact_params: vec!["session".to_owned()],
            retention: std::time::Duration::from_secs(1),
            max_bytes: 1,
        };
        Redactor::new(&store).expect("valid store config")
    }

    #[test]
    fn headers_builtin_and_configured() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer x"),
            ("proxy-authorization", "Basic y"),
            ("cookie", "a=b"),
            ("set-cookie", "c=d"),
            ("x-api-key", "k"),
            ("accept", "*/*"),
        ] {
            h.append(k, http::HeaderValue::from_static(v));
        }
        let out = redactor().headers(&h);
        assert_eq!(out.len(), 6);
        for (name, value) in &out {
            let expected = if name == "accept" { "*/*" } else { REDACTED };
            assert_eq!(value, expected, "{name}");
        }
    }

    #[test]
    fn query_parameters_builtin_and_configured() {
        let r = redactor();
        assert_eq!(
            r.query("a=1&token=abc&Password=p&session=s&api%5Fkey=k&x"),
            "a=1&token=[redacted]&Password=[redacted]&session=[redacted]&api%5Fkey=[redacted]&x"
        );
        for name in ["secret", "access_token", "api_key"] {
            assert_eq!(r.query(&format!("{name}=v")), format!("{name}=[redacted]"));
        }
        assert!(matches!(r.query("a=1&b=2"), Cow::Borrowed("a=1&b=2")));
    }

    #[test]
    fn form_bodies() {
        let r = redactor();
        let out = r.body(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"user=al&password=hunter2",
        );
        assert_eq!(&*out, b"user=al&password=[redacted]");
        // The same bytes under another content type are left alone.
        assert_eq!(&*r.body(Some("text/plain"), b"password=x"), b"password=x");
    }

    #[test]
    fn json_bodies_by_path() {
        let r = redactor();
        let body = br#"{"user":{"password":"p","name":"n"},"card":{"number":"4111"},"items":[{"password":"q"}]}"#;
        let out = r.body(Some("application/json"), body);
        let doc: Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(
            doc,
            json!({"user": {"password": REDACTED, "name": "n"}, "card": {"number": REDACTED}, "items": [{"password": REDACTED}]})
        );
        // Untouched JSON and non-JSON bodies come back as they were.
        assert!(matches!(
            r.body(Some("application/json"), br#"{"a":1}"#),
            Cow::Borrowed(_)
        ));
        assert_eq!(&*r.body(Some("application/json"), b"not json"), b"not json");
        assert_eq!(
            &*r.body(Some("image/png"), br#"{"password":"p"}"#),
            br#"{"password":"p"}"#
        );
    }
}
