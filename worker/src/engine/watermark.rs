//! Event-time watermarks: one per key group (= source partition), bounded out-of-orderness, and
//! the combination across key groups in which idle partitions do not hold the watermark back.
//!
//! Processing time is always passed in by the caller (milliseconds); this module must never read
//! a clock, so that tests and replays are deterministic.

use serde::{Deserialize, Serialize};

/// The watermark state of one key group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Highest event time accepted so far.
    pub max_event_time: Option<i64>,
    /// A watermark pushed in from outside (the combined watermark), if higher than our own.
    pub external: Option<i64>,
    /// Processing time of the last input (any record, even a malformed one).
    pub last_input_at: Option<i64>,
}

impl Watermark {
    /// The current watermark: `max event time − maxOutOfOrderness`, or the external watermark
    /// if that is higher; `None` before any event.
    pub fn current(&self, max_out_of_orderness_ms: i64) -> Option<i64> {
        let own = self
            .max_event_time
            .map(|t| t.saturating_sub(max_out_of_orderness_ms));
        own.max(self.external)
    }

    /// Records an accepted event time.
    pub fn observe(&mut self, event_time: i64) {
        self.max_event_time = self.max_event_time.max(Some(event_time));
    }

    /// Raises the external watermark (it never goes back).
    pub fn advance_to(&mut self, watermark: i64) {
        self.external = self.external.max(Some(watermark));
    }

    /// Whether the key group's input has been idle for `idle_timeout_ms` at processing time
    /// `now_ms` (a key group that never received anything is idle).
    pub fn is_idle(&self, now_ms: i64, idle_timeout_ms: i64) -> bool {
        self.last_input_at
            .is_none_or(|at| now_ms.saturating_sub(at) >= idle_timeout_ms)
    }
}

/// What the combiner needs to know about one key group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionWatermark {
    /// The key group's own watermark.
    pub watermark: Option<i64>,
    /// Whether it is idle (see [`Watermark::is_idle`]).
    pub idle: bool,
}

/// The combined watermark of several key groups: the minimum over the active (non-idle) ones
/// with a watermark; when all are idle, the maximum of all. `None` when no key group has one.
///
/// The caller pushes it into every key group with `KeyGroup::advance_watermark`, so the
/// sessions of an idle partition still close; a busy key group is never affected because its
/// own watermark is at least the combined one.
pub fn combine(parts: &[PartitionWatermark]) -> Option<i64> {
    let active = parts
        .iter()
        .filter(|p| !p.idle)
        .filter_map(|p| p.watermark)
        .min();
    active.or_else(|| parts.iter().filter_map(|p| p.watermark).max())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trails_the_highest_event_time() {
        let mut w = Watermark::default();
        assert_eq!(w.current(5), None);
        w.observe(100);
        w.observe(50);
        assert_eq!(w.current(5), Some(95));
        w.advance_to(90);
        assert_eq!(w.current(5), Some(95));
        w.advance_to(200);
        assert_eq!(w.current(5), Some(200));
    }

    #[test]
    fn idle_partitions_do_not_hold_the_combined_watermark_back() {
        let busy = PartitionWatermark {
            watermark: Some(100),
            idle: false,
        };
        let slow = PartitionWatermark {
            watermark: Some(10),
            idle: false,
        };
        let idle = PartitionWatermark {
            watermark: Some(10),
            idle: true,
        };
        assert_eq!(combine(&[busy, slow]), Some(10));
        assert_eq!(combine(&[busy, idle]), Some(100));
        assert_eq!(combine(&[idle]), Some(10));
        assert_eq!(combine(&[]), None);
    }

    #[test]
    fn idleness_is_measured_in_processing_time() {
        let mut w = Watermark::default();
        assert!(w.is_idle(0, 60_000));
        w.last_input_at = Some(1_000);
        assert!(!w.is_idle(60_999, 60_000));
        assert!(w.is_idle(61_000, 60_000));
    }
}
