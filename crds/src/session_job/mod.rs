//! `SessionJob` (short name `sj`): one sessionizing streaming job, run by the operator as a
//! StatefulSet of workers.
//!
//! Cross-field rules live here, on the spec (`self` = spec) or on the whole object (`self` =
//! object, for `metadata.name`); rules about one section live with that section.

mod checkpoints;
mod effective;
mod history;
mod kafka;
mod pod;
mod session;
mod side_run;
mod sink;
mod status;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use checkpoints::{
    CheckpointsSpec, DEFAULT_INTERVAL, DEFAULT_RESTORE_FROM, DEFAULT_RETAIN, RestoreFrom,
    SUPPORTED_SCHEMES,
};
pub use effective::{SessionSettings, SpecError};
pub use history::{
    AerospikeSpec, AerospikeTls, CompressionCodec, CompressionSpec, DEFAULT_AEROSPIKE_TIMEOUT,
    DEFAULT_HWM_POLL_INTERVAL, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BACKOFF, DEFAULT_TTL,
    DEFAULT_WARN_MARGIN_PERCENT, DEFAULT_ZSTD_LEVEL, HighWaterMarkSpec, HistoryBackend,
    HistorySpec, MAX_ZSTD_LEVEL, MIN_ZSTD_LEVEL, RetrySpec,
};
pub use kafka::{KafkaSasl, KafkaSpec, KafkaTls, SaslMechanism, SourceKind, SourceTopic};
pub use pod::{PodTemplateOverrides, RESERVED_PREFIX};
pub use session::{
    DEFAULT_GAP, DEFAULT_IDLE_SOURCE_TIMEOUT, DEFAULT_LATE_UPDATE_INTERVAL,
    DEFAULT_MAX_OUT_OF_ORDERNESS, DEFAULT_MAX_PAGE_NUMBER, DEFAULT_MAX_SESSION_BYTES,
    DEFAULT_SLOW_WINDOW_LOG_THRESHOLD, SessionSpec,
};
pub use side_run::{
    CutoverMode, DEFAULT_PARITY_TOLERANCE_BASIS_POINTS, DEFAULT_PARITY_WINDOW, ParitySpec,
    SideRunSpec,
};
pub use sink::{SinkMode, SinkSpec};
pub use status::{
    CheckpointsStatus, EffectiveSink, HistoryStoreLevel, HistoryStoreStatus, JobCounters,
    ParityBaseline, ParityResult, SessionJobPhase, SessionJobStatus, SideRunStatus,
    condition_types,
};

use crate::duration::cel_well_formed;

/// Default of `spec.parallelism`.
pub const DEFAULT_PARALLELISM: i32 = 1;

/// Desired state of a SessionJob.
// Printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sessionizer.dev",
    version = "v1alpha1",
    kind = "SessionJob",
    plural = "sessionjobs",
    singular = "sessionjob",
    shortname = "sj",
    category = "sessionizer",
    namespaced,
    status = "SessionJobStatus",
    derive = "PartialEq",
    doc = "A streaming job that sessionizes user events from Kafka, run by the Sessionizer operator as a StatefulSet of workers. It keeps open sessions in memory, closed sessions in a history store, checkpoints to object storage, and can replace another SessionJob without downtime (sideRun + SessionJobCutover).",
    scale(spec_replicas_path = ".spec.parallelism", status_replicas_path = ".status.replicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Parallelism", type_ = "integer", json_path = ".spec.parallelism", description = "Desired worker replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Ready worker replicas"),
    printcolumn(name = "Sink", type_ = "string", json_path = ".status.effectiveSink.mode", description = "Where sessions are written now: Production or DeadLetter"),
    printcolumn(name = "Checkpoint", type_ = "date", json_path = ".status.checkpoints.latestTime", description = "Age of the latest complete checkpoint"),
    printcolumn(name = "History Used %", type_ = "integer", json_path = ".status.historyStore.usedPercent", description = "Used storage of the history store (worst Aerospike node)"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.sideRun) || self.spec.sideRun.replaces != self.metadata.name")
        .message("spec.sideRun.replaces must name another SessionJob, not this one")
        .field_path(".spec.sideRun.replaces"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.sideRun) || self.sink.initialMode == 'DeadLetter'")
        .message("a job with sideRun must set sink.initialMode: DeadLetter (and sink.deadLetterTopic): it writes to the dead-letter topic until its cutover")
        .field_path(".sink.initialMode"),
    validation = Rule::new("!self.kafka.sourceTopics.exists(t, t.name == self.sink.topic || (has(self.sink.deadLetterTopic) && t.name == self.sink.deadLetterTopic) || (has(self.sink.quarantineTopic) && t.name == self.sink.quarantineTopic))")
        .message("sink topics must not be source topics: the job would consume its own output")
        .field_path(".sink"),
    validation = Rule::new(format!(
        "!has(self.session.allowedLateness) || !{} || !{} || duration(self.session.allowedLateness) <= duration(self.history.ttl)",
        cel_well_formed("self.session.allowedLateness"),
        cel_well_formed("self.history.ttl"),
    ))
        .message("session.allowedLateness must not exceed history.ttl: a late event can only be merged while its session is still in history")
        .field_path(".session.allowedLateness"),
)]
pub struct SessionJobSpec {
    /// Container image of the worker, e.g. `ghcr.io/sessionizer/worker:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Number of worker replicas (at least 1). Each owns an equal, contiguous range of key groups
    /// (source partitions), so choose a divisor of the partition count (see the
    /// BalancedAssignment condition). Changing it restarts the workers from a checkpoint.
    /// Default: 1.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1))]
    pub parallelism: i32,
    /// CPU and memory requests and limits of the worker container. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Overrides of the worker pod template (labels, annotations, scheduling, security).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
    /// Kafka connection and source topics.
    pub kafka: KafkaSpec,
    /// Output topics.
    pub sink: SinkSpec,
    /// Sessionization settings and input guards. All fields have defaults.
    #[serde(default)]
    pub session: SessionSpec,
    /// History store for closed sessions. All fields have defaults (Embedded backend, 168h TTL).
    #[serde(default)]
    pub history: HistorySpec,
    /// Checkpoint storage, retention and restore.
    pub checkpoints: CheckpointsSpec,
    /// Set when this job replaces another one: it side-runs into the dead-letter topic until a
    /// cutover. Unset: a normal job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_run: Option<SideRunSpec>,
}

fn default_parallelism() -> i32 {
    DEFAULT_PARALLELISM
}
