//! The side-run of a job with `spec.sideRun`: warm-up, parity with the job it replaces (from both
//! jobs' worker counters), readiness for a cutover, and — with `cutover: Automatic` — creating
//! the SessionJobCutover once warm-up and parity hold. Called by the SessionJob reconcile; the
//! result goes into the job's `status.sideRun` and its ReadyForCutover condition.
//!
//! Never starts a cutover while either job's history store is Breached or StopWrites, and never
//! creates a second cutover for the same job.

pub mod parity;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use sessionizer_crds::session_job::{
    CutoverMode, HistoryStoreLevel, SessionJobStatus, SinkMode, condition_types,
};
use sessionizer_crds::{SessionJob, SessionJobCutover, SessionJobCutoverSpec};

use crate::context::Context;
use crate::cutover::machine::seconds_between;
use crate::session_job::conditions::{self, Desired};
use crate::{names, workers};

/// How often a side-running job is looked at again.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Updates `status.sideRun` and the ReadyForCutover condition of a side-running `job` (nothing
/// for other jobs) and creates the automatic cutover when it is due.
pub async fn update(ctx: &Context, job: &SessionJob, status: &mut SessionJobStatus, now: &Time) {
    let Some(spec) = &job.spec.side_run else {
        return;
    };
    let namespace = job.namespace().unwrap_or_default();
    let mut side = status.side_run.clone().unwrap_or_default();
    let cut_over = status.effective_sink.as_ref().map(|s| s.mode) == Some(SinkMode::Production);
    let ready = status.ready_replicas.unwrap_or(0) >= job.spec.parallelism;
    if side.warmup_start_time.is_none() && ready && !cut_over {
        side.warmup_start_time = Some(now.clone());
    }
    let warmup = job.spec.warmup().ok().flatten().unwrap_or_default();
    side.warmup_elapsed = side
        .warmup_start_time
        .as_ref()
        .is_some_and(|start| seconds_between(start, now) >= warmup);

    let old: Option<SessionJob> = Api::<SessionJob>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(spec.replaces.as_str())
        .await
        .ok()
        .flatten();
    let block = history_block(job, old.as_ref());
    if !cut_over
        && ready
        && let Some(old) = &old
    {
        match (
            counters(ctx, &namespace, old).await,
            counters(ctx, &namespace, job).await,
        ) {
            (Some(old_totals), Some(new_totals)) => {
                let window = spec
                    .parity
                    .window
                    .to_duration()
                    .unwrap_or(Duration::from_secs(3600));
                let (baseline, result) = parity::advance(
                    &spec.parity,
                    window,
                    side.baseline.as_ref(),
                    old_totals,
                    new_totals,
                    now,
                );
                side.baseline = Some(baseline);
                if let Some(result) = result {
                    ctx.metrics.side_run_parity(
                        &namespace,
                        &job.name_any(),
                        result.passed,
                        result.worst_difference_basis_points,
                    );
                    side.parity = Some(result);
                }
            }
            _ => tracing::debug!("worker counters unavailable; parity not evaluated"),
        }
    }
    let parity_ok = side.parity.as_ref().is_some_and(|p| p.passed);
    side.ready_for_cutover =
        !cut_over && side.warmup_elapsed && parity_ok && block.is_none() && old.is_some();
    let (value, reason, message) = if cut_over {
        (
            "False",
            "CutOver",
            "the job runs on the production sink".to_owned(),
        )
    } else if let Some(block) = &block {
        ("False", "HistoryStoreFull", block.clone())
    } else if old.is_none() {
        (
            "False",
            "ReplacedJobMissing",
            format!("SessionJob {} does not exist", spec.replaces),
        )
    } else if !side.warmup_elapsed {
        (
            "False",
            "WarmingUp",
            "the warm-up has not elapsed yet".to_owned(),
        )
    } else if !parity_ok {
        let why = side
            .parity
            .as_ref()
            .and_then(|p| p.message.clone())
            .unwrap_or_else(|| "no parity window completed yet".to_owned());
        ("False", "NoParity", why)
    } else {
        (
            "True",
            "WarmAndAtParity",
            "warm-up elapsed and the output matches the replaced job".to_owned(),
        )
    };
    conditions::set(
        &mut status.conditions,
        Desired {
            type_: condition_types::READY_FOR_CUTOVER,
            status: value,
            reason,
            message: &message,
        },
        job.metadata.generation,
        now,
    );
    if side.ready_for_cutover && spec.cutover == CutoverMode::Automatic && side.cutover.is_none() {
        match create_cutover(ctx, job, &namespace).await {
            Ok(name) => side.cutover = Some(name),
            Err(error) => tracing::warn!(%error, "could not create the automatic cutover"),
        }
    }
    status.side_run = Some(side);
}

/// Why neither job may be cut over now.
fn history_block(job: &SessionJob, old: Option<&SessionJob>) -> Option<String> {
    [Some(job), old].into_iter().flatten().find_map(|j| {
        let level = j.status.as_ref()?.history_store.as_ref()?.level;
        matches!(
            level,
            HistoryStoreLevel::Breached | HistoryStoreLevel::StopWrites
        )
        .then(|| {
            format!(
                "the history store of {} is {level:?}: no cutover until it has room",
                j.name_any()
            )
        })
    })
}

async fn counters(
    ctx: &Context,
    namespace: &str,
    job: &SessionJob,
) -> Option<sessionizer_crds::session_job::JobCounters> {
    let pods = workers::pods(&ctx.client, namespace, &job.name_any())
        .await
        .ok()?;
    let mut reports = Vec::new();
    for pod in &pods {
        reports.push(workers::status(&ctx.workers, pod).await.ok()?);
    }
    (!reports.is_empty()).then(|| parity::job_counters(&workers::totals(&reports)))
}

async fn create_cutover(
    ctx: &Context,
    job: &SessionJob,
    namespace: &str,
) -> Result<String, kube::Error> {
    let name = names::automatic_cutover(&job.name_any());
    let api: Api<SessionJobCutover> = Api::namespaced(ctx.client.clone(), namespace);
    let spec: SessionJobCutoverSpec = serde_json::from_value(serde_json::json!({
        "from": job.spec.side_run.as_ref().map(|s| s.replaces.to_string()),
        "to": job.name_any(),
    }))
    .map_err(kube::Error::SerdeError)?;
    let mut cutover = SessionJobCutover::new(&name, spec);
    cutover.metadata.namespace = Some(namespace.to_owned());
    cutover.metadata.owner_references = job.controller_owner_ref(&()).map(|owner| vec![owner]);
    match api
        .create(
            &PostParams {
                field_manager: Some(names::FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            },
            &cutover,
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error),
    }
    Ok(name)
}
