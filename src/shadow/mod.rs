//! Shadow traffic (SPEC §4): mirror eligible requests to the other side,
//! compare the answers, count and keep the differences.
//!
//! The client is always answered by the primary side, as soon as it
//! answers; nothing here can delay, change or fail that answer:
//! - eligibility is decided from the request head alone ([`plan`]);
//! - bodies are copied aside while they stream (`tee`), bounded by
//!   `max_body_buffer` per body and `server.shadow_memory` in total;
//! - at most `shadow.max_in_flight` mirrors per route run at once, paced
//!   evenly while more than half run ([`slots`]; beyond it the mirror is
//!   dropped);
//! - the mirror runs in its own task with its own `shadow.timeout`, on a
//!   runtime and thread of lower priority of its own ([`executor`]).
//!
//! Every mirror that does not end in a comparison is counted with its
//! reason in `strangler_shadow_dropped_total`; a candidate that times out or
//! fails at the transport also counts against the match rate.

pub mod executor;
pub mod keep;
pub mod mirror;
pub mod slots;
pub mod tee;

use std::sync::{Arc, OnceLock};

use http::Method;
use prometheus_client::metrics::counter::Counter;

use crate::compare::{EndpointTemplates, Rules};
use crate::config::{RouteConfig, Stage};
use crate::metrics::{Metrics, Name, ShadowDropLabels};
use crate::proxy::upstream::Upstream;
use crate::rollout::state::{RolloutState, RouteStatus};
use crate::rollout::window::Side;
use crate::runtime::RouteRuntime;
use slots::{MirrorSlots, Slot};

/// Why a mirror ended without a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `shadow.max_in_flight` mirrors already running for the route, or
    /// more than half and the pace says not yet (see [`slots`]).
    Overload,
    /// `server.shadow_memory` spent.
    Memory,
    /// The request body is larger than `max_body_buffer`.
    TooLarge,
    /// A write without `allow_writes` (or any write in the reverse shadow).
    UnsafeMethod,
    /// Under `shadow.exclude`.
    Excluded,
    /// The mirrored side did not answer within `shadow.timeout`.
    Timeout,
    /// The primary failed (502/504) or the client went away: nothing to compare.
    PrimaryFailed,
}

impl DropReason {
    /// How many reasons there are (see [`DropCounters`]).
    const COUNT: usize = 7;

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Overload => "overload",
            DropReason::Memory => "memory",
            DropReason::TooLarge => "too_large",
            DropReason::UnsafeMethod => "unsafe_method",
            DropReason::Excluded => "excluded",
            DropReason::Timeout => "timeout",
            DropReason::PrimaryFailed => "primary_failed",
        }
    }
}

/// Which way a mirror goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Legacy serves; the candidate (or `shadow.upstream`) gets the copy.
    ToCandidate,
    /// The candidate serves; legacy gets the copy (the reverse shadow of
    /// the `candidate` stage, safe methods only).
    ToLegacy,
}

/// What shadowing does with one request.
#[derive(Debug)]
pub enum Plan {
    /// Not shadowed (stage, sampling, method not listed, upgrade…).
    Off,
    /// Would be shadowed but cannot be: counted.
    Dropped(DropReason),
    /// Mirror it.
    Mirror {
        direction: Direction,
        slot: Slot,
        /// Also send the request to legacy a second time (or to the
        /// secondary) to learn noise.
        learn_noise: bool,
    },
}

/// A route's shadowing resources in one snapshot.
pub struct RouteShadow {
    pub slots: MirrorSlots,
    pub rules: Arc<Rules>,
    /// Where candidate mirrors go: `shadow.upstream` or the candidate.
    pub target: Arc<Upstream>,
    pub secondary: Option<Arc<Upstream>>,
    pub endpoints: Arc<EndpointTemplates>,
    pub drops: DropCounters,
    pub match_samples: keep::MatchSampling,
}

/// The route's `strangler_shadow_dropped_total` counters, one per reason,
/// each looked up in the metric family at the route's first drop for that
/// reason (so a series appears when it first counts, as before) and then
/// kept: behind a slow candidate nearly every request is dropped as
/// `overload`, and the lookup hashed the labels under the family's lock.
#[derive(Default)]
pub struct DropCounters([OnceLock<Counter>; DropReason::COUNT]);

