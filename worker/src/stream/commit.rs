//! Commit bookkeeping for at-least-once output: a consumed offset may be committed only once
//! every record produced from it, and from everything consumed before it, is acknowledged.
//!
//! Work is grouped into *batches* in the order it happened (a run of consumed messages, or a
//! timer tick). Each batch records the positions it consumed up to and counts the records it
//! produced; deliveries acknowledge their batch. The committable positions advance only over the
//! prefix of batches that are sealed and fully delivered, so a delivery that completes early can
//! never let a commit skip past one still in flight. Replays after a crash are harmless because
//! the engine's outputs are deterministic and merges are set unions.
//!
//! Pure bookkeeping: it must never talk to Kafka or read a clock.

use std::collections::{BTreeMap, VecDeque};

/// A source partition: (index of the topic in the source list, partition).
pub type TopicPartition = (usize, i32);

#[derive(Debug, Default)]
struct Batch {
    positions: BTreeMap<TopicPartition, i64>,
    pending: usize,
    sealed: bool,
}

/// The batches in flight and the positions that are safe to commit.
#[derive(Debug, Default)]
pub struct CommitLedger {
    /// Sequence number of `batches[0]`.
    base: u64,
    batches: VecDeque<Batch>,
    /// Positions of settled batches not yet handed out by [`CommitLedger::take_commit`].
    ready: BTreeMap<TopicPartition, i64>,
}

impl CommitLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a batch; returns its sequence number.
    pub fn open(&mut self) -> u64 {
        self.batches.push_back(Batch::default());
        self.base + self.batches.len() as u64 - 1
    }

    fn batch(&mut self, seq: u64) -> Option<&mut Batch> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.batches.get_mut(index)
    }

    /// Records that batch `seq` consumed `tp` up to `next_offset` (the offset to resume from).
    pub fn consumed(&mut self, seq: u64, tp: TopicPartition, next_offset: i64) {
        if let Some(batch) = self.batch(seq) {
            let position = batch.positions.entry(tp).or_insert(next_offset);
            *position = (*position).max(next_offset);
        }
    }

    /// Records that batch `seq` produced one more record whose delivery is awaited.
    pub fn produced(&mut self, seq: u64) {
        if let Some(batch) = self.batch(seq) {
            batch.pending += 1;
        }
    }

    /// Records that batch `seq` is complete: no more consumption or records will be added.
    pub fn seal(&mut self, seq: u64) {
        if let Some(batch) = self.batch(seq) {
            batch.sealed = true;
        }
        self.settle();
    }

    /// Records that one record of batch `seq` was acknowledged.
    pub fn delivered(&mut self, seq: u64) {
        if let Some(batch) = self.batch(seq) {
            batch.pending = batch.pending.saturating_sub(1);
        }
        self.settle();
    }

    /// Moves the positions of the leading complete batches into the committable set.
    fn settle(&mut self) {
        while self
            .batches
            .front()
            .is_some_and(|b| b.sealed && b.pending == 0)
        {
            if let Some(batch) = self.batches.pop_front() {
                self.base += 1;
                for (tp, next) in batch.positions {
                    let position = self.ready.entry(tp).or_insert(next);
                    *position = (*position).max(next);
                }
            }
        }
    }

    /// Batches not yet settled (open, or waiting for deliveries).
    pub fn unsettled(&self) -> usize {
        self.batches.len()
    }

    /// The positions that became committable since the last call (empty when nothing did).
    pub fn take_commit(&mut self) -> BTreeMap<TopicPartition, i64> {
        std::mem::take(&mut self.ready)
    }

    /// Hands back positions whose commit failed, so the next commit carries them again.
    pub fn requeue(&mut self, positions: BTreeMap<TopicPartition, i64>) {
        for (tp, next) in positions {
            let position = self.ready.entry(tp).or_insert(next);
            *position = (*position).max(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_without_outputs_is_committable_once_sealed() {
        let mut ledger = CommitLedger::new();
        let b = ledger.open();
        ledger.consumed(b, (0, 1), 10);
        ledger.consumed(b, (0, 1), 12);
        assert!(ledger.take_commit().is_empty(), "not sealed yet");
        ledger.seal(b);
        assert_eq!(ledger.take_commit(), BTreeMap::from([((0, 1), 12)]));
        assert!(ledger.take_commit().is_empty(), "handed out once");
        assert_eq!(ledger.unsettled(), 0);
    }

    #[test]
    fn waits_for_every_delivery_of_a_batch() {
        let mut ledger = CommitLedger::new();
        let b = ledger.open();
        ledger.consumed(b, (0, 0), 5);
        ledger.produced(b);
        ledger.produced(b);
        ledger.seal(b);
        ledger.delivered(b);
        assert!(ledger.take_commit().is_empty());
        ledger.delivered(b);
        assert_eq!(ledger.take_commit(), BTreeMap::from([((0, 0), 5)]));
    }

    #[test]
    fn a_later_batch_never_commits_past_an_earlier_one_in_flight() {
        let mut ledger = CommitLedger::new();
        let first = ledger.open();
        ledger.consumed(first, (0, 0), 5);
        ledger.produced(first);
        ledger.seal(first);
        let second = ledger.open();
        ledger.consumed(second, (0, 0), 9);
        ledger.consumed(second, (1, 0), 3);
        ledger.produced(second);
        ledger.seal(second);
        ledger.delivered(second);
        assert!(
            ledger.take_commit().is_empty(),
            "the first batch is in flight"
        );
        assert_eq!(ledger.unsettled(), 2);
        ledger.delivered(first);
        assert_eq!(
            ledger.take_commit(),
            BTreeMap::from([((0, 0), 9), ((1, 0), 3)])
        );
        assert_eq!(ledger.unsettled(), 0);
    }

    #[test]
    fn tick_batches_hold_back_later_positions_until_delivered() {
        let mut ledger = CommitLedger::new();
        let tick = ledger.open();
        ledger.produced(tick);
        ledger.seal(tick);
        let read = ledger.open();
        ledger.consumed(read, (0, 2), 100);
        ledger.seal(read);
        assert!(ledger.take_commit().is_empty());
        ledger.delivered(tick);
        assert_eq!(ledger.take_commit(), BTreeMap::from([((0, 2), 100)]));
    }

    #[test]
    fn a_failed_commit_is_retried_with_what_came_since() {
        let mut ledger = CommitLedger::new();
        let b = ledger.open();
        ledger.consumed(b, (0, 0), 5);
        ledger.consumed(b, (0, 1), 7);
        ledger.seal(b);
        let failed = ledger.take_commit();
        let c = ledger.open();
        ledger.consumed(c, (0, 0), 9);
        ledger.seal(c);
        ledger.requeue(failed);
        assert_eq!(
            ledger.take_commit(),
            BTreeMap::from([((0, 0), 9), ((0, 1), 7)])
        );
    }

    #[test]
    fn unknown_batches_are_ignored() {
        let mut ledger = CommitLedger::new();
        ledger.delivered(7);
        ledger.consumed(3, (0, 0), 1);
        ledger.seal(0);
        assert!(ledger.take_commit().is_empty());
        assert_eq!(ledger.unsettled(), 0);
    }
}
