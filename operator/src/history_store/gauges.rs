//! The monitor's Prometheus gauges (`sessionizer_operator_history_store_*`), per job: used
//! percentage, marks, whether eviction is off, whether Aerospike answered, the level (one series
//! per level, 1 for the current one) and the projected time of reaching the eviction mark.
//!
//! Registered into the operator's registry by [`crate::metrics::Metrics`]; the names are a
//! contract with the chart's alerts and dashboard (charts/check.sh verifies they exist). Nothing
//! here talks to Kubernetes or Aerospike.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sessionizer_crds::session_job::{HistoryStoreLevel, HistoryStoreStatus};

use crate::metrics::JobLabels;

/// Labels of the level gauge.
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

/// Every level, with its label value.
const LEVELS: [(HistoryStoreLevel, &str); 6] = [
    (HistoryStoreLevel::Unknown, "Unknown"),
    (HistoryStoreLevel::Unreachable, "Unreachable"),
    (HistoryStoreLevel::Healthy, "Healthy"),
    (HistoryStoreLevel::Warning, "Warning"),
    (HistoryStoreLevel::Breached, "Breached"),
    (HistoryStoreLevel::StopWrites, "StopWrites"),
];

/// The history store gauges.
#[derive(Default)]
pub struct Gauges {
    used: Family<JobLabels, FloatGauge>,
    eviction_mark: Family<JobLabels, FloatGauge>,
    stop_writes_mark: Family<JobLabels, FloatGauge>,
    eviction_disabled: Family<JobLabels, Gauge>,
    reachable: Family<JobLabels, Gauge>,
    level: Family<LevelLabels, Gauge>,
    projected: Family<JobLabels, FloatGauge>,
}

impl Gauges {
    /// Creates the gauges and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "history_store_used_percent",
            "Used space of the history store namespace on its worst node (storage, or memory before Aerospike 7 when closer to its marks), in percent",
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
            "When the eviction mark will be reached at the observed growth rate (Unix time); absent when not growing",
            gauges.projected.clone(),
        );
        gauges
    }

    /// Publishes a job's `status.historyStore`.
    pub fn record(&self, labels: &JobLabels, status: &HistoryStoreStatus) {
        let reachable = status.level != HistoryStoreLevel::Unreachable;
        self.reachable
            .get_or_create(labels)
            .set(i64::from(reachable));
        for (level, name) in LEVELS {
            self.level
                .get_or_create(&level_labels(labels, name))
                .set(i64::from(level == status.level));
        }
        let set = |family: &Family<JobLabels, FloatGauge>, value: Option<f64>| match value {
            Some(value) => {
                family.get_or_create(labels).set(value);
            }
            None => {
                family.remove(labels);
            }
        };
        set(&self.used, status.used_percent.map(f64::from));
        set(
            &self.eviction_mark,
            status.eviction_mark_percent.map(f64::from),
        );
        set(
            &self.stop_writes_mark,
            status.stop_writes_mark_percent.map(f64::from),
        );
        let projected = status.projected_eviction_mark_time.as_ref();
        set(&self.projected, projected.map(|t| t.0.as_second() as f64));
        match status.eviction_disabled {
            Some(off) => {
                self.eviction_disabled
                    .get_or_create(labels)
                    .set(i64::from(off));
            }
            None => {
                self.eviction_disabled.remove(labels);
            }
        }
    }

    /// Removes a job's gauges.
    pub fn forget(&self, labels: &JobLabels) {
        for family in [
            &self.used,
            &self.eviction_mark,
            &self.stop_writes_mark,
            &self.projected,
        ] {
            family.remove(labels);
        }
        self.eviction_disabled.remove(labels);
        self.reachable.remove(labels);
        for (_, name) in LEVELS {
            self.level.remove(&level_labels(labels, name));
        }
    }
}

fn level_labels(labels: &JobLabels, level: &'static str) -> LevelLabels {
    LevelLabels {
        namespace: labels.namespace.clone(),
        job: labels.job.clone(),
        level,
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Metrics;

    use super::*;

    #[test]
    fn gauges_follow_the_status_and_can_be_removed() {
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
            format!("sessionizer_operator_history_store_eviction_disabled{{{labels}}} 0"),
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
        metrics.record_history_store(
            "analytics",
            "pageviews",
            &HistoryStoreStatus {
                level: HistoryStoreLevel::Unreachable,
                ..HistoryStoreStatus::default()
            },
        );
        let text = metrics.encode().unwrap();
        assert!(text.contains(&format!(
            "sessionizer_operator_history_store_reachable{{{labels}}} 0"
        )));
        assert!(!text.contains("history_store_used_percent{"), "{text}");
        metrics.forget_history_store("analytics", "pageviews");
        assert!(!metrics.encode().unwrap().contains("history_store_level{"));
    }
}