impl DropCounters {
    fn count(&self, metrics: &Metrics, route: &Name, reason: DropReason) {
        let lookup = || {
            metrics
                .shadow_dropped
                .get_or_create(&ShadowDropLabels {
                    route: route.clone(),
                    reason: reason.as_str(),
                })
                .clone()
        };
        match self.0.get(reason as usize) {
            Some(kept) => kept.get_or_init(lookup).inc(),
            // A reason added without raising `DropReason::COUNT`.
            None => lookup().inc(),
        };
    }
}

/// Safe methods (RFC 9110 §9.2.1): the only ones mirrored to legacy, and
/// the only ones mirrored at all unless `allow_writes`.
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Decides from the request head whether and how to mirror it.
pub fn plan(
    config: &RouteConfig,
    shadow: &RouteShadow,
    status: &RouteStatus,
    side: Side,
    method: &Method,
    path: &str,
    special: bool,
) -> Plan {
    let direction = match (status.stage, side) {
        (Stage::Shadow, _) | (Stage::Canary, Side::Legacy) => Direction::ToCandidate,
        (Stage::Candidate, Side::Candidate) if status.state != RolloutState::Complete => {
            Direction::ToLegacy
        }
        _ => return Plan::Off,
    };
    // Overridden, upgrade and event-stream requests are never mirrored.
    if special {
        return Plan::Off;
    }
    let settings = &config.shadow;
    let safe = is_safe(method);
    match direction {
        Direction::ToLegacy if !safe => return Plan::Off,
        Direction::ToCandidate if !safe && !settings.allow_writes => {
            return Plan::Dropped(DropReason::UnsafeMethod)
        }
        Direction::ToCandidate if !settings.methods.contains(method) => return Plan::Off,
        _ => {}
    }
    if settings
        .exclude
        .iter()
        .any(|prefix| path_has_prefix(path, prefix))
    {
        return Plan::Dropped(DropReason::Excluded);
    }
    if settings.sample < 1.0 && rand::random::<f64>() >= settings.sample {
        return Plan::Off;
    }
    let Some(slot) = shadow.slots.try_admit() else {
        return Plan::Dropped(DropReason::Overload);
    };
    let learn_noise = direction == Direction::ToCandidate
        && safe
        && (shadow.secondary.is_some()
            || (settings.noise_sample > 0.0 && rand::random::<f64>() < settings.noise_sample));
    Plan::Mirror {
        direction,
        slot,
        learn_noise,
    }
}

/// `exclude` entries are path prefixes on whole segments, like routes.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Counts a mirror that ended without a comparison, in the metrics and in
/// the route's window.
pub fn count_drop(metrics: &Metrics, route: &RouteRuntime, reason: DropReason) {
    route.shadow.drops.count(metrics, &route.name, reason);
    route
        .control
        .window
        .load()
        .shadow
        .dropped
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_REASONS: [DropReason; 7] = [
        DropReason::Overload,
        DropReason::Memory,
        DropReason::TooLarge,
        DropReason::UnsafeMethod,
        DropReason::Excluded,
        DropReason::Timeout,
        DropReason::PrimaryFailed,
    ];

    /// The kept counters are the family's series: what they count is what
    /// `/metrics` shows, per route and reason, and a series appears only
    /// once it has counted.
    #[test]
    fn kept_drop_counters_count_into_the_family_series() {
        let metrics = Metrics::new();
        let (orders, users) = (Name::from("orders"), Name::from("users"));
        let (drops, other_route) = (DropCounters::default(), DropCounters::default());
        for _ in 0..3 {
            drops.count(&metrics, &orders, DropReason::Overload);
        }
        drops.count(&metrics, &orders, DropReason::Timeout);
        other_route.count(&metrics, &users, DropReason::Overload);

        let series = |route: &Name, reason: DropReason| {
            metrics
                .shadow_dropped
                .get(&ShadowDropLabels {
                    route: route.clone(),
                    reason: reason.as_str(),
                })
                .map(|counter| counter.get())
        };
        assert_eq!(series(&orders, DropReason::Overload), Some(3));
        assert_eq!(series(&orders, DropReason::Timeout), Some(1));
        assert_eq!(series(&users, DropReason::Overload), Some(1));
        assert_eq!(series(&orders, DropReason::Memory), None, "never counted");
    }

    #[test]
    fn every_drop_reason_has_a_kept_counter() {
        for reason in ALL_REASONS {
            assert!((reason as usize) < DropReason::COUNT, "{}", reason.as_str());
        }
        assert_eq!(ALL_REASONS.len(), DropReason::COUNT);
    }
}
