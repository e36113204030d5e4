//! When and how the stream loop checkpoints, and how a starting worker restores (DESIGN §5).
//!
//! A checkpoint is taken between two batches, so every key group's state is consistent with the
//! positions consumed so far. The *pause* — the time the loop does not consume — is only what
//! consistency needs: wait for the deliveries in flight (a checkpoint must never claim a session
//! was emitted when its record could still be lost), flush the history write-behind, and copy
//! the state. Encoding, compressing and uploading run in a background task while the loop goes
//! on; the manifest is written last, so a checkpoint that dies half-way is never restored from.
//! With the embedded history backend, the key group's history records are exported into its file
//! (a consistent read snapshot, taken in the background: records written after the pause are
//! newer than the offsets, which a replay merges idempotently, exactly as with Aerospike).
//!
//! Restore reads, for each key group this worker owns now, the newest checkpoint complete for it
//! (or the one `restoreFrom` names), so any parallelism restores from any other. This module must
//! never write a manifest before its key group files, nor restore a key group from a checkpoint
//! that does not list it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use serde::Serialize;
use sessionizer_crds::session_job::{HistoryBackend, RestoreFrom};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::checkpoint::manifest::MANIFEST_FORMAT_VERSION;
use crate::checkpoint::{
    CheckpointStore, KeyGroupCheckpoint, LocalDir, Manifest, StoreCredentials, StoreError,
};
use crate::config::WorkerConfig;
use crate::history::{EmbeddedStore, History, HistoryError};

/// Why a checkpoint or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint settings are unusable.
    #[error("checkpoint settings: {0}")]
    Settings(String),
    /// Reading or writing the object store failed.
    #[error("checkpoint store: {0}")]
    Store(#[from] StoreError),
    /// Exporting or importing embedded history failed.
    #[error("embedded history in a checkpoint: {0}")]
    History(#[from] HistoryError),
    /// `restoreFrom` names a checkpoint that does not hold a key group this worker owns.
    #[error("checkpoint {id} does not hold key group {key_group} (restoreFrom names it)")]
    Missing {
        /// The checkpoint id.
        id: String,
        /// The key group.
        key_group: u32,
    },
    /// A background task failed.
    #[error("the checkpoint task failed: {0}")]
    Task(String),
}

/// A finished checkpoint of this worker, as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSummary {
    /// The checkpoint id.
    pub id: String,
    /// When its manifest was written (RFC 3339).
    pub completed_at: String,
    /// Bytes of this worker's key group files.
    pub bytes: u64,
    /// From the start of the pause to the manifest, in milliseconds.
    pub duration_millis: u64,
    /// How long consumption paused for it, in milliseconds.
    pub pause_millis: u64,
    /// The key groups it holds.
    pub key_groups: Vec<u32>,
    /// Whether a stop wrote it.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// What a restore found for one key group.
#[derive(Debug)]
pub struct Restored {
    /// The checkpoint id it came from.
    pub id: String,
    /// The key group's checkpoint (history records already imported when embedded).
    pub checkpoint: KeyGroupCheckpoint,
}

/// The checkpoint side of one worker.
pub struct Checkpointing {
    store: CheckpointStore,
    interval_ms: i64,
    namespace: String,
    job: String,
    partitions: u32,
    key_groups: Range<u32>,
    backend: HistoryBackend,
    embedded: Option<EmbeddedStore>,
    history_prefix: String,
    upload: Option<JoinHandle<Result<CheckpointSummary, CheckpointError>>>,
    next_due_ms: i64,
}

impl std::fmt::Debug for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointing")
            .field("store", &self.store.describe())
            .field("interval_ms", &self.interval_ms)
            .field("key_groups", &self.key_groups)
            .finish_non_exhaustive()
    }
}

/// The history key prefix of key group `key_group` of a job whose prefix is `job_prefix`.
pub fn key_group_prefix(job_prefix: &str, key_group: u32) -> String {
    format!("{job_prefix}{key_group}/")
}

