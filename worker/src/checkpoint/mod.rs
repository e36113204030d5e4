//! Checkpoints (DESIGN §5): non-incremental, self-contained snapshots of every key group a worker
//! owns, written through `object_store` so a (re)started job — at any parallelism — restores each
//! key group from the newest checkpoint that holds it. The operator uses the same code to list
//! checkpoints, report them in status and enforce retention.
//!
//! # Layout
//!
//! Below the job's base, `<spec.checkpoints.location>/<namespace>/<job>/`:
//!
//! ```text
//! chk-1763776800000/                      one directory per checkpoint id
//!   kg-00000.bin … kg-00003.bin           one file per key group (see [`format`])
//!   manifest-00000-00004.json             one per worker, for its key groups [first, end),
//!                                         written LAST (see [`manifest`])
//! ```
//!
//! - Ids are `chk-<Unix epoch milliseconds, 13 digits>` ([`id`]): lexicographic order is time
//!   order. Periodic checkpoints use the interval boundary, so the workers of one job share ids;
//!   a stop checkpoint uses the id its caller gives.
//! - A checkpoint id is *complete for key group k* when one of its manifests lists k, and
//!   *complete* when its manifests together cover all `partitions` key groups. Restore of key
//!   group k uses the newest id complete for k ([`CheckpointStore::latest_for`]) or the id
//!   `restoreFrom` names.
//! - A key group file is a 7-byte header (`SZCK`, format version, codec) and a zstd-compressed
//!   MessagePack [`KeyGroupCheckpoint`]: session state, timers, watermark, dedup and per-key
//!   metadata, the source offsets they are consistent with and, with the embedded history
//!   backend, the key group's history records. Its size and sha256 are in the manifest, and a
//!   read checks both.
//! - Retention ([`retention`]) is a pure decision over a listing; the operator applies it.
//!   Deleting a checkpoint removes its manifests first, so a half-deleted checkpoint is never
//!   mistaken for a complete one.
//!
//! This module must never overwrite a manifest with one for different key groups, treat a key
//! group file that no manifest lists as restorable, or delete anything below the base that is not
//! a checkpoint directory.

pub mod format;
pub mod id;
pub mod manifest;
pub mod retention;
pub mod store;

pub use format::{FormatError, KeyGroupCheckpoint};
pub use id::{final_id, id_at, is_checkpoint_id, millis_of, periodic_id};
pub use manifest::{CheckpointListing, KeyGroupEntry, Manifest, ManifestScope};
pub use retention::{Deletion, DeletionReason, RetentionPolicy};
pub use store::{CheckpointStore, LocalDir, StoreCredentials, StoreError};
