//! Which checkpoints to delete: a pure decision over a listing, so every rule is unit-tested and
//! the operator only carries it out.
//!
//! Rules, per key group because workers write manifests independently:
//! - A checkpoint with a manifest may go when, for every key group it is complete for, at least
//!   `retain` newer checkpoints are complete for that key group (reason `retain`); or when it is
//!   older than `maxAge` (by its id's time) and is not the newest checkpoint complete for any of
//!   its key groups (reason `max_age`). With one worker this is exactly "keep the newest
//!   `retain`, and never the newest".
//! - The newest checkpoint complete job-wide is never deleted either, nor a protected id (what
//!   `restoreFrom` names, what a cutover still needs), nor an id with a manifest this build
//!   cannot read (it may come from a newer version).
//! - An id without any manifest is an incomplete leftover (or a checkpoint being written): it
//!   goes once its newest file is older than the grace period (reason `incomplete`).
//!
//! Never decides anything about names that are not checkpoint ids.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use super::id;
use super::manifest::CheckpointListing;

/// Default grace period of checkpoints without a manifest.
pub const DEFAULT_INCOMPLETE_GRACE: Duration = Duration::from_secs(600);

/// What to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Complete checkpoints to keep per key group (at least 1).
    pub retain: usize,
    /// Checkpoints older than this may go even if fewer than `retain` would remain.
    pub max_age: Option<Duration>,
    /// Ids without a manifest go once their newest file is this old.
    pub incomplete_grace: Duration,
}

/// Why a checkpoint is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeletionReason {
    /// `retain` newer checkpoints exist for each of its key groups.
    Retain,
    /// Older than `maxAge`, and newer ones exist for each of its key groups.
    MaxAge,
    /// No manifest, and nothing written to it for the grace period.
    Incomplete,
    /// Its SessionJob was deleted with `deleteOnJobDeletion: true`.
    Finalizer,
}

impl DeletionReason {
    /// The `reason` label of the deletion metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "retain",
            Self::MaxAge => "max_age",
            Self::Incomplete => "incomplete",
            Self::Finalizer => "finalizer",
        }
    }
}

/// One checkpoint to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// Its id.
    pub id: String,
    /// Why.
    pub reason: DeletionReason,
}

/// The checkpoints of `listings` to delete at `now` under `policy`, oldest first; ids in
/// `protected` are kept whatever the rules say.
pub fn decide(
    listings: &[CheckpointListing],
    policy: &RetentionPolicy,
    now: Timestamp,
    protected: &BTreeSet<String>,
) -> Vec<Deletion> {
    let retain = policy.retain.max(1);
    let mut listings: Vec<&CheckpointListing> = listings
        .iter()
        .filter(|l| id::is_checkpoint_id(&l.id))
        .collect();
    listings.sort_by(|a, b| a.id.cmp(&b.id));
    let newest_complete = listings
        .iter()
        .rev()
        .find(|l| l.is_complete())
        .map(|l| l.id.clone());

    // For each (id, key group): how many newer checkpoints are complete for that key group,
    // "newer" as restore sees it (`manifest::latest_for`: the manifest that completed last,
    // then the greatest id), so rank 0 is exactly what a restore of the key group would use.
    let mut by_key_group: BTreeMap<u32, Vec<(Timestamp, &str)>> = BTreeMap::new();
    for listing in &listings {
        for &kg in &listing.complete_key_groups {
            if let Some((manifest, _)) = listing.entry(kg) {
                by_key_group
                    .entry(kg)
                    .or_default()
                    .push((manifest.completed_at, listing.id.as_str()));
            }
        }
    }
    let mut newer: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    for (kg, mut ids) in by_key_group {
        ids.sort_by(|a, b| b.cmp(a));
        for (rank, (_, id)) in ids.into_iter().enumerate() {
            newer.insert((id, kg), rank);
        }
    }

    let now_ms = now.as_millisecond();
    let mut deletions = Vec::new();
    for listing in listings {
        let id = listing.id.as_str();
        if protected.contains(id) || !listing.unreadable_manifests.is_empty() {
            continue;
        }
        if !listing.has_manifest() {
            let idle = now.duration_since(listing.newest_modified);
            if idle.as_millis()
                > i128::try_from(policy.incomplete_grace.as_millis()).unwrap_or(i128::MAX)
            {
                deletions.push(Deletion {
                    id: id.to_owned(),
                    reason: DeletionReason::Incomplete,
                });
            }
            continue;
        }
        if newest_complete.as_deref() == Some(id) {
            continue;
        }
        let ranks: Vec<usize> = listing
            .complete_key_groups
            .iter()
            .map(|&kg| newer.get(&(id, kg)).copied().unwrap_or(0))
            .collect();
        if ranks.contains(&0) {
            continue;
        }
        let reason = if ranks.iter().all(|&rank| rank >= retain) {
            Some(DeletionReason::Retain)
        } else {
            let too_old = policy
                .max_age
                .zip(listing.millis())
                .is_some_and(|(max_age, at)| {
                    let age_ms = i128::from(now_ms) - i128::from(at);
                    age_ms > i128::try_from(max_age.as_millis()).unwrap_or(i128::MAX)
                });
            too_old.then_some(DeletionReason::MaxAge)
        };
        if let Some(reason) = reason {
            deletions.push(Deletion {
                id: id.to_owned(),
                reason,
            });
        }
    }
    deletions
}

#[cfg(test)]
mod tests;
