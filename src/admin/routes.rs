//! Admin API handlers, named `resource_verb`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AdminState;
use crate::compare::FieldRate;
use crate::fleet::InstanceFigures;
use crate::rollout::controller::{self, Evaluation, RouteEvaluation};
use crate::rollout::gates::Gate;
use crate::rollout::state::Command;
use crate::rollout::window::{EndpointShadow, Figures, ShadowSummary, SideSummary};
use crate::runtime::{RouteRuntime, Runtime};
use crate::store::EventRow;

/// A route as `GET /api/routes` shows it (SPEC §5).
#[derive(Debug, Serialize)]
pub struct RouteView {
    pub name: String,
    pub stage: &'static str,
    pub weight: f64,
    pub state: &'static str,
    pub legacy: SideSummary,
    pub candidate: SideSummary,
    pub shadow: ShadowSummary,
    /// The gate holding the next step, or null.
    pub blocked_by: Option<String>,
    /// The canary steps (`rollout.steps`), for the dashboard's progress strip.
    pub steps: Vec<f64>,
    /// In a fleet: each instance's share of the figures above (which are
    /// the fleet's sum), this instance first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceFigures>>,
}

/// One route with its gates (`GET /api/routes/{name}`).
#[derive(Debug, Serialize)]
pub struct RouteDetail {
    #[serde(flatten)]
    pub route: RouteView,
    pub gates: Vec<Gate>,
    /// How long the current stage has lasted, in seconds.
    pub stage_seconds: f64,
    /// Why the route last changed.
    pub reason: Option<String>,
    /// Shadow counters per endpoint template, with the fields that differ most.
    pub endpoints: Vec<EndpointView>,
}

/// One endpoint template of a route's shadow window.
#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub endpoint: String,
    #[serde(flatten)]
    pub counts: EndpointShadow,
    pub match_rate: Option<f64>,
    /// "`$.total` differs in 3.2% of GET /orders/{id}", most frequent first.
    pub fields: Vec<FieldRate>,
}

fn endpoint_views(route: &RouteRuntime, figures: &Figures) -> Vec<EndpointView> {
    let noise = route.control.noise();
    figures
        .endpoints()
        .into_iter()
        .map(|(endpoint, counts)| EndpointView {
            fields: noise.fields(&endpoint, 10),
            match_rate: counts.match_rate(),
            endpoint: endpoint.to_string(),
            counts,
        })
        .collect()
}

/// A route's summary and its gates' evaluation, from one read of its status
/// and one computation of its figures.
fn route_view(runtime: &Runtime, route: &RouteRuntime) -> (RouteView, Evaluation, Figures) {
    let status = route.control.status.load_full();
    let RouteEvaluation {
        figures,
        evaluation,
        breakdown,
    } = controller::evaluate_route(runtime, route, &status);
    let stage = figures.stage();
    let view = RouteView {
        name: route.config.name.clone(),
        stage: status.stage.as_str(),
        weight: status.weight,
        state: status.state.as_str(),
        legacy: SideSummary::from(&stage.legacy),
        candidate: SideSummary::from(&stage.candidate),
        shadow: figures.shadow_summary(),
        blocked_by: evaluation.blocked_by.clone(),
        steps: route.config.rollout.steps.clone(),
        instances: runtime.fleet.shared().then_some(breakdown),
    };
    (view, evaluation, figures)
}

fn detail(runtime: &Runtime, name: &str) -> Result<Json<RouteDetail>, ApiError> {
    let snapshot = runtime.snapshot.load();
    let route = snapshot
        .route(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no route named {name}")))?;
    let (view, evaluation, figures) = route_view(runtime, route);
    Ok(Json(RouteDetail {
        route: view,
        gates: evaluation.gates,
        stage_seconds: evaluation.stage_seconds,
        reason: (**route.control.reason.load()).clone(),
        endpoints: endpoint_views(route, &figures),
    }))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if state.runtime.is_ready() {
        // A fleet keeps serving while its store is lost (SPEC §5, §9).
        let store = if state.runtime.fleet.store_ok() {
            "ok"
        } else {
            "unreachable"
        };
        Json(serde_json::json!({ "status": "ready", "store": store })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "starting" })),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::PROMETHEUS_TEXT)],
        state.runtime.metrics.encode(),
    )
        .into_response()
}

/// Route views evaluate the gates: built off the client workers.
fn view_failed(error: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the route view failed: {error}"),
    )
}

async fn detail_off_workers(
    runtime: &Arc<Runtime>,
    name: &str,
) -> Result<Json<RouteDetail>, ApiError> {
    let name = name.to_string();
    runtime
        .off_workers(move |runtime| detail(runtime, &name))
        .await
        .map_err(view_failed)?
}