impl Checkpointing {
    /// The checkpointing of a worker owning `key_groups` of `partitions`, first due one interval
    /// boundary after `now_ms`.
    pub fn open(
        config: &WorkerConfig,
        partitions: u32,
        key_groups: Range<u32>,
        history: &History,
        history_prefix: String,
        now_ms: i64,
    ) -> Result<Self, CheckpointError> {
        let spec = &config.spec.checkpoints;
        let interval = config
            .spec
            .checkpoint_interval()
            .map_err(|e| CheckpointError::Settings(e.to_string()))?;
        let interval_ms = i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let store = CheckpointStore::open(
            spec,
            &config.namespace,
            &config.job,
            &StoreCredentials::from_env(),
            LocalDir::Create,
        )?;
        let embedded = match history {
            History::Embedded(store) => Some(store.clone()),
            History::Aerospike(_) => None,
        };
        Ok(Self {
            store,
            interval_ms,
            namespace: config.namespace.clone(),
            job: config.job.clone(),
            partitions,
            key_groups,
            backend: config.spec.history.backend,
            embedded,
            history_prefix,
            upload: None,
            next_due_ms: next_boundary(now_ms, interval_ms),
        })
    }

    /// Where checkpoints go, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Reads what each owned key group restores from (nothing for `RestoreFrom::None` or when no
    /// checkpoint holds it), importing embedded history records on the way.
    pub async fn restore(
        &self,
        from: &RestoreFrom,
    ) -> Result<BTreeMap<u32, Restored>, CheckpointError> {
        let mut restored = BTreeMap::new();
        if *from == RestoreFrom::None {
            return Ok(restored);
        }
        let listings = self.store.list().await?;
        for key_group in self.key_groups.clone() {
            let found = match from {
                RestoreFrom::Id(id) => {
                    let listing = listings.iter().find(|l| &l.id == id);
                    match listing.and_then(|l| l.entry(key_group)) {
                        Some((_, entry)) => Some((id.clone(), entry.clone())),
                        None => {
                            return Err(CheckpointError::Missing {
                                id: id.clone(),
                                key_group,
                            });
                        }
                    }
                }
                _ => crate::checkpoint::manifest::latest_for(&listings, key_group).and_then(
                    |listing| {
                        listing
                            .entry(key_group)
                            .map(|(_, entry)| (listing.id.clone(), entry.clone()))
                    },
                ),
            };
            let Some((id, entry)) = found else { continue };
            let mut checkpoint = self.store.read_key_group(&id, &entry).await?;
            let records = std::mem::take(&mut checkpoint.history);
            if let Some(store) = &self.embedded {
                let store = store.clone();
                let imported = tokio::task::spawn_blocking(move || store.import(records))
                    .await
                    .map_err(|e| CheckpointError::Task(e.to_string()))??;
                info!(key_group, %id, imported, "imported embedded history from the checkpoint");
            }
            info!(key_group, %id, offsets = ?checkpoint.offsets, open_sessions = checkpoint.open_sessions(), "restoring key group");
            restored.insert(key_group, Restored { id, checkpoint });
        }
        Ok(restored)
    }

    /// Whether a periodic checkpoint is due at processing time `now_ms` (and none is uploading).
    pub fn due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_due_ms && self.upload.is_none()
    }

    /// The id of the periodic checkpoint due now; moves the schedule to the next boundary.
    pub fn take_due_id(&mut self, now_ms: i64) -> String {
        self.next_due_ms = next_boundary(now_ms, self.interval_ms);
        crate::checkpoint::periodic_id(now_ms, self.interval_ms)
    }

    /// Starts uploading `snapshot` as checkpoint `id` in the background.
    pub fn start_upload(
        &mut self,
        id: String,
        snapshot: Vec<KeyGroupCheckpoint>,
        started: Instant,
        pause: Duration,
    ) {
        let job = self.upload_job(id, snapshot, started, pause, false);
        self.upload = Some(tokio::spawn(job.run()));
    }

    /// The outcome of the background upload, once it has finished.
    pub async fn poll_upload(&mut self) -> Option<Result<CheckpointSummary, CheckpointError>> {
        if !self.upload.as_ref().is_some_and(JoinHandle::is_finished) {
            return None;
        }
        let handle = self.upload.take()?;
        Some(
            handle
                .await
                .unwrap_or_else(|e| Err(CheckpointError::Task(e.to_string()))),
        )
    }

    /// Waits for an upload in progress (a stop must not race the periodic checkpoint).
    pub async fn finish_upload(&mut self) -> Option<Result<CheckpointSummary, CheckpointError>> {
        let handle = self.upload.take()?;
        Some(
            handle
                .await
                .unwrap_or_else(|e| Err(CheckpointError::Task(e.to_string()))),
        )
    }

    /// Writes `snapshot` as checkpoint `id` and waits for it (`is_final`: written by a stop).
    pub async fn write_now(
        &self,
        id: String,
        snapshot: Vec<KeyGroupCheckpoint>,
        started: Instant,
        pause: Duration,
        is_final: bool,
    ) -> Result<CheckpointSummary, CheckpointError> {
        self.upload_job(id, snapshot, started, pause, is_final)
            .run()
            .await
    }

    fn upload_job(
        &self,
        id: String,
        snapshot: Vec<KeyGroupCheckpoint>,
        started: Instant,
        pause: Duration,
        is_final: bool,
    ) -> Upload {
        Upload {
            store: self.store.clone(),
            id,
            snapshot,
            started,
            started_at: jiff::Timestamp::now(),
            pause,
            is_final,
            embedded: self.embedded.clone(),
            history_prefix: self.history_prefix.clone(),
            manifest: ManifestFacts {
                namespace: self.namespace.clone(),
                job: self.job.clone(),
                partitions: self.partitions,
                key_groups: self.key_groups.clone(),
                backend: self.backend,
            },
        }
    }
}

