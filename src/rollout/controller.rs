//! The rollout controller: the background task that turns gates into
//! transitions (SPEC §3).
//!
//! Twice a second it evaluates every route on its current window:
//! - **rollback** first, in `canary` and `candidate` (also when paused or
//!   pinned, and also without `rollout.auto`: safety does not wait for a
//!   person): a gate failing for rollback `failure_limit` evaluations in a
//!   row sends the route back to `shadow`, weight 0, `rolled_back`, with the
//!   gate and its values as the reason;
//! - then, with `rollout.auto` and state `progressing`, **promotion**: the
//!   stage has lasted `interval`, seen `min_requests`, and no gate blocks
//!   (`shadow → canary(steps[0]) → … → candidate`); in `candidate`, after
//!   `bake` with no gate failing, the route becomes `complete`.
//!
//! Decisions are pure ([`decide`]); acting on one goes through
//! `Runtime::auto_transition`, which re-checks that nobody changed the route
//! since it was evaluated. Every few seconds the windows are saved so a
//! restart continues the stage where it stood.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::criteria;
use super::gates::{self, CriterionInput, Gate, Health, Inputs};
use super::state::{Command, RolloutState, RouteStatus};
use super::window::Figures;
use crate::config::{RolloutConfig, Stage};
use crate::runtime::{RouteRuntime, Runtime, Snapshot};

/// How often routes are evaluated (SPEC: at least once a second).
pub const EVALUATE_EVERY: Duration = Duration::from_millis(500);
/// How often windows are saved to the store.
const SAVE_EVERY: u32 = 10;

/// A route's gates and what holds its next step.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub gates: Vec<Gate>,
    /// The gate holding the next step (or `min_requests`, `interval`,
    /// `bake`), `null` when nothing does.
    pub blocked_by: Option<String>,
    /// How long the stage has lasted, in seconds.
    pub stage_seconds: f64,
    /// Live candidate requests (in shadow: comparisons) the stage has seen.
    pub seen: u64,
}

/// Evaluates a route's gates on its current window (this instance's own).
pub fn evaluate(route: &RouteRuntime, status: &RouteStatus, health: Health) -> Evaluation {
    let window = route.control.window.load();
    let figures = window.figures(route.config.rollout.rollback_window);
    evaluate_figures(route, status, health, &figures, window.age())
}

/// Evaluates a route's gates on `figures` (one instance's window, or the
/// sum over a fleet) of a stage that has lasted `age`.
pub fn evaluate_figures(
    route: &RouteRuntime,
    status: &RouteStatus,
    health: Health,
    figures: &Figures,
    age: Duration,
) -> Evaluation {
    let config = &route.config.rollout;
    let promotion = figures.stage();
    let rollback = figures.recent();
    let endpoints = figures.endpoints();
    // Every configured criterion has a gate; without a reading it is not judged.
    let readings = route.control.criteria.load();
    let criteria: Vec<CriterionInput> = config
        .criteria
        .iter()
        .map(|c| {
            readings
                .iter()
                .find(|r| r.name == c.name)
                .cloned()
                .unwrap_or_else(|| CriterionInput {
                    name: c.name.clone(),
                    max: c.max,
                    min: c.min,
                    value: None,
                    detail: "not judged: no reading yet".into(),
                })
        })
        .collect();
    let gates = gates::evaluate(&Inputs {
        stage: status.stage,
        config,
        promotion: &promotion,
        endpoints: &endpoints,
        rollback: &rollback,
        mirror_p99: figures.mirror_p99(),
        health,
        criteria: &criteria,
    });
    let seen = match status.stage {
        Stage::Shadow => promotion.shadow.compared,
        _ => promotion.candidate.requests,
    };
    let blocked_by = match status.stage {
        Stage::Legacy => None,
        Stage::Shadow | Stage::Canary => gates::blocking(&gates)
            .map(|g| g.name.clone())
            .or_else(|| (seen < config.min_requests).then(|| "min_requests".to_string()))
            .or_else(|| (age < config.interval).then(|| "interval".to_string())),
        Stage::Candidate if status.state == RolloutState::Complete => None,
        Stage::Candidate => completion_blocker(&gates)
            .map(|g| g.name.clone())
            .or_else(|| (age < config.bake).then(|| "bake".to_string())),
    };
    Evaluation {
        gates,
        blocked_by,
        stage_seconds: age.as_secs_f64(),
        seen,
    }
}

