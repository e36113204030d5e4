//! The stream loop's state and steps: the key groups of this worker, what was consumed, the
//! commit ledger and the sink. Each step is one transition — a consumed message, a timer tick
//! (processing time, combined watermark, due late updates), a commit, a status refresh — so the
//! loop in [`super::run`] only decides which step comes next.
//!
//! All key groups live in one task and are processed one after the other, so no key group ever
//! waits for a lock held by another. It must never commit an offset the ledger has not released
//! and never swallow a fatal history error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tracing::{error, warn};

use super::StreamError;
use super::checkpointing::{self, CheckpointError, CheckpointSummary, Checkpointing};
use super::commit::{CommitLedger, TopicPartition};
use super::consumer::commit_list;
use super::producer::Sink;
use super::router::Router;
use super::status::{self, HistoryHealth, KeyGroupStatus, StreamStatus};
use crate::checkpoint::KeyGroupCheckpoint;
use crate::engine::watermark::{self, PartitionWatermark};
use crate::engine::{Counters, EngineError, KeyGroup, Output};
use crate::event::{Event, Malformed};
use crate::history::{History, HistoryError, WriteBehind};
use crate::http::WorkerState;
use crate::metrics::EventResult;

/// Processing time now, epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether an engine error must stop the worker (the store is down or refuses writes), rather
/// than be logged and skipped (one bad record).
pub fn is_fatal(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::History(
            HistoryError::Unavailable { .. }
                | HistoryError::WritesRefused(_)
                | HistoryError::Open(_)
        )
    )
}

/// What the pipeline keeps of one consumed message.
#[derive(Debug)]
pub struct Consumed {
    /// The key group slot it belongs to.
    pub slot: usize,
    /// Its source partition.
    pub partition: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Its value.
    pub payload: Vec<u8>,
}

/// Everything the stream loop owns.
pub struct Pipeline {
    /// Routing of messages to key groups.
    pub router: Router,
    /// The key groups, by slot.
    pub groups: Vec<KeyGroup<WriteBehind<History>>>,
    /// The history store all key groups write through.
    pub history: WriteBehind<History>,
    /// Slots that accepted input since their last tick.
    touched: Vec<bool>,
    /// Next offset to consume per source partition (what was consumed, not what is committed).
    pub positions: BTreeMap<TopicPartition, i64>,
    /// Commit bookkeeping.
    pub ledger: CommitLedger,
    /// The producer side.
    pub sink: Sink,
    /// The shared state `/status` and `/metrics` read.
    pub state: Arc<WorkerState>,
    partitions: u32,
    reported: Vec<Counters>,
    history_error: Option<String>,
    combined: Option<i64>,
    /// Processing time before which no combined watermark is pushed (start + idle timeout).
    push_from_ms: i64,
    /// Checkpoints, when the job has a checkpoint store.
    pub checkpointing: Option<Checkpointing>,
    /// The decoded batch, kept between batches so its buffer is allocated once (a batch's
    /// worth is hundreds of kilobytes: a fresh one each time costs page faults).
    decoded: Vec<Decoded>,
    /// The key groups' outputs on their way to the sink, kept for the same reason (a tick that
    /// closes thousands of sessions has thousands of records).
    outputs: Vec<Output>,
}

/// A consumed message of a batch: its key group slot, its payload, and its decoding.
type Decoded = (usize, Vec<u8>, Result<Event, Malformed>);

