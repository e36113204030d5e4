//! Manifests and what a listing of checkpoints means: which key groups a checkpoint id is
//! complete for, whether it is complete job-wide, which is the newest for a key group.
//!
//! A manifest (JSON, camelCase) is written by one worker after all its key group files are
//! stored; its presence is what makes the checkpoint count for the key groups it lists. Pure:
//! the store ([`super::store`]) does the I/O and hands the objects it found to
//! [`CheckpointListing::build`].

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sessionizer_crds::session_job::HistoryBackend;

use super::id;

/// The manifest format version this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u16 = 1;

/// One worker's record of a finished checkpoint of its key groups `[first, end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] when written.
    pub format_version: u16,
    /// The checkpoint id (its directory).
    pub checkpoint_id: String,
    /// The SessionJob's namespace.
    pub namespace: String,
    /// The SessionJob's name.
    pub job: String,
    /// Key groups of the whole job (source partitions) when the checkpoint was taken.
    pub partitions: u32,
    /// First key group of the writing worker.
    pub first_key_group: u32,
    /// One past the last key group of the writing worker.
    pub end_key_group: u32,
    /// The history backend; with `Embedded` the files hold the history records too.
    pub history_backend: HistoryBackend,
    /// When the worker started the checkpoint.
    pub started_at: Timestamp,
    /// When the last key group file was stored (just before this manifest).
    pub completed_at: Timestamp,
    /// `completedAt − startedAt`, in milliseconds.
    pub duration_millis: u64,
    /// Bytes of the key group files listed.
    pub total_bytes: u64,
    /// The key group files, in key group order.
    pub key_groups: Vec<KeyGroupEntry>,
    /// Written by a stop (final checkpoint), not by the periodic schedule.
    #[serde(rename = "final", default)]
    pub is_final: bool,
}

/// One key group file as a manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyGroupEntry {
    /// The key group.
    pub key_group: u32,
    /// File name inside the checkpoint directory (`kg-00007.bin`).
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Lowercase hex sha256 of the whole file.
    pub sha256: String,
    /// Next offset to consume per source topic, consistent with the state.
    pub offsets: BTreeMap<String, i64>,
    /// Open sessions in the state.
    pub open_sessions: u64,
    /// History records in the file (0 with Aerospike).
    pub history_records: u64,
}

/// File name of key group `key_group`'s file.
pub fn key_group_file(key_group: u32) -> String {
    format!("kg-{key_group:05}.bin")
}

/// File name of the manifest of key groups `[first, end)`.
pub fn manifest_file(first: u32, end: u32) -> String {
    format!("manifest-{first:05}-{end:05}.json")
}

/// The range a manifest file name stands for.
pub fn parse_manifest_file(name: &str) -> Option<(u32, u32)> {
    let range = name.strip_prefix("manifest-")?.strip_suffix(".json")?;
    let (first, end) = range.split_once('-')?;
    Some((first.parse().ok()?, end.parse().ok()?))
}

/// The key group a key group file name stands for.
pub fn parse_key_group_file(name: &str) -> Option<u32> {
    name.strip_prefix("kg-")?.strip_suffix(".bin")?.parse().ok()
}

/// Who writes a manifest: the job and the worker's key groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestScope {
    /// The SessionJob's namespace.
    pub namespace: String,
    /// The SessionJob's name.
    pub job: String,
    /// Key groups of the whole job.
    pub partitions: u32,
    /// First key group of the worker.
    pub first_key_group: u32,
    /// One past its last key group.
    pub end_key_group: u32,
    /// The job's history backend.
    pub history_backend: HistoryBackend,
}

