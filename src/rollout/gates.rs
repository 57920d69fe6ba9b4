//! Gate evaluation (SPEC §3): pure functions from a window's counts and the
//! route's rollout settings to a list of gates.
//!
//! Each gate is judged twice:
//! - for **promotion**, on the stage's totals: its value must hold
//!   (`ok: true`); a gate without enough data is not judged (`ok: null`) and
//!   blocks promotion;
//! - for **rollback**, on the last `rollback_window`: a rate gate fails only
//!   when its 95% Wilson interval lies wholly on the wrong side of the
//!   threshold (20 errors in 20 roll back at once, 1 in 20 does not yet), so
//!   a small-sample accident never rolls a route back; the p99 gates fail
//!   when judged and broken; health and criteria when failing.
//!
//! Which gates apply: in `shadow`, match rate; in `canary`, all; in
//! `candidate`, error rate and match rate (from the reverse shadow), the
//! comparative gates being not judged (no live legacy traffic). Success
//! criteria (`max_p99`, `criterion:NAME`) and `health` apply in every stage.

use std::sync::Arc;

use serde::Serialize;

use super::window::{EndpointShadow, SideStats, WindowStats};
use crate::config::{RolloutConfig, Stage};

/// z for a two-sided 95% interval.
const Z: f64 = 1.959_963_984_540_054;
/// Comparisons an endpoint needs before its own match rate is judged.
pub const MIN_ENDPOINT_COMPARISONS: u64 = 20;
/// Latency samples a side needs before a p99 is judged.
pub const MIN_P99_SAMPLES: u64 = 100;

/// One gate as the API shows it (`GET /api/routes/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    pub name: String,
    pub threshold: f64,
    /// The measured value (on the stage's window), when there is one.
    pub value: Option<f64>,
    /// `null` when not judged (not enough data).
    pub ok: Option<bool>,
    /// 95% Wilson interval of the rate on the stage's window.
    pub interval: Option<[f64; 2]>,
    /// Whether it fails for rollback over the last `rollback_window`.
    pub failing: bool,
    /// A readable explanation of the value (and of a rollback failure).
    pub detail: String,
    /// Comparative gates in `candidate` are shown but never block.
    #[serde(skip)]
    pub blocks: bool,
}

/// The health of the candidate upstream, as the gate sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// No `health` path on the candidate: no gate.
    NotConfigured,
    Unknown,
    Healthy,
    Unhealthy(String),
}

/// The last reading of one success criterion.
#[derive(Debug, Clone, PartialEq)]
pub struct CriterionInput {
    pub name: String,
    pub max: Option<f64>,
    pub min: Option<f64>,
    /// `None`: not judged (unreachable, absent sample).
    pub value: Option<f64>,
    pub detail: String,
}

/// Everything the gates of one route are judged on.
pub struct Inputs<'a> {
    pub stage: Stage,
    pub config: &'a RolloutConfig,
    /// Stage totals (minus warmup).
    pub promotion: &'a WindowStats,
    /// Per-endpoint shadow counts of the stage.
    pub endpoints: &'a [(Arc<str>, EndpointShadow)],
    /// The last `rollback_window`.
    pub rollback: &'a WindowStats,
    /// Mirrored candidate latency of the stage: `(samples, p99 ms)`.
    pub mirror_p99: (u64, Option<f64>),
    pub health: Health,
    pub criteria: &'a [CriterionInput],
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    let n_f = n as f64;
    let p = k as f64 / n_f;
    let z2 = Z * Z;
    let denominator = 1.0 + z2 / n_f;
    let center = (p + z2 / (2.0 * n_f)) / denominator;
    let half = Z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denominator;
    Some([(center - half).max(0.0), (center + half).min(1.0)])
}

/// Newcombe's interval for the difference of two proportions `a − b`,
/// from their Wilson intervals.
pub fn difference_interval(ka: u64, na: u64, kb: u64, nb: u64) -> Option<[f64; 2]> {
    let [la, ua] = wilson(ka, na)?;
    let [lb, ub] = wilson(kb, nb)?;
    let (pa, pb) = (ka as f64 / na as f64, kb as f64 / nb as f64);
    let d = pa - pb;
    Some([
        d - ((pa - la).powi(2) + (ub - pb).powi(2)).sqrt(),
        d + ((ua - pa).powi(2) + (pb - lb).powi(2)).sqrt(),
    ])
}

fn rate(k: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| k as f64 / n as f64)
}

fn pct(v: f64) -> String {
    format!("{:.3}%", v * 100.0)
}