impl Pipeline {
    /// A pipeline over `groups` (one per slot of `router`) that pushes no combined watermark
    /// before processing time `push_from_ms` (start + the job's idle timeout, see
    /// [`Self::on_tick`]).
    pub fn new(
        router: Router,
        partitions: u32,
        groups: Vec<KeyGroup<WriteBehind<History>>>,
        history: WriteBehind<History>,
        sink: Sink,
        state: Arc<WorkerState>,
        push_from_ms: i64,
    ) -> Self {
        let reported = vec![Counters::default(); groups.len()];
        Self {
            router,
            touched: vec![false; groups.len()],
            groups,
            history,
            positions: BTreeMap::new(),
            ledger: CommitLedger::new(),
            sink,
            state,
            partitions,
            reported,
            history_error: None,
            combined: None,
            push_from_ms,
            checkpointing: None,
            decoded: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Takes what the pipeline needs of a consumed message, so the batch holds no borrow of
    /// the consumer across the awaits of [`Self::on_batch`]; `None` for a partition this worker
    /// does not own.
    pub fn consumed(&self, message: &BorrowedMessage<'_>) -> Option<Consumed> {
        let Some(route) = self.router.route(message.topic(), message.partition()) else {
            warn!(
                topic = message.topic(),
                partition = message.partition(),
                "ignoring a message of a partition this worker does not own"
            );
            return None;
        };
        Some(Consumed {
            slot: route.slot,
            partition: (route.topic, message.partition()),
            offset: message.offset(),
            payload: message.payload().unwrap_or_default().to_vec(),
        })
    }

    /// Feeds a batch of consumed messages (batch `seq` of the ledger) into their key groups:
    /// decodes them, reads ahead the history of the late ones, accepts them in order, then
    /// closes what the batch made due. Takes the messages out of `messages`, leaving its
    /// buffer for the next batch.
    pub async fn on_batch(
        &mut self,
        seq: u64,
        messages: &mut Vec<Consumed>,
        now_ms: i64,
    ) -> Result<(), StreamError> {
        let mut decoded = std::mem::take(&mut self.decoded);
        for message in messages.drain(..) {
            let next = message.offset.saturating_add(1);
            self.positions.insert(message.partition, next);
            self.ledger.consumed(seq, message.partition, next);
            let event = self.groups[message.slot].decode(&message.payload);
            decoded.push((message.slot, message.payload, event));
        }
        for slot in 0..self.groups.len() {
            let events = decoded
                .iter()
                .filter(|(s, _, _)| *s == slot)
                .filter_map(|(_, _, event)| event.as_ref().ok());
            let result = self.groups[slot].prefetch_late(events).await;
            self.engine_result(slot, result.map(|()| Vec::new()))?;
        }
        let mut outputs = std::mem::take(&mut self.outputs);
        for (slot, payload, event) in decoded.drain(..) {
            let result = self.groups[slot]
                .accept_decoded_into(event, &payload, now_ms, &mut outputs)
                .await;
            self.touched[slot] = true;
            self.send_outputs(slot, result, &mut outputs, seq).await?;
        }
        self.outputs = outputs;
        self.decoded = decoded;
        self.on_batch_end(seq, now_ms).await
    }

    /// Sends what a key group appended to `outputs` (emptying it), unless the step failed: then
    /// the failure is handled as [`Self::engine_result`] does and its outputs are dropped. The
    /// callers take the buffer out of `self.outputs` and put it back after; an error returned here
    /// stops the worker, so a buffer lost on that path costs nothing.
    async fn send_outputs(
        &mut self,
        slot: usize,
        result: Result<(), EngineError>,
        outputs: &mut Vec<Output>,
        seq: u64,
    ) -> Result<(), StreamError> {
        if let Err(error) = result {
            outputs.clear();
            self.engine_result(slot, Err(error))?;
            return Ok(());
        }
        self.sink
            .send_all(outputs.drain(..), seq, &mut self.ledger)
            .await
    }

    /// Closes what the last batch (`seq`) made due in the key groups it touched.
    async fn on_batch_end(&mut self, seq: u64, now_ms: i64) -> Result<(), StreamError> {
        for slot in 0..self.groups.len() {
            if !std::mem::take(&mut self.touched[slot]) {
                continue;
            }
            let mut outputs = std::mem::take(&mut self.outputs);
            let result = self.groups[slot].tick_into(now_ms, &mut outputs).await;
            self.send_outputs(slot, result, &mut outputs, seq).await?;
            self.outputs = outputs;
        }
        Ok(())
    }

    /// Advances processing time: pushes the combined watermark (idle key groups do not hold it
    /// back) into every key group, closing due sessions and flushing due late updates.
    ///
    /// No combined watermark is pushed during the first idle timeout after start: a key group
    /// that has not received anything yet counts as idle, and right after a (re)start that only
    /// means its fetch has not arrived — pushing the first busy partition's watermark into it
    /// would turn its whole backlog into late events.
    pub async fn on_tick(&mut self, now_ms: i64) -> Result<(), StreamError> {
        self.combined = if now_ms >= self.push_from_ms {
            let parts: Vec<PartitionWatermark> = self
                .groups
                .iter()
                .map(|g| g.partition_watermark(now_ms))
                .collect();
            watermark::combine(&parts)
        } else {
            None
        };
        let seq = self.ledger.open();
        let mut outputs = std::mem::take(&mut self.outputs);
        for slot in 0..self.groups.len() {
            let group = &mut self.groups[slot];
            let result = match self.combined {
                Some(wm) => group.advance_watermark_into(wm, now_ms, &mut outputs).await,
                None => group.tick_into(now_ms, &mut outputs).await,
            };
            self.send_outputs(slot, result, &mut outputs, seq).await?;
        }
        self.outputs = outputs;
        self.ledger.seal(seq);
        Ok(())
    }

    fn engine_result(
        &mut self,
        slot: usize,
        result: Result<Vec<Output>, EngineError>,
    ) -> Result<Vec<Output>, StreamError> {
        match result {
            Ok(outputs) => Ok(outputs),
            Err(e) => {
                self.history_error = Some(e.to_string());
                let key_group = self.router.key_group(slot);
                if is_fatal(&e) {
                    error!(error = %e, key_group, "the history store failed; stopping");
                    self.publish_status(&BTreeMap::new());
                    Err(StreamError::Engine(e))
                } else {
                    error!(error = %e, key_group, "skipping an input the engine could not process");
                    Ok(Vec::new())
                }
            }
        }
    }

    /// Commits the positions the ledger released since the last commit, once every history
    /// write made so far is stored (a committed offset must never point past a history write
    /// that could still be lost).
    pub async fn commit(
        &mut self,
        consumer: &StreamConsumer,
        mode: CommitMode,
    ) -> Result<(), StreamError> {
        let positions = self.ledger.take_commit();
        if positions.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.history.flush().await {
            self.ledger.requeue(positions);
            return Err(StreamError::Engine(EngineError::History(error)));
        }
        let list = commit_list(&self.router, &positions)?;
        let result = consumer
            .commit(&list, mode)
            .map_err(|source| StreamError::Kafka("committing offsets", source));
        if result.is_err() {
            self.ledger.requeue(positions);
        }
        result
    }

    /// Brings the metrics up to date and publishes a fresh `/status`.
    pub fn publish_status(&mut self, log_ends: &BTreeMap<TopicPartition, i64>) {
        self.report_counters();
        let metrics = self.state.metrics().stream();
        let now = now_ms();
        let mut key_groups = Vec::with_capacity(self.groups.len());
        for (slot, group) in self.groups.iter().enumerate() {
            let key_group = self.router.key_group(slot);
            let partition = key_group as i32;
            let partitions =
                status::partitions(self.router.topics(), partition, &self.positions, log_ends);
            for p in &partitions {
                if let Some(lag) = p.lag {
                    metrics.set_lag(&p.topic, p.partition, lag);
                }
            }
            key_groups.push(KeyGroupStatus {
                key_group,
                watermark: group.partition_watermark(now).watermark,
                open_sessions: group.open_sessions() as u64,
                lag: status::total_lag(&partitions),
                partitions,
            });
        }
        let range = self.router.key_groups();
        self.state.publish_stream(StreamStatus {
            partitions: self.partitions,
            first_key_group: range.start,
            end_key_group: range.end,
            running: true,
            combined_watermark: self.combined,
            key_groups,
            history: HistoryHealth {
                ok: self.history_error.is_none(),
                last_error: self.history_error.clone(),
            },
            in_flight: self.sink.in_flight() as u64,
            counters: self.counters_total(),
        });
    }

    /// The counters of all key groups added up.
    fn counters_total(&self) -> Counters {
        let mut total = Counters::default();
        for group in &self.groups {
            let c = group.counters();
            total.records += c.records;
            total.malformed += c.malformed;
            total.page_number_dropped += c.page_number_dropped;
            total.over_byte_cap += c.over_byte_cap;
            total.duplicates += c.duplicates;
            total.too_late += c.too_late;
            total.future += c.future;
            total.late_merged += c.late_merged;
            total.sessions_closed += c.sessions_closed;
            total.late_updates += c.late_updates;
            total.tombstones += c.tombstones;
        }
        total
    }

    /// Every key group's state with the source offsets it is consistent with. Call between
    /// batches.
    pub fn snapshot(&self) -> Vec<KeyGroupCheckpoint> {
        let topics = self.router.topics();
        self.groups
            .iter()
            .enumerate()
            .map(|(slot, group)| {
                let key_group = self.router.key_group(slot);
                let offsets = topics
                    .iter()
                    .enumerate()
                    .filter_map(|(t, name)| {
                        let position = self.positions.get(&(t, key_group as i32))?;
                        Some((name.clone(), *position))
                    })
                    .collect();
                KeyGroupCheckpoint {
                    key_group,
                    offsets,
                    state: group.snapshot(),
                    history: Vec::new(),
                }
            })
            .collect()
    }

    /// The consistent point a checkpoint needs: pending late updates emitted (see
    /// [`KeyGroup::flush_pending`]), every record produced so far acknowledged
    /// (a checkpoint must never claim a session was emitted when its record could still be
    /// lost), every history write stored, the state copied. Returns the copy, when the pause
    /// started, and how long it lasted.
    async fn pause_for_checkpoint(
        &mut self,
        drain_timeout: Duration,
    ) -> Result<(Vec<KeyGroupCheckpoint>, Instant, Duration), StreamError> {
        let started = Instant::now();
        let seq = self.ledger.open();
        for slot in 0..self.groups.len() {
            let result = self.groups[slot].flush_pending().await;
            let outputs = self.engine_result(slot, result)?;
            self.sink.send_all(outputs, seq, &mut self.ledger).await?;
        }
        self.ledger.seal(seq);
        self.sink.drain(&mut self.ledger, drain_timeout).await?;
        self.history
            .flush()
            .await
            .map_err(|e| StreamError::Engine(EngineError::History(e)))?;
        let snapshot = self.snapshot();
        Ok((snapshot, started, started.elapsed()))
    }

    /// Collects a finished background checkpoint, then starts the periodic one if it is due.
    pub async fn maybe_checkpoint(
        &mut self,
        now_ms: i64,
        drain_timeout: Duration,
    ) -> Result<(), StreamError> {
        let Some(checkpointing) = self.checkpointing.as_mut() else {
            return Ok(());
        };
        if let Some(outcome) = checkpointing.poll_upload().await {
            self.record_checkpoint(outcome);
        }
        let Some(checkpointing) = self.checkpointing.as_mut() else {
            return Ok(());
        };
        if !checkpointing.due(now_ms) {
            return Ok(());
        }
        let id = checkpointing.take_due_id(now_ms);
        let (snapshot, started, pause) = self.pause_for_checkpoint(drain_timeout).await?;
        if let Some(checkpointing) = self.checkpointing.as_mut() {
            checkpointing.start_upload(id, snapshot, started, pause);
        }
        Ok(())
    }

    /// Takes a checkpoint now and waits for it (`POST /control/checkpoint`, or a stop when
    /// `is_final`).
    pub async fn checkpoint_now(
        &mut self,
        id: String,
        is_final: bool,
        drain_timeout: Duration,
    ) -> Result<CheckpointSummary, StreamError> {
        let Some(checkpointing) = self.checkpointing.as_mut() else {
            return Err(StreamError::Unsupported(
                "this worker has no checkpoint store",
            ));
        };
        if let Some(outcome) = checkpointing.finish_upload().await {
            self.record_checkpoint(outcome);
        }
        let (snapshot, started, pause) = self.pause_for_checkpoint(drain_timeout).await?;
        let Some(checkpointing) = self.checkpointing.as_ref() else {
            return Err(StreamError::Unsupported(
                "this worker has no checkpoint store",
            ));
        };
        match checkpointing
            .write_now(id, snapshot, started, pause, is_final)
            .await
        {
            Ok(summary) => {
                self.record_checkpoint(Ok(summary.clone()));
                Ok(summary)
            }
            Err(error) => {
                let message = error.to_string();
                self.record_checkpoint(Err(error));
                Err(StreamError::Checkpoint(message))
            }
        }
    }

    fn record_checkpoint(&mut self, outcome: Result<CheckpointSummary, CheckpointError>) {
        checkpointing::log_outcome(&outcome);
        let metrics = self.state.metrics().stream();
        match outcome {
            Ok(summary) => {
                metrics.checkpoint(Ok((
                    Duration::from_millis(summary.pause_millis),
                    Duration::from_millis(summary.duration_millis),
                    summary.bytes,
                )));
                self.state.set_last_checkpoint(summary);
            }
            Err(_) => metrics.checkpoint(Err(())),
        }
    }

    /// Adds what the key groups counted since the last report to the metrics.
    fn report_counters(&mut self) {
        let metrics = self.state.metrics().stream();
        for (group, last) in self.groups.iter().zip(self.reported.iter_mut()) {
            let now = group.counters();
            let d = |f: fn(&Counters) -> u64| f(now).saturating_sub(f(last));
            let records = d(|c| c.records);
            let malformed = d(|c| c.malformed);
            let page = d(|c| c.page_number_dropped);
            let duplicate = d(|c| c.duplicates);
            let too_late = d(|c| c.too_late);
            let capped = d(|c| c.over_byte_cap);
            let future = d(|c| c.future);
            let rejected = malformed + page + duplicate + too_late + capped + future;
            metrics.events(EventResult::accepted, records.saturating_sub(rejected));
            metrics.events(EventResult::malformed, malformed);
            metrics.events(EventResult::page_dropped, page);
            metrics.events(EventResult::duplicate, duplicate);
            metrics.events(EventResult::too_late, too_late);
            metrics.events(EventResult::capped, capped);
            metrics.events(EventResult::future, future);
            metrics.sessions_emitted(d(|c| c.sessions_closed));
            metrics.late_updates(d(|c| c.late_updates));
            *last = now.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unusable_store_is_fatal() {
        let unavailable = EngineError::History(HistoryError::Unavailable {
            attempts: 3,
            message: "down".into(),
        });
        assert!(is_fatal(&unavailable));
        assert!(is_fatal(&EngineError::History(
            HistoryError::WritesRefused("stop-writes".into())
        )));
        let too_big = EngineError::History(HistoryError::TooBig {
            key: "k".into(),
            bytes: 1 << 30,
        });
        assert!(!is_fatal(&too_big));
    }
}