impl Manifest {
    /// The manifest of checkpoint `checkpoint_id` for the files `key_groups` (as
    /// [`super::CheckpointStore::write_key_group`] returned them), with its totals computed.
    pub fn new(
        scope: &ManifestScope,
        checkpoint_id: &str,
        started_at: Timestamp,
        completed_at: Timestamp,
        mut key_groups: Vec<KeyGroupEntry>,
        is_final: bool,
    ) -> Self {
        key_groups.sort_by_key(|entry| entry.key_group);
        let millis = completed_at.duration_since(started_at).as_millis().max(0);
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint_id: checkpoint_id.to_owned(),
            namespace: scope.namespace.clone(),
            job: scope.job.clone(),
            partitions: scope.partitions,
            first_key_group: scope.first_key_group,
            end_key_group: scope.end_key_group,
            history_backend: scope.history_backend,
            started_at,
            completed_at,
            duration_millis: u64::try_from(millis).unwrap_or(u64::MAX),
            total_bytes: key_groups.iter().map(|entry| entry.bytes).sum(),
            key_groups,
            is_final,
        }
    }

    /// The key groups this manifest makes complete.
    pub fn key_groups(&self) -> impl Iterator<Item = u32> + '_ {
        self.key_groups.iter().map(|entry| entry.key_group)
    }

    /// Why this manifest cannot be trusted for checkpoint `id`, if it cannot.
    pub fn check(&self, id: &str, file: &str) -> Result<(), String> {
        if self.format_version != MANIFEST_FORMAT_VERSION {
            return Err(format!(
                "format version {}, this build reads {MANIFEST_FORMAT_VERSION}",
                self.format_version
            ));
        }
        if self.checkpoint_id != id {
            return Err(format!("names checkpoint {}", self.checkpoint_id));
        }
        if parse_manifest_file(file) != Some((self.first_key_group, self.end_key_group)) {
            return Err(format!(
                "covers [{}, {}) but is named {file}",
                self.first_key_group, self.end_key_group
            ));
        }
        for entry in &self.key_groups {
            let inside = (self.first_key_group..self.end_key_group).contains(&entry.key_group);
            if !inside || entry.file != key_group_file(entry.key_group) {
                return Err(format!(
                    "lists {} for key group {} outside its range",
                    entry.file, entry.key_group
                ));
            }
        }
        Ok(())
    }
}

/// An object found below a checkpoint directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Last modification time as the store reports it.
    pub modified: Timestamp,
}

/// What is stored for one checkpoint id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointListing {
    /// The id (directory name).
    pub id: String,
    /// Its readable manifests, by file name.
    pub manifests: Vec<Manifest>,
    /// Manifest files that could not be read or trusted, with why. Retention never deletes a
    /// checkpoint with one (it may come from a newer version).
    pub unreadable_manifests: Vec<(String, String)>,
    /// Key groups a manifest lists: the checkpoint is complete for these.
    pub complete_key_groups: BTreeSet<u32>,
    /// Key groups of the job, as the manifests record it (the largest, if they disagree).
    pub partitions: Option<u32>,
    /// Bytes of every object below the id's directory.
    pub stored_bytes: u64,
    /// The newest modification time of its objects.
    pub newest_modified: Timestamp,
    /// Key group files no manifest lists (a worker that did not finish).
    pub unlisted_files: Vec<String>,
    /// Every object name below the id's directory.
    pub files: Vec<String>,
}

