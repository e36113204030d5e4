//! The pending late-update buffer of one key (seed gotcha 9): late events that touch closed
//! sessions change a copy of the key's history list here, and the history write and the emitted
//! updates happen together when the buffer is flushed, `lateUpdateInterval` of processing time
//! after its first change. However many late events arrive for a key in an interval (a lagging
//! upstream), it costs one history write and one update per changed session.
//!
//! Writing history only at flush keeps history and emitted records consistent across a crash:
//! a restored checkpoint either still holds the buffer or replays the events that filled it.
//! This module must never emit an update before its flush time (except at `finish`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::closed::ClosedSessions;
use crate::history::HistoryError;
use crate::session::{Session, SessionRecord};

/// A tombstone waiting to be emitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Its version (event count of the session the id was merged into).
    pub version: u64,
    /// The id it was merged into.
    pub merged_into: String,
}

/// Buffered late updates of one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingKey {
    /// Processing time (epoch ms) at which the buffer is flushed.
    pub due_at: i64,
    /// The key's closed sessions as they will be written to history; while the buffer exists it
    /// replaces the stored history value for this key.
    pub sessions: ClosedSessions,
    /// Ids of sessions whose updated record is to be emitted.
    pub dirty: BTreeSet<String>,
    /// Retired ids whose tombstone is to be emitted.
    pub tombstones: BTreeMap<String, Tombstone>,
}

impl PendingKey {
    /// The records the flush emits: the dirty sessions' current state and the tombstones.
    pub fn records(&mut self, key: &str) -> Result<Vec<SessionRecord>, HistoryError> {
        let mut out = self.sessions.records(key, &self.dirty)?;
        out.extend(
            self.tombstones
                .iter()
                .map(|(id, t)| SessionRecord::tombstone(key, id, t.version, &t.merged_into)),
        );
        Ok(out)
    }

    /// Records that `merged` (already carrying its final id) replaces `retired` ids.
    pub fn mark(&mut self, merged: &Session, retired: &[String]) {
        let id = merged.id();
        for r in retired {
            self.dirty.remove(r);
            self.tombstones.insert(
                r.clone(),
                Tombstone {
                    version: merged.events.len() as u64,
                    merged_into: id.clone(),
                },
            );
        }
        self.dirty.insert(id);
    }
}
