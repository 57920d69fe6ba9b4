//! The data path: accept, route, choose a side, forward, stream back.

pub mod body;
pub mod error;
pub mod framing;
pub mod h1;
pub mod headers;
pub mod inbound;
pub mod pool;
pub mod server;
pub mod service;
pub mod upstream;
pub mod wire;
