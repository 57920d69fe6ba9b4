//! strangler: a reverse proxy for moving an HTTP service to a rewrite,
//! endpoint by endpoint (measure → shadow → canary → decommission).

#[macro_use]
mod stdout;

pub mod admin;
pub mod app;
pub mod cli;
pub mod client;
pub mod compare;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod health;
pub mod last_reads;
pub mod limits;
pub mod measure;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod rollout;
pub mod routing;
pub mod runtime;
pub mod shadow;
pub mod store;
