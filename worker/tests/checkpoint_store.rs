//! The checkpoint store against a real S3 server (the local environment's MinIO): write key group
//! files and manifests as two workers would, list and read them back, detect a corrupted file,
//! apply retention, delete.

// A test binary: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sessionizer_crds::session_job::{CheckpointsSpec, HistoryBackend};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::s3::REGION;
use sessionizer_e2e::{Env, EnvConfig};
use sessionizer_worker::checkpoint::retention::{self, RetentionPolicy};
use sessionizer_worker::checkpoint::{
    CheckpointStore, KeyGroupCheckpoint, LocalDir, Manifest, ManifestScope, StoreCredentials, id_at,
};
use sessionizer_worker::engine::KeyGroupState;
use sessionizer_worker::history::HistoryRecord;

struct Fixture {
    env: Env,
    bucket: String,
    store: CheckpointStore,
}

async fn fixture() -> Fixture {
    let env = Env::start(EnvConfig::s3_only()).await.unwrap();
    let s3 = env.s3().unwrap();
    let bucket = unique_name("chk");
    s3.create_bucket(&bucket).await.unwrap();
    let spec: CheckpointsSpec = serde_json::from_value(serde_json::json!({
        "location": format!("s3://{bucket}/prefix/deeper"),
        "endpoint": s3.endpoint,
    }))
    .unwrap();
    let credentials = StoreCredentials::from_pairs([
        ("AWS_ACCESS_KEY_ID".to_owned(), s3.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), s3.secret_key.clone()),
        ("AWS_REGION".to_owned(), REGION.to_owned()),
    ]);
    let store = CheckpointStore::open(&spec, "team-a", "pageviews", &credentials, LocalDir::Create)
        .unwrap();
    Fixture { env, bucket, store }
}

fn key_group(kg: u32) -> KeyGroupCheckpoint {
    let mut state = KeyGroupState {
        key_group: kg,
        ..KeyGroupState::default()
    };
    state.watermark.max_event_time = Some(1_763_776_800_000 + i64::from(kg));
    state
        .timers
        .insert((1_763_776_900_000, format!("user-{kg}").into()));
    KeyGroupCheckpoint {
        key_group: kg,
        offsets: BTreeMap::from([("pageviews".to_owned(), 1000 + i64::from(kg))]),
        state,
        history: vec![HistoryRecord {
            key: format!("team-a/pageviews/{kg}/user-{kg}"),
            stored: vec![kg as u8; 2048],
            expires_at_ms: 1_900_000_000_000,
        }],
    }
}

/// Writes checkpoint `id` for key groups `[first, end)` of 4 like a worker: files, then the
/// manifest (unless `manifest` is false: a worker that died midway).
async fn write(store: &CheckpointStore, id: &str, first: u32, end: u32, manifest: bool) {
    let started = Timestamp::now();
    let mut entries = Vec::new();
    for kg in first..end {
        entries.push(store.write_key_group(id, &key_group(kg)).await.unwrap());
    }
    if manifest {
        let scope = ManifestScope {
            namespace: "team-a".into(),
            job: "pageviews".into(),
            partitions: 4,
            first_key_group: first,
            end_key_group: end,
            history_backend: HistoryBackend::Embedded,
        };
        let manifest = Manifest::new(&scope, id, started, Timestamp::now(), entries, false);
        store.write_manifest(&manifest).await.unwrap();
    }
}

#[tokio::test]
async fn checkpoints_round_trip_through_a_real_s3_server() {
    let it = fixture().await;
    let store = &it.store;
    let (first, second, third) = (id_at(1_000_000), id_at(2_000_000), id_at(3_000_000));
    for id in [&first, &second] {
        write(store, id, 0, 2, true).await;
        write(store, id, 2, 4, true).await;
    }
    write(store, &third, 0, 2, true).await;
    write(store, &third, 2, 4, false).await;

    let listings = store.list().await.unwrap();
    let ids: Vec<&str> = listings.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str(), third.as_str()]);
    assert!(listings[0].is_complete() && listings[1].is_complete());
    assert!(
        !listings[2].is_complete(),
        "worker 2 never wrote its manifest"
    );
    assert_eq!(listings[2].unlisted_files, ["kg-00002.bin", "kg-00003.bin"]);

    // Restore: key group 1 from the third checkpoint, key group 3 from the second.
    let (id, entry) = store.latest_for(1).await.unwrap().unwrap();
    assert_eq!(id, third);
    assert_eq!(
        store.read_key_group(&id, &entry).await.unwrap(),
        key_group(1)
    );
    let (id, entry) = store.latest_for(3).await.unwrap().unwrap();
    assert_eq!(id, second);
    let restored = store.read_key_group(&id, &entry).await.unwrap();
    assert_eq!(restored, key_group(3));
    assert_eq!(entry.history_records, 1);

    // Corrupt that file in place: the read names it and refuses.
    let raw = it.env.s3().unwrap().object_store(&it.bucket).unwrap();
    let path = Path::from(format!(
        "prefix/deeper/team-a/pageviews/{second}/kg-00003.bin"
    ));
    let mut bytes = raw
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    raw.put(&path, PutPayload::from(bytes)).await.unwrap();
    let error = store.read_key_group(&second, &entry).await.unwrap_err();
    assert!(error.to_string().contains("kg-00003.bin"), "{error}");
    assert!(error.to_string().contains("corrupt"), "{error}");

    // Retention with retain 1: the first checkpoint goes; the second stays (newest for key
    // groups 2 and 3); the unfinished third stays within its grace period.
    let policy = RetentionPolicy {
        retain: 1,
        max_age: None,
        incomplete_grace: Duration::from_secs(600),
    };
    let deletions = retention::decide(&listings, &policy, Timestamp::now(), &Default::default());
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].id, first);
    assert_eq!(
        store.delete(&first).await.unwrap(),
        6,
        "4 files and 2 manifests"
    );
    let ids: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, [second.clone(), third.clone()]);

    for id in [&second, &third] {
        store.delete(id).await.unwrap();
    }
    assert!(store.list().await.unwrap().is_empty());
    let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(raw.list(None))
        .await
        .unwrap();
    assert!(left.is_empty(), "nothing left in the bucket: {left:?}");
}
