//! Stored exchanges: diffs, accepted differences and export.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AdminState;
use crate::compare::{Accepted, LearnedNoise};
use crate::runtime::{now_rfc3339, RouteRuntime, Snapshot};
use crate::store::{AcceptedRow, SampleKind, SampleRow, StoreError};

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<u32>,
}

/// One stored mismatch as `GET /api/routes/{name}/diffs` shows it (SPEC §5).
#[derive(Debug, Serialize)]
pub struct DiffView {
    pub id: i64,
    pub at: String,
    pub endpoint: String,
    pub method: String,
    pub path: String,
    pub differences: serde_json::Value,
    pub request: serde_json::Value,
    pub legacy_response: serde_json::Value,
    pub candidate_response: serde_json::Value,
}

impl From<SampleRow> for DiffView {
    fn from(row: SampleRow) -> Self {
        DiffView {
            id: row.id,
            at: row.at,
            endpoint: row.endpoint,
            method: row.method,
            path: row.path,
            differences: row.differences,
            request: row.request,
            legacy_response: row.legacy_response,
            candidate_response: row.candidate_response,
        }
    }
}

fn store_error(error: StoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

fn route<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a RouteRuntime, ApiError> {
    snapshot
        .route(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no route named {name}")))
}

pub async fn diffs_list(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Result<Json<Vec<DiffView>>, ApiError> {
    route(&state.runtime.snapshot.load(), &name)?;
    let limit = query.limit.unwrap_or(20).min(1000);
    let rows = state
        .runtime
        .samples(&name, Some(SampleKind::Mismatch), limit)
        .await
        .map_err(store_error)?;
    Ok(Json(rows.into_iter().map(DiffView::from).collect()))
}

#[derive(Debug, Deserialize)]
pub struct AcceptBody {
    endpoint: String,
    path: String,
    #[serde(default)]
    note: String,
}

pub async fn accept_create(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    body: Result<Json<AcceptBody>, JsonRejection>,
) -> Result<Json<AcceptedRow>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"endpoint\", \"path\", \"note\"}}: {}",
                e.body_text()
            ),
        )
    })?;
    let snapshot = state.runtime.snapshot.load_full();
    let route = route(&snapshot, &name)?;
    // A fleet refuses writes at once while its store is lost.
    state.runtime.check_store()?;
    if body.endpoint.trim().is_empty() || body.path.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "endpoint and path must not be empty",
        ));
    }
    // Refuse a path that would not compile before anything is stored.
    Accepted::new([(body.endpoint.as_str(), body.path.as_str())])
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let store = state.runtime.store.store();
    let row = store
        .accept(&AcceptedRow {
            route: name.clone(),
            endpoint: body.endpoint.trim().to_string(),
            path: body.path.trim().to_string(),
            note: body.note,
            at: now_rfc3339(),
        })
        .await
        .map_err(store_error)?;
    let all = store.accepted(Some(&name)).await.map_err(store_error)?;
    let compiled = Accepted::new(all.iter().map(|a| (a.endpoint.as_str(), a.path.as_str())))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    route.control.accepted.store(Arc::new(compiled));
    tracing::info!(route = %name, endpoint = %row.endpoint, path = %row.path, "difference accepted");
    Ok(Json(row))
}

/// The first line of an export: what `replay --from FILE` needs to compare
/// the way the proxy does, without talking to it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportHeader {
    #[serde(rename = "type")]
    pub kind: String,
    pub route: String,
    pub ignore_headers: Vec<String>,
    pub ignore_json: Vec<String>,
    pub unordered_arrays: Vec<String>,
    pub float_tolerance: f64,
    pub max_body_buffer: u64,
    pub redact_headers: Vec<String>,
    pub redact_json: Vec<String>,
    pub redact_params: Vec<String>,
    pub accepted: Vec<AcceptedRow>,
    pub noise: Vec<LearnedNoise>,
}

/// One stored exchange line of an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportExchange {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: i64,
    pub at: String,
    pub endpoint: String,
    pub sample: SampleKind,
    pub request: serde_json::Value,
    pub legacy_response: serde_json::Value,
    pub candidate_response: serde_json::Value,
    pub differences: serde_json::Value,
}

pub async fn export(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Result<Response, ApiError> {
    let snapshot = state.runtime.snapshot.load_full();
    let route = route(&snapshot, &name)?;
    let limit = query.limit.unwrap_or(1000).min(100_000);
    let rows = state
        .runtime
        .samples(&name, None, limit)
        .await
        .map_err(store_error)?;
    let accepted = state
        .runtime
        .accepted(Some(&name))
        .await
        .map_err(store_error)?;
    let compare = &route.config.compare;
    let config = &snapshot.config;
    let header = ExportHeader {
        kind: "rules".into(),
        route: name.clone(),
        ignore_headers: compare.ignore_headers.clone(),
        ignore_json: compare.ignore_json.clone(),
        unordered_arrays: compare.unordered_arrays.clone(),
        float_tolerance: compare.float_tolerance,
        max_body_buffer: config.server.max_body_buffer,
        redact_headers: config.store.redact_headers.clone(),
        redact_json: config.store.redact_json.clone(),
        redact_params: config.store.redact_params.clone(),
        accepted,
        noise: route.control.noise().learned(),
    };
    let mut out = serde_json::to_string(&header).unwrap_or_default();
    out.push('\n');
    for row in rows {
        let line = ExportExchange {
            kind: "exchange".into(),
            id: row.id,
            at: row.at,
            endpoint: row.endpoint,
            sample: row.kind,
            request: row.request,
            legacy_response: row.legacy_response,
            candidate_response: row.candidate_response,
            differences: row.differences,
        };
        out.push_str(&serde_json::to_string(&line).unwrap_or_default());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}
