//! The Sessionizer worker as a library: the streaming job that reads Kafka, keeps open sessions in
//! memory, keeps history in Aerospike or an embedded store, checkpoints to object storage and emits
//! sessions. `main.rs` only parses flags and calls in here.
//!
//! [`run`] owns startup and shutdown: it loads the operator's configuration, works out the
//! worker's place in the job, opens the history store, serves health, metrics and status, and
//! runs the streaming job ([`stream`]) until it is told to stop.

/// The worker's version, as reported in logs, `/status` and `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod event;
pub mod history;
pub mod http;
pub mod identity;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod oracle;
pub mod reload;
pub mod run;
pub mod session;
pub mod stream;
