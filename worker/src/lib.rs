//! The Sessionizer worker as a library: the streaming job that reads Kafka, keeps open sessions in
//! memory, keeps history in Aerospike or an embedded store, checkpoints to object storage and emits
//! sessions. `main.rs` only parses flags and calls in here.

/// The worker's version, as reported in logs, `/status` and `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod config;
