//! The work of each cutover stage, one function per stage. Each is safe to repeat: it looks at
//! what exists, does only what is missing, and reports an [`Outcome`]. Anything that must
//! survive a crash before the action (original producer replicas, a job's final checkpoint) is
//! written to the cutover's status through [`Persist`] first.
//!
//! These functions never choose the next stage: [`super::machine::decide`] does.

use std::collections::BTreeMap;

use kube::{Api, ResourceExt};
use sessionizer_crds::cutover::{ProducerStatus, SessionJobCutoverStatus};
use sessionizer_crds::refs::WorkloadRef;
use sessionizer_crds::session_job::{
    HistoryStoreLevel, SessionJobPhase, SinkMode, condition_types,
};
use sessionizer_crds::{SessionJob, SessionJobCutover};

use super::drain::{self, JobReports};
use super::machine::{Outcome, seconds_between};
use super::producers;
use super::reconcile::{Error, Persist};
use crate::context::Context;
use crate::workers;

/// Both jobs of a cutover, as read at the start of the reconcile.
pub struct Jobs {
    /// The job being replaced.
    pub from: SessionJob,
    /// The job taking over.
    pub to: SessionJob,
}

/// The producers this cutover pauses: the spec's list, else the new job's `sideRun.producers`.
pub fn wanted_producers(cutover: &SessionJobCutover, to: &SessionJob) -> Vec<WorkloadRef> {
    cutover.spec.producers.clone().unwrap_or_else(|| {
        to.spec
            .side_run
            .as_ref()
            .map(|side_run| side_run.producers.clone())
            .unwrap_or_default()
    })
}

/// Why a cutover must not start now: a history store that evicts or refuses writes would make
/// the new job's state (or the old job's fallback) incomplete.
pub fn history_store_block(jobs: &Jobs) -> Option<String> {
    [&jobs.from, &jobs.to].into_iter().find_map(|job| {
        let level = job.status.as_ref()?.history_store.as_ref()?.level;
        matches!(level, HistoryStoreLevel::Breached | HistoryStoreLevel::StopWrites).then(|| {
            format!(
                "the history store of {} is {level:?}: a cutover now could lose history; free space or raise the marks first",
                job.name_any()
            )
        })
    })
}

/// True when `job` reports Ready for its current generation with every worker ready.
pub fn job_ready(job: &SessionJob) -> bool {
    let Some(status) = &job.status else {
        return false;
    };
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_types::READY && c.status == "True");
    ready
        && status.observed_generation == job.metadata.generation
        && status.ready_replicas.unwrap_or(0) >= job.spec.parallelism
}

/// `Pending`: both jobs exist and are ready, and neither history store is full.
pub fn pending(jobs: &Jobs) -> Outcome {
    if let Some(block) = history_store_block(jobs) {
        return Outcome::Waiting(format!("refusing to start: {block}"));
    }
    for job in [&jobs.from, &jobs.to] {
        if !job_ready(job) {
            return Outcome::Waiting(format!(
                "waiting for SessionJob {} to be Ready",
                job.name_any()
            ));
        }
    }
    Outcome::Done
}

/// `PausingProducers`: record each producer's replicas, then scale it to zero; done when no
/// producer Pod exists.
pub async fn pausing_producers(
    ctx: &Context,
    namespace: &str,
    wanted: &[WorkloadRef],
    status: &mut SessionJobCutoverStatus,
    persist: &Persist<'_>,
) -> Result<Outcome, Error> {
    let missing = producers::unrecorded(wanted, &status.producers);
    if !missing.is_empty() || status.producers_paused_time.is_none() {
        for workload in missing {
            let replicas = producers::replicas(&ctx.client, namespace, workload).await?;
            status.producers.push(ProducerStatus {
                kind: workload.kind,
                name: workload.name.to_string(),
                original_replicas: replicas.wanted,
            });
        }
        status.producers_paused_time = Some(persist.now.clone());
        persist.write(status).await?;
    }
    let mut running = Vec::new();
    for workload in wanted {
        let replicas = producers::replicas(&ctx.client, namespace, workload).await?;
        if replicas.wanted != 0 {
            producers::scale(&ctx.client, namespace, workload, 0).await?;
        }
        if replicas.existing > 0 {
            running.push(format!(
                "{} {} ({} Pods)",
                workload.kind.as_str(),
                workload.name,
                replicas.existing
            ));
        }
    }
    Ok(if running.is_empty() {
        Outcome::Done
    } else {
        Outcome::Waiting(format!(
            "waiting for producers to stop: {}",
            running.join(", ")
        ))
    })
}

