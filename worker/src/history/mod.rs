//! The history store: where closed sessions live for the history TTL, so late and async events
//! can still reach them after they have left memory (seed 000: keep big cold state outside the
//! job). One trait, two backends — Aerospike (production) and an embedded store (single machine,
//! and the "state inside the job" baseline) — chosen by `spec.history.backend`.
//!
//! The store deals in opaque bytes: what a session looks like — and how it is compressed, one
//! session at a time — is the session engine's business ([`crate::engine::closed`]); how bytes
//! are kept (framing, TTL, retries, durability) is the backend's. It must never hold a session
//! without a TTL (gotcha 2: TTL on every keyed state).
//!
//! Layout: [`codec`] (header + zstd), [`retry`] (bounded constant-backoff retries), [`metrics`]
//! (the seed-000 list, by backend), [`aerospike`] and [`embedded`] (the backends), [`open`]
//! ([`History`], the configured backend behind one type). The contract every backend passes is
//! `worker/tests/history_contract.rs`.

use std::future::Future;
use std::time::Duration;

pub mod aerospike;
pub mod codec;
pub mod embedded;
pub mod embedded_sweep;
pub mod embedded_writer;
pub mod metrics;
pub mod open;
pub mod retry;
pub mod write_behind;

pub use self::aerospike::{AerospikeSettings, AerospikeStore, Credentials};
pub use self::codec::Codec;
pub use self::embedded::{EmbeddedStore, HistoryRecord};
pub use self::metrics::HistoryMetrics;
pub use self::open::History;
pub use self::retry::RetryPolicy;
pub use self::write_behind::WriteBehind;

/// Reads the default [`HistoryStore::get_many`] keeps in flight (well below a client's
/// connection pool).
pub const GET_MANY_CONCURRENCY: usize = 64;
/// Writes the default [`HistoryStore::write_many`] keeps in flight.
pub const WRITE_MANY_CONCURRENCY: usize = 64;

/// One write of a batch ([`HistoryStore::write_many`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWrite {
    /// The key.
    pub key: String,
    /// What happens to it.
    pub change: KeyChange,
}

/// What a [`KeyWrite`] does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// [`HistoryStore::put`] this value with this TTL.
    Put(std::sync::Arc<[u8]>, Duration),
    /// [`HistoryStore::delete`] the key.
    Delete,
}

/// Why a history-store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store could not be reached or answered with an error, after every retry; the worker
    /// must stop (its Pod restarts and restores from the last checkpoint).
    #[error("history store unavailable after {attempts} attempts: {message}")]
    Unavailable {
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// The store refuses writes (Aerospike stop-writes, disk full).
    #[error("history store refuses writes: {0}")]
    WritesRefused(String),
    /// A record is larger than the store accepts.
    #[error("history record for {key} is too big ({bytes} bytes)")]
    TooBig {
        /// The record's key.
        key: String,
        /// Its size after compression.
        bytes: usize,
    },
    /// A stored value could not be decoded (corrupt or from an incompatible version).
    #[error("history record for {key} is unreadable: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// Opening or configuring the store failed.
    #[error("opening the history store: {0}")]
    Open(String),
}

/// A key-value store with a TTL on every write.
///
/// Implementations are cheap to clone handles shared by all key groups of a worker; every method
/// may be called concurrently.
pub trait HistoryStore: Send + Sync {
    /// The value stored under `key`, or `None` if there is none (never written, deleted or
    /// expired).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, HistoryError>> + Send;

    /// Stores `value` under `key`, replacing what was there; it expires after `ttl`.
    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<(), HistoryError>> + Send;

    /// Removes `key` (no error if absent).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), HistoryError>> + Send;

    /// The values of `keys`, in order, as [`Self::get`] would answer each. The default reads
    /// [`GET_MANY_CONCURRENCY`] at a time; a backend that can read several keys in one step
    /// (one read transaction) overrides it.
    fn get_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, HistoryError>> + Send {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(keys.iter().map(|key| self.get(key)))
            .buffered(GET_MANY_CONCURRENCY)
            .try_collect()
    }

    /// Applies `writes` (at most one per key) and answers one outcome per write, in order, as
    /// [`Self::put`] or [`Self::delete`] would. The default runs [`WRITE_MANY_CONCURRENCY`] at a
    /// time; a backend that can apply a batch in one step (one transaction) overrides it.
    fn write_many(
        &self,
        writes: &[KeyWrite],
    ) -> impl Future<Output = Vec<Result<(), HistoryError>>> + Send {
        use futures::StreamExt;
        futures::stream::iter(writes.iter().map(move |write| async move {
            match &write.change {
                KeyChange::Put(value, ttl) => self.put(&write.key, value, *ttl).await,
                KeyChange::Delete => self.delete(&write.key).await,
            }
        }))
        .buffered(WRITE_MANY_CONCURRENCY)
        .collect()
    }

    /// Makes every write that has returned durable: it survives a crash of the process or the
    /// machine from then on. Before it, a write is visible to reads but may be lost in a crash;
    /// the stream loop calls it before committing source offsets, so what a crash loses is
    /// replayed. Backends whose writes are durable when they return keep this default.
    fn sync(&self) -> impl Future<Output = Result<(), HistoryError>> + Send {
        async { Ok(()) }
    }
}
