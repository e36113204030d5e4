//! [`CheckpointStore`]: a job's checkpoints in an object store (`file://` or `s3://`), below
//! `<location>/<namespace>/<job>/`. Writes key group files and manifests, lists and reads them
//! back, deletes whole checkpoints.
//!
//! Credentials come from a [`StoreCredentials`] map of `AWS_*` variables: the worker's own
//! environment (the operator passes the credentials Secret as env), or the Secret's data when
//! the operator builds a store. They are never logged.
//!
//! This module must never delete an object outside `<base>/<checkpoint id>/`, and deletes a
//! checkpoint's manifests before its other files, so an interrupted delete leaves an incomplete
//! checkpoint, never a complete one with missing files.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sessionizer_crds::session_job::CheckpointsSpec;

use super::format::{self, FormatError, KeyGroupCheckpoint};
use super::id;
use super::manifest::{
    CheckpointListing, KeyGroupEntry, Manifest, StoredFile, key_group_file, manifest_file,
    parse_manifest_file,
};

/// Manifests read at once while listing.
const MANIFEST_READS: usize = 8;

/// Object store settings from the environment or a Secret: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_SESSION_TOKEN`, … (every `AWS_*` key
/// `object_store` knows). Its `Debug` shows key names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreCredentials(BTreeMap<String, String>);

impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl StoreCredentials {
    /// The `AWS_*` variables of this process.
    pub fn from_env() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// The `AWS_*` entries of `pairs` (e.g. a Secret's data).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            pairs
                .into_iter()
                .filter(|(key, _)| key.starts_with("AWS_"))
                .collect(),
        )
    }
}

/// Whether a `file://` location's directory is created when missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalDir {
    /// Create it (the worker, which writes there).
    Create,
    /// It must exist (the operator, which sees it only if it is mounted into its Pod too).
    MustExist,
}

