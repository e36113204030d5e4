//! The worker's Prometheus metrics, kept in one registry that `/metrics` encodes. Only process-
//! level metrics exist so far (who the worker is, since when, whether it is ready); the streaming
//! job will register its own next to them. Nothing here does I/O.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::VERSION;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `sessionizer_worker_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    job: String,
    ordinal: String,
    version: String,
}

/// The registry and the handles of the metrics the worker updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    uptime: Gauge<f64, AtomicU64>,
    ready: Gauge,
    started: std::time::Instant,
}

impl Metrics {
    /// Registers the worker's metrics for worker `ordinal` of SessionJob `job`.
    pub fn new(job: &str, ordinal: u32) -> Self {
        let mut registry = Registry::default();

        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            job: job.to_owned(),
            ordinal: ordinal.to_string(),
            version: VERSION.to_owned(),
        })
        .set(1);
        registry.register(
            "sessionizer_worker_info",
            "Which SessionJob and ordinal this worker serves, and its version (always 1)",
            info,
        );

        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
        );
        registry.register(
            "sessionizer_worker_start_time_seconds",
            "When the worker process started, in seconds since the Unix epoch",
            start_time,
        );

        let uptime = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sessionizer_worker_uptime_seconds",
            "Seconds since the worker process started",
            uptime.clone(),
        );

        let ready = Gauge::default();
        registry.register(
            "sessionizer_worker_ready",
            "1 while the worker reports ready on /readyz, else 0",
            ready.clone(),
        );

        Self {
            registry,
            uptime,
            ready,
            started: std::time::Instant::now(),
        }
    }

    /// The registry, for subsystems that register their own metrics (the history store's
    /// [`crate::history::HistoryMetrics::register`]).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Records whether the worker is ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// How long ago the metrics (and so the worker) were set up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The OpenMetrics text exposition of every metric, with the uptime brought up to date.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.uptime.set(self.uptime().as_secs_f64());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_who_the_worker_is_and_since_when() {
        let metrics = Metrics::new("pageviews", 2);
        metrics.set_ready(true);
        let text = metrics.encode().unwrap();
        let info = format!(
            "sessionizer_worker_info{{job=\"pageviews\",ordinal=\"2\",version=\"{VERSION}\"}} 1"
        );
        assert!(text.contains(&info), "{text}");
        assert!(
            text.contains("# TYPE sessionizer_worker_info gauge"),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_worker_start_time_seconds "),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_worker_uptime_seconds "),
            "{text}"
        );
        assert!(text.contains("sessionizer_worker_ready 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
