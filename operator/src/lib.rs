//! The Sessionizer operator as a library: controllers for `SessionJob` (and later
//! `SessionJobCutover`), the cutover state machine, checkpoint retention and the Aerospike
//! high-water-mark monitor. `main.rs` only parses flags and calls [`run::run`], so every piece
//! stays testable without a process.
//!
//! Layout: [`session_job`] is the SessionJob controller (pure builders and status, plus the
//! reconcile that applies them); [`cutover`] is the SessionJobCutover controller (a pure state
//! machine and the stages' idempotent work); [`side_run`] compares a side-running job with the one
//! it replaces; [`workers`] is the operator's side of the worker HTTP contract; [`plugin`] is
//! `kubectl sessionizer`; [`run`] wires the controllers to [`leader`] election, the [`http`]
//! server and [`metrics`]; [`names`] holds every label, annotation and name the operator writes.

pub mod checkpoints;
pub mod cli;
pub mod context;
pub mod cutover;
pub mod health;
pub mod history_store;
pub mod http;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod run;
pub mod session_job;
pub mod side_run;
pub mod workers;

/// The operator's version, as reported in logs and `/metrics`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
