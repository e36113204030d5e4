//! The Sessionizer operator as a library: controllers for `SessionJob` and `SessionJobCutover`,
//! the cutover state machine, checkpoint retention and the Aerospike high-water-mark monitor.
//! `main.rs` only parses flags and calls in here, so every piece stays testable without a process.

/// The operator's version, as reported in logs and `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
