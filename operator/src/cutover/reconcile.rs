//! One reconcile of a SessionJobCutover: handle an abort or approval, do the current stage's
//! work ([`super::stages`]), let [`super::machine::decide`] choose what follows, and persist the
//! new stage *before* anything acts on it (the next reconcile does). Events and metrics follow
//! every transition.
//!
//! A cutover is polled while it runs (jobs and workers change without touching it); a finished
//! one is left alone. The spec is never written.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use sessionizer_crds::SessionJobCutover;
use sessionizer_crds::cutover::{CutoverStage, SessionJobCutoverStatus, condition_types};

use super::machine::{self, Outcome, Transition};
use super::stages::{self, Jobs};
use crate::context::Context;
use crate::names::annotations;
use crate::session_job::apply::{apply_params, describe};
use crate::session_job::conditions::{self, Desired};

/// The controller's name in metrics.
pub const CONTROLLER: &str = "cutover";
/// How often a running cutover looks again.
pub const POLL: Duration = Duration::from_secs(2);

/// Why a reconcile failed (transiently: retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cutover has no namespace.
    #[error("the SessionJobCutover has no namespace")]
    MissingNamespace,
    /// Reading a SessionJob failed.
    #[error("reading a SessionJob: {}", describe(.0))]
    ReadJob(#[source] kube::Error),
    /// Reading or scaling a producer failed.
    #[error(transparent)]
    Producer(#[from] super::producers::Error),
    /// Listing worker Pods failed.
    #[error(transparent)]
    Workers(#[from] crate::workers::Error),
    /// Writing the status failed.
    #[error("writing the cutover status: {}", describe(.0))]
    Status(#[source] kube::Error),
}

impl Error {
    /// The `cause` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingNamespace => "namespace",
            Self::ReadJob(_) => "read_job",
            Self::Producer(_) => "producer",
            Self::Workers(_) => "workers",
            Self::Status(_) => "status",
        }
    }
}

/// Writes a cutover's status (server-side apply, the operator's one field manager).
pub struct Persist<'a> {
    api: Api<SessionJobCutover>,
    name: String,
    generation: Option<i64>,
    /// The reconcile's "now".
    pub now: Time,
    _ctx: &'a Context,
}

impl Persist<'_> {
    /// Stores `status`.
    pub async fn write(&self, status: &SessionJobCutoverStatus) -> Result<(), Error> {
        let mut status = status.clone();
        status.observed_generation = self.generation;
        let patch = serde_json::json!({
            "apiVersion": SessionJobCutover::api_version(&()),
            "kind": SessionJobCutover::kind(&()),
            "status": status,
        });
        self.api
            .patch_status(&self.name, &apply_params(), &Patch::Apply(&patch))
            .await
            .map_err(Error::Status)?;
        Ok(())
    }
}

/// Reconciles one cutover; see the module documentation.
#[tracing::instrument(name = "reconcile_cutover", skip_all, fields(cutover = %cutover.name_any(), namespace = %cutover.namespace().unwrap_or_default()))]
pub async fn reconcile(
    cutover: Arc<SessionJobCutover>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = step(&cutover, &ctx).await;
    if let Err(error) = &result {
        ctx.metrics.failure(CONTROLLER, error.metric_label());
    }
    result
}

