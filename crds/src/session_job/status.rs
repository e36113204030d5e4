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
