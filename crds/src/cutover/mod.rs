//! `SessionJobCutover` (short name `sjc`): a one-shot record of replacing one SessionJob by
//! another in five staged steps (pause producers, drain, stop both, flip sink, resume). Created by
//! a user or by the operator; its spec never changes afterwards, its status is the state machine.

mod status;

use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::{
    CutoverStage, DrainStatus, ProducerStatus, SessionJobCutoverStatus, StageTiming,
    condition_types,
};

use crate::duration::{DurationError, DurationString};
use crate::names::ObjectName;
use crate::refs::WorkloadRef;

/// Default timeout of the `PausingProducers` stage.
pub const DEFAULT_PAUSING_PRODUCERS_TIMEOUT: &str = "5m";
/// Default timeout of the `Draining` stage.
pub const DEFAULT_DRAINING_TIMEOUT: &str = "30m";
/// Default timeout of the `StoppingJobs` stage.
pub const DEFAULT_STOPPING_JOBS_TIMEOUT: &str = "10m";
/// Default timeout of the `FlippingSink` stage.
pub const DEFAULT_FLIPPING_SINK_TIMEOUT: &str = "2m";
/// Default timeout of the `Resuming` stage.
pub const DEFAULT_RESUMING_TIMEOUT: &str = "15m";

/// Desired cutover: which job replaces which.
// Printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sessionizer.dev",
    version = "v1alpha1",
    kind = "SessionJobCutover",
    plural = "sessionjobcutovers",
    singular = "sessionjobcutover",
    shortname = "sjc",
    category = "sessionizer",
    namespaced,
    status = "SessionJobCutoverStatus",
    derive = "PartialEq",
    doc = "One cutover from a running SessionJob to the SessionJob that side-runs to replace it: pause producers, drain both jobs, stop them with final checkpoints, flip the new job's sink to production, resume. The spec is immutable; status records every stage.",
    printcolumn(
        name = "From",
        type_ = "string",
        json_path = ".spec.from",
        description = "The SessionJob being replaced"
    ),
    printcolumn(
        name = "To",
        type_ = "string",
        json_path = ".spec.to",
        description = "The SessionJob taking over"
    ),
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = ".status.stage",
        description = "Current stage"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.from != self.to")
        .message("from and to must name different SessionJobs")
        .field_path(".to"),
    validation = Rule::new("self == oldSelf")
        .message("spec is immutable: a cutover is a one-shot record; create a new SessionJobCutover instead"),
)]
pub struct SessionJobCutoverSpec {
    /// Name of the running SessionJob (same namespace) being replaced. It is Retired when the
    /// cutover completes.
    pub from: ObjectName,
    /// Name of the side-running SessionJob (same namespace) that takes over; its
    /// `sideRun.replaces` should name `from`.
    pub to: ObjectName,
    /// Workloads to scale to zero while the jobs drain (at most 32, unique by kind and name).
    /// Unset: the `to` job's `sideRun.producers`. An empty list pauses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into(), "name".into()]))]
    pub producers: Option<Vec<WorkloadRef>>,
    /// Longest time each stage may take before the cutover fails.
    #[serde(default)]
    pub timeouts: StageTimeouts,
    /// When a stage before `FlippingSink` fails or times out: `true` (default) restarts the old
    /// job and restores the producers; `false` stops and waits for a human. After the sink has
    /// flipped the cutover always rolls forward.
    #[serde(default = "default_true")]
    pub rollback_on_failure: bool,
}

/// Timeouts of the cutover stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageTimeouts {
    /// Scaling the producers to zero. Default: `5m`.
    #[serde(default = "default_pausing_producers")]
    pub pausing_producers: DurationString,
    /// Both jobs consuming every source partition to its end and flushing. Default: `30m`.
    #[serde(default = "default_draining")]
    pub draining: DurationString,
    /// Final checkpoints of both jobs and scaling them to zero. Default: `10m`.
    #[serde(default = "default_stopping_jobs")]
    pub stopping_jobs: DurationString,
    /// Switching the new job's effective sink to production. Default: `2m`.
    #[serde(default = "default_flipping_sink")]
    pub flipping_sink: DurationString,
    /// Starting the new job, waiting until Ready, restoring the producers. Default: `15m`.
    #[serde(default = "default_resuming")]
    pub resuming: DurationString,
}

impl Default for StageTimeouts {
    fn default() -> Self {
        Self {
            pausing_producers: default_pausing_producers(),
            draining: default_draining(),
            stopping_jobs: default_stopping_jobs(),
            flipping_sink: default_flipping_sink(),
            resuming: default_resuming(),
        }
    }
}

impl StageTimeouts {
    /// The timeout of a stage, parsed; `None` for stages without one (`Pending` and the
    /// terminal or rollback stages).
    pub fn for_stage(&self, stage: CutoverStage) -> Option<Result<Duration, DurationError>> {
        let value = match stage {
            CutoverStage::PausingProducers => &self.pausing_producers,
            CutoverStage::Draining => &self.draining,
            CutoverStage::StoppingJobs => &self.stopping_jobs,
            CutoverStage::FlippingSink => &self.flipping_sink,
            CutoverStage::Resuming => &self.resuming,
            CutoverStage::Pending
            | CutoverStage::Completed
            | CutoverStage::RollingBack
            | CutoverStage::RolledBack
            | CutoverStage::Failed => return None,
        };
        Some(value.to_duration())
    }
}

fn default_true() -> bool {
    true
}

fn default_pausing_producers() -> DurationString {
    DEFAULT_PAUSING_PRODUCERS_TIMEOUT.into()
}

fn default_draining() -> DurationString {
    DEFAULT_DRAINING_TIMEOUT.into()
}

fn default_stopping_jobs() -> DurationString {
    DEFAULT_STOPPING_JOBS_TIMEOUT.into()
}

fn default_flipping_sink() -> DurationString {
    DEFAULT_FLIPPING_SINK_TIMEOUT.into()
}

fn default_resuming() -> DurationString {
    DEFAULT_RESUMING_TIMEOUT.into()
}
