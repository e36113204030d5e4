//! The sessionization engine: events in, session records out, for one key group (= one source
//! partition) at a time. Pure and deterministic apart from the history store it is given: no
//! Kafka, no clock (processing time is passed in by the caller, in epoch milliseconds).
//!
//! Rules, in the order an input meets them:
//! - Guards: malformed → quarantine output (with the reason); a pageview with `pageNumber` over
//!   `maxPageNumber` → dropped and quarantined; an event older than `watermark −
//!   allowedLateness` → dropped (counted as `too_late`); an event stamped more than
//!   `max_future_ms` ahead of processing time → quarantined (counted as `future`). Sync and async events are treated alike
//!   beyond that; the type only decides which count an event adds to.
//! - The watermark of a key group is `max event time − maxOutOfOrderness` (or a higher combined
//!   watermark pushed in by the caller, see [`watermark::combine`]). An event below it is *late*
//!   and may belong to a closed session, so the key's history is read.
//! - Duplicates: an event id already in an open session of the key, or (for a late event) in a
//!   closed session of the key, is counted and ignored. The dedup window is therefore exactly the
//!   ids of the key's sessions in memory and in history, both bounded by the byte cap and TTL.
//! - Byte cap: if the sessions the event would join already hold `maxSessionBytes`, the event is
//!   rejected (counted, also in the key's [`KeyMeta`]).
//! - Assignment: the event joins every session within `gap` of it, open or closed, so a late
//!   event that bridges two sessions merges them. The result stays open if it can still meet
//!   on-time events (`end + gap ≥ watermark`) or absorbed an open session; otherwise it is a late
//!   update of closed sessions.
//! - Close: when the watermark passes `end + gap` the session is removed from memory (gotcha 6),
//!   merged into the key's history list and emitted at once.
//! - Late updates go to a per-key pending buffer, flushed (history write + emitted records)
//!   `lateUpdateInterval` of *processing* time after its first change, so a key emits at most one
//!   update per session per interval however far upstream lags (gotcha 9). Processing time is
//!   used because a lagging upstream moves event time in bursts: an event-time interval would
//!   let a burst through.
//!
//! Sessions merge by set union of their events (see [`crate::session`]), so a session found both
//! in memory and in history — possible briefly after a late event reopens one, or after a
//! restart replays events whose effects history already holds — merges without duplicates.
//!
//! The engine must never read the wall clock for a decision and never panic on input.

pub mod closed;
mod key_group;
mod late;
#[cfg(test)]
pub(crate) mod memory_history;
#[cfg(test)]
mod tests;
pub mod watermark;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sessionizer_crds::session_job::{SessionSettings, SinkMode, SpecError};

pub use key_group::KeyGroup;
pub use late::{PendingKey, Tombstone};

use crate::config::WorkerConfig;
use crate::event::{FieldNames, SmallString};
use crate::history::{Codec, HistoryError};
use crate::session::{Session, SessionRecord};
use watermark::Watermark;

/// The engine's settings, in the units it computes with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Inactivity gap, ms.
    pub gap_ms: i64,
    /// Highest accepted page number.
    pub max_page_number: i32,
    /// Largest size of one session in bytes.
    pub max_session_bytes: u64,
    /// How far behind the watermark an event may be and still be merged, ms.
    pub allowed_lateness_ms: i64,
    /// Late updates of a key are flushed this long (processing time) after the first one, ms.
    pub late_update_interval_ms: i64,
    /// Bounded out-of-orderness of the watermark, ms.
    pub max_out_of_orderness_ms: i64,
    /// Processing time without input after which a key group is idle, ms.
    pub idle_source_timeout_ms: i64,
    /// Closes slower than this are logged.
    pub slow_window_log_threshold: Duration,
    /// TTL of every history write.
    pub history_ttl: Duration,
    /// Prefix of history keys (`<namespace>/<job>/`), so jobs sharing a store never collide.
    pub history_prefix: String,
    /// Input field names.
    pub fields: FieldNames,
    /// Where session records go now (carried on every output; the caller picks the topic).
    pub sink: SinkMode,
    /// Events stamped more than this ahead of processing time are quarantined (a broken clock
    /// upstream would otherwise drag the watermark into the future and turn every later event
    /// into a too-late one); `None` turns the guard off.
    pub max_future_ms: Option<i64>,
    /// How each closed session is compressed in the history store (`spec.history.compression`;
    /// see [`closed`]).
    #[serde(default)]
    pub history_codec: Codec,
}

