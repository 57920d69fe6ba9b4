//! strangler: a reverse proxy for moving an HTTP service to a rewrite,
//! endpoint by endpoint (measure → shadow → canary → decommission).

pub mod cli;
pub mod config;
