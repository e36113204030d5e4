//! One retention pass over a job's checkpoints: list them, decide what goes (the worker crate's
//! pure rules, with the ids a restore or a cutover still needs protected), delete it, and hand
//! back what remains for status, metrics and Events.
//!
//! A pass never fails a reconcile: an unreachable store or a failed delete is reported in the
//! outcome (and so in the `CheckpointsHealthy` condition and Events) and tried again on the next
//! reconcile. When the cutovers cannot be read, nothing is deleted: the protected set is unknown.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use sessionizer_crds::session_job::RestoreFrom;
use sessionizer_crds::{SessionJob, SessionJobCutover};
use sessionizer_worker::checkpoint::CheckpointListing;
use sessionizer_worker::checkpoint::manifest::latest_complete;
use sessionizer_worker::checkpoint::retention::{self, Deletion, RetentionPolicy};

use super::open;
use crate::context::Context;
use crate::metrics::LatestCheckpoint;

/// Why the checkpoints could not be looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The `CheckpointsHealthy` reason.
    pub reason: &'static str,
    /// What went wrong.
    pub message: String,
}

/// What one pass saw and did.
#[derive(Clone, Debug)]
pub struct Pass {
    /// The checkpoints that remain after this pass, oldest first, or why they are unknown.
    pub listings: Result<Vec<CheckpointListing>, Unavailable>,
    /// Checkpoints deleted.
    pub deleted: Vec<Deletion>,
    /// Checkpoints that should have gone but could not be deleted, with the error.
    pub failed: Vec<(String, String)>,
}

/// The ids retention must keep for `job`: the one `restoreFrom` names, and the final
/// checkpoints of this job that any cutover involving it recorded.
pub fn protected_ids(job: &SessionJob, cutovers: &[SessionJobCutover]) -> BTreeSet<String> {
    let name = job.name_any();
    let mut protected = BTreeSet::new();
    if let RestoreFrom::Id(id) = job.spec.checkpoints.restore_from() {
        protected.insert(id);
    }
    for cutover in cutovers {
        let involved = cutover.spec.from.as_str() == name || cutover.spec.to.as_str() == name;
        if let (true, Some(status)) = (involved, &cutover.status)
            && let Some(id) = status.final_checkpoints.get(&name)
        {
            protected.insert(id.clone());
        }
    }
    protected
}

/// The retention policy of `job`, with `grace` for checkpoints without a manifest.
pub fn policy(job: &SessionJob, grace: Duration) -> RetentionPolicy {
    let spec = &job.spec.checkpoints;
    RetentionPolicy {
        retain: usize::try_from(spec.retain).unwrap_or(1).max(1),
        max_age: spec.max_age.as_ref().and_then(|age| age.to_duration().ok()),
        incomplete_grace: grace,
    }
}

/// The newest complete checkpoint of `listings` as the metrics show it.
pub fn latest_for_metrics(listings: &[CheckpointListing]) -> Option<LatestCheckpoint> {
    let latest = latest_complete(listings)?;
    Some(LatestCheckpoint {
        completed_seconds: latest.completed_at()?.as_millisecond() as f64 / 1000.0,
        bytes: latest.checkpoint_bytes(),
        duration_seconds: latest.duration_millis().unwrap_or(0) as f64 / 1000.0,
    })
}

/// Runs a retention pass for `job` at `now`.
pub async fn run(job: &SessionJob, ctx: &Context, now: Timestamp) -> Pass {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let store = match open::open(&ctx.client, &namespace, &name, &job.spec.checkpoints).await {
        Ok(store) => store,
        Err(error) => {
            return Pass::unavailable(error.reason(), error.to_string());
        }
    };
    let mut listings = match store.list().await {
        Ok(listings) => listings,
        Err(error) => {
            return Pass::unavailable("StoreUnreachable", error.to_string());
        }
    };
    let cutovers: Api<SessionJobCutover> = Api::namespaced(ctx.client.clone(), &namespace);
    let deletions = match cutovers.list(&ListParams::default()).await {
        Ok(cutovers) => {
            let protected = protected_ids(job, &cutovers.items);
            let policy = policy(job, ctx.incomplete_checkpoint_grace);
            retention::decide(&listings, &policy, now, &protected)
        }
        Err(error) => {
            tracing::warn!(
                error = %crate::session_job::apply::describe(&error),
                "cannot read the cutovers; deleting no checkpoints this time"
            );
            Vec::new()
        }
    };
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for deletion in deletions {
        match store.delete(&deletion.id).await {
            Ok(files) => {
                tracing::info!(id = %deletion.id, reason = deletion.reason.as_str(), files, "deleted a checkpoint");
                ctx.metrics
                    .checkpoints_deleted(&namespace, &name, deletion.reason.as_str(), 1);
                listings.retain(|listing| listing.id != deletion.id);
                deleted.push(deletion);
            }
            Err(error) => {
                tracing::warn!(id = %deletion.id, %error, "could not delete a checkpoint");
                failed.push((deletion.id, error.to_string()));
            }
        }
    }
    let retained = listings.iter().filter(|l| l.is_complete()).count();
    ctx.metrics
        .set_checkpoints(&namespace, &name, latest_for_metrics(&listings), retained);
    Pass {
        listings: Ok(listings),
        deleted,
        failed,
    }
}

impl Pass {
    fn unavailable(reason: &'static str, message: String) -> Self {
        Self {
            listings: Err(Unavailable { reason, message }),
            deleted: Vec::new(),
            failed: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sessionizer_crds::SessionJobCutoverStatus;

    use super::*;
    use crate::session_job::fixtures;

    fn cutover(from: &str, to: &str, finals: &[(&str, &str)]) -> SessionJobCutover {
        let mut cutover: SessionJobCutover = serde_json::from_value(serde_json::json!({
            "apiVersion": "sessionizer.dev/v1alpha1",
            "kind": "SessionJobCutover",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"from": from, "to": to},
        }))
        .unwrap();
        cutover.status = Some(SessionJobCutoverStatus {
            final_checkpoints: finals
                .iter()
                .map(|(job, id)| ((*job).to_owned(), (*id).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..SessionJobCutoverStatus::default()
        });
        cutover
    }

    #[test]
    fn restore_from_and_cutover_final_checkpoints_are_protected() {
        let mut job = fixtures::full();
        let name = job.name_any();
        job.spec.checkpoints.restore_from = "Latest".into();
        assert!(
            protected_ids(&job, &[]).is_empty(),
            "Latest protects nothing"
        );
        job.spec.checkpoints.restore_from = "chk-0000000001000".into();
        let cutovers = [
            cutover(
                "other",
                &name,
                &[(&name, "chk-0000000002000"), ("other", "chk-9")],
            ),
            cutover("x", "y", &[(&name, "chk-0000000003000")]),
        ];
        let protected = protected_ids(&job, &cutovers);
        assert_eq!(
            protected.into_iter().collect::<Vec<_>>(),
            ["chk-0000000001000", "chk-0000000002000"]
        );
    }

    #[test]
    fn the_policy_follows_the_spec() {
        let mut job = fixtures::full();
        job.spec.checkpoints.retain = 5;
        job.spec.checkpoints.max_age = Some("2h".into());
        let policy = policy(&job, Duration::from_secs(30));
        assert_eq!(policy.retain, 5);
        assert_eq!(policy.max_age, Some(Duration::from_secs(7200)));
        assert_eq!(policy.incomplete_grace, Duration::from_secs(30));
    }
}