/// `Draining`: both jobs caught up to the log end, stable for the window.
pub async fn draining(
    ctx: &Context,
    namespace: &str,
    jobs: &Jobs,
    status: &mut SessionJobCutoverStatus,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Result<Outcome, Error> {
    let mut reports = Vec::new();
    for job in [&jobs.from, &jobs.to] {
        reports.push(scrape(ctx, namespace, job).await?);
    }
    let verdict = drain::evaluate(&reports);
    let (progress, done) = drain::progress(status.drain.as_ref(), &verdict, now);
    let waiting = progress.waiting_for.clone().unwrap_or_default();
    status.drain = Some(progress);
    Ok(if done {
        Outcome::Done
    } else {
        Outcome::Waiting(waiting)
    })
}

async fn scrape(ctx: &Context, namespace: &str, job: &SessionJob) -> Result<JobReports, Error> {
    let name = job.name_any();
    let pods = workers::pods(&ctx.client, namespace, &name).await?;
    let mut reports = Vec::new();
    for pod in pods.iter().filter(|p| !p.terminating) {
        reports.push(
            workers::status(&ctx.workers, pod)
                .await
                .map_err(|e| e.to_string()),
        );
    }
    Ok(JobReports {
        job: name,
        expected_workers: usize::try_from(job.spec.parallelism).unwrap_or(0),
        reports,
    })
}

/// `StoppingJobs`: every worker of both jobs stops with the cutover's checkpoint id; a job
/// whose workers all answered is recorded (and then held at zero replicas by its reconcile).
pub async fn stopping_jobs(
    ctx: &Context,
    namespace: &str,
    jobs: &Jobs,
    status: &mut SessionJobCutoverStatus,
    persist: &Persist<'_>,
) -> Result<Outcome, Error> {
    let Some(id) = status.checkpoint_id.clone() else {
        return Ok(Outcome::Failed("no checkpoint id recorded".to_owned()));
    };
    for job in [&jobs.from, &jobs.to] {
        let name = job.name_any();
        if status.final_checkpoints.contains_key(&name) {
            continue;
        }
        let pods = workers::pods(&ctx.client, namespace, &name).await?;
        let live: Vec<_> = pods.iter().filter(|p| !p.terminating).collect();
        if live.len() < usize::try_from(job.spec.parallelism).unwrap_or(0) {
            return Ok(Outcome::Waiting(format!(
                "{name}: {} of {} workers running",
                live.len(),
                job.spec.parallelism
            )));
        }
        for pod in live {
            match workers::stop(&ctx.workers, pod, &id).await {
                Ok(()) => {}
                Err(workers::Error::Refused {
                    status: 404 | 405, ..
                }) => {
                    return Ok(Outcome::Failed(format!(
                        "worker {} does not support POST /control/stop (upgrade the worker image)",
                        pod.name
                    )));
                }
                Err(error) => {
                    return Ok(Outcome::Waiting(format!("stopping {}: {error}", pod.name)));
                }
            }
        }
        status.final_checkpoints.insert(name, id.clone());
        persist.write(status).await?;
    }
    for job in [&jobs.from, &jobs.to] {
        let replicas = job.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if replicas > 0 {
            return Ok(Outcome::Waiting(format!(
                "{}: {replicas} stopped workers still exist",
                job.name_any()
            )));
        }
    }
    Ok(Outcome::Done)
}

/// `FlippingSink`: done once the new job's reconcile made production its effective sink and the
/// old job is Retired.
pub fn flipping_sink(jobs: &Jobs) -> Outcome {
    let to_mode = jobs
        .to
        .status
        .as_ref()
        .and_then(|s| s.effective_sink.as_ref())
        .map(|s| s.mode);
    let from_phase = jobs.from.status.as_ref().and_then(|s| s.phase);
    if to_mode != Some(SinkMode::Production) {
        return Outcome::Waiting(format!(
            "waiting for {} to take the production sink",
            jobs.to.name_any()
        ));
    }
    if from_phase != Some(SessionJobPhase::Retired) {
        return Outcome::Waiting(format!(
            "waiting for {} to be Retired",
            jobs.from.name_any()
        ));
    }
    Outcome::Done
}

/// `Resuming` and `RollingBack`: once `job` is Ready again, restore every producer to its
/// recorded replicas.
pub async fn resume_producers_after(
    ctx: &Context,
    namespace: &str,
    job: &SessionJob,
    status: &mut SessionJobCutoverStatus,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Result<Outcome, Error> {
    if !job_ready(job) {
        return Ok(Outcome::Waiting(format!(
            "waiting for {} to be Ready",
            job.name_any()
        )));
    }
    for producer in &status.producers {
        let Some(workload) = producers::workload(producer) else {
            continue;
        };
        let replicas = producers::replicas(&ctx.client, namespace, &workload).await?;
        if replicas.wanted != producer.original_replicas {
            producers::scale(
                &ctx.client,
                namespace,
                &workload,
                producer.original_replicas,
            )
            .await?;
        }
    }
    if status.producer_pause_seconds.is_none()
        && let Some(paused) = &status.producers_paused_time
    {
        let seconds = seconds_between(paused, now).as_secs_f64();
        status.producer_pause_seconds = Some(seconds);
        ctx.metrics.producer_pause(seconds);
    }
    Ok(Outcome::Done)
}

/// Reads both jobs of `cutover`; `None` names a missing one.
pub async fn read_jobs(
    ctx: &Context,
    namespace: &str,
    cutover: &SessionJobCutover,
) -> Result<Result<Jobs, String>, Error> {
    let api: Api<SessionJob> = Api::namespaced(ctx.client.clone(), namespace);
    let mut found = BTreeMap::new();
    for name in [cutover.spec.from.as_str(), cutover.spec.to.as_str()] {
        match api.get_opt(name).await.map_err(Error::ReadJob)? {
            Some(job) => {
                found.insert(name.to_owned(), job);
            }
            None => return Ok(Err(format!("SessionJob {name} does not exist"))),
        }
    }
    let from = found.remove(cutover.spec.from.as_str());
    let to = found.remove(cutover.spec.to.as_str());
    Ok(match (from, to) {
        (Some(from), Some(to)) => Ok(Jobs { from, to }),
        _ => Err("a SessionJob of the cutover is missing".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use k8s_openapi::jiff::Timestamp;
    use sessionizer_crds::session_job::{EffectiveSink, HistoryStoreStatus, SessionJobStatus};

    use super::*;
    use crate::session_job::fixtures;

    fn ready_status(replicas: i32) -> SessionJobStatus {
        SessionJobStatus {
            observed_generation: Some(1),
            ready_replicas: Some(replicas),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "WorkersReady".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::UNIX_EPOCH,
                ),
            }],
            ..SessionJobStatus::default()
        }
    }

    fn jobs() -> Jobs {
        let mut from = fixtures::minimal();
        from.status = Some(ready_status(1));
        let mut to = fixtures::full();
        to.status = Some(ready_status(4));
        Jobs { from, to }
    }

    #[test]
    fn pending_starts_once_both_jobs_are_ready() {
        assert_eq!(pending(&jobs()), Outcome::Done);
        let mut waiting = jobs();
        waiting.to.status = Some(ready_status(3));
        assert_eq!(
            pending(&waiting),
            Outcome::Waiting("waiting for SessionJob pageviews-v2 to be Ready".into())
        );
    }

    #[test]
    fn a_breached_or_full_history_store_refuses_the_start() {
        for level in [HistoryStoreLevel::Breached, HistoryStoreLevel::StopWrites] {
            let mut blocked = jobs();
            if let Some(status) = blocked.from.status.as_mut() {
                status.history_store = Some(HistoryStoreStatus {
                    level,
                    ..HistoryStoreStatus::default()
                });
            }
            match pending(&blocked) {
                Outcome::Waiting(message) => {
                    assert!(message.starts_with("refusing to start"), "{message}");
                    assert!(message.contains(&format!("{level:?}")), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let mut warning = jobs();
        if let Some(status) = warning.to.status.as_mut() {
            status.history_store = Some(HistoryStoreStatus {
                level: HistoryStoreLevel::Warning,
                ..HistoryStoreStatus::default()
            });
        }
        assert_eq!(
            history_store_block(&warning),
            None,
            "a warning does not block"
        );
    }

    #[test]
    fn the_flip_is_done_when_the_new_job_writes_to_production_and_the_old_one_is_retired() {
        let mut jobs = jobs();
        assert!(matches!(flipping_sink(&jobs), Outcome::Waiting(_)));
        if let Some(status) = jobs.to.status.as_mut() {
            status.effective_sink = Some(EffectiveSink {
                mode: SinkMode::Production,
                topic: "sessions".into(),
                since: None,
            });
        }
        assert_eq!(
            flipping_sink(&jobs),
            Outcome::Waiting("waiting for pageviews to be Retired".into())
        );
        if let Some(status) = jobs.from.status.as_mut() {
            status.phase = Some(SessionJobPhase::Retired);
        }
        assert_eq!(flipping_sink(&jobs), Outcome::Done);
    }

    #[test]
    fn producers_come_from_the_cutover_or_else_the_side_run() {
        let jobs = jobs();
        let spec =
            serde_json::from_value(serde_json::json!({"from": "pageviews", "to": "pageviews-v2"}))
                .unwrap();
        let cutover = SessionJobCutover::new("switch", spec);
        let names: Vec<String> = wanted_producers(&cutover, &jobs.to)
            .iter()
            .map(|w| w.name.to_string())
            .collect();
        assert_eq!(names, ["pageview-collector", "transaction-relay"]);
        let spec = serde_json::from_value(
            serde_json::json!({"from": "pageviews", "to": "pageviews-v2", "producers": []}),
        )
        .unwrap();
        let none = SessionJobCutover::new("switch", spec);
        assert!(
            wanted_producers(&none, &jobs.to).is_empty(),
            "[] pauses nothing"
        );
    }
}
