//! Effective values of a SessionJob: the defaults that depend on other fields (consumer group =
//! job name, allowed lateness and warm-up = history TTL) resolved, and duration and size strings
//! parsed. Pure functions for the operator and the worker; they never touch the cluster.

use std::time::Duration;

use kube::ResourceExt;

use super::{SessionJob, SessionJobSpec};
use crate::duration::{DurationError, DurationString};
use crate::quantity::QuantityError;

/// A spec value the API server should have rejected (e.g. stored before a rule existed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A duration field does not parse.
    #[error("spec.{field}: {source}")]
    Duration {
        /// JSON path of the field below `spec`.
        field: &'static str,
        /// What is wrong with it.
        source: DurationError,
    },
    /// A size field does not parse.
    #[error("spec.{field}: {source}")]
    Size {
        /// JSON path of the field below `spec`.
        field: &'static str,
        /// What is wrong with it.
        source: QuantityError,
    },
}

/// `spec.session` with every default resolved and every value parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Inactivity gap that closes a session.
    pub gap: Duration,
    /// Highest accepted page number.
    pub max_page_number: i32,
    /// Largest size of one session, in bytes.
    pub max_session_bytes: u64,
    /// How long after closing a session late events are merged into it.
    pub allowed_lateness: Duration,
    /// At most one late update per session per this interval.
    pub late_update_interval: Duration,
    /// How far event time may go backwards within a partition.
    pub max_out_of_orderness: Duration,
    /// After this long without data a partition stops holding the watermark back.
    pub idle_source_timeout: Duration,
    /// Session closes slower than this are logged.
    pub slow_window_log_threshold: Duration,
}

impl SessionJob {
    /// The Kafka consumer group of the workers: `spec.kafka.consumerGroup`, or the job's name.
    pub fn consumer_group(&self) -> String {
        self.spec
            .kafka
            .consumer_group
            .clone()
            .unwrap_or_else(|| self.name_any())
    }
}

impl SessionJobSpec {
    /// `history.ttl`, parsed.
    pub fn history_ttl(&self) -> Result<Duration, SpecError> {
        duration("history.ttl", &self.history.ttl)
    }

    /// `session.allowedLateness`, or `history.ttl` when unset.
    pub fn allowed_lateness(&self) -> Result<Duration, SpecError> {
        match &self.session.allowed_lateness {
            Some(lateness) => duration("session.allowedLateness", lateness),
            None => self.history_ttl(),
        }
    }

    /// `sideRun.warmup`, or `history.ttl` when unset; `None` for a job without `sideRun`.
    pub fn warmup(&self) -> Result<Option<Duration>, SpecError> {
        let Some(side_run) = &self.side_run else {
            return Ok(None);
        };
        match &side_run.warmup {
            Some(warmup) => duration("sideRun.warmup", warmup).map(Some),
            None => self.history_ttl().map(Some),
        }
    }

    /// `checkpoints.interval`, parsed.
    pub fn checkpoint_interval(&self) -> Result<Duration, SpecError> {
        duration("checkpoints.interval", &self.checkpoints.interval)
    }

    /// `checkpoints.maxAge`, parsed; `None` when unset (no age limit).
    pub fn checkpoint_max_age(&self) -> Result<Option<Duration>, SpecError> {
        self.checkpoints
            .max_age
            .as_ref()
            .map(|age| duration("checkpoints.maxAge", age))
            .transpose()
    }

    /// `spec.session` with defaults resolved and values parsed.
    pub fn session_settings(&self) -> Result<SessionSettings, SpecError> {
        let s = &self.session;
        Ok(SessionSettings {
            gap: duration("session.gap", &s.gap)?,
            max_page_number: s.max_page_number,
            max_session_bytes: s.max_session_bytes.to_bytes().map_err(|source| {
                SpecError::Size {
                    field: "session.maxSessionBytes",
                    source,
                }
            })?,
            allowed_lateness: self.allowed_lateness()?,
            late_update_interval: duration("session.lateUpdateInterval", &s.late_update_interval)?,
            max_out_of_orderness: duration("session.maxOutOfOrderness", &s.max_out_of_orderness)?,
            idle_source_timeout: duration("session.idleSourceTimeout", &s.idle_source_timeout)?,
            slow_window_log_threshold: duration(
                "session.slowWindowLogThreshold",
                &s.slow_window_log_threshold,
            )?,
        })
    }
}

fn duration(field: &'static str, value: &DurationString) -> Result<Duration, SpecError> {
    value
        .to_duration()
        .map_err(|source| SpecError::Duration { field, source })
}
