//! Endpoint templates: `GET /api/v1/orders/1234` → `GET /api/v1/orders/{id}`.
//!
//! Noise, accepted differences, stored samples and the report are all kept
//! per endpoint template, so the template must be stable and its number
//! bounded. A route's explicit `endpoints` templates are tried first (`{x}`
//! matches any one segment); otherwise id-looking segments become `{id}`.
//! Once a route has seen `max_endpoints` distinct templates, further new
//! ones are all `{other}`, so a path full of unrecognised ids cannot grow
//! memory or metric labels without bound.
//!
//! SPEC §4 names a template by route, method and path; one
//! [`EndpointTemplates`] serves one route, so its strings carry the method
//! and path only (`GET /api/v1/orders/{id}`) and callers key by route.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// The template every overflowing request is counted under.
pub const OTHER: &str = "{other}";

/// One route's endpoint templates. Thread-safe: lookups of known templates
/// take a read lock only; a std lock is enough because it is never held
/// across an await or any IO.
#[derive(Debug)]
pub struct EndpointTemplates {
    explicit: Vec<Explicit>,
    max: usize,
    /// Templates seen so far (`METHOD /path/{id}`), interned. Looked up on
    /// every request: foldhash instead of SipHash (bounded by `max`).
    seen: RwLock<HashMap<String, Arc<str>, foldhash::fast::RandomState>>,
    other: Arc<str>,
}

/// A configured template split into segments; `None` is a `{name}` slot.
#[derive(Debug)]
struct Explicit {
    text: String,
    segments: Vec<Option<String>>,
}

impl EndpointTemplates {
    /// Templates for a route with the given `endpoints` and `max_endpoints`.
    pub fn new(endpoints: &[String], max_endpoints: u32) -> EndpointTemplates {
        let explicit = endpoints
            .iter()
            .map(|t| Explicit {
                text: t.clone(),
                segments: segments(t)
                    .map(|s| {
                        let slot = s.starts_with('{') && s.ends_with('}') && s.len() >= 2;
                        (!slot).then(|| s.to_owned())
                    })
                    .collect(),
            })
            .collect();
        EndpointTemplates {
            explicit,
            max: max_endpoints as usize,
            seen: RwLock::new(HashMap::default()),
            other: Arc::from(OTHER),
        }
    }

    /// The template of a request, e.g. `GET /api/v1/orders/{id}`, or
    /// `{other}` past the route's limit. A query string is never part of it.
    pub fn template(&self, method: &str, path: &str) -> Arc<str> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = if path.is_empty() { "/" } else { path };
        let explicit = self.explicit.iter().find(|e| e.matches(path));
        // Every request asks, and almost always for a known template: the
        // text is built in a reused buffer, so a hit allocates nothing.
        thread_local! {
            static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        TEXT.with_borrow_mut(|text| {
            text.clear();
            text.push_str(method);
            text.push(' ');
            match explicit {
                Some(e) => text.push_str(&e.text),
                None => push_templated(text, path),
            }
            self.intern(text, explicit.is_some())
        })
    }

    /// The shared copy of `text`, or `{other}` past the limit.
    fn intern(&self, text: &str, explicit: bool) -> Arc<str> {
        if let Some(t) = self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(text)
        {
            return t.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = seen.get(text) {
            return t.clone();
        }
        // Explicit templates are bounded by the configuration: always kept.
        if !explicit && seen.len() >= self.max {
            return self.other.clone();
        }
        let t: Arc<str> = Arc::from(text);
        seen.insert(text.to_owned(), t.clone());
        t
    }
}

impl Explicit {
    fn matches(&self, path: &str) -> bool {
        let mut parts = segments(path);
        self.segments.iter().all(|want| match (want, parts.next()) {
            (Some(lit), Some(got)) => lit == got,
            (None, Some(got)) => !got.is_empty(),
            (_, None) => false,
        }) && parts.next().is_none()
    }
}

/// The segments after the leading `/`.
fn segments(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// Appends the path with each id segment replaced by `{id}`.
fn push_templated(text: &mut String, path: &str) {
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            text.push('/');
        }
        text.push_str(if is_id(segment) { "{id}" } else { segment });
    }
}

