//! Rollout: the live stage, weight and state of each route, and the
//! windows of counters the gates are judged on.

pub mod criteria;
pub mod state;
pub mod window;
