//! Noise learning (SPEC §4): which differences legacy makes with itself.
//!
//! Some fields differ on every answer (timestamps, request ids, shuffled
//! sets) and would make every comparison a mismatch. The proxy sends some
//! requests to legacy twice (or to a `secondary`) and records how often the
//! two legacy answers differ, per endpoint template and *normalized* path
//! (`$.items[*].price`, or a header name). A difference is noise when
//!
//! ```text
//! legacy_rate ≥ 0.8 × candidate_rate,   over ≥ 20 legacy pairs
//! legacy_rate    = legacy pairs differing there / legacy pairs of the endpoint
//! candidate_rate = comparisons differing there  / comparisons of the endpoint
//! ```
//!
//! Using rates, not "ever seen", means one odd legacy answer cannot mask a
//! field forever: its legacy rate decays as pairs accumulate while a real
//! candidate bug keeps its candidate rate high. The threshold is evaluated
//! in integers so the 0.8 boundary is exact.
//!
//! Memory is bounded: at most [`MAX_PATHS_PER_ENDPOINT`] paths per endpoint
//! and [`MAX_ENDPOINTS`] endpoints are tracked; the rest are counted as
//! untracked and are never noise.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::path::normalize_path;
use super::{DiffKind, Difference};

/// Legacy pairs an endpoint needs before anything there is noise.
pub const MIN_LEGACY_PAIRS: u64 = 20;
/// Paths tracked per endpoint template.
pub const MAX_PATHS_PER_ENDPOINT: usize = 1_000;
/// Endpoint templates tracked.
pub const MAX_ENDPOINTS: usize = 10_000;

/// What the report shows for one learned noisy path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedNoise {
    pub endpoint: String,
    pub kind: DiffKind,
    /// Normalized: `$.items[*].price`, or a header name.
    pub path: String,
    pub legacy_rate: f64,
    pub candidate_rate: f64,
    /// Legacy pairs the legacy rate was measured over.
    pub samples: u64,
}

/// How often one path differs between legacy and the candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldRate {
    pub kind: DiffKind,
    /// Normalized: `$.items[*].price`, or a header name.
    pub path: String,
    /// Comparisons that differed there.
    pub differs: u64,
    /// `differs` over the endpoint's comparisons.
    pub rate: f64,
    /// Whether it is currently learned as noise.
    pub noise: bool,
}

/// Difference counts at one path.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    legacy: u64,
    candidate: u64,
}

#[derive(Debug, Default)]
struct EndpointNoise {
    legacy_pairs: u64,
    comparisons: u64,
    paths: HashMap<(DiffKind, String), Counts>,
    /// Differences at paths beyond the cap, not tracked.
    untracked: u64,
}

/// Noise statistics for all endpoint templates of one route (or more).
#[derive(Debug, Default)]
pub struct NoiseModel {
    endpoints: HashMap<String, EndpointNoise>,
    /// Records for endpoints beyond [`MAX_ENDPOINTS`].
    untracked_endpoints: u64,
}

impl NoiseModel {
    pub fn new() -> NoiseModel {
        NoiseModel::default()
    }

    /// Records one legacy-vs-legacy pair and its differences.
    pub fn record_legacy_pair(&mut self, endpoint: &str, diffs: &[Difference]) {
        self.record(endpoint, diffs, |e| e.legacy_pairs += 1, |c| c.legacy += 1);
    }

    /// Records one candidate-vs-legacy comparison and its differences.
    pub fn record_comparison(&mut self, endpoint: &str, diffs: &[Difference]) {
        self.record(
            endpoint,
            diffs,
            |e| e.comparisons += 1,
            |c| c.candidate += 1,
        );
    }

    fn record(
        &mut self,
        endpoint: &str,
        diffs: &[Difference],
        count_sample: impl Fn(&mut EndpointNoise),
        count_path: impl Fn(&mut Counts),
    ) {
        if !self.endpoints.contains_key(endpoint) && self.endpoints.len() >= MAX_ENDPOINTS {
            self.untracked_endpoints += 1;
            return;
        }
        let e = self.endpoints.entry(endpoint.to_owned()).or_default();
        count_sample(e);
        // A path counts once per sample, however many indices differ there.
        let keys: HashSet<(DiffKind, String)> = diffs.iter().map(key).collect();
        for k in keys {
            if !e.paths.contains_key(&k) && e.paths.len() >= MAX_PATHS_PER_ENDPOINT {
                e.untracked += 1;
                continue;
            }
            count_path(e.paths.entry(k).or_default());
        }
    }

