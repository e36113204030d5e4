//! The `sessionizer.dev/v1alpha1` API: the custom resource types users apply (`SessionJob`,
//! `SessionJobCutover`) and nothing else. This crate holds types only — never client code — so the
//! operator, the worker, the e2e tests and the CRD generator all agree on one definition.
//!
//! Validation lives in the schema (OpenAPI limits and CEL `x-kubernetes-validations` rules), so
//! the API server rejects bad specs with a clear message before the operator sees them; see
//! `VALIDATION.md` next to this crate for the list. The helpers here (parsing durations and sizes,
//! resolving defaults) are pure and never fail on an object the API server admitted.

pub mod crdgen;
pub mod cutover;
pub mod duration;
pub mod names;
pub mod quantity;
pub mod refs;
pub mod session_job;

pub use cutover::{SessionJobCutover, SessionJobCutoverSpec, SessionJobCutoverStatus};
pub use session_job::{SessionJob, SessionJobSpec, SessionJobStatus};

/// API group of every Sessionizer resource.
pub const GROUP: &str = "sessionizer.dev";
/// The one served and stored API version.
pub const VERSION: &str = "v1alpha1";
