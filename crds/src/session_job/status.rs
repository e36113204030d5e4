//! `SessionJob.status`: written only by the operator (status subresource), never by users.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sink::SinkMode;

/// The `type`s of the conditions in `status.conditions`.
pub mod condition_types {
    /// The job runs with all replicas ready and writes to its effective sink.
    pub const READY: &str = "Ready";
    /// The operator is changing the job (rollout, scaling, restore, cutover).
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs attention; the reason and message say what.
    pub const DEGRADED: &str = "Degraded";
    /// The source partitions divide evenly among the replicas (`partitions % parallelism == 0`).
    pub const BALANCED_ASSIGNMENT: &str = "BalancedAssignment";
    /// Checkpoints complete on schedule and retention keeps up.
    pub const CHECKPOINTS_HEALTHY: &str = "CheckpointsHealthy";
    /// The history store has room: used space is below the warning margin of the eviction mark.
    pub const HISTORY_STORE_CAPACITY: &str = "HistoryStoreCapacity";
    /// Side-running jobs only: warm-up elapsed and output at parity with the replaced job, so a
    /// cutover may start; False with the reason while not (e.g. `HistoryStoreFull`, a warning).
    pub const READY_FOR_CUTOVER: &str = "ReadyForCutover";
}

/// Observed state of a SessionJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase: `Pending`, `Running`, `SideRunning`, `CuttingOver`, `Stopped`, `Retired`
    /// (replaced by a cutover) or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionJobPhase>,
    /// Standard conditions: Ready, Progressing, Degraded, BalancedAssignment,
    /// CheckpointsHealthy, HistoryStoreCapacity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Worker pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Worker pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Where the job writes sessions now. Set from `spec.sink.initialMode` when the job is
    /// created and changed only by a cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_sink: Option<EffectiveSink>,
    /// The latest complete checkpoint and retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointsStatus>,
    /// Capacity of the history store (Aerospike backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_store: Option<HistoryStoreStatus>,
    /// Progress of the side-run (jobs with `spec.sideRun` only): warm-up and the comparison
    /// with the job it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_run: Option<SideRunStatus>,
}

/// How a side-running job compares with the job it replaces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SideRunStatus {
    /// When the warm-up started (the first time all workers of this job were ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_start_time: Option<Time>,
    /// True once `sideRun.warmup` has elapsed since `warmupStartTime`.
    #[serde(default)]
    pub warmup_elapsed: bool,
    /// The latest comparison of both jobs over one parity window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<ParityResult>,
    /// Totals of both jobs at the start of the current parity window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ParityBaseline>,
    /// True when warm-up has elapsed, parity passed and neither history store is Breached or
    /// StopWrites: a cutover may start.
    #[serde(default)]
    pub ready_for_cutover: bool,
    /// The SessionJobCutover the operator created (`cutover: Automatic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<String>,
}

/// Counter totals of both jobs at the start of a parity window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParityBaseline {
    /// When the totals were taken.
    pub time: Time,
    /// The replaced job's totals.
    pub old: JobCounters,
    /// This job's totals.
    pub new: JobCounters,
}

/// Totals of a job's workers (sums of their `/status` counters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCounters {
    /// Events processed.
    pub events: i64,
    /// Sessions emitted (closed).
    pub sessions: i64,
    /// Late updates emitted.
    pub late_updates: i64,
    /// Records sent to quarantine (malformed).
    pub quarantined: i64,
}

/// One parity comparison: what both jobs did over the same interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParityResult {
    /// True when every figure is within the tolerances of `sideRun.parity`.
    pub passed: bool,
    /// Start of the compared interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<Time>,
    /// End of the compared interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<Time>,
    /// What the replaced job did over the interval.
    pub old: JobCounters,
    /// What this job did over the interval.
    pub new: JobCounters,
    /// The largest relative difference of any figure, in basis points of the old job's value.
    pub worst_difference_basis_points: i64,
    /// Which figures differ beyond the tolerance, or why the comparison could not be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle phase of a SessionJob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SessionJobPhase {
    /// Accepted; workers are not running yet.
    #[default]
    Pending,
    /// Workers run and write to the production topic.
    Running,
    /// Workers run next to the job this one replaces and write to the dead-letter topic.
    SideRunning,
    /// A cutover involving this job is in progress.
    CuttingOver,
    /// Workers are stopped (scaled to zero) with a final checkpoint.
    Stopped,
    /// Replaced by another job through a cutover; it no longer runs.
    Retired,
    /// The job cannot run; see the Degraded condition.
    Failed,
}

/// The sink a job writes to now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSink {
    /// `Production` or `DeadLetter`.
    pub mode: SinkMode,
    /// The topic that mode writes to.
    pub topic: String,
    /// When the job started writing there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Checkpoint state as the operator last saw it in the object store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointsStatus {
    /// Id of the latest complete checkpoint (its manifest exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_id: Option<String>,
    /// When the latest complete checkpoint finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_time: Option<Time>,
    /// Total size of the latest complete checkpoint, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_bytes: Option<i64>,
    /// How long the latest complete checkpoint took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_duration_millis: Option<i64>,
    /// Complete checkpoints currently retained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_count: Option<i32>,
}

/// History store capacity as reported by the worst Aerospike node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryStoreStatus {
    /// `Healthy`, `Warning` (within the warn margin of the eviction mark), `Breached` (past the
    /// eviction mark: records are being evicted), `StopWrites` (writes refused), `Unreachable`
    /// (no node answered the operator) or `Unknown`.
    pub level: HistoryStoreLevel,
    /// Used storage of the namespace on the worst node, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_percent: Option<i32>,
    /// Eviction mark (high-water mark) of the namespace, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_mark_percent: Option<i32>,
    /// Stop-writes mark of the namespace, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_writes_mark_percent: Option<i32>,
    /// True when the namespace's eviction mark is 0: Aerospike never evicts early, so the
    /// warn margin applies to the stop-writes mark instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_disabled: Option<bool>,
    /// The node these figures come from (the one closest to its eviction mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the eviction mark will be reached at the recent growth rate. Unset when usage is
    /// not growing or not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_eviction_mark_time: Option<Time>,
    /// When the operator last queried the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}

/// How close the history store is to evicting or refusing writes.
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
pub enum HistoryStoreLevel {
    /// Not measured yet.
    #[default]
    Unknown,
    /// No node of the cluster answered the operator's query: capacity is not known.
    Unreachable,
    /// Below the warn margin.
    Healthy,
    /// Within the warn margin of the eviction mark.
    Warning,
    /// Past the eviction mark: Aerospike evicts records early.
    Breached,
    /// Past the stop-writes mark: Aerospike refuses writes.
    StopWrites,
}
