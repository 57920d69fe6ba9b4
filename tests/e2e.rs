//! End-to-end tests: real upstreams on ephemeral loopback ports, strangler
//! started in-process (or as its binary), real HTTP over real sockets.

mod support;

mod admin;
mod cli;
mod dashboard;
mod demo;
mod errors;
mod fleet;
mod http1;
mod hygiene;
mod lifecycle;
mod pool;
mod protocols;
mod report;
mod rollout;
mod routing;
mod shadow;
mod split;
