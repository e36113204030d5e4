//! One key group's engine: the state of [`KeyGroupState`] plus a history store handle, and the
//! transitions (accept an event, close due sessions, flush late updates).
//!
//! It must never read the wall clock for a decision (processing time comes in as `now_ms`),
//! and must remove a session from memory before moving it to history (gotcha 6).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use sessionizer_crds::session_job::SinkMode;
use tracing::{debug, warn};

use super::closed::ClosedSessions;
use super::late::PendingKey;
use super::watermark::PartitionWatermark;
use super::{EngineConfig, EngineError, KeyGroupState, Output, Quarantine};
use crate::event::{Event, Malformed, SmallString, decode, page_number_too_high};
use crate::history::HistoryStore;
use crate::session::{Session, SessionRecord};

/// Keys per history read of a prefetch.
const PREFETCH_BATCH: usize = 256;

/// The engine of one key group.
pub struct KeyGroup<H> {
    config: EngineConfig,
    history: H,
    state: KeyGroupState,
    /// Processing time of the earliest pending flush (a lower bound; `i64::MIN` after a restore
    /// so the first tick looks), so ticks without due flushes skip the pending buffers.
    next_flush_ms: i64,
    /// History of keys read ahead for the current batch ([`Self::prefetch_late`]).
    prefetched: HashMap<SmallString, ClosedSessions>,
}

impl<H: HistoryStore> KeyGroup<H> {
    /// An empty key group.
    pub fn new(key_group: u32, config: EngineConfig, history: H) -> Self {
        let state = KeyGroupState {
            key_group,
            ..KeyGroupState::default()
        };
        Self::restore(config, history, state)
    }

    /// A key group restored from a checkpoint.
    pub fn restore(config: EngineConfig, history: H, state: KeyGroupState) -> Self {
        Self {
            config,
            history,
            state,
            next_flush_ms: i64::MIN,
            prefetched: HashMap::new(),
        }
    }

    /// The state to checkpoint.
    pub fn snapshot(&self) -> KeyGroupState {
        self.state.clone()
    }

    /// The current watermark (`None` before the first event).
    pub fn watermark(&self) -> Option<i64> {
        self.state
            .watermark
            .current(self.config.max_out_of_orderness_ms)
    }

    /// This key group's contribution to the combined watermark at processing time `now_ms`.
    pub fn partition_watermark(&self, now_ms: i64) -> PartitionWatermark {
        PartitionWatermark {
            watermark: self.watermark(),
            idle: self
                .state
                .watermark
                .is_idle(now_ms, self.config.idle_source_timeout_ms),
        }
    }

    /// What happened so far.
    pub fn counters(&self) -> &super::Counters {
        &self.state.counters
    }

    /// Number of open sessions.
    pub fn open_sessions(&self) -> usize {
        self.state.open.values().map(Vec::len).sum()
    }

    /// Changes the TTL of later history writes (a live `history.ttl` change).
    pub fn set_history_ttl(&mut self, ttl: std::time::Duration) {
        self.config.history_ttl = ttl;
    }

    /// Switches the sink mode carried by later outputs (a cutover).
    pub fn set_sink(&mut self, sink: SinkMode) {
        self.config.sink = sink;
    }

    /// Processes one input record received at processing time `now_ms`, then closes what is due
    /// and flushes due late updates.
    pub async fn process(&mut self, raw: &[u8], now_ms: i64) -> Result<Vec<Output>, EngineError> {
        let mut out = self.accept_record(raw, now_ms).await?;
        out.extend(self.tick(now_ms).await?);
        Ok(out)
    }

