//! The Sessionizer worker as a library: the streaming job that reads Kafka, keeps open sessions in
//! memory, keeps history in Aerospike or an embedded store, checkpoints to object storage and emits
//! sessions. `main.rs` only parses flags and calls in here.
//!
//! So far the worker is its runtime only: it loads the operator's configuration, knows its place
//! in the job, and serves its health, metrics and status endpoints until it is told to stop.
//! [`run`] owns startup and shutdown, and is where the streaming job will be started.

/// The worker's version, as reported in logs, `/status` and `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod cli;
pub mod config;
pub mod engine;
pub mod event;
pub mod history;
pub mod http;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod oracle;
pub mod run;
pub mod session;