/// In `candidate`, a failing gate blocks completion, and so does a success
/// criterion (or health) that is not judged; rates without traffic do not.
fn completion_blocker(gates: &[Gate]) -> Option<&Gate> {
    gates.iter().find(|g| {
        g.ok == Some(false)
            || (g.ok.is_none()
                && (g.name == "health" || g.name == "max_p99" || g.name.starts_with("criterion:")))
    })
}

/// What the controller does with a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    Promote(String),
    Complete(String),
    Rollback(String),
}

/// Decides from an evaluation. `failures` is the number of consecutive
/// evaluations, this one included, in which a gate failed for rollback.
pub fn decide(
    status: &RouteStatus,
    config: &RolloutConfig,
    evaluation: &Evaluation,
    failures: u32,
) -> Decision {
    let live = matches!(status.stage, Stage::Canary | Stage::Candidate)
        && matches!(
            status.state,
            RolloutState::Progressing | RolloutState::Paused
        );
    if live && failures >= config.failure_limit {
        if let Some(gate) = gates::failing(&evaluation.gates) {
            return Decision::Rollback(format!(
                "gate {} failed {failures} evaluation(s) in a row (threshold {}, value {}): {}",
                gate.name,
                gate.threshold,
                gate.value
                    .map_or_else(|| "n/a".to_string(), |v| format!("{v:.6}")),
                gate.detail
            ));
        }
    }
    if !config.auto || status.state != RolloutState::Progressing || evaluation.blocked_by.is_some()
    {
        return Decision::Nothing;
    }
    let held = format!(
        "gates held for {:.0}s over {} {}",
        evaluation.stage_seconds,
        evaluation.seen,
        if status.stage == Stage::Shadow {
            "comparisons"
        } else {
            "live candidate requests"
        }
    );
    match status.stage {
        Stage::Shadow | Stage::Canary => Decision::Promote(held),
        Stage::Candidate => Decision::Complete(format!("baked: {held}")),
        Stage::Legacy => Decision::Nothing,
    }
}

/// The health the gate sees for a route's candidate.
pub fn candidate_health(runtime: &Runtime, route: &RouteRuntime) -> Health {
    if route.candidate.config.health.is_none() {
        return Health::NotConfigured;
    }
    runtime.candidate_health(route)
}

/// How often success criteria are read.
const READ_CRITERIA_EVERY: Duration = Duration::from_secs(1);

/// Reads every route's success criteria, concurrently, once a second, so an
/// evaluation never waits on a slow metrics endpoint.
async fn read_criteria(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(READ_CRITERIA_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = runtime.snapshot.load_full();
        let reads = snapshot
            .routes
            .iter()
            .filter(|r| !r.config.rollout.criteria.is_empty())
            .map(|route| {
                let client = &runtime.criteria_client;
                async move {
                    let mut readings = Vec::with_capacity(route.config.rollout.criteria.len());
                    for c in &route.config.rollout.criteria {
                        let reading = criteria::read(client, &c.url, &c.metric).await;
                        readings.push(CriterionInput {
                            name: c.name.clone(),
                            max: c.max,
                            min: c.min,
                            value: reading.value,
                            detail: reading.detail,
                        });
                    }
                    route.control.criteria.store(Arc::new(readings));
                }
            });
        futures_util::future::join_all(reads).await;
    }
}

/// Runs the controller until `shutdown`.
pub fn spawn(runtime: Arc<Runtime>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(read_criteria(runtime.clone(), shutdown.clone()));
    tokio::spawn(async move {
        let mut failures: HashMap<String, u32> = HashMap::new();
        let mut tick = tokio::time::interval(EVALUATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            evaluate_all(&runtime, &mut failures).await;
            ticks = ticks.wrapping_add(1);
            if ticks % SAVE_EVERY == 0 {
                runtime.save_windows().await;
            }
        }
        // Keep the counters of the stage for the next start.
        runtime.save_windows().await;
    })
}