/// Retries a failed reconcile soon: a cutover keeps producers paused, so it must not idle.
pub fn error_policy(cutover: Arc<SessionJobCutover>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cutover = %cutover.name_any(), %error, "cutover reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn step(cutover: &SessionJobCutover, ctx: &Context) -> Result<Action, Error> {
    let namespace = cutover.namespace().ok_or(Error::MissingNamespace)?;
    let name = cutover.name_any();
    let persist = Persist {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        name: name.clone(),
        generation: cutover.metadata.generation,
        now: now(),
        _ctx: ctx,
    };
    let now = persist.now.clone();
    let stored = cutover.status.clone().unwrap_or_default();
    let mut status = stored.clone();
    let stage = machine::current(&status);

    // A first look only records Pending.
    if stored.stage.is_none() {
        let entered = machine::enter(&status, CutoverStage::Pending, &now);
        persist.write(&entered).await?;
        publish(
            ctx,
            cutover,
            EventType::Normal,
            "Accepted",
            format!(
                "cutover from {} to {} accepted",
                cutover.spec.from, cutover.spec.to
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::ZERO));
    }
    record_stage_metric(ctx, &namespace, &name, &status);
    if stage.is_terminal() {
        if let Some(target) = approval(cutover, &status) {
            status.last_approval = annotation(cutover, annotations::APPROVE);
            return transition(ctx, cutover, &persist, status, Transition::Enter(target)).await;
        }
        return Ok(Action::await_change());
    }
    if annotation(cutover, annotations::ABORT).is_some() {
        let abort = machine::abort(stage);
        if matches!(abort, Transition::Fail { .. }) {
            return transition(ctx, cutover, &persist, status, abort).await;
        }
    }

    let jobs = match stages::read_jobs(ctx, &namespace, cutover).await? {
        Ok(jobs) => jobs,
        Err(missing) => {
            let outcome = if stage == CutoverStage::Pending {
                Outcome::Waiting(missing)
            } else {
                Outcome::Failed(missing)
            };
            let elapsed = elapsed(&status, &now);
            let decided = machine::decide(
                stage,
                outcome,
                elapsed,
                timeout(cutover, stage),
                cutover.spec.rollback_on_failure,
            );
            return transition(ctx, cutover, &persist, status, decided).await;
        }
    };
    let outcome = work(ctx, &namespace, cutover, &jobs, &mut status, &persist).await?;
    set_blocked_condition(&mut status, stage, &jobs, cutover.metadata.generation, &now);
    let decided = machine::decide(
        stage,
        outcome,
        elapsed(&status, &now),
        timeout(cutover, stage),
        cutover.spec.rollback_on_failure,
    );
    transition(ctx, cutover, &persist, status, decided).await
}

/// The current stage's work.
async fn work(
    ctx: &Context,
    namespace: &str,
    cutover: &SessionJobCutover,
    jobs: &Jobs,
    status: &mut SessionJobCutoverStatus,
    persist: &Persist<'_>,
) -> Result<Outcome, Error> {
    let now = persist.now.clone();
    Ok(match machine::current(status) {
        CutoverStage::Pending => stages::pending(jobs),
        CutoverStage::PausingProducers => {
            let wanted = stages::wanted_producers(cutover, &jobs.to);
            stages::pausing_producers(ctx, namespace, &wanted, status, persist).await?
        }
        CutoverStage::Draining => stages::draining(ctx, namespace, jobs, status, &now).await?,
        CutoverStage::StoppingJobs => {
            stages::stopping_jobs(ctx, namespace, jobs, status, persist).await?
        }
        CutoverStage::FlippingSink => stages::flipping_sink(jobs),
        CutoverStage::Resuming => {
            stages::resume_producers_after(ctx, namespace, &jobs.to, status, &now).await?
        }
        CutoverStage::RollingBack => {
            stages::resume_producers_after(ctx, namespace, &jobs.from, status, &now).await?
        }
        CutoverStage::Completed | CutoverStage::RolledBack | CutoverStage::Failed => Outcome::Done,
    })
}