/// Evaluates every gate that applies to the route's stage. Success
/// criteria and health apply in every stage, `legacy` included (SPEC), so a
/// team sees them hold before the first mirror; the comparative gates start
/// in `shadow`.
pub fn evaluate(inputs: &Inputs<'_>) -> Vec<Gate> {
    let stage = inputs.stage;
    let config = inputs.config;
    let mut gates = Vec::new();
    if stage != Stage::Legacy {
        gates.push(match_rate(inputs));
    }
    if matches!(stage, Stage::Canary | Stage::Candidate) {
        gates.push(error_rate(inputs));
        let comparative = stage == Stage::Canary;
        gates.push(rate_increase(
            "error_rate_increase",
            config.max_error_rate_increase,
            inputs,
            |s| s.errors,
            comparative,
        ));
        if let Some(threshold) = config.max_4xx_rate_increase {
            gates.push(rate_increase(
                "4xx_rate_increase",
                threshold,
                inputs,
                |s| s.client_errors,
                comparative,
            ));
        }
        gates.push(p99_ratio(inputs, comparative));
    }
    if let Some(max) = config.max_p99 {
        gates.push(max_p99(inputs, max.as_secs_f64() * 1000.0));
    }
    if inputs.health != Health::NotConfigured {
        gates.push(health(&inputs.health, stage));
    }
    for criterion in inputs.criteria {
        gates.push(criterion_gate(criterion, stage));
    }
    gates
}

/// The gate holding the next step: the first that is failing or not judged.
pub fn blocking(gates: &[Gate]) -> Option<&Gate> {
    gates.iter().find(|g| g.blocks && g.ok != Some(true))
}

/// The gate that fails for rollback, if any.
pub fn failing(gates: &[Gate]) -> Option<&Gate> {
    gates.iter().find(|g| g.failing)
}

fn match_rate(inputs: &Inputs<'_>) -> Gate {
    let min = inputs.config.min_match_rate;
    let stage = &inputs.promotion.shadow;
    let value = stage.match_rate();
    let worst_endpoint = inputs
        .endpoints
        .iter()
        .filter(|(_, e)| e.trials() >= MIN_ENDPOINT_COMPARISONS)
        .filter_map(|(name, e)| e.match_rate().map(|r| (name, r)))
        .filter(|(_, r)| *r < min)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let ok = value.map(|v| v >= min && worst_endpoint.is_none());
    let recent = &inputs.rollback.shadow;
    let rollback = wilson(recent.successes(), recent.trials());
    let failing = inputs.stage != Stage::Shadow && rollback.is_some_and(|[_, hi]| hi < min);
    let mut detail = match value {
        Some(v) => format!(
            "{} of {} comparisons matched ({})",
            stage.successes(),
            stage.trials(),
            pct(v)
        ),
        None => "no comparison yet".to_string(),
    };
    if let Some((endpoint, r)) = worst_endpoint {
        detail.push_str(&format!("; {endpoint} matches only {}", pct(r)));
    }
    if failing {
        detail.push_str(&format!(
            "; over the rollback window {} of {} matched",
            recent.successes(),
            recent.trials()
        ));
    }
    Gate {
        name: "match_rate".into(),
        threshold: min,
        value,
        ok,
        interval: wilson(stage.successes(), stage.trials()),
        failing,
        detail,
        blocks: true,
    }
}

fn error_rate(inputs: &Inputs<'_>) -> Gate {
    let max = inputs.config.max_error_rate;
    let c = &inputs.promotion.candidate;
    let value = rate(c.errors, c.requests);
    let recent = &inputs.rollback.candidate;
    let failing = wilson(recent.errors, recent.requests).is_some_and(|[lo, _]| lo > max);
    let mut detail = match value {
        Some(v) => format!(
            "{} errors in {} candidate requests ({})",
            c.errors,
            c.requests,
            pct(v)
        ),
        None => "no live candidate request yet".to_string(),
    };
    if failing {
        detail.push_str(&format!(
            "; over the rollback window {} errors in {} requests",
            recent.errors, recent.requests
        ));
    }
    Gate {
        name: "error_rate".into(),
        threshold: max,
        value,
        ok: value.map(|v| v <= max),
        interval: wilson(c.errors, c.requests),
        failing,
        detail,
        blocks: true,
    }
}

