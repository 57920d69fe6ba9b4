//! Rollout: the live stage, weight and state of each route, and the
//! windows of counters the gates are judged on.

pub mod controller;
pub mod gates;
pub mod state;
pub mod window;