/// How this instance takes part in the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Alone (SQLite) or leading a fleet: judges the fleet's figures.
    Lead,
    /// In a fleet whose store is lost: guards its own traffic only, by
    /// rolling back locally; never promotes.
    Cut,
}

/// A route's evaluation, with the figures it was judged on.
pub struct RouteEvaluation {
    pub figures: Figures,
    pub evaluation: Evaluation,
    /// Each instance's share of the figures (a fleet's leader sums them).
    pub breakdown: Vec<crate::fleet::InstanceFigures>,
}

/// A route's evaluation as this instance sees it: on the fleet's figures
/// when it shares a reachable store, else on its own window. Promotion is
/// blocked by `config_hash` while the fleet's configurations differ.
pub fn evaluate_route(
    runtime: &Runtime,
    route: &RouteRuntime,
    status: &RouteStatus,
) -> RouteEvaluation {
    let fleet = &runtime.fleet;
    let (figures, breakdown) = fleet.figures(route);
    let age = route.control.window.load().age();
    let mut evaluation = evaluate_figures(
        route,
        status,
        candidate_health(runtime, route),
        &figures,
        age,
    );
    let promotable = matches!(
        status.stage,
        Stage::Shadow | Stage::Canary | Stage::Candidate
    );
    if fleet.shared() && !fleet.hashes_agree() && promotable && evaluation.blocked_by.is_none() {
        evaluation.blocked_by = Some("config_hash".to_string());
    }
    RouteEvaluation {
        figures,
        evaluation,
        breakdown,
    }
}

/// Evaluates one route off the client workers (see [`Runtime::off_workers`]).
async fn evaluate_off_workers(
    runtime: &Arc<Runtime>,
    snapshot: &Arc<Snapshot>,
    index: usize,
    status: &Arc<RouteStatus>,
    role: Role,
) -> Option<Evaluation> {
    let (snapshot, status) = (snapshot.clone(), status.clone());
    let evaluated = runtime
        .off_workers(move |runtime| {
            let route = &snapshot.routes[index];
            match role {
                Role::Lead => evaluate_route(runtime, route, &status).evaluation,
                Role::Cut => evaluate(route, &status, candidate_health(runtime, route)),
            }
        })
        .await;
    match evaluated {
        Ok(evaluation) => Some(evaluation),
        Err(error) => {
            tracing::warn!(%error, "a route's evaluation failed");
            None
        }
    }
}

