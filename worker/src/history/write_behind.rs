//! Write-behind in front of a history store, so the stream loop never waits for a history write.
//!
//! A closed session is emitted at once and its key's history written *behind*: `put` and
//! `delete` return as soon as the change is queued. One drain task hands the queued keys to the
//! store in batches of up to [`MAX_BATCH`] ([`HistoryStore::write_many`]: one transaction for the
//! embedded store, concurrent writes for Aerospike), and keeps draining while keys keep coming —
//! a batch carries whatever queued while the previous one was being written. Without it every
//! close costs a full round trip on the stream loop's only task (Aerospike) or a commit
//! (embedded), and the worker runs at the store's latency instead of its throughput; without the
//! batches every write costs a task, a channel message and a thread wake-up of its own.
//!
//! What keeps this correct:
//! - Reads see writes: `get` answers from the queued value of a key until the store has it.
//! - Per-key order: a key is in at most one batch at a time; a newer value waits behind it and
//!   replaces any value waiting before it (only the newest matters), so the store can never end
//!   with an older value.
//! - Offsets follow history: [`WriteBehind::flush`] waits until everything queued so far is
//!   stored. The stream loop calls it before committing source offsets (and a checkpoint before
//!   snapshotting), so a committed offset never points past a history write that could be lost.
//! - Failures are not swallowed: a write that fails for good (store unavailable, writes refused)
//!   is remembered and returned by every later call, which stops the worker. A record the store
//!   refuses as too big is logged and counted, as the engine would have done.
//! - Memory is bounded: at most [`MAX_PENDING`] keys wait; the next new key waits for room.
//! - Batches fill before they go: a store pays per batch as much as per key (the embedded
//!   store's commit rewrites its tree's upper pages and root whatever a commit carries), so
//!   the drain task lingers up to [`LINGER`] for a batch to fill — as a Kafka producer does —
//!   unless [`MAX_BATCH`] keys are ready or a flush is waiting. Without it, a stream loop
//!   closing sessions at a steady pace hands the store batches of a handful of keys each.
//!
//! This module must never acknowledge a flush while a write queued before it is unfinished.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{HistoryError, HistoryStore, KeyChange, KeyWrite};

/// Most keys one [`HistoryStore::write_many`] call carries.
pub const MAX_BATCH: usize = 512;
/// Most keys queued or being written at once; a new key waits for room beyond it.
pub const MAX_PENDING: usize = 8192;
/// Longest a batch waits to fill before it is written (readers see queued values meanwhile,
/// and a flush never waits for it).
pub const LINGER: Duration = Duration::from_millis(20);

/// What is known about a key with a queued or unfinished write.
#[derive(Debug)]
struct KeyState {
    /// The newest change: what readers see, and what the store will end with.
    latest: KeyChange,
    /// Whether `latest` still has to be handed to the store.
    waiting: bool,
    /// Whether a batch being written holds this key.
    in_flight: bool,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, KeyState>,
    /// Keys waiting and not in flight, oldest first: the next batches.
    ready: VecDeque<String>,
    /// Whether the drain task is running.
    draining: bool,
    /// Whether a flush waits, so batches must not linger (set only while something is queued;
    /// the drain task clears it when the queue is empty).
    urgent: bool,
    /// A failure that stops the worker.
    fatal: Option<HistoryError>,
}

#[derive(Debug)]
struct Shared<H> {
    store: H,
    state: Mutex<State>,
    /// Keys queued or being written (`State::keys.len()`); `flush` waits for 0.
    busy: watch::Sender<usize>,
    /// Ends the drain task's linger early: a full batch is ready, or a flush waits.
    hurry: Notify,
}

/// A write-behind [`HistoryStore`] over `H`. Cheap to clone; clones share the queue.
#[derive(Debug)]
pub struct WriteBehind<H> {
    shared: Arc<Shared<H>>,
}