pub async fn routes_list(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<Vec<RouteView>>, ApiError> {
    state
        .runtime
        .off_workers(|runtime| {
            let snapshot = runtime.snapshot.load();
            Json(
                snapshot
                    .routes
                    .iter()
                    .map(|r| route_view(runtime, r).0)
                    .collect(),
            )
        })
        .await
        .map_err(view_failed)
}

pub async fn route_get(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<RouteDetail>, ApiError> {
    detail_off_workers(&state.runtime, &name).await
}

async fn control(
    state: &AdminState,
    name: &str,
    command: Command,
) -> Result<Json<RouteDetail>, ApiError> {
    state.runtime.control(name, command).await?;
    detail_off_workers(&state.runtime, name).await
}

pub async fn route_promote(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<RouteDetail>, ApiError> {
    control(&state, &name, Command::Promote).await
}

pub async fn route_rollback(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<RouteDetail>, ApiError> {
    control(&state, &name, Command::Rollback).await
}

pub async fn route_pause(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<RouteDetail>, ApiError> {
    control(&state, &name, Command::Pause).await
}

pub async fn route_resume(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<RouteDetail>, ApiError> {
    control(&state, &name, Command::Resume).await
}

pub async fn route_reset(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<RouteDetail>, ApiError> {
    state.runtime.reset(&name).await?;
    detail_off_workers(&state.runtime, &name).await
}

#[derive(Debug, Deserialize)]
pub struct WeightBody {
    weight: f64,
}

pub async fn route_weight(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    body: Result<Json<WeightBody>, JsonRejection>,
) -> Result<Json<RouteDetail>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"weight\": PERCENT}}: {}", e.body_text()),
        )
    })?;
    if !(0.0..=100.0).contains(&body.weight) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{} is not a percentage (0–100)", body.weight),
        ));
    }
    control(&state, &name, Command::Weight(body.weight)).await
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    route: Option<String>,
    limit: Option<u32>,
}

pub async fn events_list(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<EventRow>>, ApiError> {
    let limit = query.limit.unwrap_or(1000).min(10_000);
    let events = state
        .runtime
        .events(query.route.as_deref(), limit)
        .await
        .map_err(store_error)?;
    Ok(Json(events))
}

/// A store failure as an API error: the store is unreachable (503).
fn store_error(error: crate::store::StoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

/// The migration report as JSON.
pub async fn report_get(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<crate::report::Report>, ApiError> {
    state.runtime.report().await.map(Json).map_err(store_error)
}

/// The measure view: traffic and time per endpoint template, ranked.
pub async fn endpoints_list(
    State(state): State<Arc<AdminState>>,
) -> Json<Vec<crate::measure::EndpointView>> {
    Json(state.runtime.measure.endpoints())
}

#[derive(Debug, Deserialize)]
pub struct SeriesQuery {
    /// Milliseconds since the epoch; default: the last hour.
    since: Option<i64>,
}

/// A route's 10-second aggregates per side (the dashboard's charts).
pub async fn route_series(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(query): Query<SeriesQuery>,
) -> Result<Json<Vec<crate::store::AggregateRow>>, ApiError> {
    if state.runtime.snapshot.load().route(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route named {name}"),
        ));
    }
    let since = query
        .since
        .unwrap_or_else(|| crate::runtime::now_ms() - 3_600_000);
    let rows = state
        .runtime
        .store
        .store()
        .aggregates(Some(&name), since)
        .await
        .map_err(store_error)?;
    Ok(Json(rows))
}

/// Every instance sharing the store, from the registry (or, while a
/// fleet's store is lost, as last read).
pub async fn instances_list(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    let runtime = &state.runtime;
    let fleet = &runtime.fleet;
    let mut instances = if fleet.store_ok() {
        crate::fleet::within(runtime.store.store().instances())
            .await
            .ok()
            .map(Arc::new)
    } else {
        None
    }
    .unwrap_or_else(|| fleet.instances());
    if instances.is_empty() {
        // Not registered yet: the proxy lists itself.
        let started_at_ms = crate::runtime::now_ms();
        instances = Arc::new(vec![crate::store::InstanceInfo {
            id: runtime.instance_id.clone(),
            config_hash: runtime.snapshot.load().config.config_hash.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms,
            last_seen_ms: started_at_ms,
            seen_ago_ms: 0,
            leader: fleet.is_leader(),
        }]);
    }
    let rfc3339 = |ms: i64| {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_millis(at).to_string()
    };
    Json(serde_json::Value::Array(
        instances
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": i.id,
                    "leader": i.leader,
                    "last_seen": rfc3339(i.last_seen_ms),
                    "seen_ago_ms": i.seen_ago_ms,
                    "config_hash": i.config_hash,
                    "version": i.version,
                    "started_at": rfc3339(i.started_at_ms),
                    "self": i.id == runtime.instance_id,
                })
            })
            .collect(),
    ))
}

pub async fn reload(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match crate::app::reload(&state.runtime, &state.config_path, state.env.as_ref()).await {
        Ok(summary) => Ok(Json(summary)),
        Err(errors) => Err(ApiError::new(StatusCode::BAD_REQUEST, errors)),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such admin endpoint")
}
