//! What every reconcile shares: the API client, the Event recorder, the metrics, the Kafka
//! partition lookup, the history store monitor's samples and the per-object failure counts
//! behind the retry backoff. Built once at
//! startup and passed to the controllers in an `Arc`.
//!
//! The Kafka lookup is a trait object only so unit tests can use an in-memory table; the
//! operator always asks the real cluster. Nothing here holds per-reconcile state; the monitor
//! keeps per-job state across reconciles by design (growth samples for its projection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use sessionizer_crds::SessionJob;
use sessionizer_worker::checkpoint::retention::DEFAULT_INCOMPLETE_GRACE;

use crate::history_store::Monitor;
use crate::metrics::Metrics;
use crate::session_job::kafka::PartitionLookup;

/// First retry delay after a transient failure.
pub const MIN_BACKOFF: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Shared state of the controllers.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Reads partition counts from Kafka.
    pub kafka: Arc<dyn PartitionLookup>,
    /// The Aerospike capacity monitor's per-job state (last report, growth samples).
    pub history_store: Monitor,
    /// HTTP client for the workers' `/status` and control calls.
    pub workers: reqwest::Client,
    /// How long retention leaves a checkpoint without a manifest alone.
    pub incomplete_checkpoint_grace: Duration,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<SessionJob>, u32>>,
}

impl Context {
    /// A context with no failures recorded.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        kafka: Arc<dyn PartitionLookup>,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            kafka,
            history_store: Monitor::default(),
            workers: reqwest::Client::new(),
            incomplete_checkpoint_grace: DEFAULT_INCOMPLETE_GRACE,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the grace period of checkpoints without a manifest (`--incomplete-checkpoint-grace`).
    pub fn with_incomplete_checkpoint_grace(mut self, grace: Duration) -> Self {
        self.incomplete_checkpoint_grace = grace;
        self
    }

    /// Records a failure of `job` and returns how long to wait before the next try:
    /// 5 s, 10 s, 20 s, ... up to 5 minutes.
    pub fn next_backoff(&self, job: ObjectRef<SessionJob>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(job).or_insert(0);
        let delay = backoff(*count);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets the failures of `job` after a successful reconcile.
    pub fn reset_backoff(&self, job: &ObjectRef<SessionJob>) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(job);
    }
}

/// The delay after `failures` earlier consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(6), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
