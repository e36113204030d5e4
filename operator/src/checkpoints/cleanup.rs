//! The finalizer's work when a SessionJob is deleted: with `spec.checkpoints.deleteOnJobDeletion`
//! delete every checkpoint of the job, otherwise leave them (the default, so a new job can start
//! from them). Either way the job's checkpoint gauges go.
//!
//! Deletion is idempotent (deleting what is already gone deletes nothing), so a retry after an
//! operator restart is safe. An unreachable store must not keep the SessionJob forever: failures
//! are retried with the reconcile backoff and a Warning event each time, and after
//! [`GIVE_UP_AFTER`] since the deletion was requested the operator gives up, says so in a Warning
//! event (`CheckpointsLeft`, naming the location) and lets the job go.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use sessionizer_crds::SessionJob;
use sessionizer_worker::checkpoint::StoreError;
use sessionizer_worker::checkpoint::retention::DeletionReason;

use super::events::CheckpointEvent;
use super::open::{self, OpenError};
use crate::context::Context;
use crate::session_job::events;

/// How long a deleted job waits for its checkpoints to be deleted before it goes anyway.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Why the job's checkpoints could not be deleted (yet).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Listing or deleting failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// True when a deletion requested at `since` has waited long enough at `now`.
pub fn give_up(since: Timestamp, now: Timestamp) -> bool {
    let waited = now.duration_since(since).as_millis();
    waited >= i128::try_from(GIVE_UP_AFTER.as_millis()).unwrap_or(i128::MAX)
}

/// Cleans up after the deleted `job` at `now`; `Ok` lets the finalizer go.
pub async fn run(job: &SessionJob, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    ctx.metrics.forget_checkpoints(&namespace, &name);
    let location = &job.spec.checkpoints.location;
    if !job.spec.checkpoints.delete_on_job_deletion {
        tracing::info!(%location, "job deleted; its checkpoints stay (deleteOnJobDeletion is false)");
        return Ok(Action::await_change());
    }
    match delete_all(job, ctx, &namespace, &name).await {
        Ok(count) => {
            tracing::info!(count, %location, "job deleted; deleted its checkpoints");
            ctx.metrics.checkpoints_deleted(
                &namespace,
                &name,
                DeletionReason::Finalizer.as_str(),
                count as u64,
            );
            let event = CheckpointEvent::CleanedUp {
                count,
                location: location.clone(),
            };
            events::publish(&ctx.recorder, job, &[event]).await;
            Ok(Action::await_change())
        }
        Err(error) => {
            let since = job
                .metadata
                .deletion_timestamp
                .as_ref()
                .map_or(now, |time| time.0);
            if give_up(since, now) {
                tracing::warn!(%error, %location, "giving up deleting the checkpoints of a deleted job");
                let event = CheckpointEvent::Left {
                    message: format!(
                        "gave up deleting the job's checkpoints at {location} after {} minutes; they are left in place: {error}",
                        GIVE_UP_AFTER.as_secs() / 60
                    ),
                };
                events::publish(&ctx.recorder, job, &[event]).await;
                Ok(Action::await_change())
            } else {
                let event = CheckpointEvent::CleanupFailed {
                    message: error.to_string(),
                };
                events::publish(&ctx.recorder, job, &[event]).await;
                Err(error)
            }
        }
    }
}

/// Deletes every checkpoint id of the job, complete or not; returns how many.
async fn delete_all(
    job: &SessionJob,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<usize, Error> {
    let store = open::open(&ctx.client, namespace, name, &job.spec.checkpoints).await?;
    let listings = store.list().await?;
    for listing in &listings {
        store.delete(&listing.id).await?;
    }
    Ok(listings.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_gives_up_after_ten_minutes() {
        let since = Timestamp::from_second(1_000).unwrap();
        assert!(!give_up(since, Timestamp::from_second(1_599).unwrap()));
        assert!(give_up(since, Timestamp::from_second(1_600).unwrap()));
    }
}
