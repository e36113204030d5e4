//! The operator's Prometheus metrics: reconcile counts, failures by cause, reconcile durations,
//! whether this replica leads, each job's checkpoints (latest success, size, duration,
//! retained count, deletions by reason), history store capacity
//! ([`crate::history_store::gauges`]), cutover stages, producer pauses and side-run parity.
//! Served by [`crate::http`] at `/metrics`.
//!
//! Metric names and label values are a contract with dashboards and alerts: failure causes come
//! from the errors' static `metric_label()`, never from free text, so the label set stays small.
//! Nothing here talks to Kubernetes.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sessionizer_crds::session_job::HistoryStoreStatus;

use crate::history_store;

/// Prefix of every metric name.
pub const PREFIX: &str = "sessionizer_operator";

/// Labels of the reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller (`sessionjob`).
    pub controller: &'static str,
}

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The controller (`sessionjob`).
    pub controller: &'static str,
    /// Which step failed (an error's `metric_label()`), e.g. `apply`, `invalid_spec`.
    pub cause: &'static str,
}

/// Labels of a running cutover stage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CutoverStageLabels {
    /// Namespace of the cutover.
    pub namespace: String,
    /// Name of the cutover.
    pub cutover: String,
    /// The stage.
    pub stage: &'static str,
}

/// Labels of the per-stage duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// The stage.
    pub stage: &'static str,
}

/// Labels of the finished-cutover counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `Completed`, `RolledBack` or `Failed`.
    pub result: &'static str,
}

/// Labels of the per-job checkpoint gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The SessionJob's namespace.
    pub namespace: String,
    /// The SessionJob's name.
    pub job: String,
}

/// Labels of the checkpoint deletion counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeletionLabels {
    /// The SessionJob's namespace.
    pub namespace: String,
    /// The SessionJob's name.
    pub job: String,
    /// `retain`, `max_age`, `incomplete` or `finalizer`.
    pub reason: &'static str,
}

/// The newest complete checkpoint of a job, as the checkpoint gauges show it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatestCheckpoint {
    /// When it completed, in Unix seconds.
    pub completed_seconds: f64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
}

/// The per-job checkpoint metrics.
#[derive(Default)]
struct CheckpointMetrics {
    last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    retained: Family<JobLabels, Gauge>,
    deleted: Family<DeletionLabels, Counter>,
    bytes: Family<JobLabels, Gauge>,
    duration: Family<JobLabels, Gauge<f64, AtomicU64>>,
}

