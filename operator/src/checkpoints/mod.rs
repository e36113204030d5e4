//! Checkpoints as the operator sees them (DESIGN §5): on every reconcile of a SessionJob it
//! lists the job's checkpoints in the object store, enforces retention, and reports the newest
//! complete checkpoint, the retained count and the `CheckpointsHealthy` condition in status,
//! with metrics and Events. The finalizer `sessionizer.dev/checkpoints` lets a deleted job
//! remove its checkpoints when `spec.checkpoints.deleteOnJobDeletion` asks for it.
//!
//! Layout: [`open`] builds the job's store (reading the credentials Secret), [`pass`] lists,
//! decides (with the worker crate's pure [`sessionizer_worker::checkpoint::retention`]) and
//! deletes, [`health`] turns a listing into status (pure), [`events`] says what happened,
//! [`cleanup`] is the finalizer's work.
//!
//! `file://` locations are only managed when the directory is also visible inside the operator's
//! Pod (mounted there too); otherwise the condition is `Unknown` with reason
//! `LocationNotVisible` and nothing is deleted. This module never writes checkpoints and never
//! deletes an object that is not part of a checkpoint directory.

pub mod cleanup;
pub mod events;
pub mod health;
pub mod open;
pub mod pass;
