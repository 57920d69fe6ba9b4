//! The migration report and the ROI arithmetic (SPEC §6).
//!
//! The report is assembled from what the proxy measured and remembers (the
//! store's endpoint statistics and aggregates, each route's live status and
//! window, learned noise, accepted differences), then rendered as JSON or
//! markdown. The ROI is pure arithmetic on the user's inputs; what the proxy
//! measured is printed beside it as evidence, never turned into money.

use serde::{Deserialize, Serialize};

use crate::compare::LearnedNoise;
use crate::store::{AcceptedRow, AggregateRow, EndpointStatRow};

/// One endpoint template in the ranking.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointRank {
    pub rank: usize,
    pub route: String,
    pub endpoint: String,
    pub requests: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of the total latency-seconds: what migrating it would move.
    pub share: f64,
}

/// A field that differs often between legacy and the candidate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopField {
    pub endpoint: String,
    pub path: String,
    pub rate: f64,
}

/// One route's stage and match rate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteReport {
    pub name: String,
    pub stage: String,
    pub weight: f64,
    pub state: String,
    pub compared: u64,
    pub match_rate: Option<f64>,
    pub top_mismatching_fields: Vec<TopField>,
}

/// A learned noise path, with its route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoiseEntry {
    pub route: String,
    pub endpoint: String,
    pub path: String,
    pub legacy_rate: f64,
    pub candidate_rate: f64,
    pub samples: u64,
}

/// Something legacy still serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LegacyServes {
    pub route: String,
    pub endpoints: Vec<String>,
    pub reason: String,
    /// Client requests legacy answered for it in the window.
    pub requests: u64,
}

/// The decommissioning verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub legacy_can_be_decommissioned: bool,
    pub summary: String,
    pub caveat: String,
}

/// The whole report (`GET /api/report`, `strangler report --format json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub generated_at: String,
    /// The span the figures cover, RFC 3339 (the store's retention).
    pub window_from: String,
    pub endpoints: Vec<EndpointRank>,
    pub routes: Vec<RouteReport>,
    pub noise: Vec<NoiseEntry>,
    pub accepted: Vec<AcceptedRow>,
    pub legacy_still_serves: Vec<LegacyServes>,
    pub verdict: Verdict,
}

/// The caveat every verdict carries.
pub const CAVEAT: &str = "callers which bypass the proxy cannot be seen: check legacy's own access logs before switching it off";

