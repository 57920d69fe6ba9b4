//! The admin listener: health, metrics, the JSON API and the dashboard.
//!
//! [`router`] builds the whole axum `Router` from an [`AdminState`], so tests
//! can drive it with `oneshot` as well as over a socket.

mod auth;
mod dashboard;
pub mod diffs;
mod error;
mod routes;

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::config::EnvSource;
use crate::runtime::Runtime;

/// What the admin handlers share.
pub struct AdminState {
    pub runtime: Arc<Runtime>,
    /// The configuration file, re-read by `POST /api/reload`.
    pub config_path: PathBuf,
    pub env: Arc<dyn EnvSource + Send + Sync>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/app.css", get(dashboard::app_css))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/api/routes", get(routes::routes_list))
        .route("/api/routes/{name}", get(routes::route_get))
        .route("/api/routes/{name}/promote", post(routes::route_promote))
        .route("/api/routes/{name}/rollback", post(routes::route_rollback))
        .route("/api/routes/{name}/pause", post(routes::route_pause))
        .route("/api/routes/{name}/resume", post(routes::route_resume))
        .route("/api/routes/{name}/reset", post(routes::route_reset))
        .route("/api/routes/{name}/weight", post(routes::route_weight))
        .route("/api/routes/{name}/diffs", get(diffs::diffs_list))
        .route("/api/routes/{name}/accept", post(diffs::accept_create))
        .route("/api/routes/{name}/export", get(diffs::export))
        .route("/api/routes/{name}/series", get(routes::route_series))
        .route("/api/endpoints", get(routes::endpoints_list))
        .route("/api/report", get(routes::report_get))
        .route("/api/events", get(routes::events_list))
        .route("/api/instances", get(routes::instances_list))
        .route("/api/reload", post(routes::reload))
        .fallback(routes::not_found)
        .layer(axum::middleware::map_response(error::as_json))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}
