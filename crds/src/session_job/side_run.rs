//! `spec.sideRun`: run this job next to the one it replaces, writing to the dead-letter topic,
//! until its state is warm and its output matches; then cut over (seed 000, "side-run then
//! switch").

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DurationString;
use crate::names::ObjectName;
use crate::refs::WorkloadRef;

/// Default of `sideRun.parity.window`.
pub const DEFAULT_PARITY_WINDOW: &str = "1h";
/// Default of both parity tolerances, in basis points (0.1 %).
pub const DEFAULT_PARITY_TOLERANCE_BASIS_POINTS: i32 = 10;

/// Side-run settings of a job that replaces another one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SideRunSpec {
    /// Name of the running SessionJob (same namespace) this job replaces. Must not be this
    /// job's own name.
    pub replaces: ObjectName,
    /// How long this job side-runs before its state counts as warm, i.e. before it has seen
    /// every event the old job's history still uses. Default: `history.ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<DurationString>,
    /// Tolerances of the automatic comparison of both jobs' output after warm-up.
    #[serde(default)]
    pub parity: ParitySpec,
    /// `Manual` (default): after warm-up and parity pass, wait for a user to create a
    /// SessionJobCutover. `Automatic`: the operator creates it.
    #[serde(default)]
    pub cutover: CutoverMode,
    /// Workloads that produce into the source topics; the cutover scales them to zero while both
    /// jobs drain and restores them afterwards (at most 32, unique by kind and name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into(), "name".into()]))]
    pub producers: Vec<WorkloadRef>,
}

/// How far the new job's output may differ from the old job's over the same input and still
/// pass. Tolerances are in basis points: 1 = 0.01 %, 100 = 1 %, 10000 = 100 %.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParitySpec {
    /// Event-time window of closed sessions both jobs emitted that is compared. Default: `1h`.
    #[serde(default = "default_parity_window")]
    pub window: DurationString,
    /// Largest allowed difference in the number of sessions, relative to the old job, in basis
    /// points (0 to 10000). Default: 10 (0.1 %).
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_count_difference_basis_points: i32,
    /// Largest allowed share of sessions (matched by session id) whose contents differ, in basis
    /// points (0 to 10000). Default: 10 (0.1 %).
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_mismatch_basis_points: i32,
}

impl Default for ParitySpec {
    fn default() -> Self {
        Self {
            window: default_parity_window(),
            max_count_difference_basis_points: default_tolerance(),
            max_mismatch_basis_points: default_tolerance(),
        }
    }
}

/// Who starts the cutover once a side-run is warm and at parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CutoverMode {
    /// A user creates the SessionJobCutover.
    #[default]
    Manual,
    /// The operator creates the SessionJobCutover.
    Automatic,
}

fn default_parity_window() -> DurationString {
    DEFAULT_PARITY_WINDOW.into()
}

fn default_tolerance() -> i32 {
    DEFAULT_PARITY_TOLERANCE_BASIS_POINTS
}
