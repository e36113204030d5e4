//! How the embedded store finds expired records: a sweep that walks the records table in key
//! order a bounded number of rows at a time, continuing where it stopped and wrapping at the end,
//! and removes the rows whose expiry has passed.
//!
//! The alternative, an `(expiry, key)` index, finds expired rows without reading live ones, but
//! makes every write touch two more B-tree pages (remove the old index entry, insert the new
//! one) — about a tenth of the worker's CPU at full speed, where the sweep costs a few reads
//! of pages the writes keep in cache. Expired rows read as absent whether swept or not, so the
//! sweep only decides when their space comes back: after at most one pass over the table.
//!
//! The cursor is shared by the writer thread and the periodic purger; redb runs one write
//! transaction at a time, so they never sweep concurrently. A sweep must never remove a row
//! that has not expired, nor examine more rows than it was given.

use std::sync::Mutex;

use redb::{ReadableTable, Table};

use super::embedded::split_row;

/// The sweep's position: the first key the next sweep examines (`""` = from the start).
#[derive(Debug, Default)]
pub struct Sweep {
    next: Mutex<String>,
}

impl Sweep {
    /// Examines at most `rows` rows of `records` from the cursor on and removes those that
    /// expired at or before `now_ms`; returns how many it removed.
    pub fn run(
        &self,
        records: &mut Table<&str, &[u8]>,
        now_ms: u64,
        rows: usize,
    ) -> Result<usize, redb::Error> {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut expired = Vec::new();
        // `None` when the sweep reached the end of the table.
        let mut resume_at = None;
        for (scanned, entry) in records.range::<&str>(next.as_str()..)?.enumerate() {
            let (key, row) = entry?;
            if scanned == rows {
                resume_at = Some(key.value().to_owned());
                break;
            }
            if split_row(row.value()).is_some_and(|(at, _)| at <= now_ms) {
                expired.push(key.value().to_owned());
            }
        }
        for key in &expired {
            records.remove(key.as_str())?;
        }
        *next = resume_at.unwrap_or_default();
        Ok(expired.len())
    }
}
