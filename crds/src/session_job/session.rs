//! `spec.session`: how events become sessions, and the guards that keep one bad key from hurting
//! the job (seed gotchas 5, 8 and 9: page-number and size caps, batched late updates).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::DurationString;
use crate::quantity::ByteSize;

/// Default of `session.gap`.
pub const DEFAULT_GAP: &str = "30m";
/// Default of `session.maxPageNumber`.
pub const DEFAULT_MAX_PAGE_NUMBER: i32 = 300;
/// Default of `session.maxSessionBytes`.
pub const DEFAULT_MAX_SESSION_BYTES: &str = "4Mi";
/// Default of `session.lateUpdateInterval`.
pub const DEFAULT_LATE_UPDATE_INTERVAL: &str = "1m";
/// Default of `session.maxOutOfOrderness`.
pub const DEFAULT_MAX_OUT_OF_ORDERNESS: &str = "5s";
/// Default of `session.idleSourceTimeout`.
pub const DEFAULT_IDLE_SOURCE_TIMEOUT: &str = "1m";
/// Default of `session.slowWindowLogThreshold`.
pub const DEFAULT_SLOW_WINDOW_LOG_THRESHOLD: &str = "60s";

/// Sessionization settings. Every field has a default, so `session` can be left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSpec {
    /// Inactivity gap that closes a session: a session ends when no event of its key arrives for
    /// this long in event time. Default: `30m`.
    #[serde(default = "default_gap")]
    pub gap: DurationString,
    /// Highest accepted page number; events with a larger page number are dropped on arrival
    /// (and quarantined when `sink.quarantineTopic` is set), before they reach any state.
    /// Default: 300.
    #[serde(default = "default_max_page_number")]
    #[schemars(range(min = 1))]
    pub max_page_number: i32,
    /// Largest size of one session's events; once reached, the session accepts no more events.
    /// Whole bytes with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E), such as
    /// `4Mi`; quote plain numbers. Default: `4Mi`.
    #[serde(default = "default_max_session_bytes")]
    pub max_session_bytes: ByteSize,
    /// How long after a session closed a late or async event is still merged into it (read back
    /// from history). Must not exceed `history.ttl`. Default: `history.ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<DurationString>,
    /// Late updates to a closed session are batched: at most one update per session is emitted
    /// per interval, however many late events arrive. Default: `1m`.
    #[serde(default = "default_late_update_interval")]
    pub late_update_interval: DurationString,
    /// How far event time may go backwards within a partition; the watermark trails the
    /// highest event time seen by this much. Default: `5s`.
    #[serde(default = "default_max_out_of_orderness")]
    pub max_out_of_orderness: DurationString,
    /// A partition that delivers nothing for this long stops holding the watermark back.
    /// Default: `1m`.
    #[serde(default = "default_idle_source_timeout")]
    pub idle_source_timeout: DurationString,
    /// Closing a session (emit, write to history) that takes longer than this is logged with its
    /// key and size, to find the sessions that slow the job down. Default: `60s`.
    #[serde(default = "default_slow_window_log_threshold")]
    pub slow_window_log_threshold: DurationString,
}

impl Default for SessionSpec {
    fn default() -> Self {
        Self {
            gap: default_gap(),
            max_page_number: default_max_page_number(),
            max_session_bytes: default_max_session_bytes(),
            allowed_lateness: None,
            late_update_interval: default_late_update_interval(),
            max_out_of_orderness: default_max_out_of_orderness(),
            idle_source_timeout: default_idle_source_timeout(),
            slow_window_log_threshold: default_slow_window_log_threshold(),
        }
    }
}

fn default_gap() -> DurationString {
    DEFAULT_GAP.into()
}

fn default_max_page_number() -> i32 {
    DEFAULT_MAX_PAGE_NUMBER
}

fn default_max_session_bytes() -> ByteSize {
    DEFAULT_MAX_SESSION_BYTES.into()
}

fn default_late_update_interval() -> DurationString {
    DEFAULT_LATE_UPDATE_INTERVAL.into()
}

fn default_max_out_of_orderness() -> DurationString {
    DEFAULT_MAX_OUT_OF_ORDERNESS.into()
}

fn default_idle_source_timeout() -> DurationString {
    DEFAULT_IDLE_SOURCE_TIMEOUT.into()
}

fn default_slow_window_log_threshold() -> DurationString {
    DEFAULT_SLOW_WINDOW_LOG_THRESHOLD.into()
}