fn rate_increase(
    name: &str,
    max: f64,
    inputs: &Inputs<'_>,
    count: impl Fn(&SideStats) -> u64,
    comparative: bool,
) -> Gate {
    let (c, l) = (&inputs.promotion.candidate, &inputs.promotion.legacy);
    let judged = comparative && c.requests > 0 && l.requests > 0;
    let value =
        judged.then(|| count(c) as f64 / c.requests as f64 - count(l) as f64 / l.requests as f64);
    let (rc, rl) = (&inputs.rollback.candidate, &inputs.rollback.legacy);
    let failing = comparative
        && difference_interval(count(rc), rc.requests, count(rl), rl.requests)
            .is_some_and(|[lo, _]| lo > max);
    let detail = match value {
        Some(v) => format!(
            "candidate {} minus legacy {} = {}",
            pct(count(c) as f64 / c.requests as f64),
            pct(count(l) as f64 / l.requests as f64),
            pct(v)
        ),
        None if !comparative => "not judged: no live legacy traffic in this stage".to_string(),
        None => "not judged: needs live requests on both sides".to_string(),
    };
    Gate {
        name: name.into(),
        threshold: max,
        value,
        ok: value.map(|v| v <= max),
        interval: if judged {
            difference_interval(count(c), c.requests, count(l), l.requests)
        } else {
            None
        },
        failing,
        detail,
        blocks: comparative,
    }
}

/// Whether a candidate p99 holds against legacy's.
fn p99_holds(config: &RolloutConfig, candidate: f64, legacy: f64) -> bool {
    let slack = config.p99_slack.as_secs_f64() * 1000.0;
    candidate <= (config.max_p99_ratio * legacy).max(legacy + slack)
}

fn p99_pair(c: &SideStats, l: &SideStats) -> Option<(f64, f64)> {
    if c.latency_samples < MIN_P99_SAMPLES || l.latency_samples < MIN_P99_SAMPLES {
        return None;
    }
    Some((c.p99_ms?, l.p99_ms?))
}

fn p99_ratio(inputs: &Inputs<'_>, comparative: bool) -> Gate {
    let config = inputs.config;
    let judged = comparative
        .then(|| p99_pair(&inputs.promotion.candidate, &inputs.promotion.legacy))
        .flatten();
    let value = judged.map(|(c, l)| if l > 0.0 { c / l } else { f64::INFINITY });
    let failing = comparative
        && p99_pair(&inputs.rollback.candidate, &inputs.rollback.legacy)
            .is_some_and(|(c, l)| !p99_holds(config, c, l));
    let detail = match judged {
        Some((c, l)) => format!(
            "candidate p99 {c:.2} ms, legacy p99 {l:.2} ms (allowed: ×{} or +{} ms)",
            config.max_p99_ratio,
            config.p99_slack.as_secs_f64() * 1000.0
        ),
        None if !comparative => "not judged: no live legacy traffic in this stage".to_string(),
        None => format!("not judged: needs {MIN_P99_SAMPLES} live samples a side"),
    };
    Gate {
        name: "p99_ratio".into(),
        threshold: config.max_p99_ratio,
        value,
        ok: judged.map(|(c, l)| p99_holds(config, c, l)),
        interval: None,
        failing,
        detail,
        blocks: comparative,
    }
}

fn max_p99(inputs: &Inputs<'_>, max_ms: f64) -> Gate {
    // In shadow the candidate has no live traffic: its mirrored requests
    // are the only latency there is.
    let (samples, p99) = if inputs.stage == Stage::Shadow {
        inputs.mirror_p99
    } else {
        (
            inputs.promotion.candidate.latency_samples,
            inputs.promotion.candidate.p99_ms,
        )
    };
    let value = p99.filter(|_| samples >= MIN_P99_SAMPLES);
    let recent = &inputs.rollback.candidate;
    let failing = inputs.stage != Stage::Shadow
        && recent.latency_samples >= MIN_P99_SAMPLES
        && recent.p99_ms.is_some_and(|p| p > max_ms);
    let detail = match value {
        Some(v) => format!("candidate p99 {v:.2} ms over {samples} requests"),
        None => format!("not judged: needs {MIN_P99_SAMPLES} candidate samples ({samples} so far)"),
    };
    Gate {
        name: "max_p99".into(),
        threshold: max_ms,
        value,
        ok: value.map(|v| v <= max_ms),
        interval: None,
        failing,
        detail,
        blocks: true,
    }
}

fn health(health: &Health, stage: Stage) -> Gate {
    let (ok, detail) = match health {
        Health::Healthy => (Some(true), "healthy".to_string()),
        Health::Unhealthy(why) => (Some(false), format!("unhealthy: {why}")),
        Health::Unknown | Health::NotConfigured => {
            (None, "not judged before the first check".to_string())
        }
    };
    Gate {
        name: "health".into(),
        threshold: 1.0,
        value: ok.map(|ok| if ok { 1.0 } else { 0.0 }),
        ok,
        interval: None,
        failing: ok == Some(false) && matches!(stage, Stage::Canary | Stage::Candidate),
        detail,
        blocks: true,
    }
}

