//! Who may talk to the admin API (SPEC §5).
//!
//! Three checks, in order, on `/`, `/assets/*` and `/api/*` (`/healthz`, `/readyz` and
//! `/metrics` stay open for load balancers and scrapers):
//! 1. `Host` must be a loopback name or address, or in `admin.allowed_hosts`
//!    (421 otherwise): this defeats DNS rebinding.
//! 2. A state-changing request carrying an `Origin` other than the admin's
//!    own (`null` included) is refused (403): a web page in an operator's
//!    browser cannot promote a route.
//! 3. With `admin.token`, `/api/*` needs `Authorization: Bearer TOKEN` (401).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};

use super::error::ApiError;
use super::AdminState;

pub async fn guard(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let guarded =
        path == "/" || path.starts_with("/api/") || path == "/api" || path.starts_with("/assets/");
    if !guarded {
        return next.run(request).await;
    }
    let config = state.runtime.snapshot.load().config.clone();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase)
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
        });
    let Some(host) = host.filter(|h| host_allowed(h, &config.admin.allowed_hosts)) else {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not an admin address of strangler",
        )
        .into_response();
    };
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let own = [format!("http://{host}"), format!("https://{host}")];
            let ok = origin
                .to_str()
                .is_ok_and(|o| own.iter().any(|own| own.eq_ignore_ascii_case(o)));
            if !ok {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross-origin requests may not change strangler's state",
                )
                .into_response();
            }
        }
    }
    if path.starts_with("/api") {
        if let Some(token) = config.admin.token.as_deref() {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                });
            if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
                return ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
                    .into_response();
            }
        }
    }
    next.run(request).await
}

/// Loopback names and addresses, with or without a port, or an allowed `host:port`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == host) {
        return true;
    }
    let name = match host.strip_prefix('[') {
        // [::1]:9090
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_allowed() {
        for host in [
            "localhost",
            "localhost:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "127.0.0.2",
        ] {
            assert!(host_allowed(host, &[]), "{host}");
        }
        for host in [
            "evil.example:9090",
            "10.0.0.1:9090",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_allowed(host, &[]), "{host}");
        }
        assert!(host_allowed(
            "strangler.internal:9090",
            &["strangler.internal:9090".into()]
        ));
    }
}