/// SPEC §4: all digits, a UUID, at least 8 hex characters with a digit
/// among them, or at least 16 of `[A-Za-z0-9_-]` with a digit and a letter.
pub(crate) fn is_id(segment: &str) -> bool {
    let b = segment.as_bytes();
    if b.is_empty() {
        return false;
    }
    let has_digit = b.iter().any(u8::is_ascii_digit);
    if b.iter().all(u8::is_ascii_digit) || is_uuid(b) {
        return true;
    }
    if b.len() >= 8 && has_digit && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    b.len() >= 16
        && has_digit
        && b.iter().any(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_kinds() {
        for (segment, id) in [
            ("1234", true),
            ("0", true),
            ("123e4567-e89b-12d3-a456-426614174000", true),
            ("123E4567-E89B-12D3-A456-426614174000", true),
            ("deadbeef1", true),
            ("a1b2c3d4", true),
            ("deadbeef", false), // hex without a digit: a word
            ("a1b2c3d", false),  // 7 hex characters
            ("AbCdEf0123456789", true),
            ("user_2fQx9-LmN0pQ", true),     // 17 token characters
            ("abcdefghijklmnopqrst", false), // no digit
            ("orders-2024", false),          // too short for a token
            ("orders-2024-list", true),      // 16 token characters with a digit
            ("v1", false),
            ("items", false),
            ("", false),
        ] {
            assert_eq!(is_id(segment), id, "{segment}");
        }
    }

    #[test]
    fn token_rule_needs_sixteen_characters() {
        assert!(!is_id("abc123def456ghi")); // 15
        assert!(is_id("abc123def456ghij")); // 16
        assert!(!is_id("abc123def456ghij!")); // not a token character
    }

    #[test]
    fn automatic_templates() {
        let t = EndpointTemplates::new(&[], 200);
        assert_eq!(
            &*t.template("GET", "/api/v1/orders/1234"),
            "GET /api/v1/orders/{id}"
        );
        assert_eq!(
            &*t.template(
                "GET",
                "/api/v1/orders/123e4567-e89b-12d3-a456-426614174000/items?x=1"
            ),
            "GET /api/v1/orders/{id}/items"
        );
        assert_eq!(
            &*t.template("DELETE", "/u/a1b2c3d4e5/k/42"),
            "DELETE /u/{id}/k/{id}"
        );
        assert_eq!(&*t.template("GET", "/api/v1/orders"), "GET /api/v1/orders");
        assert_eq!(&*t.template("GET", ""), "GET /");
    }

    #[test]
    fn explicit_templates_are_tried_first() {
        let t = EndpointTemplates::new(
            &[
                "/api/v1/orders/{id}/items".to_owned(),
                "/users/{name}".to_owned(),
            ],
            200,
        );
        // `latest` is not an id, but the explicit template matches it.
        assert_eq!(
            &*t.template("GET", "/api/v1/orders/latest/items"),
            "GET /api/v1/orders/{id}/items"
        );
        assert_eq!(&*t.template("GET", "/users/alice"), "GET /users/{name}");
        // One segment only.
        assert_eq!(
            &*t.template("GET", "/users/alice/posts"),
            "GET /users/alice/posts"
        );
        assert_eq!(&*t.template("GET", "/users/"), "GET /users/");
    }

    #[test]
    fn beyond_max_endpoints_new_templates_are_other() {
        let t = EndpointTemplates::new(&["/fixed/{x}".to_owned()], 2);
        assert_eq!(&*t.template("GET", "/a"), "GET /a");
        assert_eq!(&*t.template("GET", "/b/1"), "GET /b/{id}");
        assert_eq!(&*t.template("GET", "/c"), OTHER);
        assert_eq!(&*t.template("POST", "/a"), OTHER);
        // Known ones stay themselves, and explicit ones are always kept.
        assert_eq!(&*t.template("GET", "/b/2"), "GET /b/{id}");
        assert_eq!(&*t.template("GET", "/fixed/q"), "GET /fixed/{x}");
    }

    #[test]
    fn ten_thousand_slugs_stay_within_max_endpoints() {
        let t = EndpointTemplates::new(&[], 200);
        let mut distinct = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            // Letters only: a slug is not an id, so each is a new template.
            let slug: String = format!("{i:05}")
                .bytes()
                .map(|d| char::from(b'a' + (d - b'0')))
                .collect();
            distinct.insert(t.template("GET", &format!("/articles/post-{slug}")));
        }
        assert_eq!(distinct.len(), 201, "200 templates, then {OTHER}");
        assert!(distinct.iter().any(|t| &**t == OTHER));
    }

    #[test]
    fn templates_are_shared_across_threads() {
        let t = Arc::new(EndpointTemplates::new(&[], 10));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || t.template("GET", &format!("/x/{i}")))
            })
            .collect();
        for h in handles {
            assert_eq!(&*h.join().expect("thread finished"), "GET /x/{id}");
        }
    }
}
