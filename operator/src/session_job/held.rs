//! What the cutovers naming a job change about it (see [`crate::cutover::directive`]): the
//! operator-held stop (0 replicas, never by rewriting the spec), the production sink after the
//! flip, and the phases `SideRunning`, `CuttingOver`, `Stopped` and `Retired`.
//!
//! Pure: applied to the validated job before building, and to the status after computing it.
//! `Retired` is sticky: once a job was replaced it stays stopped even after its cutover is
//! deleted.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sessionizer_crds::SessionJob;
use sessionizer_crds::session_job::{
    EffectiveSink, SessionJobPhase, SessionJobStatus, SinkMode, condition_types,
};

use super::conditions::{self, Desired};
use super::validate::ValidatedJob;
use crate::cutover::directive::JobDirective;

/// True when the job was retired by an earlier cutover.
pub fn was_retired(job: &SessionJob) -> bool {
    job.status.as_ref().and_then(|s| s.phase) == Some(SessionJobPhase::Retired)
}

/// The validated job as the directive wants it built: held at zero replicas, or writing to
/// production after the flip.
pub fn apply_to_job(
    mut valid: ValidatedJob,
    directive: &JobDirective,
    retired: bool,
) -> ValidatedJob {
    valid.held = directive.hold || directive.retired || retired;
    if directive.production_sink
        && let Some(topic) = valid.spec.sink.topic_for(SinkMode::Production)
    {
        valid.effective_sink = SinkMode::Production;
        valid.sink_topic = topic.to_string();
    }
    valid
}

/// `status` with the directive applied: sink, phase and the Ready/Progressing conditions of a
/// held job.
pub fn apply_to_status(
    job: &SessionJob,
    mut status: SessionJobStatus,
    directive: &JobDirective,
    now: &Time,
) -> SessionJobStatus {
    let retired = directive.retired || was_retired(job);
    if directive.production_sink
        && status.effective_sink.as_ref().map(|s| s.mode) != Some(SinkMode::Production)
        && let Some(topic) = job.spec.sink.topic_for(SinkMode::Production)
    {
        status.effective_sink = Some(EffectiveSink {
            mode: SinkMode::Production,
            topic: topic.to_string(),
            since: Some(now.clone()),
        });
    }
    let held = directive.hold || retired;
    let generation = job.metadata.generation;
    let cutover = directive.cutover.clone().unwrap_or_default();
    if held {
        let (reason, message) = if retired {
            (
                "Retired",
                format!("replaced by cutover {cutover}; the workers stay stopped"),
            )
        } else {
            (
                "StoppedByCutover",
                format!("stopped with a final checkpoint by cutover {cutover}"),
            )
        };
        for type_ in [condition_types::READY, condition_types::PROGRESSING] {
            conditions::set(
                &mut status.conditions,
                Desired {
                    type_,
                    status: "False",
                    reason,
                    message: &message,
                },
                generation,
                now,
            );
        }
    }
    let running = status.phase == Some(SessionJobPhase::Running);
    let side_running = job.spec.side_run.is_some()
        && status.effective_sink.as_ref().map(|s| s.mode) == Some(SinkMode::DeadLetter);
    status.phase = Some(if retired {
        SessionJobPhase::Retired
    } else if directive.cutting_over {
        SessionJobPhase::CuttingOver
    } else if held {
        SessionJobPhase::Stopped
    } else if running && side_running {
        SessionJobPhase::SideRunning
    } else {
        status.phase.unwrap_or_default()
    });
    status
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::session_job::fixtures;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn running_status() -> SessionJobStatus {
        SessionJobStatus {
            phase: Some(SessionJobPhase::Running),
            effective_sink: Some(EffectiveSink {
                mode: SinkMode::DeadLetter,
                topic: "sessions-v2-dlq".into(),
                since: Some(at(1)),
            }),
            ..SessionJobStatus::default()
        }
    }

    #[test]
    fn a_side_running_job_is_shown_as_such() {
        let job = fixtures::full();
        assert!(job.spec.side_run.is_some());
        let status = apply_to_status(&job, running_status(), &JobDirective::default(), &at(10));
        assert_eq!(status.phase, Some(SessionJobPhase::SideRunning));
    }

    #[test]
    fn a_held_job_builds_zero_replicas_and_says_why() {
        let directive = JobDirective {
            hold: true,
            cutting_over: true,
            cutover: Some("switch".into()),
            ..Default::default()
        };
        let valid = apply_to_job(fixtures::valid_full(), &directive, false);
        assert!(valid.held);
        let status = apply_to_status(&fixtures::full(), running_status(), &directive, &at(10));
        assert_eq!(status.phase, Some(SessionJobPhase::CuttingOver));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "StoppedByCutover")
        );
    }

    #[test]
    fn the_flip_switches_the_sink_to_production_once() {
        let directive = JobDirective {
            production_sink: true,
            ..Default::default()
        };
        let valid = apply_to_job(fixtures::valid_full(), &directive, false);
        assert_eq!(valid.effective_sink, SinkMode::Production);
        assert_eq!(
            valid.sink_topic,
            fixtures::full().spec.sink.topic.to_string()
        );
        let status = apply_to_status(&fixtures::full(), running_status(), &directive, &at(10));
        let sink = status.effective_sink.clone().unwrap();
        assert_eq!(
            (sink.mode, sink.since),
            (SinkMode::Production, Some(at(10)))
        );
        assert_eq!(
            status.phase,
            Some(SessionJobPhase::Running),
            "no longer side-running"
        );
        let mut job = fixtures::full();
        job.status = Some(status.clone());
        let again = apply_to_status(&job, status.clone(), &directive, &at(20));
        assert_eq!(again.effective_sink, status.effective_sink, "since is kept");
    }

    #[test]
    fn retired_is_sticky_without_any_cutover() {
        let mut job = fixtures::full();
        job.status = Some(SessionJobStatus {
            phase: Some(SessionJobPhase::Retired),
            ..running_status()
        });
        let status = apply_to_status(&job, running_status(), &JobDirective::default(), &at(10));
        assert_eq!(status.phase, Some(SessionJobPhase::Retired));
        assert!(
            apply_to_job(
                fixtures::valid_full(),
                &JobDirective::default(),
                was_retired(&job)
            )
            .held
        );
    }
}
