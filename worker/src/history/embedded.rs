//! The embedded history backend: a persistent key-value store on the pod's local disk, for
//! single-machine use and as the "state inside the job" baseline of DESIGN §4 — its directory is
//! what checkpoints copy, through [`EmbeddedStore::export`] and [`EmbeddedStore::import`].
//!
//! The store is [`redb`]: pure Rust (no C++ toolchain, unlike RocksDB), one file, ACID
//! transactions with copy-on-write B-trees that survive a crash mid-write, a stable file format
//! since 2.0, and actively maintained. `fjall` (an LSM tree) was the alternative; it shines on
//! write-heavy data far larger than memory, but brings background compaction threads and several
//! files per keyspace, which makes "copy the directory into a checkpoint" harder to reason about.
//!
//! The runtime opens it at `<data dir>/history` (one file, `history.redb`, inside). Each record is
//! kept with its expiry time (Unix milliseconds); expired records read as absent, and are purged
//! by a sweep over the table a bounded number of rows at a time ([`super::embedded_sweep`]): a
//! few rows with every write, more by [`EmbeddedStore::purge_expired`] /
//! [`EmbeddedStore::spawn_purger`]. A write is committed when
//! its call returns (writes that arrive together share one commit, [`super::embedded_writer`])
//! and durable after the next [`HistoryStore::sync`], which the stream loop calls before it
//! commits source offsets: one fsync per commit interval, not one per write.
//!
//! Reads run on the caller's thread: a read is a lookup in redb's page cache, a few microseconds
//! (an uncached page is one read of the local disk), and the stream loop waits for it anyway —
//! handing each read to the blocking pool cost more than the read (thread hand-offs and
//! wake-ups: the engine benchmark went from 9.3 to 5.5 µs of CPU per event without them).
//! Writes, syncs and purges, which can wait for the disk, run on the writer thread or the
//! blocking pool.
//!
//! This module must never keep a record without an expiry, or purge without a bound per call.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use super::codec::Codec;
use super::embedded_sweep::Sweep;
use super::embedded_writer::{Change, Job, Write, Writer};
use super::metrics::{Op, StoreMetrics};
use super::{HistoryError, HistoryStore, KeyChange, KeyWrite};

/// File name of the database inside the store's directory.
pub const FILE_NAME: &str = "history.redb";
/// Rows the sweep for expired records examines per write.
pub const SWEEP_PER_WRITE: usize = 4;
/// Rows one [`EmbeddedStore::purge_expired`] call of the purger examines.
pub const SWEEP_BATCH: usize = 16_384;

/// key → expiry (8 bytes, big-endian Unix milliseconds) followed by the encoded value.
pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// The `(expiry, key)` index earlier versions kept; dropped when a store is opened.
const LEGACY_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

/// Where the store reads the time from; tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests of expiry without waiting).
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One record as exported for a checkpoint: the stored (encoded, compressed) bytes and when they
/// expire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The key.
    pub key: String,
    /// The value as stored: codec header and compressed bytes.
    pub stored: Vec<u8>,
    /// Expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

struct Inner {
    db: Arc<Database>,
    writer: Writer,
    sweep: Arc<Sweep>,
    dir: PathBuf,
    codec: Codec,
    clock: Arc<dyn Clock>,
    metrics: StoreMetrics,
}

/// A history store in a local directory. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .field("codec", &self.inner.codec)
            .finish_non_exhaustive()
    }
}

pub(super) fn storage(context: &'static str) -> impl Fn(redb::Error) -> HistoryError {
    move |error| HistoryError::Unavailable {
        attempts: 1,
        message: format!("embedded history store: {context}: {error}"),
    }
}

/// Splits a stored row into its expiry and encoded value.
pub(super) fn split_row(row: &[u8]) -> Option<(u64, &[u8])> {
    let (expiry, stored) = row.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*expiry), stored))
}

