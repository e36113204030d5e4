//! The retention rules, one behaviour per test, plus invariants over random listings.

use proptest::prelude::*;

use super::*;
use crate::checkpoint::manifest::tests::manifest;
use crate::checkpoint::manifest::{StoredFile, manifest_file};

const MINUTE: i64 = 60_000;

fn id_at_minute(minute: i64) -> String {
    id::id_at(minute * MINUTE)
}

/// A checkpoint at `minute` with manifests for `ranges` of `partitions` key groups, its files
/// last written at that minute.
fn checkpoint(minute: i64, ranges: &[(u32, u32)], partitions: u32) -> CheckpointListing {
    let id = id_at_minute(minute);
    let modified = Timestamp::from_millisecond(minute * MINUTE).unwrap();
    let files: Vec<StoredFile> = (0..partitions)
        .map(|kg| StoredFile {
            name: crate::checkpoint::manifest::key_group_file(kg),
            bytes: 10,
            modified,
        })
        .collect();
    let manifests = ranges
        .iter()
        .map(|&(first, end)| {
            (
                manifest_file(first, end),
                Ok(manifest(&id, first, end, partitions)),
            )
        })
        .collect();
    CheckpointListing::build(&id, &files, manifests)
}

fn complete(minute: i64) -> CheckpointListing {
    checkpoint(minute, &[(0, 1)], 1)
}

fn incomplete(minute: i64) -> CheckpointListing {
    checkpoint(minute, &[], 1)
}

fn policy(retain: usize) -> RetentionPolicy {
    RetentionPolicy {
        retain,
        max_age: None,
        incomplete_grace: Duration::from_secs(600),
    }
}

fn at_minute(minute: i64) -> Timestamp {
    Timestamp::from_millisecond(minute * MINUTE).unwrap()
}

fn deleted(deletions: &[Deletion]) -> Vec<(i64, DeletionReason)> {
    deletions
        .iter()
        .map(|d| (id::millis_of(&d.id).unwrap() / MINUTE, d.reason))
        .collect()
}

#[test]
fn one_worker_keeps_exactly_the_newest_retain() {
    let listings: Vec<_> = (1..=10).map(complete).collect();
    let deletions = decide(&listings, &policy(3), at_minute(11), &BTreeSet::new());
    let expected: Vec<_> = (1..=7).map(|m| (m, DeletionReason::Retain)).collect();
    assert_eq!(deleted(&deletions), expected);
}

#[test]
fn fewer_than_retain_deletes_nothing() {
    let listings: Vec<_> = (1..=3).map(complete).collect();
    assert!(decide(&listings, &policy(3), at_minute(4), &BTreeSet::new()).is_empty());
    assert!(decide(&[], &policy(3), at_minute(4), &BTreeSet::new()).is_empty());
}

#[test]
fn max_age_deletes_old_ones_but_never_the_newest() {
    let listings: Vec<_> = (1..=3).map(complete).collect();
    let mut policy = policy(3);
    policy.max_age = Some(Duration::from_secs(30 * 60));
    // At minute 100 every checkpoint is older than maxAge: only the newest stays.
    let deletions = decide(&listings, &policy, at_minute(100), &BTreeSet::new());
    assert_eq!(
        deleted(&deletions),
        [(1, DeletionReason::MaxAge), (2, DeletionReason::MaxAge)]
    );
    // At minute 32 only the first one is older than 30 minutes.
    let deletions = decide(&listings, &policy, at_minute(32), &BTreeSet::new());
    assert_eq!(deleted(&deletions), [(1, DeletionReason::MaxAge)]);
}

#[test]
fn protected_ids_are_kept() {
    let listings: Vec<_> = (1..=6).map(complete).collect();
    let protected = BTreeSet::from([id_at_minute(2)]);
    let deletions = decide(&listings, &policy(2), at_minute(7), &protected);
    assert_eq!(
        deleted(&deletions),
        [
            (1, DeletionReason::Retain),
            (3, DeletionReason::Retain),
            (4, DeletionReason::Retain)
        ]
    );
}

