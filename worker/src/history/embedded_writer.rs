//! Group commit for the embedded store: one thread owns every write transaction and commits all
//! the writes that queued up while the previous commit was syncing, in one transaction with one
//! fsync. Under load a commit carries hundreds of writes, so the fsync — not the work — stops
//! being what limits the store; an idle store still commits each write at once.
//!
//! Every caller gets its own answer, and only after the transaction holding its write is durable.
//! The writer must never reorder writes to the same key (the queue is FIFO and applied in order)
//! and never leave a caller without an answer (a failed commit fails every write it carried).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::oneshot;

use super::HistoryError;
use super::embedded::{EXPIRY, PURGE_PER_WRITE, RECORDS, purge, remove, storage, upsert};
use super::metrics::StoreMetrics;

/// Most writes one transaction carries.
pub const MAX_GROUP: usize = 4096;

/// One queued write.
pub struct Write {
    /// The key.
    pub key: String,
    /// What to do to it.
    pub change: Change,
    /// "Now" for expiry purposes, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<(), HistoryError>>,
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

/// The writer thread and the queue into it; dropping it drains the queue and joins the thread.
pub struct Writer {
    queue: Option<Sender<Write>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread of `db`.
    pub fn start(db: Arc<Database>, metrics: StoreMetrics) -> std::io::Result<Self> {
        let (queue, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(String::from("history-writer"))
            .spawn(move || run(&db, &receiver, &metrics))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `write`; its `reply` answers once it is durable (or failed).
    pub fn submit(&self, write: Write) {
        let Some(queue) = &self.queue else { return };
        if let Err(std::sync::mpsc::SendError(write)) = queue.send(write) {
            let _ = write.reply.send(Err(HistoryError::Unavailable {
                attempts: 1,
                message: String::from("embedded history store: the writer thread has stopped"),
            }));
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

fn run(db: &Database, receiver: &Receiver<Write>, metrics: &StoreMetrics) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(write) => group.push(write),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let result = commit(db, &group).map_err(storage("writing"));
        match result {
            Ok(purged) => {
                metrics.purged(purged as u64);
                for write in group {
                    match &write.change {
                        Change::Put { stored, .. } => metrics.written(stored.len()),
                        Change::Delete => metrics.deleted(),
                    }
                    let _ = write.reply.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = group.len(), "embedded history commit failed");
                let message = error.to_string();
                for write in group {
                    let _ = write.reply.send(Err(HistoryError::Unavailable {
                        attempts: 1,
                        message: message.clone(),
                    }));
                }
            }
        }
    }
}

/// Applies `group` in order in one durable transaction; returns how many expired records it
/// purged on the way (at most [`PURGE_PER_WRITE`] per write).
fn commit(db: &Database, group: &[Write]) -> Result<usize, redb::Error> {
    let txn = db.begin_write()?;
    let purged = {
        let mut records = txn.open_table(RECORDS)?;
        let mut expiry = txn.open_table(EXPIRY)?;
        for write in group {
            match &write.change {
                Change::Put {
                    stored,
                    expires_at_ms,
                } => upsert(
                    &mut records,
                    &mut expiry,
                    &write.key,
                    *expires_at_ms,
                    stored,
                )?,
                Change::Delete => {
                    remove(&mut records, &mut expiry, &write.key)?;
                }
            }
        }
        let now = group.iter().map(|w| w.now_ms).max().unwrap_or(0);
        purge(
            &mut records,
            &mut expiry,
            now,
            PURGE_PER_WRITE.saturating_mul(group.len()),
        )?
    };
    txn.commit()?;
    Ok(purged)
}
