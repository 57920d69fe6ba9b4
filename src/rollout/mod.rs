//! Rollout: the live stage, weight and state of each route, the windows of
//! counters the gates are judged on, the gates themselves, the success
//! criteria they read, and the controller that acts on them.

pub mod controller;
pub mod criteria;
pub mod gates;
pub mod state;
pub mod window;