#[test]
fn incomplete_leftovers_go_after_the_grace_period() {
    let listings = vec![complete(1), incomplete(2), complete(3), incomplete(20)];
    // At minute 21: the leftover of minute 2 is 19 minutes old (> 10), minute 20's is 1.
    let deletions = decide(&listings, &policy(3), at_minute(21), &BTreeSet::new());
    assert_eq!(deleted(&deletions), [(2, DeletionReason::Incomplete)]);
    // Within the grace period nothing goes, whether older or newer than the newest complete.
    let deletions = decide(&listings, &policy(3), at_minute(5), &BTreeSet::new());
    assert!(deletions.is_empty(), "{deletions:?}");
    let deletions = decide(&listings, &policy(3), at_minute(31), &BTreeSet::new());
    assert_eq!(
        deleted(&deletions),
        [
            (2, DeletionReason::Incomplete),
            (20, DeletionReason::Incomplete)
        ]
    );
}

#[test]
fn unreadable_manifests_and_foreign_names_are_never_touched() {
    let mut future = incomplete(1);
    future.unreadable_manifests.push((
        "manifest-00000-00001.json".into(),
        "format version 2".into(),
    ));
    let mut foreign = incomplete(2);
    foreign.id = "backup-2024".into();
    let listings = vec![future, foreign, complete(3)];
    assert!(decide(&listings, &policy(1), at_minute(500), &BTreeSet::new()).is_empty());
}

#[test]
fn two_workers_count_per_key_group() {
    // Key groups 0..2 (worker A: [0,1), worker B: [1,2)). Worker B missed minutes 3 and 4.
    let listings = vec![
        checkpoint(1, &[(0, 1), (1, 2)], 2),
        checkpoint(2, &[(0, 1), (1, 2)], 2),
        checkpoint(3, &[(0, 1)], 2),
        checkpoint(4, &[(0, 1)], 2),
    ];
    // retain 2: minute 1 has 3 newer for kg 0 and 1 newer (minute 2) for kg 1 → kept; minute 2
    // is the newest for kg 1 (and the newest complete one) → kept.
    let deletions = decide(&listings, &policy(2), at_minute(5), &BTreeSet::new());
    assert!(deletions.is_empty(), "{deletions:?}");
    // retain 1: minute 1 goes (kg 0 and kg 1 both have a newer one); minute 3 goes (minute 4).
    let deletions = decide(&listings, &policy(1), at_minute(5), &BTreeSet::new());
    assert_eq!(
        deleted(&deletions),
        [(1, DeletionReason::Retain), (3, DeletionReason::Retain)]
    );
}

#[test]
fn the_newest_complete_checkpoint_stays_even_when_partial_ones_cover_it() {
    // Minute 2 and 3 are each complete for one worker only; together they cover everything.
    let listings = vec![
        checkpoint(1, &[(0, 1), (1, 2)], 2),
        checkpoint(2, &[(0, 1)], 2),
        checkpoint(3, &[(1, 2)], 2),
    ];
    let deletions = decide(&listings, &policy(1), at_minute(4), &BTreeSet::new());
    assert!(deletions.is_empty(), "{deletions:?}");
}

#[test]
fn reasons_have_metric_labels() {
    let labels: Vec<_> = [
        DeletionReason::Retain,
        DeletionReason::MaxAge,
        DeletionReason::Incomplete,
        DeletionReason::Finalizer,
    ]
    .map(DeletionReason::as_str)
    .into();
    assert_eq!(labels, ["retain", "max_age", "incomplete", "finalizer"]);
}

