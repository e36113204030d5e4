//! Status and condition from listings, at chosen times.

use sessionizer_crds::session_job::HistoryBackend;
use sessionizer_worker::checkpoint::manifest::{KeyGroupEntry, ManifestScope, StoredFile};
use sessionizer_worker::checkpoint::{Manifest, id_at};

use super::*;

const T0: i64 = 1_763_776_800;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// A checkpoint started at `second` that took 2 s, complete for key groups `[first, end)` of 2.
fn checkpoint(second: i64, ranges: &[(u32, u32)]) -> CheckpointListing {
    let id = id_at(second * 1000);
    let manifests = ranges
        .iter()
        .map(|&(first, end)| {
            let scope = ManifestScope {
                namespace: "ns".into(),
                job: "job".into(),
                partitions: 2,
                first_key_group: first,
                end_key_group: end,
                history_backend: HistoryBackend::Aerospike,
            };
            let entries = (first..end)
                .map(|kg| KeyGroupEntry {
                    key_group: kg,
                    file: format!("kg-{kg:05}.bin"),
                    bytes: 1000,
                    sha256: "0".repeat(64),
                    offsets: Default::default(),
                    open_sessions: 0,
                    history_records: 0,
                })
                .collect();
            let manifest = Manifest::new(&scope, &id, at(second), at(second + 2), entries, false);
            (format!("manifest-{first:05}-{end:05}.json"), Ok(manifest))
        })
        .collect();
    let files = [StoredFile {
        name: "kg-00000.bin".into(),
        bytes: 1000,
        modified: at(second + 2),
    }];
    CheckpointListing::build(&id, &files, manifests)
}

const INTERVAL: Duration = Duration::from_secs(60);

#[test]
fn status_shows_the_newest_complete_checkpoint_and_the_retained_count() {
    let listings = vec![
        checkpoint(T0, &[(0, 2)]),
        checkpoint(T0 + 60, &[(0, 1), (1, 2)]),
        checkpoint(T0 + 120, &[(0, 1)]),
    ];
    let status = checkpoints_status(&listings);
    assert_eq!(
        status.latest_id.as_deref(),
        Some(id_at((T0 + 60) * 1000).as_str())
    );
    assert_eq!(status.latest_time, Some(Time(at(T0 + 62))));
    assert_eq!(status.latest_bytes, Some(2000));
    assert_eq!(status.latest_duration_millis, Some(2000));
    assert_eq!(
        status.retained_count,
        Some(2),
        "the partial one does not count"
    );
    assert_eq!(checkpoints_status(&[]).latest_id, None);
    assert_eq!(checkpoints_status(&[]).retained_count, Some(0));
}

#[test]
fn recent_checkpoints_are_healthy() {
    let listings = vec![checkpoint(T0, &[(0, 2)])];
    let verdict = health(&listings, INTERVAL, Some(at(T0 - 3600)), None, at(T0 + 90));
    assert_eq!(
        (verdict.status, verdict.reason),
        ("True", "CheckpointsCompleting")
    );
    assert!(
        verdict.message.contains("completed 1m28s ago"),
        "{}",
        verdict.message
    );
}

#[test]
fn no_checkpoint_for_three_intervals_is_stalled() {
    let listings = vec![checkpoint(T0, &[(0, 2)])];
    let verdict = health(&listings, INTERVAL, Some(at(T0 - 3600)), None, at(T0 + 183));
    assert_eq!(
        (verdict.status, verdict.reason),
        ("False", "CheckpointsStalled")
    );
    assert!(verdict.message.contains("3m1s"), "{}", verdict.message);
    let stopped = health(
        &listings,
        INTERVAL,
        None,
        Some(SessionJobPhase::Stopped),
        at(T0 + 183),
    );
    assert_eq!((stopped.status, stopped.reason), ("True", "JobNotRunning"));
}

#[test]
fn a_young_job_without_checkpoints_is_not_yet_unhealthy() {
    let partial = vec![checkpoint(T0, &[(0, 1)])];
    let young = health(&partial, INTERVAL, Some(at(T0)), None, at(T0 + 100));
    assert_eq!((young.status, young.reason), ("True", "NoCheckpointYet"));
    let old = health(&[], INTERVAL, Some(at(T0)), None, at(T0 + 200));
    assert_eq!((old.status, old.reason), ("False", "NoCheckpoint"));
    assert!(old.message.contains("3m20s"), "{}", old.message);
}

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(human(Duration::from_secs(0)), "0s");
    assert_eq!(human(Duration::from_secs(90)), "1m30s");
    assert_eq!(human(Duration::from_secs(7200)), "2h");
}
