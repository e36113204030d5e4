//! `SessionJobCutover.status`: the persisted state of the cutover state machine. Each stage is
//! recorded here before the operator acts on it, so a restarted operator resumes where it was.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::refs::WorkloadKind;

/// The `type`s of the conditions in `status.conditions`.
pub mod condition_types {
    /// The cutover finished (Completed or RolledBack); the reason says which.
    pub const FINISHED: &str = "Finished";
    /// The cutover failed or timed out; the message says where and why.
    pub const FAILED: &str = "Failed";
    /// A human must act (failure after the sink flipped, or rollback disabled).
    pub const NEEDS_ATTENTION: &str = "NeedsAttention";
}

/// Observed state of a cutover.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionJobCutoverStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current stage: `Pending`, `PausingProducers`, `Draining`, `StoppingJobs`,
    /// `FlippingSink`, `Resuming`, `Completed`, `RollingBack`, `RolledBack` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<CutoverStage>,
    /// Start and end time of every stage entered so far, one entry per stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["stage".into()]))]
    pub stages: Vec<StageTiming>,
    /// Standard conditions: Finished, Failed, NeedsAttention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The producers paused by this cutover with the replica counts they had before, so resuming
    /// (or rolling back) restores exactly what was there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into(), "name".into()]))]
    pub producers: Vec<ProducerStatus>,
    /// Human-readable summary of the current stage or of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The id of the final checkpoints both jobs write when they stop (`chk-<unix ms>`), chosen
    /// once when `StoppingJobs` starts so a repeated stop after an operator restart reuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<String>,
    /// Job name → id of the final checkpoint it wrote for this cutover. Checkpoint retention
    /// never deletes these while the cutover exists; a job listed here is held stopped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub final_checkpoints: BTreeMap<String, String>,
    /// True once `FlippingSink` started: from then on the cutover never rolls back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sink_flipped: bool,
    /// The stage that failed, while `RollingBack`, `RolledBack` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<CutoverStage>,
    /// Progress of `Draining`: since when both jobs are fully caught up at the same offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
    /// When the producers were scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers_paused_time: Option<Time>,
    /// How long the producers were paused, in seconds (set when they are restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_pause_seconds: Option<f64>,
    /// The last `sessionizer.dev/approve` annotation value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_approval: Option<String>,
}

/// What `Draining` saw last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// Since when every partition of both jobs is consumed to its log-end offset with nothing in
    /// flight, at the offsets of `fingerprint`; unset while not caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Sum of all consumed positions of both jobs when `since` was set; a change restarts the
    /// stability window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<i64>,
    /// Why the jobs are not drained yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// The stages of a cutover, in order; `RollingBack`, `RolledBack` and `Failed` leave the
/// normal path.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum CutoverStage {
    /// Accepted, not started (e.g. waiting for the other job to be ready).
    #[default]
    Pending,
    /// Scaling each producer workload to zero, remembering its replicas.
    PausingProducers,
    /// Waiting until both jobs consumed every source partition to its end and flushed.
    Draining,
    /// Stopping both jobs with a final checkpoint each.
    StoppingJobs,
    /// Making the production topic the new job's effective sink; the old job is Retired.
    FlippingSink,
    /// Starting the new job from its final checkpoint, then restoring the producers.
    Resuming,
    /// Done: the new job runs on the production topic.
    Completed,
    /// Undoing a failed cutover: restarting the old job, restoring the producers.
    RollingBack,
    /// Undone: the old job runs again as before.
    RolledBack,
    /// Stopped for a human; see the conditions and message.
    Failed,
}

impl CutoverStage {
    /// True when the cutover will not move any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::RolledBack | Self::Failed)
    }

    /// True once the sink has flipped: from here on a failure rolls forward, never back.
    pub fn is_past_flip(self) -> bool {
        matches!(self, Self::Resuming | Self::Completed)
    }

    /// The stage as it appears in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::PausingProducers => "PausingProducers",
            Self::Draining => "Draining",
            Self::StoppingJobs => "StoppingJobs",
            Self::FlippingSink => "FlippingSink",
            Self::Resuming => "Resuming",
            Self::Completed => "Completed",
            Self::RollingBack => "RollingBack",
            Self::RolledBack => "RolledBack",
            Self::Failed => "Failed",
        }
    }
}

/// When one stage started and ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageTiming {
    /// The stage.
    pub stage: CutoverStage,
    /// When the stage started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the stage ended; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

/// A producer paused by the cutover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStatus {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// Name of the workload.
    pub name: String,
    /// Replicas the workload had before the cutover paused it.
    pub original_replicas: i32,
}
