//! The worker's Prometheus metrics, kept in one registry that `/metrics` encodes: process-level
//! metrics (who the worker is, since when, whether it is ready) and the streaming job's
//! ([`StreamMetrics`]); the history store registers its own next to them. Nothing here does I/O.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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
    stream: StreamMetrics,
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

        let stream = StreamMetrics::register(&mut registry);

        Self {
            registry,
            uptime,
            ready,
            started: std::time::Instant::now(),
            stream,
        }
    }

    /// The registry, for subsystems that register their own metrics (the history store's
    /// [`crate::history::HistoryMetrics::register`]).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The streaming job's metrics.
    pub fn stream(&self) -> &StreamMetrics {
        &self.stream
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

/// What happened to an input event, as the `result` label of
/// `sessionizer_events_total` spells it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The variants are the label values.
pub enum EventResult {
    /// Joined a session (on time or late).
    accepted,
    /// An event id the key's sessions already hold.
    duplicate,
    /// Undecodable (quarantined).
    malformed,
    /// A pageview over `maxPageNumber` (dropped, quarantined).
    page_dropped,
    /// Older than `watermark − allowedLateness` (dropped).
    too_late,
    /// Rejected because its session reached `maxSessionBytes`.
    capped,
    /// Stamped too far ahead of processing time (quarantined).
    future,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    result: EventResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

/// The streaming job's metrics: what happened to the input, what was emitted, how far behind
/// the worker is. Updated in bulk by the stream loop, never per message on the hot path.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    events: Family<EventLabels, Counter>,
    sessions_emitted: Counter,
    late_updates: Counter,
    quarantined: Counter,
    produce_errors: Counter,
    lag: Family<PartitionLabels, Gauge>,
    checkpoints: Family<CheckpointLabels, Counter>,
    checkpoint_pause: Histogram,
    checkpoint_duration: Histogram,
    checkpoint_bytes: Gauge,
    checkpoint_last_success: Gauge,
}

/// Outcome of a checkpoint.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CheckpointResult {
    /// Its manifest was written.
    success,
    /// It failed before its manifest.
    failure,
}

/// Labels of the checkpoint counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckpointLabels {
    result: CheckpointResult,
}

impl StreamMetrics {
    /// Registers the streaming metrics into `registry` (call once per registry).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            events: Family::default(),
            sessions_emitted: Counter::default(),
            late_updates: Counter::default(),
            quarantined: Counter::default(),
            produce_errors: Counter::default(),
            lag: Family::default(),
            checkpoints: Family::default(),
            // 1 ms to ~65 s.
            checkpoint_pause: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            checkpoint_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            checkpoint_bytes: Gauge::default(),
            checkpoint_last_success: Gauge::default(),
        };
        registry.register(
            "sessionizer_checkpoints",
            "Checkpoints this worker attempted, by result",
            metrics.checkpoints.clone(),
        );
        registry.register(
            "sessionizer_checkpoint_pause_seconds",
            "How long consumption paused for a checkpoint (deliveries drained, history flushed, state copied)",
            metrics.checkpoint_pause.clone(),
        );
        registry.register(
            "sessionizer_checkpoint_duration_seconds",
            "From the start of a checkpoint's pause to its manifest",
            metrics.checkpoint_duration.clone(),
        );
        registry.register(
            "sessionizer_checkpoint_bytes",
            "Bytes of this worker's key group files in its last checkpoint",
            metrics.checkpoint_bytes.clone(),
        );
        registry.register(
            "sessionizer_checkpoint_last_success_timestamp_seconds",
            "When this worker's last checkpoint completed (Unix seconds)",
            metrics.checkpoint_last_success.clone(),
        );
        registry.register(
            "sessionizer_events",
            "Input events, by what happened to them",
            metrics.events.clone(),
        );
        registry.register(
            "sessionizer_sessions_emitted",
            "Sessions closed and emitted (first version of each session)",
            metrics.sessions_emitted.clone(),
        );
        registry.register(
            "sessionizer_late_updates",
            "Updates of closed sessions emitted after late or async events",
            metrics.late_updates.clone(),
        );
        registry.register(
            "sessionizer_quarantined",
            "Inputs rejected by a guard (sent to the quarantine topic when one is set)",
            metrics.quarantined.clone(),
        );
        registry.register(
            "sessionizer_produce_errors",
            "Records the Kafka producer failed to deliver or enqueue",
            metrics.produce_errors.clone(),
        );
        registry.register(
            "sessionizer_consumer_lag",
            "Log-end offset minus the next offset to consume, by source partition",
            metrics.lag.clone(),
        );
        metrics
    }

    /// Counts `n` input events with `result`.
    pub fn events(&self, result: EventResult, n: u64) {
        if n > 0 {
            self.events.get_or_create(&EventLabels { result }).inc_by(n);
        }
    }

    /// Counts `n` emitted sessions.
    pub fn sessions_emitted(&self, n: u64) {
        self.sessions_emitted.inc_by(n);
    }

    /// Counts `n` emitted late updates.
    pub fn late_updates(&self, n: u64) {
        self.late_updates.inc_by(n);
    }

    /// Counts `n` quarantined inputs.
    pub fn quarantined(&self, n: u64) {
        self.quarantined.inc_by(n);
    }

    /// Counts one produce error.
    pub fn produce_error(&self) {
        self.produce_errors.inc();
    }

    /// Records a finished checkpoint: its pause, duration and size, or a failure.
    pub fn checkpoint(&self, outcome: Result<(Duration, Duration, u64), ()>) {
        match outcome {
            Ok((pause, duration, bytes)) => {
                self.checkpoints
                    .get_or_create(&CheckpointLabels {
                        result: CheckpointResult::success,
                    })
                    .inc();
                self.checkpoint_pause.observe(pause.as_secs_f64());
                self.checkpoint_duration.observe(duration.as_secs_f64());
                self.checkpoint_bytes
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                self.checkpoint_last_success.set(now);
            }
            Err(()) => {
                self.checkpoints
                    .get_or_create(&CheckpointLabels {
                        result: CheckpointResult::failure,
                    })
                    .inc();
            }
        }
    }

    /// Sets the lag of one source partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition: partition.to_string(),
            })
            .set(lag);
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

    #[test]
    fn exposes_the_streaming_metrics() {
        let metrics = Metrics::new("pageviews", 0);
        metrics.stream().events(EventResult::page_dropped, 2);
        metrics.stream().set_lag("pageviews", 3, 17);
        metrics.stream().sessions_emitted(1);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("sessionizer_events_total{result=\"page_dropped\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_consumer_lag{topic=\"pageviews\",partition=\"3\"} 17"),
            "{text}"
        );
        assert!(
            text.contains("sessionizer_sessions_emitted_total 1"),
            "{text}"
        );
    }
}
