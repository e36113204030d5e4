//! The store against a real local directory (`file://`); the same calls run against MinIO in
//! `worker/tests/checkpoint_store.rs`.

use sessionizer_crds::session_job::HistoryBackend;

use super::*;
use crate::checkpoint::format::tests::sample;
use crate::checkpoint::manifest::ManifestScope;
use crate::checkpoint::retention::{self, RetentionPolicy};

fn spec(location: &str) -> CheckpointsSpec {
    serde_json::from_value(serde_json::json!({ "location": location })).unwrap()
}

fn open(dir: &std::path::Path) -> CheckpointStore {
    let location = format!("file://{}/checkpoints", dir.display());
    CheckpointStore::open(
        &spec(&location),
        "team-a",
        "pageviews",
        &StoreCredentials::default(),
        LocalDir::Create,
    )
    .unwrap()
}

fn scope(first: u32, end: u32) -> ManifestScope {
    ManifestScope {
        namespace: "team-a".into(),
        job: "pageviews".into(),
        partitions: 4,
        first_key_group: first,
        end_key_group: end,
        history_backend: HistoryBackend::Embedded,
    }
}

/// Writes checkpoint `id` of key groups `[first, end)` as a worker does: files, then manifest.
async fn write(store: &CheckpointStore, id: &str, first: u32, end: u32, manifest: bool) {
    let started = Timestamp::now();
    let mut entries = Vec::new();
    for kg in first..end {
        entries.push(store.write_key_group(id, &sample(kg)).await.unwrap());
    }
    if manifest {
        let manifest = Manifest::new(
            &scope(first, end),
            id,
            started,
            Timestamp::now(),
            entries,
            false,
        );
        store.write_manifest(&manifest).await.unwrap();
    }
}

#[tokio::test]
async fn written_checkpoints_are_listed_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.list().await.unwrap().is_empty(), "nothing yet");

    let id = id::id_at(1_763_776_800_000);
    write(&store, &id, 0, 2, true).await;
    let base = dir.path().join("checkpoints/team-a/pageviews").join(&id);
    assert!(base.join("kg-00000.bin").is_file());
    assert!(base.join("manifest-00000-00002.json").is_file());

    let listings = store.list().await.unwrap();
    assert_eq!(listings.len(), 1);
    assert!(listings[0].has_manifest());
    assert!(!listings[0].is_complete(), "key groups 2 and 3 are missing");
    write(&store, &id, 2, 4, true).await;
    let listing = store.list().await.unwrap().remove(0);
    assert!(listing.is_complete());
    assert_eq!(listing.manifests.len(), 2);
    assert!(
        listing.stored_bytes > listing.checkpoint_bytes(),
        "manifests count too"
    );

    let (latest, entry) = store.latest_for(3).await.unwrap().unwrap();
    assert_eq!(latest, id);
    assert_eq!(entry.open_sessions, 2);
    assert_eq!(entry.history_records, 1);
    assert_eq!(entry.offsets.get("pageviews"), Some(&1234));
    let back = store.read_key_group(&id, &entry).await.unwrap();
    assert_eq!(back, sample(3));
    assert_eq!(store.manifests(&id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_corrupt_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = id::id_at(1_000);
    write(&store, &id, 0, 1, true).await;
    let path = dir
        .path()
        .join("checkpoints/team-a/pageviews")
        .join(&id)
        .join("kg-00000.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let (_, entry) = store.latest_for(0).await.unwrap().unwrap();
    let error = store.read_key_group(&id, &entry).await.unwrap_err();
    assert!(
        error.to_string().contains(&format!("{id}/kg-00000.bin")),
        "{error}"
    );
}

#[tokio::test]
async fn delete_removes_a_whole_checkpoint_and_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (old, new) = (id::id_at(1_000), id::id_at(2_000));
    write(&store, &old, 0, 4, true).await;
    write(&store, &new, 0, 4, true).await;
    let foreign = dir.path().join("checkpoints/team-a/pageviews/README");
    std::fs::write(&foreign, "not a checkpoint").unwrap();

    assert_eq!(
        store.delete(&old).await.unwrap(),
        5,
        "4 files and a manifest"
    );
    let listings = store.list().await.unwrap();
    assert_eq!(
        listings.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        [new.as_str()]
    );
    assert!(
        foreign.is_file(),
        "names that are not checkpoints are left alone"
    );
    assert!(
        !dir.path()
            .join("checkpoints/team-a/pageviews")
            .join(&old)
            .exists(),
        "the empty directory goes too"
    );
    assert_eq!(store.delete(&old).await.unwrap(), 0, "idempotent");
    assert!(store.delete("README").await.is_err());
}

#[tokio::test]
async fn an_unfinished_checkpoint_has_no_manifest_and_retention_removes_it_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write(&store, &id::id_at(1_000), 0, 4, true).await;
    write(&store, &id::id_at(2_000), 0, 2, false).await;
    let listings = store.list().await.unwrap();
    let unfinished = &listings[1];
    assert!(!unfinished.has_manifest());
    assert_eq!(unfinished.unlisted_files, ["kg-00000.bin", "kg-00001.bin"]);

    let policy = RetentionPolicy {
        retain: 1,
        max_age: None,
        incomplete_grace: std::time::Duration::from_secs(60),
    };
    let now = Timestamp::now();
    let protected = Default::default();
    assert!(retention::decide(&listings, &policy, now, &protected).is_empty());
    let later = now + jiff::SignedDuration::from_secs(120);
    let deletions = retention::decide(&listings, &policy, later, &protected);
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].id, id::id_at(2_000));
}

#[test]
fn locations_this_build_cannot_use_are_explained() {
    let credentials = StoreCredentials::default();
    for (location, expect) in [
        ("gs://bucket/prefix", "gs:// is not supported"),
        ("file:///does/not/exist/anywhere", "not visible here"),
    ] {
        let error = CheckpointStore::open(
            &spec(location),
            "ns",
            "job",
            &credentials,
            LocalDir::MustExist,
        )
        .unwrap_err();
        assert!(error.to_string().contains(expect), "{error}");
    }
}

#[test]
fn credentials_keep_aws_keys_and_never_print_values() {
    let credentials = StoreCredentials::from_pairs([
        ("AWS_ACCESS_KEY_ID".to_owned(), "id".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "very-secret".to_owned()),
        ("OTHER".to_owned(), "x".to_owned()),
    ]);
    let shown = format!("{credentials:?}");
    assert!(shown.contains("AWS_SECRET_ACCESS_KEY"), "{shown}");
    assert!(!shown.contains("very-secret"), "{shown}");
    assert!(!shown.contains("OTHER"), "{shown}");
}