    /// True when `diff` is noise for `endpoint`. Call it after
    /// [`record_comparison`](Self::record_comparison) for the same
    /// comparison; with no comparison recorded, the candidate rate is
    /// taken as 1.
    pub fn is_noise(&self, endpoint: &str, diff: &Difference) -> bool {
        let Some(e) = self.endpoints.get(endpoint) else {
            return false;
        };
        e.paths.get(&key(diff)).is_some_and(|c| e.noisy(*c))
    }

    /// Every path currently learned as noise, sorted by endpoint and path.
    pub fn learned(&self) -> Vec<LearnedNoise> {
        let mut out: Vec<LearnedNoise> = self
            .endpoints
            .iter()
            .flat_map(|(endpoint, e)| {
                e.paths
                    .iter()
                    .filter(|(_, c)| e.noisy(**c))
                    .map(move |((kind, path), c)| LearnedNoise {
                        endpoint: endpoint.clone(),
                        kind: *kind,
                        path: path.clone(),
                        legacy_rate: ratio(c.legacy, e.legacy_pairs),
                        candidate_rate: ratio(c.candidate, e.comparisons),
                        samples: e.legacy_pairs,
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.endpoint, a.kind, &a.path).cmp(&(&b.endpoint, b.kind, &b.path)));
        out
    }

    /// `(legacy pairs, comparisons)` recorded for an endpoint template.
    pub fn samples(&self, endpoint: &str) -> (u64, u64) {
        self.endpoints
            .get(endpoint)
            .map_or((0, 0), |e| (e.legacy_pairs, e.comparisons))
    }

    /// How often each path differs between legacy and the candidate at
    /// one endpoint ("`$.total` differs in 3.2% of GET /orders/{id}"),
    /// most frequent first, at most `limit` paths.
    pub fn fields(&self, endpoint: &str, limit: usize) -> Vec<FieldRate> {
        let Some(e) = self.endpoints.get(endpoint) else {
            return Vec::new();
        };
        let mut out: Vec<FieldRate> = e
            .paths
            .iter()
            .filter(|(_, c)| c.candidate > 0)
            .map(|((kind, path), c)| FieldRate {
                kind: *kind,
                path: path.clone(),
                differs: c.candidate,
                rate: ratio(c.candidate, e.comparisons),
                noise: e.noisy(*c),
            })
            .collect();
        out.sort_by(|a, b| b.differs.cmp(&a.differs).then_with(|| a.path.cmp(&b.path)));
        out.truncate(limit);
        out
    }

    /// Differences not tracked because of the memory caps.
    pub fn untracked(&self) -> u64 {
        self.untracked_endpoints + self.endpoints.values().map(|e| e.untracked).sum::<u64>()
    }
}

impl EndpointNoise {
    /// `legacy / legacy_pairs ≥ 0.8 × candidate / comparisons`, in integers:
    /// `5 × legacy × comparisons ≥ 4 × candidate × legacy_pairs`.
    fn noisy(&self, c: Counts) -> bool {
        if self.legacy_pairs < MIN_LEGACY_PAIRS || c.legacy == 0 {
            return false;
        }
        let (candidate, comparisons) = if self.comparisons == 0 {
            (1, 1)
        } else {
            (c.candidate, self.comparisons)
        };
        5 * u128::from(c.legacy) * u128::from(comparisons)
            >= 4 * u128::from(candidate) * u128::from(self.legacy_pairs)
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

/// The noise key of a difference: its kind and normalized path.
fn key(d: &Difference) -> (DiffKind, String) {
    let path = match d.kind {
        DiffKind::Body => normalize_path(&d.path),
        _ => d.path.clone(),
    };
    (d.kind, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Change;
    use serde_json::Value;

    const EP: &str = "GET /orders/{id}";

    fn body(path: &str) -> Difference {
        Difference {
            kind: DiffKind::Body,
            path: path.to_owned(),
            change: Change::Changed,
            legacy: Value::Null,
            candidate: Value::Null,
        }
    }

    /// `pairs` legacy pairs of which `noisy` differ at `path`.
    fn with_pairs(pairs: u64, noisy: u64, path: &str) -> NoiseModel {
        let mut m = NoiseModel::new();
        for i in 0..pairs {
            let diffs = if i < noisy { vec![body(path)] } else { vec![] };
            m.record_legacy_pair(EP, &diffs);
        }
        m
    }

    #[test]
    fn field_rates_rank_the_most_frequent_differences() {
        let mut m = NoiseModel::new();
        for i in 0..10 {
            let mut diffs = vec![body("$.total")];
            if i < 3 {
                diffs.push(body("$.items[2].price"));
            }
            if i == 0 {
                diffs.push(body("$.items[5].price"));
            }
            m.record_comparison(EP, &diffs);
        }
        let fields = m.fields(EP, 10);
        assert_eq!(fields.len(), 2, "indices are folded into [*]: {fields:?}");
        assert_eq!(
            (fields[0].path.as_str(), fields[0].differs, fields[0].rate),
            ("$.total", 10, 1.0)
        );
        assert_eq!(
            (fields[1].path.as_str(), fields[1].differs),
            ("$.items[*].price", 3)
        );
        assert!(m.fields("GET /nothing", 10).is_empty());
    }

    #[test]
    fn nothing_is_noise_before_twenty_pairs() {
        let mut m = with_pairs(19, 19, "$.ts");
        m.record_comparison(EP, &[body("$.ts")]);
        assert!(!m.is_noise(EP, &body("$.ts")));
        m.record_legacy_pair(EP, &[body("$.ts")]);
        assert!(m.is_noise(EP, &body("$.ts")));
        assert_eq!(m.samples(EP), (20, 1));
    }

    #[test]
    fn the_point_eight_ratio_is_inclusive() {
        // Legacy rate 16/20 = 0.8; candidate rate 1.0 → 0.8 ≥ 0.8: noise.
        let mut m = with_pairs(20, 16, "$.ts");
        for _ in 0..10 {
            m.record_comparison(EP, &[body("$.ts")]);
        }
        assert!(m.is_noise(EP, &body("$.ts")));
        // 15/20 = 0.75 < 0.8: not noise.
        let mut m = with_pairs(20, 15, "$.ts");
        for _ in 0..10 {
            m.record_comparison(EP, &[body("$.ts")]);
        }
        assert!(!m.is_noise(EP, &body("$.ts")));
        // Candidate rate 0.5 lowers the bar: 8/20 = 0.4 ≥ 0.4.
        let mut m = with_pairs(20, 8, "$.ts");
        for i in 0..10 {
            let d = if i % 2 == 0 {
                vec![body("$.ts")]
            } else {
                vec![]
            };
            m.record_comparison(EP, &d);
        }
        assert!(m.is_noise(EP, &body("$.ts")));
    }

    #[test]
    fn one_odd_legacy_difference_does_not_mask_a_field() {
        let mut m = with_pairs(40, 1, "$.price");
        for _ in 0..10 {
            m.record_comparison(EP, &[body("$.price")]);
        }
        assert!(!m.is_noise(EP, &body("$.price")));
        assert!(m.learned().is_empty());
    }

    #[test]
    fn paths_are_normalized_and_counted_once_per_sample() {
        let mut m = NoiseModel::new();
        for _ in 0..20 {
            m.record_legacy_pair(EP, &[body("$.items[0].ts"), body("$.items[1].ts")]);
        }
        m.record_comparison(EP, &[body("$.items[7].ts")]);
        assert!(m.is_noise(EP, &body("$.items[3].ts")));
        let learned = m.learned();
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].path, "$.items[*].ts");
        assert_eq!(
            (
                learned[0].legacy_rate,
                learned[0].candidate_rate,
                learned[0].samples
            ),
            (1.0, 1.0, 20)
        );
    }

    #[test]
    fn noise_is_per_endpoint_and_kind() {
        let mut m = NoiseModel::new();
        let header = Difference {
            kind: DiffKind::Header,
            ..body("date")
        };
        for _ in 0..20 {
            m.record_legacy_pair(EP, std::slice::from_ref(&header));
        }
        assert!(m.is_noise(EP, &header));
        assert!(!m.is_noise("GET /other", &header));
        assert!(!m.is_noise(
            EP,
            &Difference {
                kind: DiffKind::Trailer,
                ..header.clone()
            }
        ));
    }

    #[test]
    fn tracked_paths_are_capped() {
        let mut m = NoiseModel::new();
        let diffs: Vec<Difference> = (0..MAX_PATHS_PER_ENDPOINT + 5)
            .map(|i| body(&format!("$.f{i}")))
            .collect();
        m.record_legacy_pair(EP, &diffs);
        assert_eq!(m.endpoints[EP].paths.len(), MAX_PATHS_PER_ENDPOINT);
        assert_eq!(m.untracked(), 5);
    }
}