impl<H> Clone for WriteBehind<H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H: HistoryStore + Clone + 'static> WriteBehind<H> {
    /// Write-behind over `store`.
    pub fn new(store: H) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                state: Mutex::new(State::default()),
                busy: watch::Sender::new(0),
                hurry: Notify::new(),
            }),
        }
    }

    /// The store behind.
    pub fn store(&self) -> &H {
        &self.shared.store
    }

    /// Keys with a queued or unfinished write now.
    pub fn in_flight(&self) -> usize {
        *self.shared.busy.borrow()
    }

    /// Waits until every change queued before the call is stored and durable
    /// ([`HistoryStore::sync`]); fails if a write (or the sync) failed for good.
    pub async fn flush(&self) -> Result<(), HistoryError> {
        {
            let mut state = self.lock();
            // Something queued means a drain task is running, and it clears the flag when done.
            if !state.keys.is_empty() {
                state.urgent = true;
                self.shared.hurry.notify_one();
            }
        }
        let mut busy = self.shared.busy.subscribe();
        // Keys queued later may keep `busy` above 0 for a while; that only makes this wait
        // longer, never shorter.
        let _ = busy.wait_for(|n| *n == 0).await;
        self.check()?;
        if let Err(error) = self.shared.store.sync().await {
            let mut state = self.lock();
            tracing::error!(%error, "syncing the history store failed; the worker stops");
            state.fatal.get_or_insert(error.clone());
            return Err(error);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that loses
        // a write (every update is a few field changes), so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self) -> Result<(), HistoryError> {
        match &self.lock().fatal {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    async fn queue(&self, key: &str, change: KeyChange) -> Result<(), HistoryError> {
        loop {
            {
                let mut state = self.lock();
                if let Some(error) = &state.fatal {
                    return Err(error.clone());
                }
                if let Some(existing) = state.keys.get_mut(key) {
                    existing.latest = change;
                    if !existing.waiting {
                        existing.waiting = true;
                        if !existing.in_flight {
                            state.ready.push_back(key.to_owned());
                        }
                    }
                    self.start_draining(&mut state);
                    return Ok(());
                }
                if state.keys.len() < MAX_PENDING {
                    state.keys.insert(
                        key.to_owned(),
                        KeyState {
                            latest: change,
                            waiting: true,
                            in_flight: false,
                        },
                    );
                    state.ready.push_back(key.to_owned());
                    let pending = state.keys.len();
                    self.shared.busy.send_replace(pending);
                    self.start_draining(&mut state);
                    return Ok(());
                }
            }
            // Back-pressure: wait for room before adding another key.
            let mut busy = self.shared.busy.subscribe();
            let _ = busy.wait_for(|n| *n < MAX_PENDING).await;
        }
    }

    fn start_draining(&self, state: &mut State) {
        if state.ready.len() >= MAX_BATCH {
            self.shared.hurry.notify_one();
        }
        if state.draining {
            return;
        }
        state.draining = true;
        let this = self.clone();
        tokio::spawn(async move { this.drain().await });
    }

    /// Writes batches of ready keys until none is left (or a write failed for good).
    async fn drain(&self) {
        loop {
            let linger = {
                let state = self.lock();
                !state.urgent && state.fatal.is_none() && state.ready.len() < MAX_BATCH
            };
            if linger {
                tokio::select! {
                    () = self.shared.hurry.notified() => {}
                    () = tokio::time::sleep(LINGER) => {}
                }
            }
            let batch: Vec<KeyWrite> = {
                let mut state = self.lock();
                if state.ready.is_empty() || state.fatal.is_some() {
                    state.draining = false;
                    state.urgent = false;
                    return;
                }
                let take = state.ready.len().min(MAX_BATCH);
                let keys: Vec<String> = state.ready.drain(..take).collect();
                keys.into_iter()
                    .filter_map(|key| {
                        let entry = state.keys.get_mut(&key)?;
                        entry.waiting = false;
                        entry.in_flight = true;
                        let change = entry.latest.clone();
                        Some(KeyWrite { key, change })
                    })
                    .collect()
            };
            let outcomes = self.shared.store.write_many(&batch).await;
            let mut state = self.lock();
            let mut outcomes = outcomes.into_iter();
            for write in batch {
                let outcome = outcomes.next().unwrap_or_else(|| {
                    Err(HistoryError::Unavailable {
                        attempts: 1,
                        message: String::from("the history store left a write unanswered"),
                    })
                });
                if let Err(error) = outcome {
                    if matches!(
                        error,
                        HistoryError::TooBig { .. } | HistoryError::Corrupt { .. }
                    ) {
                        tracing::error!(key = %write.key, %error, "history write refused; the key keeps its previous history");
                    } else if state.fatal.is_none() {
                        tracing::error!(key = %write.key, %error, "history write failed; the worker stops");
                        state.fatal = Some(error);
                    }
                }
                let again = match state.keys.get_mut(&write.key) {
                    Some(entry) => {
                        entry.in_flight = false;
                        entry.waiting
                    }
                    None => false,
                };
                if again {
                    state.ready.push_back(write.key);
                } else {
                    state.keys.remove(&write.key);
                }
            }
            if state.fatal.is_some() {
                // Nothing more reaches the store: every later call fails, and flush must not
                // wait for writes that will never happen.
                state.keys.clear();
                state.ready.clear();
            }
            let pending = state.keys.len();
            self.shared.busy.send_replace(pending);
        }
    }
}

impl<H: HistoryStore + Clone + 'static> HistoryStore for WriteBehind<H> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        {
            let state = self.lock();
            if let Some(error) = &state.fatal {
                return Err(error.clone());
            }
            if let Some(entry) = state.keys.get(key) {
                return Ok(match &entry.latest {
                    KeyChange::Put(value, _) => Some(value.to_vec()),
                    KeyChange::Delete => None,
                });
            }
        }
        self.shared.store.get(key).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, HistoryError> {
        // Per key: `Some(value)` if queued here, `None` if the store has to answer.
        let mut found = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        {
            let state = self.lock();
            if let Some(error) = &state.fatal {
                return Err(error.clone());
            }
            for key in keys {
                let queued = state.keys.get(key).map(|entry| match &entry.latest {
                    KeyChange::Put(value, _) => Some(value.to_vec()),
                    KeyChange::Delete => None,
                });
                if queued.is_none() {
                    missing.push(key.clone());
                }
                found.push(queued);
            }
        }
        let mut stored = if missing.is_empty() {
            Vec::new()
        } else {
            self.shared.store.get_many(&missing).await?
        }
        .into_iter();
        // A key queued since the lock was released was read from the store; the store's older
        // value is still what `get` would have answered at the time of the call.
        Ok(found
            .into_iter()
            .map(|queued| queued.unwrap_or_else(|| stored.next().flatten()))
            .collect())
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
        self.queue(key, KeyChange::Put(Arc::from(value), ttl)).await
    }

    async fn delete(&self, key: &str) -> Result<(), HistoryError> {
        self.queue(key, KeyChange::Delete).await
    }

    async fn sync(&self) -> Result<(), HistoryError> {
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Semaphore as Gate;

    use super::*;
    use crate::engine::memory_history::MemoryHistory;

    const TTL: Duration = Duration::from_secs(60);

    /// A store whose writes wait for a gate to open, and that can be told to fail.
    #[derive(Clone)]
    struct Gated {
        inner: MemoryHistory,
        gate: Arc<Gate>,
        writes: Arc<AtomicU32>,
        /// Writes stored when `sync` was last called, per call.
        syncs: Arc<Mutex<Vec<u32>>>,
        /// Size of every `write_many` batch, in order.
        batches: Arc<Mutex<Vec<usize>>>,
        /// Whether a batch ever held one key twice.
        duplicate_in_batch: Arc<std::sync::atomic::AtomicBool>,
        /// Writes waiting at the gate now.
        at_gate: Arc<AtomicU32>,
        fail_with: Arc<Mutex<Option<HistoryError>>>,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                inner: MemoryHistory::default(),
                gate: Arc::new(Gate::new(0)),
                writes: Arc::default(),
                syncs: Arc::default(),
                batches: Arc::default(),
                duplicate_in_batch: Arc::default(),
                at_gate: Arc::default(),
                fail_with: Arc::default(),
            }
        }
    }

    impl Gated {
        fn open(&self, writes: usize) {
            self.gate.add_permits(writes);
        }

        fn waiting(&self) -> u32 {
            self.at_gate.load(Ordering::SeqCst)
        }

        async fn pass_gate(&self) {
            self.at_gate.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.at_gate.fetch_sub(1, Ordering::SeqCst);
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl HistoryStore for Gated {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
            self.inner.get(key).await
        }

        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
            self.pass_gate().await;
            if let Some(error) = self.fail_with.lock().unwrap().clone() {
                return Err(error);
            }
            self.inner.put(key, value, ttl).await
        }

        async fn delete(&self, key: &str) -> Result<(), HistoryError> {
            self.pass_gate().await;
            self.inner.delete(key).await
        }

        async fn write_many(&self, writes: &[KeyWrite]) -> Vec<Result<(), HistoryError>> {
            self.batches.lock().unwrap().push(writes.len());
            let keys: std::collections::HashSet<&str> =
                writes.iter().map(|w| w.key.as_str()).collect();
            if keys.len() < writes.len() {
                self.duplicate_in_batch.store(true, Ordering::SeqCst);
            }
            let mut outcomes = Vec::new();
            // One at a time, so tests can hold any write at the gate.
            for write in writes {
                outcomes.push(match &write.change {
                    KeyChange::Put(value, ttl) => self.put(&write.key, value, *ttl).await,
                    KeyChange::Delete => self.delete(&write.key).await,
                });
            }
            outcomes
        }

        async fn sync(&self) -> Result<(), HistoryError> {
            let writes = self.writes.load(Ordering::SeqCst);
            self.syncs.lock().unwrap().push(writes);
            Ok(())
        }
    }

    #[tokio::test]
    async fn get_many_sees_queued_writes_over_stored_values() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        store.open(3);
        for key in ["a", "b", "c"] {
            history.put(key, b"stored", TTL).await.unwrap();
        }
        history.flush().await.unwrap();
        history.put("a", b"queued", TTL).await.unwrap();
        history.delete("b").await.unwrap();
        let keys = ["a", "b", "c", "d"].map(String::from);
        assert_eq!(
            history.get_many(&keys).await.unwrap(),
            vec![
                Some(b"queued".to_vec()),
                None,
                Some(b"stored".to_vec()),
                None
            ]
        );
        store.open(10);
        history.flush().await.unwrap();
    }

    #[tokio::test]
    async fn flush_syncs_the_store_after_the_last_queued_write() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        for n in 0..5 {
            history.put(&format!("k{n}"), b"v", TTL).await.unwrap();
        }
        store.open(5);
        history.flush().await.unwrap();
        assert_eq!(
            *store.syncs.lock().unwrap(),
            vec![5],
            "one sync, after all 5 writes"
        );
    }

    #[tokio::test]
    async fn reads_see_queued_writes_before_the_store_has_them() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        history.put("k", b"v1", TTL).await.unwrap();
        assert_eq!(history.get("k").await.unwrap(), Some(b"v1".to_vec()));
        assert_eq!(store.get("k").await.unwrap(), None, "not stored yet");
        history.delete("k").await.unwrap();
        assert_eq!(history.get("k").await.unwrap(), None);
        store.open(10);
        history.flush().await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(history.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_store_ends_with_the_newest_value_and_skips_the_ones_in_between() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        history.put("k", &[0], TTL).await.unwrap();
        // Let the drain task take the first value, which then waits at the gate.
        wait_until(|| store.waiting() == 1).await;
        for n in 1..10u8 {
            history.put("k", &[n], TTL).await.unwrap();
        }
        store.open(100);
        history.flush().await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(vec![9]));
        // The first write was in flight; the newest replaced the eight in between.
        assert_eq!(store.writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn writes_queued_together_reach_the_store_in_one_batch() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        history.put("first", b"v", TTL).await.unwrap();
        wait_until(|| store.waiting() == 1).await;
        for n in 0..100 {
            history.put(&format!("k{n}"), b"v", TTL).await.unwrap();
        }
        store.open(1000);
        history.flush().await.unwrap();
        assert_eq!(*store.batches.lock().unwrap(), vec![1, 100]);
    }

    #[tokio::test]
    async fn flush_waits_for_every_queued_write() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        for n in 0..20 {
            history.put(&format!("k{n}"), b"v", TTL).await.unwrap();
        }
        let flushing = tokio::spawn({
            let history = history.clone();
            async move { history.flush().await }
        });
        store.open(19);
        wait_until(|| store.writes.load(Ordering::SeqCst) == 19).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!flushing.is_finished(), "one write is still held back");
        store.open(1);
        flushing.await.unwrap().unwrap();
        for n in 0..20 {
            assert!(store.get(&format!("k{n}")).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn a_fatal_write_failure_stops_every_later_call() {
        let store = Gated::default();
        *store.fail_with.lock().unwrap() = Some(HistoryError::WritesRefused("stop-writes".into()));
        let history = WriteBehind::new(store.clone());
        history.put("k", b"v", TTL).await.unwrap();
        store.open(10);
        let error = history.flush().await.unwrap_err();
        assert!(matches!(error, HistoryError::WritesRefused(_)), "{error:?}");
        assert!(history.put("other", b"v", TTL).await.is_err());
        assert!(history.get("other").await.is_err());
    }

    #[tokio::test]
    async fn a_record_refused_as_too_big_does_not_stop_the_worker() {
        let store = Gated::default();
        *store.fail_with.lock().unwrap() = Some(HistoryError::TooBig {
            key: "k".into(),
            bytes: 1 << 30,
        });
        let history = WriteBehind::new(store.clone());
        history.put("k", b"v", TTL).await.unwrap();
        store.open(10);
        history.flush().await.unwrap();
        *store.fail_with.lock().unwrap() = None;
        history.put("k2", b"v", TTL).await.unwrap();
        history.flush().await.unwrap();
        assert_eq!(store.get("k2").await.unwrap(), Some(b"v".to_vec()));
    }

    #[tokio::test]
    async fn at_most_max_pending_keys_wait_at_once() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        for n in 0..MAX_PENDING {
            history.put(&format!("k{n}"), b"v", TTL).await.unwrap();
        }
        // An already queued key takes no room.
        history.put("k0", b"newer", TTL).await.unwrap();
        let blocked = tokio::spawn({
            let history = history.clone();
            async move { history.put("one-more", b"v", TTL).await }
        });
        wait_until(|| store.waiting() > 0).await;
        // Give the blocked call every chance to run (the test runtime has one thread).
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!blocked.is_finished(), "the next key waits for room");
        assert_eq!(history.get("one-more").await.unwrap(), None, "not queued");
        assert_eq!(history.in_flight(), MAX_PENDING);
        store.open(MAX_BATCH);
        blocked.await.unwrap().unwrap();
        store.open(2 * MAX_PENDING);
        history.flush().await.unwrap();
        assert_eq!(store.get("k0").await.unwrap(), Some(b"newer".to_vec()));
        assert!(store.get("one-more").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_batch_of_keys_never_holds_the_same_key_twice() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        store.open(100_000);
        for round in 0..50u8 {
            for n in 0..40 {
                history.put(&format!("k{n}"), &[round], TTL).await.unwrap();
            }
            tokio::task::yield_now().await;
        }
        history.flush().await.unwrap();
        assert!(!store.duplicate_in_batch.load(Ordering::SeqCst));
        for n in 0..40 {
            assert_eq!(store.get(&format!("k{n}")).await.unwrap(), Some(vec![49]));
        }
    }

    /// Waits on the paused test clock, 1 ms at a time, for at most 5 s of it, until the store
    /// has taken `writes` writes; returns how much of the clock that took.
    async fn clock_until_written(store: &Gated, writes: u32) -> Duration {
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.writes.load(Ordering::SeqCst) < writes {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("writes not stored within 5 s");
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_up_to_linger_for_more_keys() {
        let store = Gated::default();
        store.open(1000);
        let history = WriteBehind::new(store.clone());
        history.put("a", b"v", TTL).await.unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.writes.load(Ordering::SeqCst), 0, "the batch lingers");
        history.put("b", b"v", TTL).await.unwrap();
        history.put("c", b"v", TTL).await.unwrap();
        let took = clock_until_written(&store, 3).await;
        assert!(took >= LINGER - Duration::from_millis(1), "{took:?}");
        assert_eq!(*store.batches.lock().unwrap(), vec![3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_and_a_flush_do_not_wait_for_linger() {
        let store = Gated::default();
        store.open(10_000);
        let history = WriteBehind::new(store.clone());
        for n in 0..MAX_BATCH {
            history.put(&format!("k{n}"), b"v", TTL).await.unwrap();
            if n == 0 {
                // The drain task starts and lingers for the rest.
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
            }
        }
        let took = clock_until_written(&store, MAX_BATCH as u32).await;
        assert!(took < LINGER, "a full batch went after {took:?}");

        history.put("last", b"v", TTL).await.unwrap();
        let started = tokio::time::Instant::now();
        history.flush().await.unwrap();
        // On the paused clock, any wait for the linger would have shown as elapsed time.
        assert!(started.elapsed() < LINGER, "{:?}", started.elapsed());
        assert!(store.get("last").await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn batches_queued_while_a_flush_waits_do_not_linger() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        history.put("a", b"v", TTL).await.unwrap();
        let started = tokio::time::Instant::now();
        let flushing = tokio::spawn({
            let history = history.clone();
            async move { history.flush().await }
        });
        wait_until(|| store.waiting() == 1).await;
        // Queued behind the batch in flight: the flush waits for it too.
        history.put("b", b"v", TTL).await.unwrap();
        store.open(10);
        flushing.await.unwrap().unwrap();
        assert!(started.elapsed() < LINGER, "{:?}", started.elapsed());
        assert_eq!(*store.batches.lock().unwrap(), vec![1, 1]);
    }

    /// Polls `condition`, yielding to the runtime in between, for at most 5 seconds.
    async fn wait_until(condition: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !condition() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("condition not met within 5 s");
    }
}