/// The metrics and the registry that serves them.
pub struct Metrics {
    cutover_stage_started: Family<CutoverStageLabels, Gauge<f64, AtomicU64>>,
    cutover_stage_duration: Family<StageLabels, Histogram>,
    producer_pause: Histogram,
    cutovers: Family<ResultLabels, Counter>,
    side_run_parity: Family<JobLabels, Gauge>,
    side_run_difference: Family<JobLabels, Gauge>,
    registry: Registry,
    reconciliations: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
    checkpoints: CheckpointMetrics,
    history_store: history_store::gauges::Gauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciles started",
            reconciliations.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by the step that failed",
            failures.clone(),
        );
        let duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and reconciles, 0 while it stands by",
            leader.clone(),
        );
        let cutover_stage_started = Family::<CutoverStageLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "cutover_stage_started_timestamp_seconds",
            "Unix time the running stage of a cutover started; absent once the stage ended",
            cutover_stage_started.clone(),
        );
        let cutover_stage_duration =
            Family::<StageLabels, Histogram>::new_with_constructor(stage_histogram);
        registry.register(
            "cutover_stage_duration_seconds",
            "Time each cutover stage took",
            cutover_stage_duration.clone(),
        );
        let producer_pause = stage_histogram();
        registry.register(
            "cutover_producer_pause_seconds",
            "Time the producers were paused (scaled to zero) by a cutover",
            producer_pause.clone(),
        );
        let cutovers = Family::<ResultLabels, Counter>::default();
        registry.register("cutovers", "Cutovers finished, by result", cutovers.clone());
        let side_run_parity = Family::<JobLabels, Gauge>::default();
        registry.register(
            "side_run_parity",
            "1 when the side-running job's output matched the replaced job's over the last window, 0 when not",
            side_run_parity.clone(),
        );
        let side_run_difference = Family::<JobLabels, Gauge>::default();
        registry.register(
            "side_run_worst_difference_basis_points",
            "Largest relative difference between the side-running and the replaced job over the last window",
            side_run_difference.clone(),

        );
        let checkpoints = CheckpointMetrics::default();
        registry.register(
            "checkpoint_last_success_timestamp_seconds",
            "When the newest complete checkpoint of the job completed (Unix time)",
            checkpoints.last_success.clone(),
        );
        registry.register(
            "checkpoints_retained",
            "Complete checkpoints of the job kept in the object store",
            checkpoints.retained.clone(),
        );
        registry.register(
            "checkpoints_deleted",
            "Checkpoints the operator deleted, by reason (retain, max_age, incomplete, finalizer)",
            checkpoints.deleted.clone(),
        );
        registry.register(
            "checkpoint_bytes",
            "Size of the newest complete checkpoint of the job",
            checkpoints.bytes.clone(),
        );
        registry.register(
            "checkpoint_duration_seconds",
            "How long the newest complete checkpoint of the job took to write",
            checkpoints.duration.clone(),
        );
        let history_store = history_store::gauges::Gauges::register(&mut registry);
        Self {
            cutover_stage_started,
            cutover_stage_duration,
            producer_pause,
            cutovers,
            side_run_parity,
            side_run_difference,
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            checkpoints,
            history_store,
        }
    }

    /// Publishes a job's `status.historyStore` as the `history_store_*` gauges.
    pub fn record_history_store(&self, namespace: &str, job: &str, status: &HistoryStoreStatus) {
        self.history_store
            .record(&job_labels(namespace, job), status);
    }

    /// Drops a job's history store gauges (deleted, or no longer on Aerospike).
    pub fn forget_history_store(&self, namespace: &str, job: &str) {
        self.history_store.forget(&job_labels(namespace, job));
    }

    /// Records what the object store holds for job `namespace/job`: its newest complete
    /// checkpoint (if any) and how many complete ones are retained.
    pub fn set_checkpoints(
        &self,
        namespace: &str,
        job: &str,
        latest: Option<LatestCheckpoint>,
        retained: usize,
    ) {
        let labels = job_labels(namespace, job);
        let metrics = &self.checkpoints;
        metrics
            .retained
            .get_or_create(&labels)
            .set(i64::try_from(retained).unwrap_or(i64::MAX));
        if let Some(latest) = latest {
            metrics
                .last_success
                .get_or_create(&labels)
                .set(latest.completed_seconds);
            metrics
                .bytes
                .get_or_create(&labels)
                .set(i64::try_from(latest.bytes).unwrap_or(i64::MAX));
            metrics
                .duration
                .get_or_create(&labels)
                .set(latest.duration_seconds);
        }
    }

    /// Counts `count` checkpoints of `namespace/job` deleted for `reason`.
    pub fn checkpoints_deleted(
        &self,
        namespace: &str,
        job: &str,
        reason: &'static str,
        count: u64,
    ) {
        self.checkpoints
            .deleted
            .get_or_create(&DeletionLabels {
                namespace: namespace.to_owned(),
                job: job.to_owned(),
                reason,
            })
            .inc_by(count);
    }

    /// Drops the checkpoint gauges of a deleted job (the deletion counters stay).
    pub fn forget_checkpoints(&self, namespace: &str, job: &str) {
        let labels = job_labels(namespace, job);
        let metrics = &self.checkpoints;
        metrics.last_success.remove(&labels);
        metrics.retained.remove(&labels);
        metrics.bytes.remove(&labels);
        metrics.duration.remove(&labels);
    }

    /// Counts a reconcile of `controller` and returns a guard that records its duration when
    /// dropped (on every exit path, errors included).
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciliations.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller`, by `cause`.
    pub fn failure(&self, controller: &'static str, cause: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, cause })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Marks `stage` of a cutover as running since `started` (unix seconds) and forgets every
    /// other stage of it.
    pub fn cutover_stage(
        &self,
        namespace: &str,
        cutover: &str,
        stage: Option<&'static str>,
        started: f64,
    ) {
        for other in ALL_STAGES {
            if Some(*other) != stage {
                self.cutover_stage_started.remove(&CutoverStageLabels {
                    namespace: namespace.to_owned(),
                    cutover: cutover.to_owned(),
                    stage: other,
                });
            }
        }
        if let Some(stage) = stage {
            self.cutover_stage_started
                .get_or_create(&CutoverStageLabels {
                    namespace: namespace.to_owned(),
                    cutover: cutover.to_owned(),
                    stage,
                })
                .set(started);
        }
    }

    /// Records that a cutover stage ended after `seconds`.
    pub fn cutover_stage_ended(&self, stage: &'static str, seconds: f64) {
        self.cutover_stage_duration
            .get_or_create(&StageLabels { stage })
            .observe(seconds);
    }

    /// Records how long a cutover kept the producers paused.
    pub fn producer_pause(&self, seconds: f64) {
        self.producer_pause.observe(seconds);
    }

    /// Counts a finished cutover.
    pub fn cutover_finished(&self, result: &'static str) {
        self.cutovers.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records a side-run parity verdict.
    pub fn side_run_parity(
        &self,
        namespace: &str,
        job: &str,
        passed: bool,
        worst_basis_points: i64,
    ) {
        let labels = JobLabels {
            namespace: namespace.to_owned(),
            job: job.to_owned(),
        };
        self.side_run_parity
            .get_or_create(&labels)
            .set(i64::from(passed));
        self.side_run_difference
            .get_or_create(&labels)
            .set(worst_basis_points);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Every cutover stage name, for clearing the stage gauge.
const ALL_STAGES: &[&str] = &[
    "Pending",
    "PausingProducers",
    "Draining",
    "StoppingJobs",
    "FlippingSink",
    "Resuming",
    "RollingBack",
];

/// 0.5 s to ~1 h: stages wait for Kafka, checkpoints and rollouts.
fn stage_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ])
}

fn job_labels(namespace: &str, job: &str) -> JobLabels {
    JobLabels {
        namespace: namespace.to_owned(),
        job: job.to_owned(),
    }
}

/// 5 ms to ~40 s: a reconcile is a few API calls plus at most one Kafka metadata timeout.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_durations_and_leadership_are_exported() {
        let metrics = Metrics::new();
        {
            let _timer = metrics.reconcile("sessionjob");
            metrics.failure("sessionjob", "apply");
        }
        metrics.set_leader(true);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                "sessionizer_operator_reconciliations_total{controller=\"sessionjob\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sessionizer_operator_reconcile_failures_total{controller=\"sessionjob\",cause=\"apply\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sessionizer_operator_reconcile_duration_seconds_count{controller=\"sessionjob\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("sessionizer_operator_leader 1"), "{text}");
    }

    #[test]
    fn cutover_stages_pause_and_results_are_exported() {
        let metrics = Metrics::new();
        metrics.cutover_stage("ns", "switch", Some("Draining"), 100.0);
        let text = metrics.encode().unwrap();
        assert!(text.contains("sessionizer_operator_cutover_stage_started_timestamp_seconds{namespace=\"ns\",cutover=\"switch\",stage=\"Draining\"} 100"), "{text}");
        metrics.cutover_stage("ns", "switch", None, 0.0);
        metrics.cutover_stage_ended("Draining", 3.0);
        metrics.producer_pause(12.0);
        metrics.cutover_finished("Completed");
        metrics.side_run_parity("ns", "new", true, 4);
        let text = metrics.encode().unwrap();
        assert!(!text.contains("stage=\"Draining\"} 100"), "{text}");
        assert!(
            text.contains(
                "sessionizer_operator_cutover_stage_duration_seconds_count{stage=\"Draining\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_operator_cutover_producer_pause_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_operator_cutovers_total{result=\"Completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_operator_side_run_parity{namespace=\"ns\",job=\"new\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn checkpoint_metrics_carry_the_names_dashboards_use() {
        let metrics = Metrics::new();
        let latest = LatestCheckpoint {
            completed_seconds: 1_763_776_800.5,
            bytes: 4096,
            duration_seconds: 1.25,
        };
        metrics.set_checkpoints("team-a", "pageviews", Some(latest), 3);
        metrics.checkpoints_deleted("team-a", "pageviews", "retain", 7);
        let text = metrics.encode().unwrap();
        let job = "{namespace=\"team-a\",job=\"pageviews\"}";
        for line in [
            format!("sessionizer_operator_checkpoint_last_success_timestamp_seconds{job} 1763776800.5"),
            format!("sessionizer_operator_checkpoints_retained{job} 3"),
            format!("sessionizer_operator_checkpoint_bytes{job} 4096"),
            format!("sessionizer_operator_checkpoint_duration_seconds{job} 1.25"),
            "sessionizer_operator_checkpoints_deleted_total{namespace=\"team-a\",job=\"pageviews\",reason=\"retain\"} 7".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        metrics.forget_checkpoints("team-a", "pageviews");
        let text = metrics.encode().unwrap();
        assert!(!text.contains("checkpoints_retained{"), "{text}");
        assert!(text.contains("checkpoints_deleted_total{"), "{text}");
    }
}