/// The first interval boundary strictly after `now_ms`.
fn next_boundary(now_ms: i64, interval_ms: i64) -> i64 {
    (now_ms.div_euclid(interval_ms) + 1).saturating_mul(interval_ms)
}

struct ManifestFacts {
    namespace: String,
    job: String,
    partitions: u32,
    key_groups: Range<u32>,
    backend: HistoryBackend,
}

/// One checkpoint on its way to the store.
struct Upload {
    store: CheckpointStore,
    id: String,
    snapshot: Vec<KeyGroupCheckpoint>,
    started: Instant,
    started_at: jiff::Timestamp,
    pause: Duration,
    is_final: bool,
    embedded: Option<EmbeddedStore>,
    history_prefix: String,
    manifest: ManifestFacts,
}

impl Upload {
    async fn run(self) -> Result<CheckpointSummary, CheckpointError> {
        let mut entries = Vec::with_capacity(self.snapshot.len());
        for mut checkpoint in self.snapshot {
            if let Some(store) = &self.embedded {
                let store = store.clone();
                let prefix = key_group_prefix(&self.history_prefix, checkpoint.key_group);
                checkpoint.history = tokio::task::spawn_blocking(move || {
                    let mut records = Vec::new();
                    store
                        .export_prefix(&prefix, |record| {
                            records.push(record);
                            Ok(())
                        })
                        .map(|_| records)
                })
                .await
                .map_err(|e| CheckpointError::Task(e.to_string()))??;
            }
            entries.push(self.store.write_key_group(&self.id, &checkpoint).await?);
        }
        let duration = self.started.elapsed();
        let completed_at = jiff::Timestamp::now();
        let total_bytes = entries.iter().map(|e| e.bytes).sum();
        let key_groups = entries.iter().map(|e| e.key_group).collect();
        let facts = self.manifest;
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint_id: self.id.clone(),
            namespace: facts.namespace,
            job: facts.job,
            partitions: facts.partitions,
            first_key_group: facts.key_groups.start,
            end_key_group: facts.key_groups.end,
            history_backend: facts.backend,
            started_at: self.started_at,
            completed_at,
            duration_millis: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            total_bytes,
            key_groups: entries,
            is_final: self.is_final,
        };
        self.store.write_manifest(&manifest).await?;
        Ok(CheckpointSummary {
            id: self.id,
            completed_at: completed_at.to_string(),
            bytes: total_bytes,
            duration_millis: manifest.duration_millis,
            pause_millis: u64::try_from(self.pause.as_millis()).unwrap_or(u64::MAX),
            key_groups,
            is_final: self.is_final,
        })
    }
}

/// Logs a finished (or failed) periodic checkpoint.
pub fn log_outcome(outcome: &Result<CheckpointSummary, CheckpointError>) {
    match outcome {
        Ok(summary) => info!(
            id = %summary.id,
            bytes = summary.bytes,
            duration_ms = summary.duration_millis,
            pause_ms = summary.pause_millis,
            is_final = summary.is_final,
            "checkpoint complete"
        ),
        Err(error) => {
            warn!(%error, "checkpoint failed; the next one is tried at the next interval")
        }
    }
}