fn join_row(expires_at_ms: u64, stored: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(8 + stored.len());
    row.extend_from_slice(&expires_at_ms.to_be_bytes());
    row.extend_from_slice(stored);
    row
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` with the system clock.
    pub fn open(dir: &Path, codec: Codec, metrics: StoreMetrics) -> Result<Self, HistoryError> {
        Self::open_with_clock(dir, codec, metrics, Arc::new(SystemClock))
    }

    /// Opens (or creates) the store in `dir`, reading the time from `clock`.
    pub fn open_with_clock(
        dir: &Path,
        codec: Codec,
        metrics: StoreMetrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HistoryError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| HistoryError::Open(format!("creating {}: {error}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|error| HistoryError::Open(format!("opening {}: {error}", path.display())))?;
        let create = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(RECORDS)?;
            txn.delete_table(LEGACY_EXPIRY)?;
            txn.commit()?;
            Ok(())
        };
        create().map_err(|error| {
            HistoryError::Open(format!("preparing {}: {error}", path.display()))
        })?;
        tracing::info!(path = %path.display(), "opened the embedded history store");
        let db = Arc::new(db);
        let sweep = Arc::new(Sweep::default());
        let writer = Writer::start(Arc::clone(&db), Arc::clone(&sweep), metrics.clone()).map_err(
            |error| {
                HistoryError::Open(format!(
                    "starting the writer of {}: {error}",
                    path.display()
                ))
            },
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                writer,
                sweep,
                dir: dir.to_owned(),
                codec,
                clock,
                metrics,
            }),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The store's metrics handle.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Examines at most `rows` records, from where the last sweep stopped (wrapping at the
    /// end), and removes the expired ones; returns how many. Blocking: call it from the
    /// blocking pool (as [`Self::spawn_purger`] does).
    pub fn purge_expired(&self, rows: usize) -> Result<usize, HistoryError> {
        let inner = &self.inner;
        let run = || -> Result<usize, redb::Error> {
            let txn = inner.db.begin_write()?;
            let purged = {
                let mut records = txn.open_table(RECORDS)?;
                inner.sweep.run(&mut records, inner.clock.now_ms(), rows)?
            };
            txn.commit()?;
            Ok(purged)
        };
        let purged = run().map_err(storage("purging"))?;
        inner.metrics.purged(purged as u64);
        Ok(purged)
    }

    /// Purges expired records every `every` until the returned task is aborted.
    pub fn spawn_purger(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let store = store.clone();
                let result =
                    tokio::task::spawn_blocking(move || store.purge_expired(SWEEP_BATCH)).await;
                match result {
                    Ok(Ok(purged)) if purged > 0 => {
                        tracing::debug!(purged, "purged expired history records");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "purging expired history records"),
                    Err(error) => tracing::warn!(%error, "the history purger task failed"),
                }
            }
        })
    }

    /// Hands every live record to `visit`, in key order, from one consistent snapshot; returns
    /// how many. Blocking: call it from the blocking pool or the checkpoint thread.
    pub fn export(
        &self,
        visit: impl FnMut(HistoryRecord) -> Result<(), HistoryError>,
    ) -> Result<u64, HistoryError> {
        self.export_prefix("", visit)
    }

    /// Like [`Self::export`], for the records whose key starts with `prefix` only (one key
    /// group's records, when keys start with `<namespace>/<job>/<keyGroup>/`). Reads only that
    /// key range.
    pub fn export_prefix(
        &self,
        prefix: &str,
        mut visit: impl FnMut(HistoryRecord) -> Result<(), HistoryError>,
    ) -> Result<u64, HistoryError> {
        let now = self.inner.clock.now_ms();
        let records = read_records(&self.inner.db, "exporting")?;
        let mut count = 0;
        let range = records
            .range::<&str>(prefix..)
            .map_err(|e| storage("exporting")(e.into()))?;
        for entry in range {
            let (key, row) = entry.map_err(|e| storage("exporting")(e.into()))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            let Some((expires_at_ms, stored)) = split_row(row.value()) else {
                return Err(HistoryError::Corrupt {
                    key: key.to_owned(),
                    message: String::from("stored row shorter than its expiry"),
                });
            };
            if expires_at_ms <= now {
                continue;
            }
            visit(HistoryRecord {
                key: key.to_owned(),
                stored: stored.to_vec(),
                expires_at_ms,
            })?;
            count += 1;
        }
        Ok(count)
    }

    /// Writes `records` (from [`Self::export`]) in one transaction, replacing records with the
    /// same keys and skipping those already expired; returns how many were written. The stored
    /// bytes are kept as they are and checked when read. Blocking, like [`Self::export`].
    pub fn import(
        &self,
        records: impl IntoIterator<Item = HistoryRecord>,
    ) -> Result<u64, HistoryError> {
        let now = self.inner.clock.now_ms();
        let run = || -> Result<u64, redb::Error> {
            let txn = self.inner.db.begin_write()?;
            let mut count = 0;
            {
                let mut table = txn.open_table(RECORDS)?;
                for record in records {
                    if record.expires_at_ms <= now {
                        continue;
                    }
                    upsert(
                        &mut table,
                        &record.key,
                        record.expires_at_ms,
                        &record.stored,
                    )?;
                    count += 1;
                }
            }
            txn.commit()?;
            Ok(count)
        };
        run().map_err(storage("importing"))
    }
}

/// Replaces `key`'s row.
pub(super) fn upsert(
    records: &mut redb::Table<&str, &[u8]>,
    key: &str,
    expires_at_ms: u64,
    stored: &[u8],
) -> Result<(), redb::Error> {
    records.insert(key, join_row(expires_at_ms, stored).as_slice())?;
    Ok(())
}

fn expiry_of(now_ms: u64, ttl: Duration) -> u64 {
    // A zero TTL still expires: one millisecond from now.
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    now_ms.saturating_add(ttl_ms)
}

/// The records table as of now, in a read transaction of its own; errors name `context`.
fn read_records(
    db: &Database,
    context: &'static str,
) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, HistoryError> {
    let txn = db.begin_read().map_err(|e| storage(context)(e.into()))?;
    txn.open_table(RECORDS)
        .map_err(|e| storage(context)(e.into()))
}

/// Reads `keys` in one read transaction: what `get` answers for each.
fn read_many(inner: &Inner, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, HistoryError> {
    let now = inner.clock.now_ms();
    let table = read_records(&inner.db, "reading")?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let row = table
            .get(key.as_str())
            .map_err(|e| storage("reading")(e.into()))?;
        let found = row.and_then(|row| {
            let row = row.value();
            match split_row(row) {
                Some((at, stored)) if at > now => Some(inner.codec.decode(key, stored)),
                Some(_) => None,
                // Shorter than an expiry.
                None => Some(inner.codec.decode(key, row)),
            }
        });
        inner.metrics.read(found.is_some());
        out.push(found.transpose()?);
    }
    Ok(out)
}

impl HistoryStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        let mut found = self.read(&[key.to_owned()])?;
        Ok(found.pop().flatten())
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, HistoryError> {
        self.read(keys)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
        self.write_one(key, KeyChange::Put(Arc::from(value), ttl))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), HistoryError> {
        self.write_one(key, KeyChange::Delete).await
    }

    /// One job for the writer thread: the batch shares one transaction (and one answer).
    async fn write_many(&self, writes: &[KeyWrite]) -> Vec<Result<(), HistoryError>> {
        let now_ms = self.inner.clock.now_ms();
        let mut outcomes: Vec<Result<(), HistoryError>> = Vec::with_capacity(writes.len());
        let mut batch = Vec::with_capacity(writes.len());
        for write in writes {
            let change = match &write.change {
                KeyChange::Put(value, ttl) => match self.inner.codec.encode(&write.key, value) {
                    Ok(stored) => Change::Put {
                        stored,
                        expires_at_ms: expiry_of(now_ms, *ttl),
                    },
                    Err(error) => {
                        outcomes.push(Err(error));
                        continue;
                    }
                },
                KeyChange::Delete => Change::Delete,
            };
            outcomes.push(Ok(()));
            batch.push(Write {
                key: write.key.clone(),
                change,
                now_ms,
            });
        }
        if batch.is_empty() {
            return outcomes;
        }
        // A batch is timed as a put, unless it is a lone delete.
        let op = match writes {
            [
                KeyWrite {
                    change: KeyChange::Delete,
                    ..
                },
            ] => Op::delete,
            _ => Op::put,
        };
        if let Err(error) = self.write(op, batch).await {
            for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
                *outcome = Err(error.clone());
            }
        }
        outcomes
    }

    async fn sync(&self) -> Result<(), HistoryError> {
        self.submit(Op::sync, Job::Sync).await
    }
}

impl EmbeddedStore {
    /// A batch of one.
    async fn write_one(&self, key: &str, change: KeyChange) -> Result<(), HistoryError> {
        let write = KeyWrite {
            key: key.to_owned(),
            change,
        };
        self.write_many(std::slice::from_ref(&write))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Queues a batch of changes for the writer thread and waits until it is committed (durable
    /// at the next [`HistoryStore::sync`]); the latency is observed once per batch, under `op`.
    async fn write(&self, op: Op, batch: Vec<Write>) -> Result<(), HistoryError> {
        self.submit(op, |reply| Job::Writes(batch, reply)).await
    }

    /// Hands the writer thread the job `job` builds around its reply, and waits for the answer;
    /// timed and counted under `op`.
    async fn submit(
        &self,
        op: Op,
        job: impl FnOnce(oneshot::Sender<Result<(), HistoryError>>) -> Job,
    ) -> Result<(), HistoryError> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        self.inner.writer.submit(job(reply));
        let result = answer.await.unwrap_or_else(|_| {
            Err(HistoryError::Unavailable {
                attempts: 1,
                message: String::from(
                    "embedded history store: the writer dropped a job unanswered",
                ),
            })
        });
        self.observe(op, started, &result);
        result
    }

    /// Reads `keys` on the caller's thread, timed and counted.
    fn read(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, HistoryError> {
        let started = Instant::now();
        let result = read_many(&self.inner, keys);
        if let Err(error) = &result {
            // Failed commits are logged by the writer thread; failed reads here.
            tracing::error!(%error, "embedded history read failed");
        }
        self.observe(Op::get, started, &result);
        result
    }

    /// Records the latency of an operation that started at `started`, and its failure if any.
    fn observe<T>(&self, op: Op, started: Instant, result: &Result<T, HistoryError>) {
        let metrics = &self.inner.metrics;
        metrics.observe_latency(op, started.elapsed());
        if let Err(error) = result {
            metrics.failed(op, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableTableMetadata, TableHandle};

    use super::*;
    use crate::history::metrics::{BackendLabel, HistoryMetrics};

    const START: u64 = 1_800_000_000_000;

    fn open(dir: &Path, clock: &ManualClock) -> EmbeddedStore {
        EmbeddedStore::open_with_clock(
            dir,
            Codec::zstd(3),
            HistoryMetrics::unregistered().for_backend(BackendLabel::embedded),
            Arc::new(clock.clone()),
        )
        .unwrap()
    }

    fn count_rows(store: &EmbeddedStore) -> u64 {
        let txn = store.inner.db.begin_read().unwrap();
        txn.open_table(RECORDS).unwrap().len().unwrap()
    }

    #[tokio::test]
    async fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        {
            let store = open(dir.path(), &clock);
            store.put("k", b"v", Duration::from_secs(60)).await.unwrap();
        }
        let store = open(dir.path(), &clock);
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert!(dir.path().join(FILE_NAME).exists());
    }

    #[tokio::test]
    async fn expired_records_are_swept_a_bounded_number_of_rows_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let store = open(dir.path(), &clock);
        let hour = Duration::from_secs(3600);
        store.put("a-live", b"x", hour).await.unwrap();
        for n in 0..40 {
            let key = format!("b-{n:02}");
            store.put(&key, b"x", Duration::from_secs(1)).await.unwrap();
        }
        store
            .put("c-rewritten", b"x", Duration::from_secs(1))
            .await
            .unwrap();
        store.put("c-rewritten", b"y", hour).await.unwrap();
        assert_eq!(count_rows(&store), 42, "nothing had expired yet");
        // Each write swept a few rows; finish the pass, so the next one starts at the first key.
        assert_eq!(store.purge_expired(SWEEP_BATCH).unwrap(), 0);

        clock.advance(Duration::from_secs(2));
        // The write's sweep examines SWEEP_PER_WRITE rows from the start: "a-live" (kept) and
        // the first "b-" rows (expired).
        store.put("d-new", b"x", hour).await.unwrap();
        let first = SWEEP_PER_WRITE - 1;
        assert_eq!(count_rows(&store), 43 - first as u64);
        // The purger goes on from there: ten more rows, all expired.
        assert_eq!(store.purge_expired(10).unwrap(), 10);
        // Then the rest of the table, which ends the pass.
        assert_eq!(store.purge_expired(SWEEP_BATCH).unwrap(), 40 - first - 10);
        assert_eq!(count_rows(&store), 3, "only live records are left");
        assert_eq!(store.purge_expired(SWEEP_BATCH).unwrap(), 0);
        for (key, value) in [("a-live", b"x"), ("c-rewritten", b"y"), ("d-new", b"x")] {
            assert_eq!(store.get(key).await.unwrap(), Some(value.to_vec()), "{key}");
        }

        // An expired record reads as absent before any sweep reaches it.
        store
            .put("e-short", b"x", Duration::from_secs(1))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(2));
        assert_eq!(store.get("e-short").await.unwrap(), None);
        store.delete("d-new").await.unwrap();
        assert_eq!(store.get("d-new").await.unwrap(), None);
    }

    #[test]
    fn the_expiry_index_of_earlier_versions_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LEGACY_EXPIRY)
                .unwrap()
                .insert((START, "k"), ())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = open(dir.path(), &ManualClock::new(START));
        let txn = store.inner.db.begin_read().unwrap();
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        assert_eq!(tables, ["records"]);
    }

    #[tokio::test]
    async fn the_purger_task_empties_expired_records() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let store = open(dir.path(), &clock);
        store.put("a", b"x", Duration::from_secs(1)).await.unwrap();
        clock.advance(Duration::from_secs(5));
        let purger = store.spawn_purger(Duration::from_millis(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        while count_rows(&store) > 0 {
            assert!(Instant::now() < deadline, "the purger did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        purger.abort();
    }

    #[tokio::test]
    async fn export_and_import_carry_live_records_to_another_directory() {
        let clock = ManualClock::new(START);
        let source_dir = tempfile::tempdir().unwrap();
        let source = open(source_dir.path(), &clock);
        let big = b"session;".repeat(4096);
        source
            .put("a", &big, Duration::from_secs(60))
            .await
            .unwrap();
        source
            .put("b", &[0, 255, 7], Duration::from_secs(120))
            .await
            .unwrap();
        source
            .put("gone", b"x", Duration::from_secs(1))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(2));

        let mut exported = Vec::new();
        let count = source
            .export(|record| {
                exported.push(record);
                Ok(())
            })
            .unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            exported.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(exported[0].expires_at_ms, START + 60_000);
        assert!(
            exported[0].stored.len() < big.len() / 10,
            "exported compressed"
        );

        let target_dir = tempfile::tempdir().unwrap();
        let target = open(target_dir.path(), &clock);
        assert_eq!(target.import(exported.clone()).unwrap(), 2);
        assert_eq!(target.get("a").await.unwrap(), Some(big));
        assert_eq!(target.get("b").await.unwrap(), Some(vec![0, 255, 7]));
        assert_eq!(target.get("gone").await.unwrap(), None);

        // Expiry times travel with the records.
        clock.advance(Duration::from_secs(60));
        assert_eq!(target.get("a").await.unwrap(), None);
        assert_eq!(target.get("b").await.unwrap(), Some(vec![0, 255, 7]));
        // Importing something already expired writes nothing.
        assert_eq!(target.import(exported).unwrap(), 1);
    }

    #[tokio::test]
    async fn export_by_prefix_reads_one_key_group() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let store = open(dir.path(), &clock);
        for key in [
            "ns/job/1/a",
            "ns/job/10/a",
            "ns/job/1/b",
            "ns/job/2/a",
            "ns/job/0/z",
        ] {
            store.put(key, b"x", Duration::from_secs(60)).await.unwrap();
        }
        let mut keys = Vec::new();
        let count = store
            .export_prefix("ns/job/1/", |record| {
                keys.push(record.key);
                Ok(())
            })
            .unwrap();
        assert_eq!(count, 2);
        assert_eq!(keys, ["ns/job/1/a", "ns/job/1/b"]);
        assert_eq!(store.export_prefix("ns/job/3/", |_| Ok(())).unwrap(), 0);
        assert_eq!(store.export(|_| Ok(())).unwrap(), 5);
    }

    #[test]
    fn a_directory_is_opened_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let _first = open(dir.path(), &clock);
        let error = EmbeddedStore::open(
            dir.path(),
            Codec::zstd(3),
            HistoryMetrics::unregistered().for_backend(BackendLabel::embedded),
        )
        .unwrap_err();
        assert!(matches!(error, HistoryError::Open(_)), "{error:?}");
    }
}