/// A random history of up to 12 checkpoints of a job with 4 key groups and 2 workers: each
/// checkpoint has manifests from none, one or both workers.
fn histories() -> impl Strategy<Value = Vec<CheckpointListing>> {
    prop::collection::vec(0u8..4, 0..12).prop_map(|writers| {
        writers
            .into_iter()
            .enumerate()
            .map(|(minute, which)| {
                let ranges: &[(u32, u32)] = match which {
                    0 => &[],
                    1 => &[(0, 2)],
                    2 => &[(2, 4)],
                    _ => &[(0, 2), (2, 4)],
                };
                checkpoint(minute as i64 + 1, ranges, 4)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn retention_never_loses_what_a_restore_needs(
        listings in histories(),
        retain in 1usize..4,
        max_age_minutes in prop::option::of(1u64..20),
        now_minute in 12i64..40,
        protect in prop::option::of(0usize..12),
    ) {
        let policy = RetentionPolicy {
            retain,
            max_age: max_age_minutes.map(|m| Duration::from_secs(m * 60)),
            incomplete_grace: Duration::from_secs(600),
        };
        let protected: BTreeSet<String> = protect
            .and_then(|i| listings.get(i))
            .map(|l| l.id.clone())
            .into_iter()
            .collect();
        let deletions = decide(&listings, &policy, at_minute(now_minute), &protected);
        let gone: BTreeSet<&str> = deletions.iter().map(|d| d.id.as_str()).collect();
        prop_assert!(protected.iter().all(|id| !gone.contains(id.as_str())));
        let kept: Vec<&CheckpointListing> =
            listings.iter().filter(|l| !gone.contains(l.id.as_str())).collect();
        for kg in 0..4 {
            // The newest checkpoint complete for every key group survives.
            let newest = listings.iter().filter(|l| l.complete_key_groups.contains(&kg)).map(|l| &l.id).max();
            if let Some(newest) = newest {
                prop_assert!(!gone.contains(newest.as_str()), "newest for {} deleted", kg);
                // Without maxAge, at least min(retain, available) remain for each key group.
                if policy.max_age.is_none() {
                    let available = listings.iter().filter(|l| l.complete_key_groups.contains(&kg)).count();
                    let remaining = kept.iter().filter(|l| l.complete_key_groups.contains(&kg)).count();
                    prop_assert!(remaining >= retain.min(available));
                }
            }
        }
        let newest_complete = listings.iter().filter(|l| l.is_complete()).map(|l| &l.id).max();
        if let Some(newest) = newest_complete {
            prop_assert!(!gone.contains(newest.as_str()));
        }
        for deletion in &deletions {
            let listing = listings.iter().find(|l| l.id == deletion.id);
            prop_assert!(listing.is_some());
            if deletion.reason == DeletionReason::Incomplete {
                prop_assert!(listing.is_some_and(|l| !l.has_manifest()));
            }
        }
    }
}

#[test]
fn a_stop_checkpoint_named_early_but_completed_last_counts_as_the_newest() {
    // The operator names a stop's checkpoint when the stage starts; periodic checkpoints of the
    // still-running worker may get greater ids before the stop completes. Restore takes the one
    // that completed last, so retention must rank it the same way.
    let id = id_at_minute(1);
    let mut stop = manifest(&id, 0, 1, 1);
    stop.completed_at = Timestamp::from_second(9_999).unwrap();
    let files = vec![StoredFile {
        name: crate::checkpoint::manifest::key_group_file(0),
        bytes: 10,
        modified: at_minute(1),
    }];
    let stop = CheckpointListing::build(&id, &files, vec![(manifest_file(0, 1), Ok(stop))]);
    let listings = vec![stop, complete(2), complete(3), complete(4)];
    assert_eq!(
        crate::checkpoint::manifest::latest_for(&listings, 0).map(|l| l.id.clone()),
        Some(id.clone())
    );
    let deletions = decide(&listings, &policy(1), at_minute(5), &BTreeSet::new());
    assert!(
        deletions.iter().all(|d| d.id != id),
        "the stop checkpoint is kept: {deletions:?}"
    );
}