impl CheckpointListing {
    /// The listing of checkpoint `id` from its objects and the manifests read from them
    /// (`Err` with a reason for a manifest that could not be read).
    pub fn build(
        id: &str,
        files: &[StoredFile],
        manifests: Vec<(String, Result<Manifest, String>)>,
    ) -> Self {
        let mut readable = Vec::new();
        let mut unreadable = Vec::new();
        for (file, manifest) in manifests {
            match manifest.and_then(|m| m.check(id, &file).map(|()| m)) {
                Ok(manifest) => readable.push(manifest),
                Err(why) => unreadable.push((file, why)),
            }
        }
        let complete: BTreeSet<u32> = readable.iter().flat_map(Manifest::key_groups).collect();
        let mut files = files.to_vec();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let unlisted_files = files
            .iter()
            .filter(|f| parse_key_group_file(&f.name).is_some_and(|kg| !complete.contains(&kg)))
            .map(|f| f.name.clone())
            .collect();
        Self {
            id: id.to_owned(),
            partitions: readable.iter().map(|m| m.partitions).max(),
            manifests: readable,
            unreadable_manifests: unreadable,
            complete_key_groups: complete,
            stored_bytes: files.iter().map(|f| f.bytes).sum(),
            newest_modified: files
                .iter()
                .map(|f| f.modified)
                .max()
                .unwrap_or(Timestamp::UNIX_EPOCH),
            unlisted_files,
            files: files.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// At least one readable manifest: complete for some key groups.
    pub fn has_manifest(&self) -> bool {
        !self.manifests.is_empty()
    }

    /// Complete job-wide: the manifests cover every key group `0..partitions`.
    pub fn is_complete(&self) -> bool {
        self.partitions.is_some_and(|partitions| {
            partitions > 0 && (0..partitions).all(|kg| self.complete_key_groups.contains(&kg))
        })
    }

    /// The time the id stands for (Unix milliseconds).
    pub fn millis(&self) -> Option<i64> {
        id::millis_of(&self.id)
    }

    /// When the last manifest's files were stored.
    pub fn completed_at(&self) -> Option<Timestamp> {
        self.manifests.iter().map(|m| m.completed_at).max()
    }

    /// From the first worker's start to the last worker's completion, in milliseconds.
    pub fn duration_millis(&self) -> Option<u64> {
        let started = self.manifests.iter().map(|m| m.started_at).min()?;
        let completed = self.completed_at()?;
        let millis = completed.duration_since(started).as_millis();
        Some(u64::try_from(millis.max(0)).unwrap_or(0))
    }

    /// Bytes of the key group files the manifests list.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.manifests.iter().map(|m| m.total_bytes).sum()
    }

    /// The manifest and entry of `key_group`, if this checkpoint is complete for it.
    pub fn entry(&self, key_group: u32) -> Option<(&Manifest, &KeyGroupEntry)> {
        self.manifests.iter().find_map(|manifest| {
            manifest
                .key_groups
                .iter()
                .find(|entry| entry.key_group == key_group)
                .map(|entry| (manifest, entry))
        })
    }
}

/// The newest checkpoint complete job-wide (`listings` in any order).
pub fn latest_complete(listings: &[CheckpointListing]) -> Option<&CheckpointListing> {
    listings
        .iter()
        .filter(|l| l.is_complete())
        .max_by(|a, b| a.id.cmp(&b.id))
}

/// The newest checkpoint complete for `key_group`: the one whose manifest for it completed last
/// (ids order checkpoints by when they were *named*, and a stop may be named by its caller
/// before a periodic checkpoint of the same worker that it follows), then the greatest id.
pub fn latest_for(listings: &[CheckpointListing], key_group: u32) -> Option<&CheckpointListing> {
    listings
        .iter()
        .filter_map(|l| l.entry(key_group).map(|(m, _)| (m.completed_at, l)))
        .max_by(|(at_a, a), (at_b, b)| at_a.cmp(at_b).then_with(|| a.id.cmp(&b.id)))
        .map(|(_, l)| l)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// A manifest of `id` for key groups `[first, end)` of `partitions`.
    pub(crate) fn manifest(id: &str, first: u32, end: u32, partitions: u32) -> Manifest {
        let key_groups: Vec<KeyGroupEntry> = (first..end)
            .map(|kg| KeyGroupEntry {
                key_group: kg,
                file: key_group_file(kg),
                bytes: 100,
                sha256: "00".repeat(32),
                offsets: BTreeMap::from([("pageviews".into(), 10)]),
                open_sessions: 1,
                history_records: 0,
            })
            .collect();
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint_id: id.to_owned(),
            namespace: "ns".into(),
            job: "job".into(),
            partitions,
            first_key_group: first,
            end_key_group: end,
            history_backend: HistoryBackend::Aerospike,
            started_at: at(1000),
            completed_at: at(1002),
            duration_millis: 2000,
            total_bytes: 100 * u64::from(end - first),
            key_groups,
            is_final: false,
        }
    }

    fn file(name: &str, second: i64) -> StoredFile {
        StoredFile {
            name: name.into(),
            bytes: 100,
            modified: at(second),
        }
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(key_group_file(7), "kg-00007.bin");
        assert_eq!(manifest_file(0, 12), "manifest-00000-00012.json");
        assert_eq!(
            parse_manifest_file("manifest-00004-00008.json"),
            Some((4, 8))
        );
        assert_eq!(parse_key_group_file("kg-00011.bin"), Some(11));
        assert_eq!(parse_key_group_file("kg-x.bin"), None);
        assert_eq!(parse_manifest_file("manifest-1.json"), None);
    }