fn criterion_gate(criterion: &CriterionInput, stage: Stage) -> Gate {
    let ok = criterion.value.map(|v| {
        criterion.max.is_none_or(|max| v <= max) && criterion.min.is_none_or(|min| v >= min)
    });
    Gate {
        name: format!("criterion:{}", criterion.name),
        threshold: criterion.max.or(criterion.min).unwrap_or(0.0),
        value: criterion.value,
        ok,
        interval: None,
        failing: ok == Some(false) && matches!(stage, Stage::Canary | Stage::Candidate),
        detail: criterion.detail.clone(),
        blocks: true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> RolloutConfig {
        RolloutConfig {
            auto: true,
            steps: vec![1.0, 10.0, 50.0, 100.0],
            interval: Duration::from_secs(60),
            warmup: Duration::ZERO,
            min_requests: 200,
            min_match_rate: 0.999,
            max_error_rate: 0.01,
            max_error_rate_increase: 0.005,
            max_4xx_rate_increase: None,
            max_p99_ratio: 1.5,
            p99_slack: Duration::from_millis(5),
            rollback_window: Duration::from_secs(30),
            failure_limit: 1,
            bake: Duration::from_secs(7 * 86_400),
            max_p99: None,
            criteria: Vec::new(),
        }
    }

    fn side(requests: u64, errors: u64) -> SideStats {
        SideStats {
            requests,
            errors,
            ..SideStats::default()
        }
    }

    fn stats(legacy: SideStats, candidate: SideStats, shadow: EndpointShadow) -> WindowStats {
        WindowStats {
            legacy,
            candidate,
            shadow,
        }
    }

    fn gate<'a>(gates: &'a [Gate], name: &str) -> &'a Gate {
        gates.iter().find(|g| g.name == name).expect("gate present")
    }

    fn run(stage: Stage, promotion: &WindowStats, rollback: &WindowStats) -> Vec<Gate> {
        evaluate(&Inputs {
            stage,
            config: &config(),
            promotion,
            endpoints: &[],
            rollback,
            mirror_p99: (0, None),
            health: Health::NotConfigured,
            criteria: &[],
        })
    }

    #[test]
    fn wilson_matches_known_values() {
        let [lo, hi] = wilson(20, 20).unwrap();
        assert!((lo - 0.8389).abs() < 1e-3 && hi == 1.0, "{lo} {hi}");
        let [lo, hi] = wilson(1, 20).unwrap();
        assert!(
            (lo - 0.0089).abs() < 1e-3 && (hi - 0.2361).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn twenty_errors_in_twenty_roll_back_one_in_twenty_does_not() {
        let all = stats(side(0, 0), side(20, 20), EndpointShadow::default());
        assert!(gate(&run(Stage::Canary, &all, &all), "error_rate").failing);
        let one = stats(side(0, 0), side(20, 1), EndpointShadow::default());
        let gates = run(Stage::Canary, &one, &one);
        let g = gate(&gates, "error_rate");
        assert!(!g.failing, "1 in 20 is not yet evidence");
        assert_eq!(g.ok, Some(false), "but it does block promotion");
    }

    #[test]
    fn gates_without_data_are_not_judged_and_block_but_never_roll_back() {
        let empty = WindowStats::default();
        let gates = run(Stage::Canary, &empty, &empty);
        assert!(
            gates.iter().all(|g| g.ok.is_none() && !g.failing),
            "{gates:#?}"
        );
        assert_eq!(
            blocking(&gates).map(|g| g.name.as_str()),
            Some("match_rate")
        );
        assert!(failing(&gates).is_none());
    }

    #[test]
    fn shadow_judges_only_the_match_rate_and_never_rolls_back() {
        let shadow = EndpointShadow {
            compared: 100,
            mismatched: 100,
            ..EndpointShadow::default()
        };
        let s = stats(side(100, 0), side(0, 0), shadow);
        let gates = run(Stage::Shadow, &s, &s);
        assert_eq!(gates.len(), 1);
        assert_eq!(gates[0].ok, Some(false));
        assert!(!gates[0].failing);
    }

    #[test]
    fn a_failing_endpoint_is_not_averaged_away() {
        let busy = EndpointShadow {
            compared: 10_000,
            matched: 10_000,
            ..EndpointShadow::default()
        };
        let broken = EndpointShadow {
            compared: 20,
            mismatched: 20,
            ..EndpointShadow::default()
        };
        let mut total = busy;
        total.merge(&broken);
        let s = stats(side(0, 0), side(0, 0), total);
        let endpoints = [
            (Arc::from("GET /busy"), busy),
            (Arc::from("GET /broken"), broken),
        ];
        let mut cfg = config();
        cfg.min_match_rate = 0.99;
        let gates = evaluate(&Inputs {
            stage: Stage::Shadow,
            config: &cfg,
            promotion: &s,
            endpoints: &endpoints,
            rollback: &s,
            mirror_p99: (0, None),
            health: Health::NotConfigured,
            criteria: &[],
        });
        assert!(gates[0].value.unwrap() > 0.99);
        assert_eq!(gates[0].ok, Some(false), "{}", gates[0].detail);
        assert!(gates[0].detail.contains("GET /broken"));
    }

    #[test]
    fn p99_needs_a_hundred_samples_a_side_and_allows_the_slack() {
        let with_p99 = |samples, p99| SideStats {
            requests: samples,
            latency_samples: samples,
            p99_ms: Some(p99),
            ..SideStats::default()
        };
        let few = stats(
            with_p99(99, 1.0),
            with_p99(500, 100.0),
            EndpointShadow::default(),
        );
        assert_eq!(gate(&run(Stage::Canary, &few, &few), "p99_ratio").ok, None);
        // 4 ms against 1 ms: ratio 4 but within the 5 ms slack.
        let slack = stats(
            with_p99(100, 1.0),
            with_p99(100, 4.0),
            EndpointShadow::default(),
        );
        assert_eq!(
            gate(&run(Stage::Canary, &slack, &slack), "p99_ratio").ok,
            Some(true)
        );
        let slow = stats(
            with_p99(100, 20.0),
            with_p99(100, 40.0),
            EndpointShadow::default(),
        );
        let gates = run(Stage::Canary, &slow, &slow);
        let g = gate(&gates, "p99_ratio");
        assert_eq!((g.ok, g.failing), (Some(false), true));
        // In candidate, comparative gates are shown, not judged, and never block.
        let gates = run(Stage::Candidate, &slow, &slow);
        let g = gate(&gates, "p99_ratio");
        assert_eq!((g.ok, g.failing, g.blocks), (None, false, false));
    }

    #[test]
    fn error_rate_increase_uses_both_sides() {
        let s = stats(side(1000, 5), side(1000, 30), EndpointShadow::default());
        let g = gate(&run(Stage::Canary, &s, &s), "error_rate_increase").clone();
        assert!((g.value.unwrap() - 0.025).abs() < 1e-9);
        assert_eq!(g.ok, Some(false));
        assert!(g.failing, "{:?}", g.interval);
    }

    /// A criterion "memory under 500 MB" reading 600 MB.
    fn memory_over_its_limit() -> CriterionInput {
        CriterionInput {
            name: "memory".into(),
            max: Some(500e6),
            min: None,
            value: Some(600e6),
            detail: "600000000".into(),
        }
    }

    #[test]
    fn criteria_and_health_block_when_not_judged_and_fail_in_canary() {
        let empty = WindowStats::default();
        let criteria = [memory_over_its_limit()];
        let gates = evaluate(&Inputs {
            stage: Stage::Canary,
            config: &config(),
            promotion: &empty,
            endpoints: &[],
            rollback: &empty,
            mirror_p99: (0, None),
            health: Health::Unknown,
            criteria: &criteria,
        });
        let health = gate(&gates, "health");
        assert_eq!((health.ok, health.failing), (None, false));
        let memory = gate(&gates, "criterion:memory");
        assert_eq!((memory.ok, memory.failing), (Some(false), true));
        assert_eq!(
            failing(&gates).map(|g| g.name.as_str()),
            Some("criterion:memory")
        );
    }

    #[test]
    fn in_legacy_only_criteria_and_health_are_shown_and_nothing_fails() {
        let empty = WindowStats::default();
        let criteria = [memory_over_its_limit()];
        let config = RolloutConfig {
            max_p99: Some(Duration::from_millis(10)),
            ..config()
        };
        let gates = evaluate(&Inputs {
            stage: Stage::Legacy,
            config: &config,
            promotion: &empty,
            endpoints: &[],
            rollback: &empty,
            mirror_p99: (0, None),
            health: Health::Healthy,
            criteria: &criteria,
        });
        let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["max_p99", "health", "criterion:memory"]);
        assert_eq!(gate(&gates, "criterion:memory").ok, Some(false));
        assert_eq!(gate(&gates, "health").ok, Some(true));
        assert!(failing(&gates).is_none(), "nothing rolls back in legacy");
    }
}
