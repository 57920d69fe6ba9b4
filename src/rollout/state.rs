//! The rollout state of a route and the pure transition function.
//!
//! Every change of stage, weight or state (manual or, later, automatic)
//! goes through [`apply`], which either refuses it with a reason (the admin
//! API answers 409) or returns the new status and the event to record.

use serde::{Deserialize, Serialize};

use crate::config::Stage;

/// SPEC §3: `progressing`, `paused`, `rolled_back` or `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Progressing,
    Paused,
    RolledBack,
    Complete,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "progressing",
            RolloutState::Paused => "paused",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Complete => "complete",
        }
    }
}

/// Where a route stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub stage: Stage,
    /// Candidate share in percent (0 outside `canary`, 100 in `candidate`).
    pub weight: f64,
    pub state: RolloutState,
}

impl RouteStatus {
    /// The status a route starts with from the file's `stage` and `weight`.
    pub fn initial(stage: Stage, weight: f64) -> Self {
        let weight = match stage {
            Stage::Legacy | Stage::Shadow => 0.0,
            Stage::Canary => weight,
            Stage::Candidate => 100.0,
        };
        RouteStatus {
            stage,
            weight,
            state: RolloutState::Progressing,
        }
    }
}

/// Who asked for a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Auto,
    Admin,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Auto => "auto",
            Actor::Admin => "admin",
        }
    }
}

/// A requested change.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Promote,
    Rollback,
    Pause,
    Resume,
    /// Pin the canary weight (percent) and pause automation.
    Weight(f64),
}

/// Why a command was refused (answered with 409).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Conflict(pub String);

/// Applies `command` to `status` given the route's rollout `steps`.
/// Returns the new status and a short reason for the event.
pub fn apply(
    status: &RouteStatus,
    command: &Command,
    steps: &[f64],
) -> Result<(RouteStatus, String), Conflict> {
    let mut next = status.clone();
    let reason = match command {
        Command::Promote => {
            if status.state == RolloutState::Complete {
                return Err(Conflict("the rollout is already complete".into()));
            }
            match status.stage {
                Stage::Legacy => {
                    next.stage = Stage::Shadow;
                    next.weight = 0.0;
                }
                Stage::Shadow | Stage::Canary => {
                    let current = if status.stage == Stage::Shadow {
                        0.0
                    } else {
                        status.weight
                    };
                    let step = steps
                        .iter()
                        .copied()
                        .find(|s| *s > current)
                        .unwrap_or(100.0);
                    set_share(&mut next, step);
                }
                Stage::Candidate => next.state = RolloutState::Complete,
            }
            if next.state == RolloutState::RolledBack {
                next.state = RolloutState::Progressing;
            }
            "manual promotion".to_string()
        }
        Command::Rollback => {
            if matches!(status.stage, Stage::Legacy | Stage::Shadow) {
                return Err(Conflict(format!(
                    "the route is in {}: no candidate traffic to roll back",
                    status.stage
                )));
            }
            next.stage = Stage::Shadow;
            next.weight = 0.0;
            next.state = RolloutState::RolledBack;
            "manual rollback".to_string()
        }
        Command::Pause => {
            match status.state {
                RolloutState::Paused => return Err(Conflict("the route is already paused".into())),
                RolloutState::Complete => {
                    return Err(Conflict("the rollout is complete: nothing to pause".into()))
                }
                _ => {}
            }
            next.state = RolloutState::Paused;
            "paused".to_string()
        }
        Command::Resume => {
            match status.state {
                RolloutState::Paused => {}
                RolloutState::RolledBack => {
                    next.stage = Stage::Shadow;
                    next.weight = 0.0;
                }
                RolloutState::Progressing => {
                    return Err(Conflict("the route is not paused or rolled back".into()))
                }
                RolloutState::Complete => {
                    return Err(Conflict(
                        "the rollout is complete: nothing to resume".into(),
                    ))
                }
            }
            next.state = RolloutState::Progressing;
            "resumed".to_string()
        }
        Command::Weight(weight) => {
            if !(0.0..=100.0).contains(weight) || weight.is_nan() {
                return Err(Conflict(format!("{weight} is not a percentage (0–100)")));
            }
            set_share(&mut next, *weight);
            if *weight < 100.0 {
                next.stage = Stage::Canary;
            }
            next.state = RolloutState::Paused;
            format!("weight pinned at {weight}%")
        }
    };
    Ok((next, reason))
}

/// Moves to the canary step `share`, where 100 means the `candidate` stage.
fn set_share(status: &mut RouteStatus, share: f64) {
    if share >= 100.0 {
        status.stage = Stage::Candidate;
        status.weight = 100.0;
    } else {
        status.stage = Stage::Canary;
        status.weight = share;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: [f64; 4] = [1.0, 10.0, 50.0, 100.0];

    fn status(stage: Stage, weight: f64, state: RolloutState) -> RouteStatus {
        RouteStatus {
            stage,
            weight,
            state,
        }
    }

    #[test]
    fn promote_walks_the_steps() {
        let mut s = RouteStatus::initial(Stage::Legacy, 0.0);
        let mut seen = vec![];
        while s.state != RolloutState::Complete {
            s = apply(&s, &Command::Promote, &STEPS).unwrap().0;
            seen.push((s.stage, s.weight));
        }
        assert_eq!(
            seen,
            vec![
                (Stage::Shadow, 0.0),
                (Stage::Canary, 1.0),
                (Stage::Canary, 10.0),
                (Stage::Canary, 50.0),
                (Stage::Candidate, 100.0),
                (Stage::Candidate, 100.0),
            ]
        );
        assert!(apply(&s, &Command::Promote, &STEPS).is_err());
    }

    #[test]
    fn rollback_returns_to_shadow_and_resume_restarts() {
        let s = status(Stage::Canary, 10.0, RolloutState::Progressing);
        let (rolled, _) = apply(&s, &Command::Rollback, &STEPS).unwrap();
        assert_eq!(rolled, status(Stage::Shadow, 0.0, RolloutState::RolledBack));
        let (resumed, _) = apply(&rolled, &Command::Resume, &STEPS).unwrap();
        assert_eq!(
            resumed,
            status(Stage::Shadow, 0.0, RolloutState::Progressing)
        );
        assert!(apply(&resumed, &Command::Rollback, &STEPS).is_err());
        assert!(apply(&resumed, &Command::Resume, &STEPS).is_err());
    }

    #[test]
    fn weight_pins_and_pauses() {
        let s = status(Stage::Shadow, 0.0, RolloutState::Progressing);
        let (pinned, _) = apply(&s, &Command::Weight(12.5), &STEPS).unwrap();
        assert_eq!(pinned, status(Stage::Canary, 12.5, RolloutState::Paused));
        assert!(apply(&pinned, &Command::Weight(101.0), &STEPS).is_err());
        assert!(apply(&pinned, &Command::Pause, &STEPS).is_err());
    }
}