    /// Processes one input record received at processing time `now_ms` without closing what
    /// became due: the stream loop accepts a whole batch, then calls [`Self::tick`] once, so the
    /// history reads of all sessions the batch closes go out together. Closing a due session a
    /// batch later changes nothing: a key's own due sessions are closed before its next event
    /// is accepted.
    pub async fn accept_record(
        &mut self,
        raw: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Output>, EngineError> {
        let decoded = self.decode(raw);
        self.accept_decoded(decoded, raw, now_ms).await
    }

    /// Decodes a raw input with this job's field names (the first half of
    /// [`Self::accept_record`], so a batch can be decoded, prefetched, then accepted).
    pub fn decode(&self, raw: &[u8]) -> Result<Event, Malformed> {
        decode(raw, &self.config.fields)
    }

    /// Reads, concurrently, the history of the keys of `events` that are late now (their
    /// sessions may be closed), so that accepting them does not wait for one read after another.
    /// Valid until the next [`Self::tick`]: only ticks write history.
    pub async fn prefetch_late<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Result<(), EngineError> {
        let Some(wm) = self.watermark() else {
            return Ok(());
        };
        let lateness = self.config.allowed_lateness_ms;
        let keys: BTreeSet<SmallString> = events
            .into_iter()
            .filter(|e| e.time < wm && e.time >= wm.saturating_sub(lateness))
            .filter(|e| !self.state.pending.contains_key(&e.key))
            .filter(|e| !self.prefetched.contains_key(&e.key))
            .map(|e| e.key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<SmallString> = keys.into_iter().collect();
        let found = self.prefetch(&keys).await?;
        self.prefetched.extend(found);
        Ok(())
    }

    /// The second half of [`Self::accept_record`]: guards, dedup, assignment.
    pub async fn accept_decoded(
        &mut self,
        decoded: Result<Event, Malformed>,
        raw: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Output>, EngineError> {
        let mut out = Vec::new();
        self.accept_decoded_into(decoded, raw, now_ms, &mut out)
            .await?;
        Ok(out)
    }

    /// [`Self::accept_decoded`], appending its outputs to `out` (the stream loop keeps one
    /// buffer for all of them). On an error, what it appended is not meant to be emitted.
    pub async fn accept_decoded_into(
        &mut self,
        decoded: Result<Event, Malformed>,
        raw: &[u8],
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        let counters = &mut self.state.counters;
        counters.records += 1;
        self.state.watermark.last_input_at = self.state.watermark.last_input_at.max(Some(now_ms));
        let event = match decoded {
            Ok(event) => event,
            Err(reason) => {
                counters.malformed += 1;
                debug!(%reason, key_group = self.state.key_group, "quarantining a malformed event");
                out.push(quarantine(reason.to_string(), None, raw));
                return Ok(());
            }
        };
        if page_number_too_high(&event, self.config.max_page_number) {
            counters.page_number_dropped += 1;
            out.push(quarantine(
                format!(
                    "pageNumber {} exceeds maxPageNumber {}",
                    event.page_number.unwrap_or_default(),
                    self.config.max_page_number
                ),
                Some(event.key.to_string()),
                raw,
            ));
            return Ok(());
        }
        if let Some(max) = self.config.max_future_ms
            && event.time > now_ms.saturating_add(max)
        {
            counters.future += 1;
            out.push(quarantine(
                format!(
                    "timestamp {} is more than {max} ms ahead of processing time {now_ms}",
                    event.time
                ),
                Some(event.key.to_string()),
                raw,
            ));
            return Ok(());
        }
        let watermark = self.watermark();
        if let Some(wm) = watermark
            && event.time < wm.saturating_sub(self.config.allowed_lateness_ms)
        {
            self.state.counters.too_late += 1;
            debug!(key = %event.key, event_time = event.time, watermark = wm, "dropping an event older than the allowed lateness");
            return Ok(());
        }
        // Close the key's sessions that are due before the event can touch them, as a tick
        // after the previous event would have: what a key emits then depends only on its own
        // input and the watermark, never on where batch boundaries fell — so a replay after a
        // restore emits exactly what the run before the crash did.
        if let Some(wm) = watermark
            && self
                .state
                .meta
                .get(&event.key)
                .is_some_and(|meta| meta.deadline < wm)
        {
            let key = event.key.clone();
            self.close(&key, Some(wm), None, out).await?;
        }
        let late = watermark.is_some_and(|wm| event.time < wm);
        let time = event.time;
        self.accept(event, late, watermark, now_ms).await?;
        self.state.watermark.observe(time);
        Ok(())
    }

    /// Raises the watermark to `watermark` (the combined watermark, so an idle key group's
    /// sessions still close), then closes what is due.
    pub async fn advance_watermark(
        &mut self,
        watermark: i64,
        now_ms: i64,
    ) -> Result<Vec<Output>, EngineError> {
        let mut out = Vec::new();
        self.advance_watermark_into(watermark, now_ms, &mut out)
            .await?;
        Ok(out)
    }

    /// [`Self::advance_watermark`], appending its outputs to `out` as [`Self::tick_into`] does.
    pub async fn advance_watermark_into(
        &mut self,
        watermark: i64,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        self.state.watermark.advance_to(watermark);
        self.tick_into(now_ms, out).await
    }

    /// Closes the sessions the watermark has passed and flushes the late updates due at
    /// processing time `now_ms`. Call it periodically even without input.
    pub async fn tick(&mut self, now_ms: i64) -> Result<Vec<Output>, EngineError> {
        let mut out = Vec::new();
        self.tick_into(now_ms, &mut out).await?;
        Ok(out)
    }

    /// [`Self::tick`], appending its outputs to `out` (the stream loop keeps one buffer for all
    /// of them: a tick that closes many sessions would otherwise fault in fresh pages for them
    /// every time). On an error, what it appended is not meant to be emitted.
    pub async fn tick_into(
        &mut self,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        // Ticks write history: what was prefetched for the batch may be stale after this.
        self.prefetched.clear();
        if let Some(wm) = self.watermark() {
            let due = self.due_keys(wm);
            let mut closed = self.prefetch(&due).await?;
            // About one record per key: grown by doubling, a large tick's records would be
            // copied over and over into freshly faulted pages.
            out.reserve(due.len());
            for key in due {
                let closed = closed.remove(&key);
                self.close(&key, Some(wm), closed, out).await?;
            }
        }
        if now_ms >= self.next_flush_ms {
            let mut next = i64::MAX;
            let mut due = Vec::new();
            for (key, pending) in &self.state.pending {
                if pending.due_at <= now_ms {
                    due.push(key.clone());
                } else {
                    next = next.min(pending.due_at);
                }
            }
            self.next_flush_ms = next;
            due.sort_unstable();
            for key in due {
                self.flush(&key, out).await?;
            }
        }
        Ok(())
    }

    /// The keys with an open session that `watermark` has passed, in timer order. A timer can
    /// be early (see [`Self::add_in_place`]): a key whose sessions all reach past the watermark
    /// gets its timer re-armed at its true deadline instead (as [`Self::put_open`] sets it), so no
    /// history is read for it.
    fn due_keys(&mut self, watermark: i64) -> Vec<SmallString> {
        let gap = self.config.gap_ms;
        let mut due = Vec::new();
        let mut early = Vec::new();
        for (deadline, key) in &self.state.timers {
            if *deadline >= watermark {
                break;
            }
            let open = self.state.open.get(key).map_or(&[][..], Vec::as_slice);
            if earliest_deadline(open, gap).is_none_or(|actual| actual < watermark) {
                due.push(key.clone());
            } else {
                early.push(key.clone());
            }
        }
        for key in early {
            let open = self.take_open(&key);
            self.put_open(&key, open);
        }
        due
    }

    /// The closed sessions of `keys` (those without a pending buffer), read from history
    /// [`PREFETCH_BATCH`] keys per [`HistoryStore::get_many`].
    async fn prefetch(
        &self,
        keys: &[SmallString],
    ) -> Result<HashMap<SmallString, ClosedSessions>, EngineError> {
        let mut found = HashMap::with_capacity(keys.len());
        let wanted: Vec<&SmallString> = keys
            .iter()
            .filter(|key| !self.state.pending.contains_key(*key))
            .collect();
        for chunk in wanted.chunks(PREFETCH_BATCH) {
            let history_keys: Vec<String> = chunk.iter().map(|key| self.history_key(key)).collect();
            let values = self.history.get_many(&history_keys).await?;
            for ((key, history_key), value) in chunk.iter().zip(history_keys).zip(values) {
                found.insert((*key).clone(), decode_history(&history_key, value)?);
            }
        }
        Ok(found)
    }

    /// Emits every pending late update now, whatever its due time. A checkpoint calls it
    /// first: a pending buffer holds the key's whole closed-session list, which belongs in
    /// history, not in every checkpoint. It only moves some updates earlier, by at most one
    /// checkpoint interval.
    pub async fn flush_pending(&mut self) -> Result<Vec<Output>, EngineError> {
        let mut out = Vec::new();
        for key in super::sorted_keys(&self.state.pending) {
            self.flush(&key, &mut out).await?;
        }
        Ok(out)
    }

    /// End of a bounded input (tests, batch replays): closes every open session and flushes
    /// every pending update, whatever the watermark and the time. A stopping worker does not
    /// call this: it checkpoints [`KeyGroup::snapshot`] instead.
    pub async fn finish(&mut self) -> Result<Vec<Output>, EngineError> {
        self.prefetched.clear();
        let mut out = Vec::new();
        for key in super::sorted_keys(&self.state.open) {
            self.close(&key, None, None, &mut out).await?;
        }
        for key in super::sorted_keys(&self.state.pending) {
            self.flush(&key, &mut out).await?;
        }
        Ok(out)
    }

    async fn accept(
        &mut self,
        event: Event,
        late: bool,
        watermark: Option<i64>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let gap = self.config.gap_ms;
        let mut closed = if late {
            self.closed_view(&event.key).await?
        } else {
            ClosedSessions::default()
        };
        let open = self
            .state
            .open
            .get(&event.key)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let seen = |s: &Session| s.events.contains_key(&event.id);
        if open.iter().any(seen) || closed.contains_event(&event.key, &event.id, event.time)? {
            self.state.counters.duplicates += 1;
            return Ok(());
        }
        let touched_bytes: u64 = open
            .iter()
            .filter(|s| s.touches(event.time, gap))
            .map(Session::bytes)
            .sum::<u64>()
            + closed.touching_bytes(event.time, gap);
        if touched_bytes >= self.config.max_session_bytes {
            self.state.counters.over_byte_cap += 1;
            if let Some(meta) = self.state.meta.get_mut(&event.key) {
                meta.rejected_events += 1;
            }
            debug!(key = %event.key, bytes = touched_bytes, "session reached maxSessionBytes; rejecting an event");
            return Ok(());
        }
        let event = if late {
            event
        } else {
            match self.add_in_place(event) {
                None => return Ok(()),
                Some(event) => event,
            }
        };

        let key = event.key.clone();
        let mut open = self.take_open(&key);
        let mut merged = Session::from_event(event);
        let mut touched_open = false;
        let mut touched_closed = false;
        // Absorb every session within `gap` until none is left: one event can bridge several.
        loop {
            let mut changed = false;
            for s in drain_touching(&mut open, &merged, gap) {
                merged.absorb(s);
                touched_open = true;
                changed = true;
            }
            for s in closed.drain_touching(&key, &merged, gap)? {
                merged.absorb(s);
                touched_closed = true;
                changed = true;
            }
            if !changed {
                break;
            }
        }
        let due = watermark.is_some_and(|wm| merged.end().saturating_add(gap) < wm);
        if !touched_closed || touched_open || !due {
            // Stays (or becomes) open; closed parts it absorbed stay in history until it closes
            // and merges with them again (idempotent), so nothing is lost if we crash first.
            open.push(merged);
            self.put_open(&key, open);
            return Ok(());
        }
        self.put_open(&key, open);
        self.state.counters.late_merged += 1;
        let id = merged.id();
        let retired: Vec<String> = merged
            .emitted_ids
            .iter()
            .filter(|r| **r != id)
            .cloned()
            .collect();
        merged.emitted_ids = BTreeSet::from([id]);
        let due_at = now_ms.saturating_add(self.config.late_update_interval_ms);
        let pending = self.state.pending.entry(key).or_insert_with(|| PendingKey {
            due_at,
            ..PendingKey::default()
        });
        self.next_flush_ms = self.next_flush_ms.min(pending.due_at);
        pending.mark(&merged, &retired);
        closed.push(merged);
        // Never drop a session whose update is still waiting in this buffer (an earlier late
        // event's, before the watermark jumped): its tombstones point at it.
        closed.prune(
            &pending.dirty,
            watermark,
            gap,
            self.config.allowed_lateness_ms,
        );
        pending.sessions = closed;
        Ok(())
    }

    /// The common case of an on-time event, done without building a session for it: the event
    /// lands in exactly one open session of its key, so that session grows in place. It cannot
    /// bridge the session to another: open sessions are pairwise more than `gap` apart, so the
    /// grown session reaches another only if the event itself does. Gives the event back,
    /// changing nothing, when the general merge in [`Self::accept`] is needed.
    ///
    /// The key's timer is left where it is: growing a session only moves its end later, so the
    /// timer stays at or before the key's earliest `end + gap`, and moving it on every event (a
    /// removal and an insertion in an ordered set keyed by strings) would cost more than the
    /// rest of this function. A timer that fires early is re-armed ([`Self::due_keys`]).
    fn add_in_place(&mut self, event: Event) -> Option<Event> {
        let gap = self.config.gap_ms;
        let state = &mut self.state;
        let (Some(open), Some(meta)) = (
            state.open.get_mut(&event.key),
            state.meta.get_mut(&event.key),
        ) else {
            return Some(event);
        };
        let mut touching = open
            .iter()
            .enumerate()
            .filter(|(_, s)| s.touches(event.time, gap))
            .map(|(i, _)| i);
        let (Some(i), None) = (touching.next(), touching.next()) else {
            return Some(event);
        };
        meta.open_bytes += event.bytes;
        open[i].add(event);
        None
    }

    /// Closes the open sessions of `key` that are due at `watermark` (all when `None`);
    /// `prefetched` is the key's history if it was already read.
    async fn close(
        &mut self,
        key: &str,
        watermark: Option<i64>,
        prefetched: Option<ClosedSessions>,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        let gap = self.config.gap_ms;
        let open = self.take_open(key);
        let (due, rest): (Vec<Session>, Vec<Session>) = open
            .into_iter()
            .partition(|s| watermark.is_none_or(|wm| s.end().saturating_add(gap) < wm));
        // Purge from memory before moving to history (gotcha 6).
        self.put_open(key, rest);
        if due.is_empty() {
            return Ok(());
        }
        let mut closed = match prefetched {
            Some(closed) if !self.state.pending.contains_key(key) => closed,
            _ => self.closed_view(key).await?,
        };
        let mut events = 0usize;
        let mut bytes = 0u64;
        for mut merged in due {
            // Normally nothing touches it; after a restart history may hold a newer copy.
            loop {
                let parts = closed.drain_touching(key, &merged, gap)?;
                if parts.is_empty() {
                    break;
                }
                for s in parts {
                    merged.absorb(s);
                }
            }
            let record = merged.record();
            let id = record.session_id.clone();
            events += merged.events.len();
            bytes += merged.bytes();
            let retired: Vec<String> = merged
                .emitted_ids
                .iter()
                .filter(|r| **r != id)
                .cloned()
                .collect();
            if let Some(pending) = self.state.pending.get_mut(key) {
                pending.dirty.remove(&id);
                for r in &retired {
                    pending.dirty.remove(r);
                }
            }
            for r in &retired {
                out.push(self.output(SessionRecord::tombstone(key, r, record.version, &id)));
                self.state.counters.tombstones += 1;
            }
            out.push(self.output(record));
            self.state.counters.sessions_closed += 1;
            merged.emitted_ids = BTreeSet::from([id.clone()]);
            closed.push_identified(merged, id);
        }
        let watermark = self.watermark();
        let lateness = self.config.allowed_lateness_ms;
        if let Some(pending) = self.state.pending.get_mut(key) {
            // The watermark may have jumped past sessions whose late update is not flushed yet;
            // they stay in the buffer until the flush emits them (and writes them to history).
            closed.prune(&pending.dirty, watermark, gap, lateness);
            pending.sessions = closed;
        } else {
            closed.prune(&BTreeSet::new(), watermark, gap, lateness);
            self.write_history(key, &mut closed).await?;
        }
        let elapsed = started.elapsed();
        if elapsed > self.config.slow_window_log_threshold {
            warn!(
                %key,
                key_group = self.state.key_group,
                events,
                bytes,
                closed_sessions = closed_len(&self.state.pending, key),
                elapsed_ms = elapsed.as_millis() as u64,
                "slow session close"
            );
        }
        Ok(())
    }

    /// Emits a key's pending late updates and writes its history.
    async fn flush(&mut self, key: &str, out: &mut Vec<Output>) -> Result<(), EngineError> {
        let Some(mut pending) = self.state.pending.remove(key) else {
            return Ok(());
        };
        let started = Instant::now();
        if let Err(error) = self.write_history(key, &mut pending.sessions).await {
            // Not flushed: the buffer stays for the next attempt.
            self.state.pending.insert(SmallString::from(key), pending);
            return Err(error);
        }
        let elapsed = started.elapsed();
        if elapsed > self.config.slow_window_log_threshold {
            warn!(
                %key,
                key_group = self.state.key_group,
                closed_sessions = pending.sessions.len(),
                updates = pending.dirty.len(),
                tombstones = pending.tombstones.len(),
                elapsed_ms = elapsed.as_millis() as u64,
                "slow late-update flush"
            );
        }
        for record in pending.records(key)? {
            if record.deleted {
                self.state.counters.tombstones += 1;
            } else {
                self.state.counters.late_updates += 1;
            }
            out.push(self.output(record));
        }
        Ok(())
    }

    /// The key's closed sessions: its pending buffer if it has one, else its history value.
    async fn closed_view(&mut self, key: &str) -> Result<ClosedSessions, EngineError> {
        if let Some(pending) = self.state.pending.get(key) {
            return Ok(pending.sessions.clone());
        }
        // Taken, not copied: the first late event of the key creates its pending buffer, which
        // later events of the batch read instead.
        if let Some(closed) = self.prefetched.remove(key) {
            return Ok(closed);
        }
        self.read_history(key).await
    }

    /// The key's history value.
    async fn read_history(&self, key: &str) -> Result<ClosedSessions, EngineError> {
        let history_key = self.history_key(key);
        let value = self.history.get(&history_key).await?;
        decode_history(&history_key, value)
    }

    async fn write_history(
        &self,
        key: &str,
        sessions: &mut ClosedSessions,
    ) -> Result<(), EngineError> {
        let history_key = self.history_key(key);
        if sessions.is_empty() {
            self.history.delete(&history_key).await?;
            return Ok(());
        }
        let value = sessions.encode(&history_key, &self.config.history_codec)?;
        self.history
            .put(&history_key, &value, self.config.history_ttl)
            .await?;
        Ok(())
    }

    fn history_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.history_prefix)
    }

    fn output(&self, record: SessionRecord) -> Output {
        Output::Session {
            sink: self.config.sink,
            record,
        }
    }

    /// Takes a key's open sessions out of memory, with its timer.
    fn take_open(&mut self, key: &str) -> Vec<Session> {
        if let Some(meta) = self.state.meta.get(key) {
            self.state
                .timers
                .remove(&(meta.deadline, SmallString::from(key)));
        }
        self.state.open.remove(key).unwrap_or_default()
    }

    /// Puts a key's open sessions back, with a timer and metadata; none removes the key.
    fn put_open(&mut self, key: &str, sessions: Vec<Session>) {
        let gap = self.config.gap_ms;
        let Some(deadline) = earliest_deadline(&sessions, gap) else {
            self.state.meta.remove(key);
            return;
        };
        let meta = self.state.meta.entry(SmallString::from(key)).or_default();
        meta.deadline = deadline;
        meta.open_bytes = sessions.iter().map(Session::bytes).sum();
        self.state.timers.insert((deadline, SmallString::from(key)));
        self.state.open.insert(SmallString::from(key), sessions);
    }
}

/// When the earliest of `sessions` is due: its `end + gap` (`None` for no sessions).
fn earliest_deadline(sessions: &[Session], gap: i64) -> Option<i64> {
    sessions.iter().map(|s| s.end().saturating_add(gap)).min()
}

/// The sessions a history value holds (none for an absent value).
fn decode_history(
    history_key: &str,
    value: Option<Vec<u8>>,
) -> Result<ClosedSessions, EngineError> {
    match value {
        None => Ok(ClosedSessions::default()),
        Some(bytes) => Ok(ClosedSessions::decode(history_key, bytes.into())?),
    }
}

fn closed_len(pending: &HashMap<SmallString, PendingKey>, key: &str) -> usize {
    pending.get(key).map_or(0, |p| p.sessions.len())
}

/// Removes and returns the sessions within `gap` of `session`.
fn drain_touching(sessions: &mut Vec<Session>, session: &Session, gap: i64) -> Vec<Session> {
    let (touching, rest): (Vec<Session>, Vec<Session>) = std::mem::take(sessions)
        .into_iter()
        .partition(|s| s.touches_session(session, gap));
    *sessions = rest;
    touching
}

fn quarantine(reason: String, key: Option<String>, raw: &[u8]) -> Output {
    Output::Quarantine(Quarantine {
        reason,
        key,
        raw: String::from_utf8_lossy(raw).into_owned(),
    })
}