/// Default of [`EngineConfig::max_future_ms`]: one day.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 24 * 3_600_000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl EngineConfig {
    /// The engine configuration for parsed session settings.
    pub fn new(settings: &SessionSettings, history_ttl: Duration, history_prefix: String) -> Self {
        Self {
            gap_ms: millis(settings.gap),
            max_page_number: settings.max_page_number,
            max_session_bytes: settings.max_session_bytes,
            allowed_lateness_ms: millis(settings.allowed_lateness),
            late_update_interval_ms: millis(settings.late_update_interval),
            max_out_of_orderness_ms: millis(settings.max_out_of_orderness),
            idle_source_timeout_ms: millis(settings.idle_source_timeout),
            slow_window_log_threshold: settings.slow_window_log_threshold,
            history_ttl,
            history_prefix,
            fields: FieldNames::default(),
            sink: SinkMode::default(),
            max_future_ms: Some(DEFAULT_MAX_FUTURE_MS),
            history_codec: Codec::default(),
        }
    }

    /// This configuration for key group `key_group`: its history keys get the key group in
    /// their prefix (`<namespace>/<job>/<key group>/`), so a checkpoint can take one key group's
    /// records from the embedded store and any worker can own any key group later.
    pub fn for_key_group(&self, key_group: u32) -> Self {
        let mut config = self.clone();
        config.history_prefix = format!("{}{key_group}/", self.history_prefix);
        config
    }

    /// The engine configuration of a worker.
    pub fn from_worker(config: &WorkerConfig) -> Result<Self, SpecError> {
        let mut engine = Self::new(
            &config.spec.session_settings()?,
            config.spec.history_ttl()?,
            format!("{}/{}/", config.namespace, config.job),
        );
        engine.sink = config.effective_sink;
        engine.history_codec = Codec::from_spec(&config.spec.history.compression);
        Ok(engine)
    }
}

/// One record for the caller to produce.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A session version or tombstone, for the topic of `sink`, keyed by `record.key`.
    Session {
        /// The effective sink mode when the record was produced.
        sink: SinkMode,
        /// The record.
        record: SessionRecord,
    },
    /// An input that was rejected by a guard, for the quarantine topic (if any).
    Quarantine(Quarantine),
}

/// A rejected input and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantine {
    /// Why the input was rejected.
    pub reason: String,
    /// Its session key, when it could be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The input, as UTF-8 (lossy).
    pub raw: String,
}

/// What happened to the inputs of a key group, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Records received.
    pub records: u64,
    /// Undecodable records (quarantined).
    pub malformed: u64,
    /// Pageviews over `maxPageNumber` (dropped).
    pub page_number_dropped: u64,
    /// Events rejected because their session reached `maxSessionBytes`.
    pub over_byte_cap: u64,
    /// Duplicate events.
    pub duplicates: u64,
    /// Events older than `watermark − allowedLateness` (dropped).
    pub too_late: u64,
    /// Events stamped too far in the future (quarantined).
    #[serde(default)]
    pub future: u64,
    /// Late events merged into closed sessions.
    pub late_merged: u64,
    /// Sessions closed and emitted.
    pub sessions_closed: u64,
    /// Late updates emitted.
    pub late_updates: u64,
    /// Tombstones emitted.
    pub tombstones: u64,
}

/// Per-key metadata of a key with open sessions (removed with its last open session).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Total bytes of the key's open sessions.
    pub open_bytes: u64,
    /// Events of this key rejected by the byte cap while it had open sessions.
    pub rejected_events: u64,
    /// The key's close timer: at or before the earliest `end + gap` of its open sessions (it
    /// is not moved as sessions grow, only re-armed when it fires early).
    pub deadline: i64,
}

/// Everything a key group keeps in memory; what a checkpoint stores.
///
/// The per-key maps are hash maps: every event looks its key up in two or three of them, and with
/// thousands of keys a B-tree's string comparisons cost more than hashing the key once. They use
/// std's randomly seeded hasher, so whoever writes the source topic cannot pick keys that
/// collide. A checkpoint still writes them sorted by key, so equal states encode to
/// equal bytes, and the engine sorts keys wherever it walks a map to emit records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyGroupState {
    /// The key group (source partition index).
    pub key_group: u32,
    /// Its watermark.
    pub watermark: Watermark,
    /// Open sessions by key, pairwise more than `gap` apart. Their event ids are the dedup
    /// window for on-time events.
    #[serde(serialize_with = "sorted")]
    pub open: HashMap<SmallString, Vec<Session>>,
    /// Close timers: `(deadline, key)`, one per key with open sessions ([`KeyMeta::deadline`]).
    pub timers: BTreeSet<(i64, SmallString)>,
    /// Per-key metadata, for keys with open sessions.
    #[serde(serialize_with = "sorted")]
    pub meta: HashMap<SmallString, KeyMeta>,
    /// Buffered late updates by key.
    #[serde(serialize_with = "sorted")]
    pub pending: HashMap<SmallString, PendingKey>,
    /// Counters.
    pub counters: Counters,
}

/// Serializes a per-key map in key order.
fn sorted<V: Serialize, S: serde::Serializer>(
    map: &HashMap<SmallString, V>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let ordered: BTreeMap<&SmallString, &V> = map.iter().collect();
    ordered.serialize(serializer)
}

/// The keys of a per-key map, sorted: the order the engine walks them in when it emits records,
/// so a replay emits them in the same order.
fn sorted_keys<V>(map: &HashMap<SmallString, V>) -> Vec<SmallString> {
    let mut keys: Vec<SmallString> = map.keys().cloned().collect();
    keys.sort_unstable();
    keys
}

/// Why the engine could not go on; the worker stops and restores from its last checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading or writing history failed.
    #[error("history: {0}")]
    History(#[from] HistoryError),
}