    #[test]
    fn the_manifest_json_is_camel_case_with_a_final_flag() {
        let json = serde_json::to_value(manifest("chk-1", 0, 1, 1)).unwrap();
        for key in [
            "formatVersion",
            "checkpointId",
            "partitions",
            "firstKeyGroup",
            "endKeyGroup",
            "historyBackend",
            "startedAt",
            "completedAt",
            "durationMillis",
            "totalBytes",
            "keyGroups",
            "final",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["historyBackend"], "Aerospike");
        assert_eq!(json["startedAt"], "1970-01-01T00:16:40Z");
        assert_eq!(json["keyGroups"][0]["openSessions"], 1);
    }

    #[test]
    fn two_workers_make_a_checkpoint_complete_together() {
        let id = "chk-0000000001000";
        let files = [
            file("kg-00000.bin", 5),
            file("kg-00001.bin", 6),
            file("kg-00002.bin", 9),
        ];
        let half = CheckpointListing::build(
            id,
            &files,
            vec![(
                "manifest-00000-00002.json".into(),
                Ok(manifest(id, 0, 2, 4)),
            )],
        );
        assert!(half.has_manifest());
        assert!(!half.is_complete());
        assert_eq!(half.unlisted_files, ["kg-00002.bin"]);
        assert_eq!(half.newest_modified, at(9));
        assert_eq!(half.stored_bytes, 300);

        let whole = CheckpointListing::build(
            id,
            &files,
            vec![
                (
                    "manifest-00000-00002.json".into(),
                    Ok(manifest(id, 0, 2, 4)),
                ),
                (
                    "manifest-00002-00004.json".into(),
                    Ok(manifest(id, 2, 4, 4)),
                ),
            ],
        );
        assert!(whole.is_complete());
        assert_eq!(whole.checkpoint_bytes(), 400);
        assert_eq!(whole.duration_millis(), Some(2000));
        assert_eq!(whole.entry(3).unwrap().1.file, "kg-00003.bin");
        assert!(whole.entry(4).is_none());
    }

    #[test]
    fn untrustworthy_manifests_count_for_nothing() {
        let id = "chk-0000000001000";
        let mut wrong_id = manifest("chk-0000000002000", 0, 1, 1);
        wrong_id.checkpoint_id = "chk-0000000002000".into();
        let mut outside = manifest(id, 0, 1, 1);
        outside.key_groups[0].key_group = 5;
        let mut future = manifest(id, 0, 1, 1);
        future.format_version = 2;
        for (name, manifest) in [
            ("manifest-00000-00001.json", Ok(wrong_id)),
            ("manifest-00000-00001.json", Ok(outside)),
            ("manifest-00000-00001.json", Ok(future)),
            ("manifest-00000-00002.json", Ok(manifest(id, 0, 1, 1))),
            ("manifest-00000-00001.json", Err("not JSON".to_owned())),
        ] {
            let listing = CheckpointListing::build(id, &[], vec![(name.into(), manifest)]);
            assert!(!listing.has_manifest(), "{name}");
            assert_eq!(listing.unreadable_manifests.len(), 1);
        }
    }

    #[test]
    fn newest_complete_and_newest_per_key_group() {
        let listing = |id: &str, ranges: &[(u32, u32)]| {
            CheckpointListing::build(
                id,
                &[],
                ranges
                    .iter()
                    .map(|&(a, b)| (manifest_file(a, b), Ok(manifest(id, a, b, 2))))
                    .collect(),
            )
        };
        let listings = vec![
            listing("chk-0000000003000", &[(0, 1)]),
            listing("chk-0000000001000", &[(0, 1), (1, 2)]),
            listing("chk-0000000002000", &[(1, 2)]),
        ];
        assert_eq!(latest_complete(&listings).unwrap().id, "chk-0000000001000");
        assert_eq!(latest_for(&listings, 0).unwrap().id, "chk-0000000003000");
        assert_eq!(latest_for(&listings, 1).unwrap().id, "chk-0000000002000");
        assert!(latest_for(&listings, 2).is_none());
    }
}
