//! Group commit for the embedded store: one thread owns every write transaction and commits all
//! the writes that queued up while the previous commit was running, in one transaction. Under
//! load a commit carries hundreds of writes; an idle store still commits each write at once.
//!
//! Commits are not synced to disk one by one: a write is applied (every later read sees it) when
//! its caller gets its answer, and durable after the next [`Job::Sync`], which commits with an
//! fsync. The stream loop syncs before it commits source offsets and before a checkpoint
//! ([`super::WriteBehind::flush`]), so a crash can only lose writes whose input is replayed —
//! and the worker pays one fsync per commit interval instead of one per group.
//!
//! Every caller gets its own answer, and only after the transaction holding its write (or, for a
//! sync, every earlier write) is committed. The writer must never reorder writes to the same key
//! (the queue is FIFO and applied in order), never leave a caller without an answer (a failed
//! commit fails every job it carried), and never stop with unsynced commits.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::HistoryError;
use super::embedded::{RECORDS, SWEEP_PER_WRITE, storage, upsert};
use super::embedded_sweep::Sweep;
use super::metrics::StoreMetrics;

/// Most writes one transaction carries (a job's writes are never split, so one job can exceed it).
pub const MAX_GROUP: usize = 4096;

/// One write of a [`Job::Writes`].
pub struct Write {
    /// The key.
    pub key: String,
    /// What to do to it.
    pub change: Change,
    /// "Now" for expiry purposes, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// A change to one key.
pub enum Change {
    /// Store `stored` (codec output) until `expires_at_ms`.
    Put {
        /// The encoded value.
        stored: Vec<u8>,
        /// Expiry, milliseconds since the Unix epoch.
        expires_at_ms: u64,
    },
    /// Remove the key.
    Delete,
}

/// What the writer thread is asked to do.
pub enum Job {
    /// Apply these writes, in order, in one transaction; the reply answers for all of them.
    Writes(Vec<Write>, oneshot::Sender<Result<(), HistoryError>>),
    /// Make every write applied so far durable; answers once it is.
    Sync(oneshot::Sender<Result<(), HistoryError>>),
}

/// The writer thread and the queue into it; dropping it drains the queue, syncs and joins the
/// thread.
pub struct Writer {
    queue: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread of `db`; each commit also sweeps for expired records.
    pub fn start(
        db: Arc<Database>,
        sweep: Arc<Sweep>,
        metrics: StoreMetrics,
    ) -> std::io::Result<Self> {
        let (queue, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(String::from("history-writer"))
            .spawn(move || run(&db, &sweep, &receiver, &metrics))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `job`; its reply answers once it is committed (a write) or durable (a sync), or
    /// failed.
    pub fn submit(&self, job: Job) {
        let stopped = || {
            Err(HistoryError::Unavailable {
                attempts: 1,
                message: String::from("embedded history store: the writer thread has stopped"),
            })
        };
        let Some(queue) = &self.queue else {
            job.answer(stopped());
            return;
        };
        if let Err(std::sync::mpsc::SendError(job)) = queue.send(job) {
            job.answer(stopped());
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered everything queued.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Job {
    fn answer(self, result: Result<(), HistoryError>) {
        let reply = match self {
            Job::Writes(_, reply) | Job::Sync(reply) => reply,
        };
        let _ = reply.send(result);
    }
}

fn run(db: &Database, sweep: &Sweep, receiver: &Receiver<Job>, metrics: &StoreMetrics) {
    // Whether a commit since the last sync is not durable yet.
    let mut unsynced = false;
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        let mut queued = group_writes(&group);
        while queued < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => {
                    queued += group_writes(std::slice::from_ref(&job));
                    group.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let writes: Vec<&Write> = group
            .iter()
            .flat_map(|job| match job {
                Job::Writes(writes, _) => writes.as_slice(),
                Job::Sync(_) => &[],
            })
            .collect();
        let sync = group.iter().any(|job| matches!(job, Job::Sync(_)));
        let result = if writes.is_empty() && !unsynced {
            // Only syncs, and nothing to make durable.
            Ok(0)
        } else {
            let durability = if sync {
                Durability::Immediate
            } else {
                Durability::None
            };
            commit(db, sweep, &writes, durability).map_err(storage("writing"))
        };
        match result {
            Ok(purged) => {
                unsynced = !sync;
                metrics.purged(purged as u64);
                for write in &writes {
                    match &write.change {
                        Change::Put { stored, .. } => metrics.written(stored.len()),
                        Change::Delete => metrics.deleted(),
                    }
                }
                for job in group {
                    job.answer(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = group.len(), "embedded history commit failed");
                let message = error.to_string();
                for job in group {
                    job.answer(Err(HistoryError::Unavailable {
                        attempts: 1,
                        message: message.clone(),
                    }));
                }
            }
        }
    }
    // The queue is closed: the store is being dropped. Leave nothing unsynced behind.
    if unsynced && let Err(error) = commit(db, sweep, &[], Durability::Immediate) {
        tracing::error!(%error, "syncing the embedded history store at close failed");
    }
}

/// Writes the jobs of `group` carry.
fn group_writes(group: &[Job]) -> usize {
    group
        .iter()
        .map(|job| match job {
            Job::Writes(writes, _) => writes.len(),
            Job::Sync(_) => 0,
        })
        .sum()
}

/// Applies `group` in order in one transaction, committed with `durability`; returns how many
/// expired records the transaction's sweep removed ([`SWEEP_PER_WRITE`] rows examined per write).
fn commit(
    db: &Database,
    sweep: &Sweep,
    group: &[&Write],
    durability: Durability,
) -> Result<usize, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let purged = {
        let mut records = txn.open_table(RECORDS)?;
        for write in group {
            match &write.change {
                Change::Put {
                    stored,
                    expires_at_ms,
                } => upsert(&mut records, &write.key, *expires_at_ms, stored)?,
                Change::Delete => {
                    records.remove(write.key.as_str())?;
                }
            }
        }
        let now = group.iter().map(|w| w.now_ms).max().unwrap_or(0);
        sweep.run(
            &mut records,
            now,
            SWEEP_PER_WRITE.saturating_mul(group.len()),
        )?
    };
    txn.commit()?;
    Ok(purged)
}
