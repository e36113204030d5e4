//! Write-behind in front of a history store, so the stream loop never waits for a history write.
//!
//! A closed session is emitted at once and its key's history written *behind*: `put` and
//! `delete` return as soon as the change is queued, and up to [`MAX_IN_FLIGHT`] keys are written
//! concurrently. Without it every close costs a full round trip on the stream loop's only task
//! (Aerospike) or a durable commit (embedded), and the worker runs at the store's latency instead
//! of its throughput.
//!
//! What keeps this correct:
//! - Reads see writes: `get` answers from the queued value of a key until the store has it.
//! - Per-key order: a key has at most one write in flight; a newer value waits behind it and
//!   replaces any value waiting before it (only the newest matters), so the store can never end
//!   with an older value.
//! - Offsets follow history: [`WriteBehind::flush`] waits until everything queued so far is
//!   stored. The stream loop calls it before committing source offsets (and a checkpoint before
//!   snapshotting), so a committed offset never points past a history write that could be lost.
//! - Failures are not swallowed: a write that fails for good (store unavailable, writes refused)
//!   is remembered and returned by every later call, which stops the worker. A record the store
//!   refuses as too big is logged and counted, as the engine would have done.
//!
//! This module must never acknowledge a flush while a write queued before it is unfinished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::{HistoryError, HistoryStore};

/// Most keys written concurrently.
pub const MAX_IN_FLIGHT: usize = 256;

/// A queued change.
#[derive(Clone, Debug)]
enum Change {
    Put(Arc<[u8]>, Duration),
    Delete,
}

/// What is known about a key with a write in flight.
#[derive(Debug)]
struct KeyState {
    /// The newest change: what readers see, and what the store will end with.
    latest: Change,
    /// Whether `latest` still has to be written after the write in flight.
    waiting: bool,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, KeyState>,
    /// A failure that stops the worker.
    fatal: Option<HistoryError>,
}

#[derive(Debug)]
struct Shared<H> {
    store: H,
    state: Mutex<State>,
    /// Keys with a write in flight; `flush` waits for 0.
    busy: watch::Sender<usize>,
    permits: Arc<Semaphore>,
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
                permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            }),
        }
    }

    /// The store behind.
    pub fn store(&self) -> &H {
        &self.shared.store
    }

    /// Keys with a write in flight now.
    pub fn in_flight(&self) -> usize {
        *self.shared.busy.borrow()
    }

    /// Waits until every change queued before the call is stored and durable
    /// ([`HistoryStore::sync`]); fails if a write (or the sync) failed for good.
    pub async fn flush(&self) -> Result<(), HistoryError> {
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
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // single insert or remove), so a poisoned lock is still usable.
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

    async fn queue(&self, key: &str, change: Change) -> Result<(), HistoryError> {
        {
            let mut state = self.lock();
            if let Some(error) = &state.fatal {
                return Err(error.clone());
            }
            if let Some(existing) = state.keys.get_mut(key) {
                existing.latest = change;
                existing.waiting = true;
                return Ok(());
            }
        }
        // Back-pressure: wait for a free slot before starting another key.
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| HistoryError::Unavailable {
                attempts: 0,
                message: String::from("history write-behind closed"),
            })?;
        {
            let mut state = self.lock();
            if let Some(existing) = state.keys.get_mut(key) {
                // Started by another caller while this one waited for a slot.
                existing.latest = change;
                existing.waiting = true;
                return Ok(());
            }
            state.keys.insert(
                key.to_owned(),
                KeyState {
                    latest: change.clone(),
                    waiting: false,
                },
            );
            self.shared.busy.send_modify(|n| *n += 1);
        }
        let this = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            this.write_until_settled(key, change).await;
        });
        Ok(())
    }

    /// Writes `change`, then whatever replaced it meanwhile, until the key has nothing waiting.
    async fn write_until_settled(&self, key: String, mut change: Change) {
        loop {
            let result = match &change {
                Change::Put(value, ttl) => self.shared.store.put(&key, value, *ttl).await,
                Change::Delete => self.shared.store.delete(&key).await,
            };
            let mut state = self.lock();
            if let Err(error) = result {
                if matches!(
                    error,
                    HistoryError::TooBig { .. } | HistoryError::Corrupt { .. }
                ) {
                    tracing::error!(%key, %error, "history write refused; the key keeps its previous history");
                } else if state.fatal.is_none() {
                    tracing::error!(%key, %error, "history write failed; the worker stops");
                    state.fatal = Some(error);
                }
            }
            let failed = state.fatal.is_some();
            let next = match state.keys.get_mut(&key) {
                Some(entry) if entry.waiting && !failed => {
                    entry.waiting = false;
                    Some(entry.latest.clone())
                }
                _ => None,
            };
            match next {
                Some(newer) => change = newer,
                None => {
                    state.keys.remove(&key);
                    drop(state);
                    self.shared.busy.send_modify(|n| *n = n.saturating_sub(1));
                    return;
                }
            }
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
                    Change::Put(value, _) => Some(value.to_vec()),
                    Change::Delete => None,
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
                    Change::Put(value, _) => Some(value.to_vec()),
                    Change::Delete => None,
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
        self.queue(key, Change::Put(Arc::from(value), ttl)).await
    }

    async fn delete(&self, key: &str) -> Result<(), HistoryError> {
        self.queue(key, Change::Delete).await
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
        fail_with: Arc<Mutex<Option<HistoryError>>>,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                inner: MemoryHistory::default(),
                gate: Arc::new(Gate::new(0)),
                writes: Arc::default(),
                syncs: Arc::default(),
                fail_with: Arc::default(),
            }
        }
    }

    impl Gated {
        fn open(&self, writes: usize) {
            self.gate.add_permits(writes);
        }
    }

    impl HistoryStore for Gated {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
            self.inner.get(key).await
        }

        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
            self.gate.acquire().await.unwrap().forget();
            self.writes.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = self.fail_with.lock().unwrap().clone() {
                return Err(error);
            }
            self.inner.put(key, value, ttl).await
        }

        async fn delete(&self, key: &str) -> Result<(), HistoryError> {
            self.gate.acquire().await.unwrap().forget();
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.delete(key).await
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
        for n in 0..10u8 {
            history.put("k", &[n], TTL).await.unwrap();
        }
        store.open(100);
        history.flush().await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(vec![9]));
        // The first write was in flight; the newest replaced the eight in between.
        assert_eq!(store.writes.load(Ordering::SeqCst), 2);
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
        tokio::task::yield_now().await;
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
    async fn at_most_max_in_flight_keys_are_written_at_once() {
        let store = Gated::default();
        let history = WriteBehind::new(store.clone());
        for n in 0..MAX_IN_FLIGHT {
            history.put(&format!("k{n}"), b"v", TTL).await.unwrap();
        }
        let blocked = tokio::spawn({
            let history = history.clone();
            async move { history.put("one-more", b"v", TTL).await }
        });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished(), "the next key waits for a free slot");
        store.open(1);
        blocked.await.unwrap().unwrap();
        store.open(MAX_IN_FLIGHT);
        history.flush().await.unwrap();
        assert_eq!(
            store.writes.load(Ordering::SeqCst) as usize,
            MAX_IN_FLIGHT + 1
        );
    }
}
