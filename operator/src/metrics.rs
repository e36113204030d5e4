//! The operator's Prometheus metrics: reconcile counts, failures by cause, reconcile durations,
//! whether this replica leads, and the history store capacity per job (`history_store_*`). Served by [`crate::http`] at `/metrics`.
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
use sessionizer_crds::session_job::{HistoryStoreLevel, HistoryStoreStatus};

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

/// Labels of per-job gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The SessionJob's namespace.
    pub namespace: String,
    /// The SessionJob's name.
    pub job: String,
}

/// Labels of the history store level gauge (one series per level, 1 for the current one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    /// The SessionJob's namespace.
    pub namespace: String,
    /// The SessionJob's name.
    pub job: String,
    /// `Healthy`, `Warning`, `Breached`, `StopWrites`, `Unreachable` or `Unknown`.
    pub level: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every history store level, with its label value.
const LEVELS: [(HistoryStoreLevel, &str); 6] = [
    (HistoryStoreLevel::Unknown, "Unknown"),
    (HistoryStoreLevel::Unreachable, "Unreachable"),
    (HistoryStoreLevel::Healthy, "Healthy"),
    (HistoryStoreLevel::Warning, "Warning"),
    (HistoryStoreLevel::Breached, "Breached"),
    (HistoryStoreLevel::StopWrites, "StopWrites"),
];

/// The history store capacity gauges, per job.
#[derive(Default)]
struct HistoryStoreGauges {
    used: Family<JobLabels, FloatGauge>,
    eviction_mark: Family<JobLabels, FloatGauge>,
    stop_writes_mark: Family<JobLabels, FloatGauge>,
    eviction_disabled: Family<JobLabels, Gauge>,
    reachable: Family<JobLabels, Gauge>,
    level: Family<LevelLabels, Gauge>,
    projected: Family<JobLabels, FloatGauge>,
}

/// The metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
    history_store: HistoryStoreGauges,
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
        let history_store = HistoryStoreGauges::default();
        register_history_store(&mut registry, &history_store);
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            history_store,
        }
    }

    /// Publishes a job's `status.historyStore` as gauges.
    pub fn record_history_store(&self, namespace: &str, job: &str, status: &HistoryStoreStatus) {
        let labels = JobLabels {
            namespace: namespace.to_owned(),
            job: job.to_owned(),
        };
        let gauges = &self.history_store;
        let reachable = !matches!(status.level, HistoryStoreLevel::Unreachable);
        gauges
            .reachable
            .get_or_create(&labels)
            .set(i64::from(reachable));
        for (level, name) in LEVELS {
            gauges
                .level
                .get_or_create(&LevelLabels {
                    namespace: labels.namespace.clone(),
                    job: labels.job.clone(),
                    level: name,
                })
                .set(i64::from(level == status.level));
        }
        let set = |family: &Family<JobLabels, FloatGauge>, value: Option<i32>| match value {
            Some(value) => {
                family.get_or_create(&labels).set(f64::from(value));
            }
            None => {
                family.remove(&labels);
            }
        };
        set(&gauges.used, status.used_percent);
        set(&gauges.eviction_mark, status.eviction_mark_percent);
        set(&gauges.stop_writes_mark, status.stop_writes_mark_percent);
        match status.eviction_disabled {
            Some(off) => {
                gauges
                    .eviction_disabled
                    .get_or_create(&labels)
                    .set(i64::from(off));
            }
            None => {
                gauges.eviction_disabled.remove(&labels);
            }
        }
        match &status.projected_eviction_mark_time {
            Some(time) => {
                gauges
                    .projected
                    .get_or_create(&labels)
                    .set(time.0.as_second() as f64);
            }
            None => {
                gauges.projected.remove(&labels);
            }
        }
    }

    /// Removes a job's history store gauges (it no longer uses Aerospike).
    pub fn forget_history_store(&self, namespace: &str, job: &str) {
        let labels = JobLabels {
            namespace: namespace.to_owned(),
            job: job.to_owned(),
        };
        let gauges = &self.history_store;
        for family in [
            &gauges.used,
            &gauges.eviction_mark,
            &gauges.stop_writes_mark,
            &gauges.projected,
        ] {
            family.remove(&labels);
        }
        gauges.eviction_disabled.remove(&labels);
        gauges.reachable.remove(&labels);
        for (_, level) in LEVELS {
            gauges.level.remove(&LevelLabels {
                namespace: labels.namespace.clone(),
                job: labels.job.clone(),
                level,
            });
        }
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

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn register_history_store(registry: &mut Registry, gauges: &HistoryStoreGauges) {
    registry.register(
        "history_store_used_percent",
        "Used storage (or memory, whichever is closer to its marks) of the history store namespace on its worst node, in percent",
        gauges.used.clone(),
    );
    registry.register(
        "history_store_eviction_mark_percent",
        "Eviction mark (high-water mark) of the worst node, in percent; 0 means eviction is off",
        gauges.eviction_mark.clone(),
    );
    registry.register(
        "history_store_stop_writes_mark_percent",
        "Stop-writes mark on used space of the worst node, in percent",
        gauges.stop_writes_mark.clone(),
    );
    registry.register(
        "history_store_eviction_disabled",
        "1 when the namespace's eviction mark is 0 (Aerospike never evicts early)",
        gauges.eviction_disabled.clone(),
    );
    registry.register(
        "history_store_reachable",
        "1 when at least one Aerospike node answered the last capacity probe",
        gauges.reachable.clone(),
    );
    registry.register(
        "history_store_level",
        "1 for the job's current history store level, 0 for the others",
        gauges.level.clone(),
    );
    registry.register(
        "history_store_projected_eviction_mark_timestamp_seconds",
        "When the eviction mark will be reached at the observed growth rate (unix seconds); absent when not growing",
        gauges.projected.clone(),
    );
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
    fn history_store_gauges_follow_the_status_and_can_be_removed() {
        let metrics = Metrics::new();
        let status = HistoryStoreStatus {
            level: HistoryStoreLevel::Warning,
            used_percent: Some(55),
            eviction_mark_percent: Some(60),
            stop_writes_mark_percent: Some(70),
            eviction_disabled: Some(false),
            ..HistoryStoreStatus::default()
        };
        metrics.record_history_store("analytics", "pageviews", &status);
        let text = metrics.encode().unwrap();
        let labels = "namespace=\"analytics\",job=\"pageviews\"";
        for line in [
            format!("sessionizer_operator_history_store_used_percent{{{labels}}} 55.0"),
            format!("sessionizer_operator_history_store_eviction_mark_percent{{{labels}}} 60.0"),
            format!("sessionizer_operator_history_store_stop_writes_mark_percent{{{labels}}} 70.0"),
            format!("sessionizer_operator_history_store_reachable{{{labels}}} 1"),
            format!("sessionizer_operator_history_store_level{{{labels},level=\"Warning\"}} 1"),
            format!("sessionizer_operator_history_store_level{{{labels},level=\"Healthy\"}} 0"),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            !text.contains("projected_eviction_mark_timestamp_seconds{"),
            "{text}"
        );
        metrics.forget_history_store("analytics", "pageviews");
        assert!(!metrics.encode().unwrap().contains("pageviews"));
    }
}
