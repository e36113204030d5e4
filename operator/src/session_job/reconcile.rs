//! One reconcile of a SessionJob, as a pipeline: *dereference* (read the StatefulSet, Kafka and
//! the Aerospike capacity) → *validate* → *build* the children → *apply* them → a checkpoint
//! retention pass ([`crate::checkpoints`]) → compute and write the *status*, then publish Events
//! for what changed. The whole pipeline runs behind the finalizer `sessionizer.dev/checkpoints`: a new
//! job gets it first, and a deleted job runs the checkpoint cleanup before it goes.
//!
//! Invalid specs are reported in status and wait for a change (no retry loop); transient errors
//! are returned so the controller retries with backoff. The status is written only when it
//! differs from the stored one, and the spec is never written.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use sessionizer_crds::session_job::{SessionJob, SessionJobStatus};

use super::apply::{self, apply_params};
use super::balance::{Verdict, balanced_assignment};
use super::build;
use super::events::{self, transitions};
use super::held;
use super::observe::{self, Observed};
use super::rescale;
use super::status::{Outcome, desired_status};
use super::validate::validate;
use crate::checkpoints::{self, cleanup};
use crate::context::Context;
use crate::cutover::directive::directive;
use crate::history_store;
use crate::names;
use crate::side_run;

/// The controller's name in metrics.
pub const CONTROLLER: &str = "sessionjob";
/// When to look at a healthy job again even if nothing changes (partition counts can change
/// without any Kubernetes event).
pub const RECHECK: Duration = Duration::from_secs(300);
/// When to look again while Kafka's answer is unknown.
pub const RECHECK_UNKNOWN: Duration = Duration::from_secs(60);
/// Longest time between two checkpoint retention passes of a job (shorter for shorter
/// checkpoint intervals).
pub const RECHECK_CHECKPOINTS: Duration = Duration::from_secs(60);
/// When to try again while a worker could not be stopped for a rescale.
pub const RESCALE_RETRY: Duration = Duration::from_secs(5);
/// Shortest time between two scheduled checkpoint retention passes.
pub const MIN_RECHECK_CHECKPOINTS: Duration = Duration::from_secs(5);

