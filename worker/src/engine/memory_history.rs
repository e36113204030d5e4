//! An in-memory [`HistoryStore`] for tests: a map with the TTL honoured against an injectable
//! clock. A genuine implementation of the trait, never used outside tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::history::{HistoryError, HistoryStore};

/// Values with their expiry (processing time, epoch ms).
type Entries = HashMap<String, (Vec<u8>, i64)>;

/// A shared in-memory history store.
#[derive(Clone, Default)]
pub(crate) struct MemoryHistory {
    entries: Arc<Mutex<Entries>>,
    now_ms: Arc<AtomicI64>,
    reads: Arc<AtomicUsize>,
}

impl MemoryHistory {
    /// Sets the store's clock.
    pub(crate) fn set_now(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Reads so far.
    pub(crate) fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Live keys.
    pub(crate) fn len(&self) -> usize {
        let now = self.now_ms.load(Ordering::SeqCst);
        let entries = self.entries.lock().unwrap();
        entries.values().filter(|(_, exp)| *exp > now).count()
    }
}

impl HistoryStore for MemoryHistory {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let now = self.now_ms.load(Ordering::SeqCst);
        let entries = self.entries.lock().unwrap();
        Ok(entries
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone()))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
        let now = self.now_ms.load(Ordering::SeqCst);
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.entries
            .lock()
            .unwrap()
            .insert(key.to_owned(), (value.to_vec(), expires));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), HistoryError> {
        self.entries.lock().unwrap().remove(key);
        Ok(())
    }
}

#[tokio::test]
async fn honours_the_ttl() {
    let store = MemoryHistory::default();
    store
        .put("k", b"v", Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
    store.set_now(10);
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(store.len(), 0);
    store
        .put("k", b"v", Duration::from_millis(10))
        .await
        .unwrap();
    store.delete("k").await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
}
