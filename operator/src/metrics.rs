//! The operator's Prometheus metrics: reconcile counts, failures by cause, reconcile durations and
//! whether this replica leads. Served by [`crate::http`] at `/metrics`.
//!
//! Metric names and label values are a contract with dashboards and alerts: failure causes come
//! from the errors' static `metric_label()`, never from free text, so the label set stays small.
//! Nothing here talks to Kubernetes.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

/// The metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
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
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
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
}