/// Why a reconcile failed (transiently: it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the cluster failed.
    #[error(transparent)]
    Observe(#[from] observe::Error),
    /// Building the children failed.
    #[error(transparent)]
    Build(#[from] build::Error),
    /// Applying a child failed.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// Writing the status failed.
    #[error("writing the status: {}", apply::describe(.0))]
    Status(#[source] kube::Error),
    /// Deleting the checkpoints of a deleted job failed (retried until it gives up).
    #[error("deleting the checkpoints of the deleted job: {0}")]
    Cleanup(#[from] cleanup::Error),
    /// Adding or removing the finalizer failed.
    #[error("updating the finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The `cause` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Observe(_) => "observe",
            Self::Build(_) => "build",
            Self::Apply(_) => "apply",
            Self::Status(_) => "status",
            Self::Cleanup(_) => "checkpoint_cleanup",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// Reconciles one SessionJob; see the module documentation. Its span carries the job's name (as
/// `job`: JSON logs already use `name` for the span's own name) and namespace.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(job = %job.name_any(), namespace = %job.namespace().unwrap_or_default())
)]
pub async fn reconcile(job: Arc<SessionJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = with_finalizer(job.clone(), &ctx).await;
    match &result {
        Ok(_) => ctx.reset_backoff(&ObjectRef::from_obj(job.as_ref())),
        Err(error) => ctx.metrics.failure(CONTROLLER, error.metric_label()),
    }
    result
}

/// Retries a failed reconcile with exponential backoff per object.
pub fn error_policy(job: Arc<SessionJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_backoff(ObjectRef::from_obj(job.as_ref()));
    tracing::warn!(
        job = %job.name_any(),
        namespace = %job.namespace().unwrap_or_default(),
        %error,
        retry_in_seconds = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Runs the pipeline behind the checkpoint finalizer, or the cleanup when the job is deleted.
async fn with_finalizer(job: Arc<SessionJob>, ctx: &Context) -> Result<Action, Error> {
    let namespace = job
        .namespace()
        .ok_or(Error::Observe(observe::Error::MissingNamespace))?;
    let api: Api<SessionJob> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::finalizer(&api, names::finalizers::CHECKPOINTS, job, |event| async {
        match event {
            Finalizer::Apply(job) => run_pipeline(&job, ctx).await,
            Finalizer::Cleanup(job) => {
                // The capacity monitor's state and gauges go with the job.
                let name = job.name_any();
                ctx.history_store.forget(&(namespace.clone(), name.clone()));
                ctx.metrics.forget_history_store(&namespace, &name);
                Ok(cleanup::run(&job, ctx, now().0).await?)
            }
        }
    })
    .await
    .map_err(|error| match error {
        finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => error,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn run_pipeline(job: &SessionJob, ctx: &Context) -> Result<Action, Error> {
    // Dereference: reads only.
    let observed = observe::observe(job, ctx).await?;
    let topics: Vec<&str> = job
        .spec
        .kafka
        .source_topics
        .iter()
        .map(|topic| topic.name.as_str())
        .collect();
    let balance = balanced_assignment(&topics, job.spec.parallelism, &observed.partitions);
    let now = now();

    // Validate: an invalid spec is reported and waits for its owner.
    let valid = match validate(job) {
        Ok(valid) => valid,
        Err(invalid) => {
            tracing::warn!(error = %invalid, "invalid spec; waiting for a change");
            ctx.metrics.failure(CONTROLLER, "invalid_spec");
            let status = desired_status(
                job,
                observed.statefulset.as_ref(),
                Outcome::InvalidSpec(&invalid),
                &balance,
                &now,
            );
            finish(job, ctx, &observed, None, status).await?;
            return Ok(Action::await_change());
        }
    };

    // What the cutovers naming this job ask of it (hold, flip, retire).
    let directive = directive(&job.name_any(), &observed.cutovers);
    let valid = held::apply_to_job(valid, &directive, held::was_retired(job));

    // Build: pure.
    let children = build::children(&valid)?;

    // Rescale: every worker stops with a final checkpoint before the new count starts.
    let desired = if valid.held { 0 } else { job.spec.parallelism };
    let current = rescale::current_replicas(observed.statefulset.as_ref());
    if rescale::needs_stop(current, desired) {
        let gate = rescale::stop_workers(ctx, &valid.namespace, &job.name_any()).await;
        if let Some(event) = gate.event(current.unwrap_or_default(), desired)
            && let Err(error) = ctx.recorder.publish(&event, &job.object_ref(&())).await
        {
            tracing::warn!(%error, "could not publish the rescale event");
        }
        if !gate.may_apply() {
            return Ok(Action::requeue(RESCALE_RETRY));
        }
    }

    // Apply: config before the StatefulSet that mounts it.
    let applied = match apply::apply_children(&ctx.client, &valid.namespace, &children).await {
        Ok(applied) => applied,
        Err(error) => {
            let message = error.to_string();
            let status = desired_status(
                job,
                observed.statefulset.as_ref(),
                Outcome::ApplyFailed(&message),
                &balance,
                &now,
            );
            // Best effort: the apply error is what gets retried and reported.
            if let Err(status_error) = finish(job, ctx, &observed, None, status).await {
                tracing::warn!(error = %status_error, "could not record the apply failure in status");
            }
            return Err(error.into());
        }
    };

    // Checkpoints: list, enforce retention, report.
    let pass = checkpoints::pass::run(job, ctx, now.0).await;

    // Status.
    let status = desired_status(job, Some(&applied), Outcome::Applied, &balance, &now);
    let mut status = held::apply_to_status(job, status, &directive, &now);
    checkpoints::health::apply(&mut status, job, &pass, &now);
    side_run::update(ctx, job, &mut status, &now).await;
    let checkpoint_events = checkpoints::events::after_pass(&pass, job.status.as_ref(), &status);
    finish(job, ctx, &observed, Some(&applied), status).await?;
    events::publish(&ctx.recorder, job, &checkpoint_events).await;
    let mut recheck = recheck_after(&balance).min(checkpoint_recheck(job));
    if let Some((_, next_probe)) = &observed.history_store {
        recheck = recheck.min(*next_probe);
    }
    if job.spec.side_run.is_some() || directive.cutting_over {
        recheck = recheck.min(side_run::RECHECK);
    }
    Ok(Action::requeue(recheck))
}

/// When the next retention pass is due: every checkpoint interval, at most a minute apart.
fn checkpoint_recheck(job: &SessionJob) -> Duration {
    job.spec
        .checkpoints
        .interval
        .to_duration()
        .unwrap_or(RECHECK_CHECKPOINTS)
        .clamp(MIN_RECHECK_CHECKPOINTS, RECHECK_CHECKPOINTS)
}

/// Writes `status` if it changed and publishes the Events of the transitions.
async fn finish(
    job: &SessionJob,
    ctx: &Context,
    observed: &Observed,
    applied: Option<&k8s_openapi::api::apps::v1::StatefulSet>,
    mut status: SessionJobStatus,
) -> Result<(), Error> {
    let report = observed.history_store.as_ref().map(|(report, _)| report);
    if let Some(report) = report {
        history_store::publish::apply(
            &mut status,
            Some(report),
            job.metadata.generation,
            &report.probed_at,
        );
    } else {
        history_store::publish::apply(&mut status, None, job.metadata.generation, &now());
    }
    let events = transitions(
        observed.statefulset.as_ref(),
        applied,
        job.status.as_ref(),
        &status,
    );
    if job.status.as_ref() != Some(&status) {
        write_status(job, ctx, &status).await?;
    }
    events::publish(&ctx.recorder, job, &events).await;
    let (namespace, name) = (job.namespace().unwrap_or_default(), job.name_any());
    match &status.history_store {
        Some(history_store) => ctx
            .metrics
            .record_history_store(&namespace, &name, history_store),
        None => ctx.metrics.forget_history_store(&namespace, &name),
    }
    Ok(())
}

/// Server-side apply of the status subresource.
async fn write_status(
    job: &SessionJob,
    ctx: &Context,
    status: &SessionJobStatus,
) -> Result<(), Error> {
    let namespace = job.namespace().unwrap_or_default();
    let api: Api<SessionJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": SessionJob::api_version(&()),
        "kind": SessionJob::kind(&()),
        "status": status,
    });
    tracing::debug!(phase = ?status.phase, "writing status");
    api.patch_status(&job.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(Error::Status)?;
    Ok(())
}

fn recheck_after(balance: &Verdict) -> Duration {
    if balance.status == "Unknown" {
        RECHECK_UNKNOWN
    } else {
        RECHECK
    }
}

/// Now, in whole seconds: the API server stores condition times in seconds, so anything finer
/// would make a just-written status look different from the stored one.
pub(crate) fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kafka_is_checked_again_sooner() {
        let unknown = Verdict {
            status: "Unknown",
            reason: "KafkaUnreachable",
            message: String::new(),
        };
        let known = Verdict {
            status: "True",
            ..unknown.clone()
        };
        assert!(recheck_after(&unknown) < recheck_after(&known));
    }

    #[test]
    fn retention_runs_every_interval_but_at_least_every_minute() {
        let mut job = crate::session_job::fixtures::full();
        job.spec.checkpoints.interval = "5m".into();
        assert_eq!(checkpoint_recheck(&job), Duration::from_secs(60));
        job.spec.checkpoints.interval = "20s".into();
        assert_eq!(checkpoint_recheck(&job), Duration::from_secs(20));
        job.spec.checkpoints.interval = "100ms".into();
        assert_eq!(checkpoint_recheck(&job), Duration::from_secs(5));
    }

    #[test]
    fn now_has_no_fraction_of_a_second() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
