//! The dashboard (SPEC §5, `GET /`): a single page in plain HTML, CSS and
//! JavaScript, embedded in the binary (no front-end build step, nothing
//! fetched from elsewhere). The page reads and drives the JSON API with
//! same-origin requests; charts are inline SVG drawn by the page itself.
//!
//! The assets live under `/assets/`, which the admin guard treats like `/`:
//! the `Host` check applies (no token: the page asks for it when the API
//! answers 401).

use axum::response::{IntoResponse, Response};
use http::header;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Same-origin everything: no inline script, no foreign connection, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}