/// One evaluation of every route.
pub async fn evaluate_all(runtime: &Arc<Runtime>, failures: &mut HashMap<String, u32>) {
    let fleet = &runtime.fleet;
    let role = if fleet.shared() && !fleet.store_ok() {
        Role::Cut
    } else if fleet.is_leader() {
        Role::Lead
    } else {
        // Another instance runs the controller.
        failures.clear();
        return;
    };
    let snapshot = runtime.snapshot.load_full();
    for (index, route) in snapshot.routes.iter().enumerate() {
        let name = &route.config.name;
        let status = route.control.status.load_full();
        if status.stage == Stage::Legacy || status.state == RolloutState::Complete {
            failures.remove(name);
            continue;
        }
        let Some(evaluation) = evaluate_off_workers(runtime, &snapshot, index, &status, role).await
        else {
            continue;
        };
        let count = failures.entry(name.clone()).or_insert(0);
        *count = if gates::failing(&evaluation.gates).is_some() {
            count.saturating_add(1)
        } else {
            0
        };
        let (command, reason) = match decide(&status, &route.config.rollout, &evaluation, *count) {
            Decision::Nothing => continue,
            Decision::Rollback(reason) => {
                tracing::warn!(route = %name, %reason, "automatic rollback");
                (Command::Rollback, reason)
            }
            Decision::Promote(reason) | Decision::Complete(reason) => (Command::Promote, reason),
        };
        if role == Role::Cut {
            if command == Command::Rollback {
                runtime.local_rollback(name, &status, reason).await;
                failures.remove(name);
            }
            continue;
        }
        if runtime
            .auto_transition(name, &status, command, reason)
            .await
            .is_some()
        {
            failures.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RolloutConfig {
        RolloutConfig {
            auto: true,
            steps: vec![1.0, 10.0, 50.0, 100.0],
            interval: Duration::from_secs(1),
            warmup: Duration::ZERO,
            min_requests: 10,
            min_match_rate: 0.99,
            max_error_rate: 0.01,
            max_error_rate_increase: 0.005,
            max_4xx_rate_increase: None,
            max_p99_ratio: 1.5,
            p99_slack: Duration::from_millis(5),
            rollback_window: Duration::from_secs(30),
            failure_limit: 2,
            bake: Duration::from_secs(10),
            max_p99: None,
            criteria: Vec::new(),
        }
    }

    fn gate(name: &str, ok: Option<bool>, failing: bool) -> Gate {
        Gate {
            name: name.into(),
            threshold: 0.01,
            value: Some(0.5),
            ok,
            interval: None,
            failing,
            detail: "20 errors in 20".into(),
            blocks: true,
        }
    }

    fn evaluation(gates: Vec<Gate>, blocked_by: Option<&str>) -> Evaluation {
        Evaluation {
            gates,
            blocked_by: blocked_by.map(str::to_string),
            stage_seconds: 5.0,
            seen: 100,
        }
    }

    fn status(stage: Stage, state: RolloutState) -> RouteStatus {
        RouteStatus {
            stage,
            weight: 10.0,
            state,
        }
    }

    #[test]
    fn rollback_waits_for_failure_limit_and_ignores_auto_and_pause() {
        let failing = evaluation(
            vec![gate("error_rate", Some(false), true)],
            Some("error_rate"),
        );
        let canary = status(Stage::Canary, RolloutState::Progressing);
        assert_eq!(decide(&canary, &config(), &failing, 1), Decision::Nothing);
        assert!(
            matches!(decide(&canary, &config(), &failing, 2), Decision::Rollback(r) if r.contains("error_rate"))
        );
        let mut manual = config();
        manual.auto = false;
        let paused = status(Stage::Canary, RolloutState::Paused);
        assert!(matches!(
            decide(&paused, &manual, &failing, 2),
            Decision::Rollback(_)
        ));
        // Never in shadow, never once complete.
        assert_eq!(
            decide(
                &status(Stage::Shadow, RolloutState::Progressing),
                &config(),
                &failing,
                5
            ),
            Decision::Nothing
        );
        assert_eq!(
            decide(
                &status(Stage::Candidate, RolloutState::Complete),
                &config(),
                &failing,
                5
            ),
            Decision::Nothing
        );
    }

    #[test]
    fn promotion_needs_auto_progressing_and_nothing_blocking() {
        let green = evaluation(vec![gate("match_rate", Some(true), false)], None);
        let shadow = status(Stage::Shadow, RolloutState::Progressing);
        assert!(matches!(
            decide(&shadow, &config(), &green, 0),
            Decision::Promote(_)
        ));
        let blocked = evaluation(vec![gate("match_rate", None, false)], Some("match_rate"));
        assert_eq!(decide(&shadow, &config(), &blocked, 0), Decision::Nothing);
        let paused = status(Stage::Canary, RolloutState::Paused);
        assert_eq!(decide(&paused, &config(), &green, 0), Decision::Nothing);
        let mut manual = config();
        manual.auto = false;
        assert_eq!(decide(&shadow, &manual, &green, 0), Decision::Nothing);
        let candidate = status(Stage::Candidate, RolloutState::Progressing);
        assert!(matches!(
            decide(&candidate, &config(), &green, 0),
            Decision::Complete(_)
        ));
    }

    #[test]
    fn completion_is_blocked_by_failing_gates_and_unjudged_criteria_only() {
        let not_judged_rate = vec![gate("error_rate", None, false)];
        assert!(completion_blocker(&not_judged_rate).is_none());
        let unjudged_criterion = vec![gate("criterion:memory", None, false)];
        assert_eq!(
            completion_blocker(&unjudged_criterion).map(|g| g.name.as_str()),
            Some("criterion:memory")
        );
        let failing = vec![gate("match_rate", Some(false), false)];
        assert!(completion_blocker(&failing).is_some());
    }
}