/// Persists the result of `decided` and publishes what happened.
async fn transition(
    ctx: &Context,
    cutover: &SessionJobCutover,
    persist: &Persist<'_>,
    mut status: SessionJobCutoverStatus,
    decided: Transition,
) -> Result<Action, Error> {
    let now = persist.now.clone();
    let generation = cutover.metadata.generation;
    let from = machine::current(&status);
    let next = match decided {
        Transition::Stay(message) => {
            status.message = (!message.is_empty()).then_some(message);
            if Some(&status) != cutover.status.as_ref() {
                persist.write(&status).await?;
            }
            return Ok(Action::requeue(POLL));
        }
        Transition::Enter(next) => {
            let mut entered = machine::enter(&status, next, &now);
            if next == CutoverStage::StoppingJobs && entered.checkpoint_id.is_none() {
                entered.checkpoint_id = Some(machine::checkpoint_id(&now));
            }
            if from == CutoverStage::Failed {
                entered.failed_stage = None;
                set(
                    &mut entered,
                    condition_types::NEEDS_ATTENTION,
                    "False",
                    "Approved",
                    "a user approved retrying the failed stage",
                    generation,
                    &now,
                );
            }
            publish(
                ctx,
                cutover,
                EventType::Normal,
                next.as_str(),
                format!("{} → {}", from.as_str(), next.as_str()),
            )
            .await;
            entered
        }
        Transition::Fail {
            failed,
            next,
            message,
        } => {
            let mut entered = machine::enter(&status, next, &now);
            entered.failed_stage = Some(failed);
            entered.message = Some(message.clone());
            set(
                &mut entered,
                condition_types::FAILED,
                "True",
                failed.as_str(),
                &message,
                generation,
                &now,
            );
            if next == CutoverStage::Failed {
                set(
                    &mut entered,
                    condition_types::NEEDS_ATTENTION,
                    "True",
                    "StoppedForHuman",
                    &message,
                    generation,
                    &now,
                );
            }
            publish(ctx, cutover, EventType::Warning, "StageFailed", message).await;
            entered
        }
    };
    let stage = machine::current(&next);
    if let Some(timing) = status.stages.iter().find(|t| t.stage == from)
        && let Some(start) = &timing.start_time
    {
        ctx.metrics.cutover_stage_ended(
            from.as_str(),
            machine::seconds_between(start, &now).as_secs_f64(),
        );
    }
    let mut next = next;
    if stage.is_terminal() {
        let reason = stage.as_str();
        let (finished, message) = match stage {
            CutoverStage::Completed => (
                "True",
                format!("{} now runs on the production sink", cutover.spec.to),
            ),
            CutoverStage::RolledBack => (
                "True",
                format!("{} runs again on its own sink", cutover.spec.from),
            ),
            _ => ("False", next.message.clone().unwrap_or_default()),
        };
        set(
            &mut next,
            condition_types::FINISHED,
            finished,
            reason,
            &message,
            generation,
            &now,
        );
        ctx.metrics.cutover_finished(reason);
    }
    persist.write(&next).await?;
    record_stage_metric(
        ctx,
        &cutover.namespace().unwrap_or_default(),
        &cutover.name_any(),
        &next,
    );
    Ok(if stage.is_terminal() {
        Action::await_change()
    } else {
        Action::requeue(Duration::ZERO)
    })
}

fn set(
    status: &mut SessionJobCutoverStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::set(
        &mut status.conditions,
        Desired {
            type_,
            status: value,
            reason,
            message,
        },
        generation,
        now,
    );
}

/// While Pending: NeedsAttention says why a full history store blocks the start.
fn set_blocked_condition(
    status: &mut SessionJobCutoverStatus,
    stage: CutoverStage,
    jobs: &Jobs,
    generation: Option<i64>,
    now: &Time,
) {
    if stage != CutoverStage::Pending {
        return;
    }
    match stages::history_store_block(jobs) {
        Some(block) => set(
            status,
            condition_types::NEEDS_ATTENTION,
            "True",
            "HistoryStoreFull",
            &block,
            generation,
            now,
        ),
        None if status
            .conditions
            .iter()
            .any(|c| c.type_ == condition_types::NEEDS_ATTENTION) =>
        {
            set(
                status,
                condition_types::NEEDS_ATTENTION,
                "False",
                "AsExpected",
                "nothing blocks the cutover",
                generation,
                now,
            );
        }
        None => {}
    }
}

fn record_stage_metric(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &SessionJobCutoverStatus,
) {
    let stage = machine::current(status);
    let started = machine::started(status).map_or(0.0, |t| t.0.as_second() as f64);
    ctx.metrics.cutover_stage(
        namespace,
        name,
        (!stage.is_terminal()).then_some(stage.as_str()),
        started,
    );
}

/// The stage an approval asks to retry, if the approval is new.
fn approval(cutover: &SessionJobCutover, status: &SessionJobCutoverStatus) -> Option<CutoverStage> {
    let value = annotation(cutover, annotations::APPROVE)?;
    if status.last_approval.as_deref() == Some(value.as_str()) {
        return None;
    }
    machine::approve(status)
}

fn annotation(cutover: &SessionJobCutover, key: &str) -> Option<String> {
    cutover.annotations().get(key).cloned()
}

fn elapsed(status: &SessionJobCutoverStatus, now: &Time) -> Duration {
    machine::started(status).map_or(Duration::ZERO, |start| machine::seconds_between(start, now))
}

fn timeout(cutover: &SessionJobCutover, stage: CutoverStage) -> Option<Duration> {
    cutover.spec.timeouts.for_stage(stage).and_then(Result::ok)
}

async fn publish(
    ctx: &Context,
    cutover: &SessionJobCutover,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Cutover".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cutover.object_ref(&())).await {
        tracing::warn!(%error, "could not publish an event");
    }
}

/// Now, in whole seconds (the API server stores times in seconds).
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}
