//! What `/status` shows about the streaming job, per key group: positions, log-end offsets, lag,
//! watermark, open sessions; and the health of the history store. The stream loop builds a fresh
//! [`StreamStatus`] periodically and publishes it; HTTP handlers only read the last one.
//!
//! Building a status must never block or talk to Kafka: log-end offsets come from a cache the
//! offsets task refreshes in the background.

use std::collections::BTreeMap;

use serde::Serialize;

use super::commit::TopicPartition;
use crate::engine::Counters;

/// The streaming part of `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// Partition count of the source topics (= number of key groups of the job).
    pub partitions: u32,
    /// First key group this worker owns.
    pub first_key_group: u32,
    /// One past the last key group this worker owns.
    pub end_key_group: u32,
    /// Whether the partitions are assigned and the engine runs.
    pub running: bool,
    /// The combined watermark pushed into the key groups (epoch ms), if any.
    pub combined_watermark: Option<i64>,
    /// Per key group.
    pub key_groups: Vec<KeyGroupStatus>,
    /// The history store's health.
    pub history: HistoryHealth,
    /// Records produced and not yet acknowledged.
    pub in_flight: u64,
    /// What happened to the input, over all key groups.
    pub counters: Counters,
}

/// One key group in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyGroupStatus {
    /// The key group (= source partition index).
    pub key_group: u32,
    /// Its watermark (epoch ms), `None` before the first event.
    pub watermark: Option<i64>,
    /// Open sessions in memory.
    pub open_sessions: u64,
    /// Sum of the lags of its partitions, when all are known.
    pub lag: Option<i64>,
    /// Its partition of every source topic.
    pub partitions: Vec<PartitionStatus>,
}

/// One source partition in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to consume, once something was consumed.
    pub position: Option<i64>,
    /// Log-end offset (high watermark) from the last refresh.
    pub log_end_offset: Option<i64>,
    /// `logEndOffset − position`, when both are known.
    pub lag: Option<i64>,
}

/// Health of the history store as the stream loop saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryHealth {
    /// `true` when no history error happened yet.
    pub ok: bool,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// Lag of a partition: log end minus position, never negative.
pub fn lag(position: Option<i64>, log_end: Option<i64>) -> Option<i64> {
    Some((log_end? - position?).max(0))
}

/// The partition statuses of one key group from positions and cached log ends.
pub fn partitions(
    topics: &[String],
    partition: i32,
    positions: &BTreeMap<TopicPartition, i64>,
    log_ends: &BTreeMap<TopicPartition, i64>,
) -> Vec<PartitionStatus> {
    topics
        .iter()
        .enumerate()
        .map(|(t, topic)| {
            let position = positions.get(&(t, partition)).copied();
            let log_end_offset = log_ends.get(&(t, partition)).copied();
            PartitionStatus {
                topic: topic.clone(),
                partition,
                position,
                log_end_offset,
                lag: lag(position, log_end_offset),
            }
        })
        .collect()
}

/// The key group's lag: the sum over its partitions, `None` if any is unknown.
pub fn total_lag(partitions: &[PartitionStatus]) -> Option<i64> {
    partitions.iter().map(|p| p.lag).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_known_once_position_and_log_end_are() {
        assert_eq!(lag(Some(5), Some(9)), Some(4));
        assert_eq!(lag(Some(9), Some(5)), Some(0));
        assert_eq!(lag(None, Some(5)), None);
        let topics = vec!["a".to_owned(), "b".to_owned()];
        let positions = BTreeMap::from([((0, 3), 10), ((1, 3), 4)]);
        let ends = BTreeMap::from([((0, 3), 15), ((1, 3), 4)]);
        let parts = partitions(&topics, 3, &positions, &ends);
        assert_eq!(parts[0].lag, Some(5));
        assert_eq!(parts[1].lag, Some(0));
        assert_eq!(total_lag(&parts), Some(5));
        let unknown = partitions(&topics, 3, &positions, &BTreeMap::new());
        assert_eq!(total_lag(&unknown), None);
    }
}