/// Why the checkpoint store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The location cannot be used by this build.
    #[error("checkpoint location {location}: {message}")]
    Location {
        /// The location URL.
        location: String,
        /// Why.
        message: String,
    },
    /// Writing an object failed.
    #[error("writing {path}: {source}")]
    Put {
        /// The object.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// Reading an object failed.
    #[error("reading {path}: {source}")]
    Get {
        /// The object.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// Listing failed.
    #[error("listing {path}: {source}")]
    List {
        /// The prefix.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// Deleting an object failed.
    #[error("deleting {path}: {source}")]
    Delete {
        /// The object.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A manifest could not be encoded or decoded.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The object.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A key group file could not be encoded or decoded.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// A manifest file's name and what reading it gave.
type NamedManifest = (String, Result<Manifest, String>);

/// One job's checkpoints in an object store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    base: Path,
    location: String,
}

impl CheckpointStore {
    /// The store of job `namespace/job` at `spec.location`.
    pub fn open(
        spec: &CheckpointsSpec,
        namespace: &str,
        job: &str,
        credentials: &StoreCredentials,
        local: LocalDir,
    ) -> Result<Self, StoreError> {
        let location = spec.location.clone();
        let fail = |message: String| StoreError::Location {
            location: location.clone(),
            message,
        };
        let url = url::Url::parse(&location).map_err(|e| fail(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, Vec<String>) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| fail("not an absolute local path".into()))?;
                if local == LocalDir::Create {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
                }
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| fail(format!("not visible here: {e}")))?
                    .with_automatic_cleanup(true);
                (Arc::new(store), Vec::new())
            }
            "s3" => {
                // Both rustls back ends may be compiled in; pick one before the client needs it.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let bucket = url.host_str().unwrap_or_default();
                let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
                for (key, value) in &credentials.0 {
                    if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(config, value);
                    }
                }
                if let Some(endpoint) = &spec.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let store = builder.build().map_err(|e| fail(e.to_string()))?;
                let prefix = url
                    .path_segments()
                    .map(|segments| segments.map(str::to_owned).collect())
                    .unwrap_or_default();
                (Arc::new(store), prefix)
            }
            other => return Err(fail(format!("{other}:// is not supported by this build"))),
        };
        let base = prefix
            .iter()
            .map(String::as_str)
            .chain([namespace, job])
            .filter(|segment| !segment.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Ok(Self {
            store,
            base: Path::from(base),
            location,
        })
    }

    /// `<location>/<namespace>/<job>/`, for messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.location, self.base)
    }

    fn path(&self, id: &str, file: &str) -> Path {
        self.base.clone().join(id).join(file)
    }

    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|source| StoreError::Put {
                path: path.to_string(),
                source,
            })?;
        Ok(())
    }

    async fn get(&self, path: &Path) -> Result<bytes::Bytes, StoreError> {
        let get = |source| StoreError::Get {
            path: path.to_string(),
            source,
        };
        self.store
            .get(path)
            .await
            .map_err(get)?
            .bytes()
            .await
            .map_err(get)
    }

    /// Encodes and stores key group `checkpoint.key_group` of checkpoint `id`; returns its
    /// manifest entry. Encoding is CPU work (a few ms per MB of state): callers that care run
    /// this off their hot loop.
    pub async fn write_key_group(
        &self,
        id: &str,
        checkpoint: &KeyGroupCheckpoint,
    ) -> Result<KeyGroupEntry, StoreError> {
        let bytes = format::encode(checkpoint)?;
        let file = key_group_file(checkpoint.key_group);
        let entry = KeyGroupEntry {
            key_group: checkpoint.key_group,
            file: file.clone(),
            bytes: bytes.len() as u64,
            sha256: format::sha256_hex(&bytes),
            offsets: checkpoint.offsets.clone(),
            open_sessions: checkpoint.open_sessions(),
            history_records: checkpoint.history.len() as u64,
        };
        self.put(&self.path(id, &file), bytes).await?;
        Ok(entry)
    }

    /// Stores `manifest`, which makes its checkpoint complete for the key groups it lists.
    /// Call it only after every listed file is stored.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let file = manifest_file(manifest.first_key_group, manifest.end_key_group);
        let path = self.path(&manifest.checkpoint_id, &file);
        manifest
            .check(&manifest.checkpoint_id, &file)
            .map_err(|message| StoreError::Manifest {
                path: path.to_string(),
                message,
            })?;
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::Manifest {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        self.put(&path, json).await
    }

    /// Every checkpoint id below the base, oldest first, with its manifests read.
    pub async fn list(&self) -> Result<Vec<CheckpointListing>, StoreError> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.base))
            .try_collect()
            .await
            .map_err(|source| StoreError::List {
                path: self.base.to_string(),
                source,
            })?;
        let mut by_id: BTreeMap<String, Vec<StoredFile>> = BTreeMap::new();
        for object in objects {
            let Some(parts) = object.location.prefix_match(&self.base) else {
                continue;
            };
            let parts: Vec<String> = parts.map(|p| p.as_ref().to_owned()).collect();
            let [id, name] = parts.as_slice() else {
                continue;
            };
            if !id::is_checkpoint_id(id) {
                continue;
            }
            by_id.entry(id.clone()).or_default().push(StoredFile {
                name: name.clone(),
                bytes: object.size,
                modified: Timestamp::from_millisecond(object.last_modified.timestamp_millis())
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            });
        }
        // Owned pairs and a plain loop of futures: iterator adapters with closures held across
        // an await make the future's `Send` unprovable for callers that spawn it.
        let mut reads: Vec<(String, String)> = Vec::new();
        for (id, files) in &by_id {
            for file in files {
                if parse_manifest_file(&file.name).is_some() {
                    reads.push((id.clone(), file.name.clone()));
                }
            }
        }
        let mut manifests: Vec<(String, NamedManifest)> = Vec::new();
        for chunk in reads.chunks(MANIFEST_READS) {
            let mut pending = futures::stream::FuturesUnordered::new();
            for (id, name) in chunk {
                pending.push(self.read_manifest(id, name));
            }
            while let Some(read) = pending.next().await {
                manifests.push(read);
            }
        }
        let mut manifests_by_id: BTreeMap<String, Vec<NamedManifest>> = BTreeMap::new();
        for (id, named) in manifests {
            manifests_by_id.entry(id).or_default().push(named);
        }
        Ok(by_id
            .iter()
            .map(|(id, files)| {
                let mut manifests = manifests_by_id.remove(id).unwrap_or_default();
                manifests.sort_by(|a, b| a.0.cmp(&b.0));
                CheckpointListing::build(id, files, manifests)
            })
            .collect())
    }

    async fn read_manifest(&self, id: &str, name: &str) -> (String, NamedManifest) {
        let manifest = match self.get(&self.path(id, name)).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        (id.to_owned(), (name.to_owned(), manifest))
    }

    /// The readable manifests of checkpoint `id` (empty if it has none).
    pub async fn manifests(&self, id: &str) -> Result<Vec<Manifest>, StoreError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|listing| listing.id == id)
            .map(|listing| listing.manifests)
            .unwrap_or_default())
    }

    /// The newest checkpoint complete for `key_group` and its entry, if there is one.
    pub async fn latest_for(
        &self,
        key_group: u32,
    ) -> Result<Option<(String, KeyGroupEntry)>, StoreError> {
        let listings = self.list().await?;
        Ok(
            super::manifest::latest_for(&listings, key_group).and_then(|listing| {
                listing
                    .entry(key_group)
                    .map(|(_, entry)| (listing.id.clone(), entry.clone()))
            }),
        )
    }

    /// Reads and checks key group file `entry` of checkpoint `id`.
    pub async fn read_key_group(
        &self,
        id: &str,
        entry: &KeyGroupEntry,
    ) -> Result<KeyGroupCheckpoint, StoreError> {
        let path = self.path(id, &entry.file);
        let bytes = self.get(&path).await?;
        let checkpoint = format::decode(path.as_ref(), &bytes, entry.bytes, &entry.sha256)?;
        if checkpoint.key_group != entry.key_group {
            return Err(FormatError::Decode {
                file: path.to_string(),
                message: format!(
                    "holds key group {}, the manifest says {}",
                    checkpoint.key_group, entry.key_group
                ),
            }
            .into());
        }
        Ok(checkpoint)
    }

    /// Deletes every object of checkpoint `id`, manifests first; returns how many. Deleting an
    /// id that does not exist deletes nothing.
    pub async fn delete(&self, id: &str) -> Result<usize, StoreError> {
        if !id::is_checkpoint_id(id) {
            return Err(StoreError::Location {
                location: self.location.clone(),
                message: format!("{id} is not a checkpoint id; refusing to delete it"),
            });
        }
        let dir = self.base.clone().join(id);
        let objects: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|source| StoreError::List {
                path: dir.to_string(),
                source,
            })?;
        let (manifests, others): (Vec<Path>, Vec<Path>) = objects.into_iter().partition(|path| {
            path.filename()
                .is_some_and(|name| parse_manifest_file(name).is_some())
        });
        let mut deleted = 0;
        for batch in [manifests, others] {
            for path in batch {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(source) => {
                        return Err(StoreError::Delete {
                            path: path.to_string(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