/// Ranks endpoints by their share of total latency-seconds (both sides).
pub fn rank_endpoints(stats: &[EndpointStatRow]) -> Vec<EndpointRank> {
    use std::collections::BTreeMap;
    /// Both sides of one endpoint added up; percentiles weighted by requests.
    #[derive(Default)]
    struct Sum {
        requests: u64,
        errors: u64,
        time_ms: f64,
        p50_weighted: f64,
        p99_weighted: f64,
        weight: u64,
    }
    let mut merged: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for s in stats {
        let e = merged
            .entry((s.route.clone(), s.endpoint.clone()))
            .or_default();
        e.requests += s.requests;
        e.errors += s.errors;
        e.time_ms += s.latency_sum_ms;
        if let (Some(p50), Some(p99)) = (s.p50_ms, s.p99_ms) {
            e.p50_weighted += p50 * s.requests as f64;
            e.p99_weighted += p99 * s.requests as f64;
            e.weight += s.requests;
        }
    }
    let total: f64 = merged.values().map(|e| e.time_ms).sum();
    let mut ranked: Vec<EndpointRank> = merged
        .into_iter()
        .map(|((route, endpoint), e)| EndpointRank {
            rank: 0,
            route,
            endpoint,
            requests: e.requests,
            error_rate: (e.requests > 0).then(|| e.errors as f64 / e.requests as f64),
            p50_ms: (e.weight > 0).then(|| e.p50_weighted / e.weight as f64),
            p99_ms: (e.weight > 0).then(|| e.p99_weighted / e.weight as f64),
            share: if total > 0.0 { e.time_ms / total } else { 0.0 },
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
    for (i, r) in ranked.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    ranked
}

/// Noise learned on a route, for the report.
pub fn noise_entries(route: &str, learned: &[LearnedNoise]) -> Vec<NoiseEntry> {
    learned
        .iter()
        .map(|n| NoiseEntry {
            route: route.to_string(),
            endpoint: n.endpoint.clone(),
            path: n.path.clone(),
            legacy_rate: n.legacy_rate,
            candidate_rate: n.candidate_rate,
            samples: n.samples,
        })
        .collect()
}

/// Legacy-side client requests per route in the window, from aggregates.
pub fn legacy_requests(aggregates: &[AggregateRow], route: &str, since_ms: i64) -> u64 {
    aggregates
        .iter()
        .filter(|a| a.route == route && a.side == "legacy" && a.bucket_start_ms >= since_ms)
        .map(|a| a.requests)
        .sum()
}

/// The verdict from what legacy still serves and whether anything was seen.
pub fn verdict(serves: &[LegacyServes], traffic_seen: bool) -> Verdict {
    let (ready, summary) = if !traffic_seen {
        (
            false,
            "no traffic measured yet: nothing can be concluded".to_string(),
        )
    } else if serves.is_empty() {
        (true, "legacy can be decommissioned: it answered no client request through the proxy in the whole window".to_string())
    } else {
        let requests: u64 = serves.iter().map(|s| s.requests).sum();
        (
            false,
            format!(
                "legacy still serves {} route(s) ({requests} requests in the window)",
                serves.len()
            ),
        )
    };
    Verdict {
        legacy_can_be_decommissioned: ready,
        summary,
        caveat: CAVEAT.to_string(),
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{:.2}%", v * 100.0))
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
}

/// The report as markdown, for people.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("# Migration report\n\n");
    out.push_str(&format!(
        "Generated {}; figures since {}.\n\n",
        report.generated_at, report.window_from
    ));
    out.push_str(&format!(
        "**{}**  \n_Caveat: {}._\n\n",
        report.verdict.summary, report.verdict.caveat
    ));
    out.push_str("## Where the traffic and the time go\n\n");
    out.push_str("| rank | route | endpoint | requests | error rate | p50 ms | p99 ms | share of time |\n|---:|---|---|---:|---:|---:|---:|---:|\n");
    for e in report.endpoints.iter().take(50) {
        out.push_str(&format!(
            "| {} | {} | `{}` | {} | {} | {} | {} | {:.1}% |\n",
            e.rank,
            e.route,
            e.endpoint,
            e.requests,
            opt_pct(e.error_rate),
            opt_ms(e.p50_ms),
            opt_ms(e.p99_ms),
            e.share * 100.0
        ));
    }
    out.push_str("\n## Routes\n\n| route | stage | weight | state | comparisons | match rate |\n|---|---|---:|---|---:|---:|\n");
    for r in &report.routes {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.stage,
            r.weight,
            r.state,
            r.compared,
            opt_pct(r.match_rate)
        ));
    }
    let fields: Vec<_> = report
        .routes
        .iter()
        .flat_map(|r| r.top_mismatching_fields.iter().map(move |f| (r, f)))
        .collect();
    if !fields.is_empty() {
        out.push_str("\n## Fields that differ most\n\n");
        for (r, f) in fields {
            out.push_str(&format!(
                "- {}: `{}` differs in {:.1}% of `{}`\n",
                r.name,
                f.path,
                f.rate * 100.0,
                f.endpoint
            ));
        }
    }
    out.push_str("\n## Learned noise\n\n");
    if report.noise.is_empty() {
        out.push_str("None learned.\n");
    }
    for n in &report.noise {
        out.push_str(&format!(
            "- {} `{}` `{}`: legacy differs from itself in {:.1}%, the candidate in {:.1}% ({} legacy pairs)\n",
            n.route,
            n.endpoint,
            n.path,
            n.legacy_rate * 100.0,
            n.candidate_rate * 100.0,
            n.samples
        ));
    }
    out.push_str("\n## Accepted differences\n\n");
    if report.accepted.is_empty() {
        out.push_str("None.\n");
    }
    for a in &report.accepted {
        out.push_str(&format!(
            "- {} `{}` `{}` ({}): {}\n",
            a.route, a.endpoint, a.path, a.at, a.note
        ));
    }
    out.push_str("\n## What legacy still serves\n\n");
    if report.legacy_still_serves.is_empty() {
        out.push_str("Nothing.\n");
    }
    for s in &report.legacy_still_serves {
        out.push_str(&format!(
            "- {}: {} ({} requests)",
            s.route, s.reason, s.requests
        ));
        if !s.endpoints.is_empty() {
            out.push_str(&format!(
                ": {}",
                s.endpoints
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push('\n');
    }
    out
}

/// The inputs of `strangler roi`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoiInputs {
    /// Fraction of infrastructure saved by the rewrite (0.3 = 30%).
    pub performance_gain: f64,
    pub instances: f64,
    pub instance_cost_per_month: f64,
    pub months: u32,
    pub incidents_avoided: f64,
    pub cost_per_incident: f64,
    pub productivity_gain: f64,
    pub engineer_months: f64,
    pub cost_per_engineer_month: f64,
    pub velocity_loss: f64,
}

/// The arithmetic of `strangler roi`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Roi {
    pub infrastructure_savings: f64,
    pub incident_savings: f64,
    pub productivity_gain: f64,
    pub benefit: f64,
    pub engineering_cost: f64,
    pub velocity_loss: f64,
    pub cost: f64,
    pub net: f64,
    /// The first month whose cumulative benefit covers the cost.
    pub break_even_month: Option<u32>,
}

/// Why ROI inputs were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RoiError(pub String);

/// Computes the ROI: benefit = gain × instances × monthly cost × months +
/// incidents avoided × cost per incident + productivity gain; cost =
/// engineer-months × cost per engineer-month + velocity loss. Benefits
/// accrue evenly over the months; the cost is paid up front.
pub fn roi(i: &RoiInputs) -> Result<Roi, RoiError> {
    let named = [
        ("--performance-gain", i.performance_gain),
        ("--instances", i.instances),
        ("--instance-cost", i.instance_cost_per_month),
        ("--incidents-avoided", i.incidents_avoided),
        ("--incident-cost", i.cost_per_incident),
        ("--productivity-gain", i.productivity_gain),
        ("--engineer-months", i.engineer_months),
        ("--engineer-month-cost", i.cost_per_engineer_month),
        ("--velocity-loss", i.velocity_loss),
    ];
    for (flag, value) in named {
        if !value.is_finite() || value < 0.0 {
            return Err(RoiError(format!(
                "{flag} must be a number of zero or more, not {value}"
            )));
        }
    }
    if i.performance_gain > 1.0 {
        return Err(RoiError(format!(
            "--performance-gain is a fraction of the infrastructure saved (0 to 1), not {}",
            i.performance_gain
        )));
    }
    if i.months == 0 {
        return Err(RoiError("--months must be at least 1".into()));
    }
    let months = f64::from(i.months);
    let infrastructure_savings =
        i.performance_gain * i.instances * i.instance_cost_per_month * months;
    let incident_savings = i.incidents_avoided * i.cost_per_incident;
    let benefit = infrastructure_savings + incident_savings + i.productivity_gain;
    let engineering_cost = i.engineer_months * i.cost_per_engineer_month;
    let cost = engineering_cost + i.velocity_loss;
    let monthly = benefit / months;
    let break_even_month = if cost <= 0.0 {
        Some(0)
    } else if monthly <= 0.0 {
        None
    } else {
        let month = (cost / monthly).ceil();
        (month <= months).then_some(month as u32)
    };
    Ok(Roi {
        infrastructure_savings,
        incident_savings,
        productivity_gain: i.productivity_gain,
        benefit,
        engineering_cost,
        velocity_loss: i.velocity_loss,
        cost,
        net: benefit - cost,
        break_even_month,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(
        route: &str,
        endpoint: &str,
        side: &str,
        requests: u64,
        time_ms: f64,
    ) -> EndpointStatRow {
        EndpointStatRow {
            route: route.into(),
            endpoint: endpoint.into(),
            side: side.into(),
            requests,
            errors: 0,
            bytes: 0,
            latency_sum_ms: time_ms,
            p50_ms: Some(time_ms / requests as f64),
            p99_ms: Some(time_ms / requests as f64),
            last_bucket_ms: 0,
        }
    }

    #[test]
    fn endpoints_rank_by_share_of_time_across_sides() {
        let ranked = rank_endpoints(&[
            stat("a", "GET /cheap", "legacy", 1000, 1000.0),
            stat("a", "GET /slow", "legacy", 10, 2000.0),
            stat("a", "GET /slow", "candidate", 10, 1000.0),
        ]);
        assert_eq!(ranked[0].endpoint, "GET /slow");
        assert_eq!((ranked[0].rank, ranked[0].requests), (1, 20));
        assert!((ranked[0].share - 0.75).abs() < 1e-9);
    }

    #[test]
    fn the_verdict_needs_traffic_and_an_empty_list() {
        assert!(!verdict(&[], false).legacy_can_be_decommissioned);
        assert!(verdict(&[], true).legacy_can_be_decommissioned);
        let serves = [LegacyServes {
            route: "_default".into(),
            endpoints: vec![],
            reason: "requests that match no route".into(),
            requests: 3,
        }];
        let v = verdict(&serves, true);
        assert!(!v.legacy_can_be_decommissioned);
        assert!(v.caveat.contains("bypass"));
    }

    fn inputs() -> RoiInputs {
        RoiInputs {
            performance_gain: 0.5,
            instances: 10.0,
            instance_cost_per_month: 200.0,
            months: 24,
            incidents_avoided: 4.0,
            cost_per_incident: 5000.0,
            productivity_gain: 10_000.0,
            engineer_months: 6.0,
            cost_per_engineer_month: 15_000.0,
            velocity_loss: 20_000.0,
        }
    }

    #[test]
    fn roi_prints_both_sides_net_and_break_even() {
        let r = roi(&inputs()).unwrap();
        assert_eq!(r.infrastructure_savings, 0.5 * 10.0 * 200.0 * 24.0);
        assert_eq!(r.benefit, 24_000.0 + 20_000.0 + 10_000.0);
        assert_eq!(r.cost, 90_000.0 + 20_000.0);
        assert_eq!(r.net, 54_000.0 - 110_000.0);
        assert_eq!(r.break_even_month, None, "never within 24 months");
        let mut long = inputs();
        long.months = 120;
        long.performance_gain = 1.0;
        let r = roi(&long).unwrap();
        // Monthly benefit (240,000 + 30,000) / 120 = 2,250; cost 110,000 → month 49.
        assert_eq!(r.break_even_month, Some(49));
    }

    #[test]
    fn roi_refuses_bad_inputs_clearly() {
        let mut bad = inputs();
        bad.instance_cost_per_month = -1.0;
        assert!(roi(&bad).unwrap_err().0.contains("--instance-cost"));
        let mut zero = inputs();
        zero.months = 0;
        assert!(roi(&zero).unwrap_err().0.contains("--months"));
    }
}
