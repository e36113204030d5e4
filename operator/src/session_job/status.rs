//! The *status* step: what a SessionJob's status should say, computed from the job, what the
//! reconcile saw (the StatefulSet, the Kafka verdict) and how it went (invalid spec, apply
//! failure, applied). Pure: the caller passes "now" and writes the result only if it differs
//! from the stored status.
//!
//! It starts from the stored status so fields other parts of the operator own (checkpoints,
//! history store, their conditions) are kept. It must never touch the spec, and it never changes
//! the effective sink's mode once set: only a cutover does that.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sessionizer_crds::session_job::{
    EffectiveSink, SessionJob, SessionJobPhase, SessionJobStatus, condition_types,
};

use super::balance::Verdict;
use super::conditions::{self, Desired};
use super::validate;

/// How the reconcile went.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The spec cannot run; nothing was applied.
    InvalidSpec(&'a validate::Error),
    /// Applying the children failed with this message (a transient error, retried).
    ApplyFailed(&'a str),
    /// Every child was applied.
    Applied,
}

/// The StatefulSet's progress towards `desired` ready workers on the current template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// `spec.parallelism`.
    pub desired: i32,
    /// Worker Pods that exist.
    pub replicas: i32,
    /// Worker Pods that are ready.
    pub ready: i32,
    /// Worker Pods on the latest template.
    pub updated: i32,
    /// The StatefulSet exists.
    pub exists: bool,
    /// The StatefulSet controller has seen the latest template (`observedGeneration`).
    pub observed: bool,
    /// No Pod runs an older template revision.
    pub revisions_converged: bool,
}

impl Rollout {
    /// Reads the progress from the StatefulSet (absent: nothing runs yet).
    pub fn of(statefulset: Option<&StatefulSet>, desired: i32) -> Self {
        let Some(statefulset) = statefulset else {
            return Self {
                desired,
                ..Self::default()
            };
        };
        let status = statefulset.status.clone().unwrap_or_default();
        let observed = match (status.observed_generation, statefulset.metadata.generation) {
            (Some(seen), Some(generation)) => seen >= generation,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        let revisions_converged = match (&status.current_revision, &status.update_revision) {
            (Some(current), Some(update)) => current == update,
            _ => true,
        };
        Self {
            desired,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            exists: true,
            observed,
            revisions_converged,
        }
    }

    /// Every desired worker runs the current template and is ready.
    pub fn complete(&self) -> bool {
        self.exists
            && self.observed
            && self.replicas == self.desired
            && self.updated >= self.desired
            && self.revisions_converged
            && self.ready >= self.desired
    }

    /// Progressing reason and message while not complete.
    fn progress(&self) -> (&'static str, String) {
        let (desired, ready) = (self.desired, self.ready);
        if !self.exists {
            ("Creating", "creating the worker StatefulSet".to_owned())
        } else if !self.observed {
            (
                "RollingOut",
                "waiting for the StatefulSet controller to pick up the new worker template"
                    .to_owned(),
            )
        } else if self.replicas != desired {
            (
                "Scaling",
                format!("scaling from {} to {desired} workers", self.replicas),
            )
        } else if self.updated < desired || !self.revisions_converged {
            (
                "RollingOut",
                format!(
                    "{}/{desired} workers run the current configuration",
                    self.updated
                ),
            )
        } else {
            (
                "WaitingForWorkers",
                format!("{ready}/{desired} workers ready"),
            )
        }
    }
}

/// What `job`'s status should be. `balance` is the BalancedAssignment verdict, `statefulset` the
/// StatefulSet as last seen (after applying it, when that succeeded), `now` the time for new
/// transitions (whole seconds, as the API server stores it).
pub fn desired_status(
    job: &SessionJob,
    statefulset: Option<&StatefulSet>,
    outcome: Outcome<'_>,
    balance: &Verdict,
    now: &Time,
) -> SessionJobStatus {
    let previous = job.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let generation = job.metadata.generation;
    let rollout = Rollout::of(statefulset, job.spec.parallelism);

    status.observed_generation = generation;
    status.replicas = Some(rollout.replicas);
    status.ready_replicas = Some(rollout.ready);
    status.effective_sink = effective_sink(job, previous.effective_sink.as_ref(), now);

    let ready_message = format!("{}/{} workers ready", rollout.ready, rollout.desired);
    let (progress_reason, progress_message) = rollout.progress();
    let mut set = |type_: &str, status_: &str, reason: &str, message: &str| {
        conditions::set(
            &mut status.conditions,
            Desired {
                type_,
                status: status_,
                reason,
                message,
            },
            generation,
            now,
        );
    };
    match outcome {
        Outcome::InvalidSpec(error) => {
            let message = error.to_string();
            set(condition_types::READY, "False", error.reason(), &message);
            set(
                condition_types::PROGRESSING,
                "False",
                error.reason(),
                &message,
            );
            set(condition_types::DEGRADED, "True", error.reason(), &message);
        }
        Outcome::ApplyFailed(_) | Outcome::Applied => {
            if rollout.complete() {
                set(
                    condition_types::READY,
                    "True",
                    "WorkersReady",
                    &ready_message,
                );
                set(
                    condition_types::PROGRESSING,
                    "False",
                    "RolloutComplete",
                    &format!("{} workers run the current configuration", rollout.desired),
                );
            } else {
                set(
                    condition_types::READY,
                    "False",
                    "WorkersNotReady",
                    &ready_message,
                );
                set(
                    condition_types::PROGRESSING,
                    "True",
                    progress_reason,
                    &progress_message,
                );
            }
            match outcome {
                Outcome::ApplyFailed(message) => {
                    set(condition_types::DEGRADED, "True", "ApplyFailed", message);
                }
                _ => set(
                    condition_types::DEGRADED,
                    "False",
                    "AsExpected",
                    "the worker objects match the spec",
                ),
            }
        }
    }
    set(
        condition_types::BALANCED_ASSIGNMENT,
        balance.status,
        balance.reason,
        &balance.message,
    );
    status.phase = Some(phase(outcome, &rollout, previous.phase));
    status
}

/// Failed for an invalid spec; Running once every worker is ready, and while a job that was
/// running still has ready workers (a restarting Pod does not make it Pending again); Pending
/// otherwise.
fn phase(
    outcome: Outcome<'_>,
    rollout: &Rollout,
    previous: Option<SessionJobPhase>,
) -> SessionJobPhase {
    match outcome {
        Outcome::InvalidSpec(_) => SessionJobPhase::Failed,
        _ if rollout.exists && rollout.ready >= rollout.desired => SessionJobPhase::Running,
        _ if previous == Some(SessionJobPhase::Running) && rollout.ready > 0 => {
            SessionJobPhase::Running
        }
        _ => SessionJobPhase::Pending,
    }
}

/// The sink recorded in status: set from `spec.sink.initialMode` the first time, then only its
/// topic follows the spec (a renamed topic); the mode and `since` stay until a cutover.
fn effective_sink(
    job: &SessionJob,
    previous: Option<&EffectiveSink>,
    now: &Time,
) -> Option<EffectiveSink> {
    match previous {
        Some(previous) => {
            let mut sink = previous.clone();
            if let Some(topic) = job.spec.sink.topic_for(previous.mode) {
                sink.topic = topic.to_string();
            }
            Some(sink)
        }
        None => {
            let mode = job.spec.sink.initial_mode;
            job.spec.sink.topic_for(mode).map(|topic| EffectiveSink {
                mode,
                topic: topic.to_string(),
                since: Some(now.clone()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use sessionizer_crds::session_job::SinkMode;

    use super::*;
    use crate::session_job::fixtures;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn balanced() -> Verdict {
        Verdict {
            status: "True",
            reason: "EvenKeyGroups",
            message: "12 partitions over 4 workers: each worker owns 3 key groups".into(),
        }
    }

    fn condition<'a>(
        status: &'a SessionJobStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect(type_)
    }

    /// Reconciles `job` against `statefulset` at `second`, storing the status like the API
    /// server would.
    fn reconcile(job: &mut SessionJob, statefulset: Option<&StatefulSet>, second: i64) {
        let status = desired_status(job, statefulset, Outcome::Applied, &balanced(), &at(second));
        job.status = Some(status);
    }

    #[test]
    fn first_reconcile_is_pending_and_initializes_the_sink() {
        let job = fixtures::full();
        let status = desired_status(&job, None, Outcome::Applied, &balanced(), &at(100));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.phase, Some(SessionJobPhase::Pending));
        assert_eq!(status.replicas, Some(0));
        assert_eq!(status.ready_replicas, Some(0));
        let sink = status.effective_sink.clone().unwrap();
        assert_eq!(sink.mode, SinkMode::DeadLetter);
        assert_eq!(sink.topic, "sessions-v2-dlq");
        assert_eq!(sink.since, Some(at(100)));
        assert_eq!(condition(&status, "Ready").status, "False");
        let progressing = condition(&status, "Progressing");
        assert_eq!(progressing.status, "True");
        assert_eq!(progressing.reason, "Creating");
        assert_eq!(condition(&status, "Degraded").status, "False");
        assert_eq!(condition(&status, "BalancedAssignment").status, "True");
    }

    #[test]
    fn all_workers_ready_is_running_and_ready() {
        let job = fixtures::full();
        let sts = fixtures::statefulset_ready();
        let status = desired_status(&job, Some(&sts), Outcome::Applied, &balanced(), &at(100));
        assert_eq!(status.phase, Some(SessionJobPhase::Running));
        assert_eq!(status.replicas, Some(4));
        assert_eq!(status.ready_replicas, Some(4));
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "WorkersReady")
        );
        assert_eq!(ready.message, "4/4 workers ready");
        assert_eq!(condition(&status, "Progressing").status, "False");
    }

    #[test]
    fn rolling_update_is_progressing_and_keeps_running() {
        let mut job = fixtures::full();
        reconcile(&mut job, Some(&fixtures::statefulset_ready()), 100);
        let status = desired_status(
            &job,
            Some(&fixtures::statefulset_rolling()),
            Outcome::Applied,
            &balanced(),
            &at(200),
        );
        assert_eq!(status.phase, Some(SessionJobPhase::Running), "was running");
        let progressing = condition(&status, "Progressing");
        assert_eq!(progressing.status, "True");
        assert_eq!(progressing.reason, "RollingOut");
        assert_eq!(
            progressing.message,
            "2/4 workers run the current configuration"
        );
        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, at(200));
    }

    #[test]
    fn stale_statefulset_status_is_progressing() {
        let job = fixtures::full();
        let mut sts = fixtures::statefulset_ready();
        sts.metadata.generation = Some(3);
        let status = desired_status(&job, Some(&sts), Outcome::Applied, &balanced(), &at(100));
        assert_eq!(condition(&status, "Progressing").reason, "RollingOut");
        assert_eq!(condition(&status, "Ready").status, "False");
    }

    #[test]
    fn scaling_says_from_and_to() {
        let mut job = fixtures::full();
        job.spec.parallelism = 6;
        let status = desired_status(
            &job,
            Some(&fixtures::statefulset_ready()),
            Outcome::Applied,
            &balanced(),
            &at(100),
        );
        let progressing = condition(&status, "Progressing");
        assert_eq!(progressing.reason, "Scaling");
        assert_eq!(progressing.message, "scaling from 4 to 6 workers");
    }

    #[test]
    fn unchanged_inputs_give_an_identical_status() {
        let mut job = fixtures::full();
        let sts = fixtures::statefulset_ready();
        reconcile(&mut job, Some(&sts), 100);
        let again = desired_status(&job, Some(&sts), Outcome::Applied, &balanced(), &at(500));
        assert_eq!(Some(&again), job.status.as_ref(), "nothing to write");
    }

    #[test]
    fn transition_times_are_kept_while_statuses_hold() {
        let mut job = fixtures::full();
        reconcile(&mut job, None, 100);
        reconcile(&mut job, Some(&fixtures::statefulset_rolling()), 200);
        let status = job.status.clone().unwrap();
        // Still not ready and still progressing: the times of the first reconcile stay.
        assert_eq!(condition(&status, "Ready").last_transition_time, at(100));
        assert_eq!(
            condition(&status, "Progressing").last_transition_time,
            at(100)
        );
        reconcile(&mut job, Some(&fixtures::statefulset_ready()), 300);
        let status = job.status.clone().unwrap();
        assert_eq!(condition(&status, "Ready").last_transition_time, at(300));
        assert_eq!(
            condition(&status, "Degraded").last_transition_time,
            at(100),
            "Degraded stayed False"
        );
    }

    #[test]
    fn invalid_spec_is_failed_and_degraded_with_the_cause() {
        let mut job = fixtures::full();
        job.spec.session.gap = "7d".into();
        let error = validate::validate(&job).unwrap_err();
        let status = desired_status(
            &job,
            None,
            Outcome::InvalidSpec(&error),
            &balanced(),
            &at(100),
        );
        assert_eq!(status.phase, Some(SessionJobPhase::Failed));
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "InvalidSpec");
        assert!(
            degraded.message.contains("spec.session.gap"),
            "{}",
            degraded.message
        );
        assert_eq!(condition(&status, "Ready").status, "False");
    }

    #[test]
    fn apply_failure_is_degraded_but_keeps_what_runs() {
        let mut job = fixtures::full();
        let sts = fixtures::statefulset_ready();
        reconcile(&mut job, Some(&sts), 100);
        let status = desired_status(
            &job,
            Some(&sts),
            Outcome::ApplyFailed("applying StatefulSet pageviews-v2: forbidden"),
            &balanced(),
            &at(200),
        );
        let degraded = condition(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ApplyFailed")
        );
        assert!(degraded.message.contains("forbidden"));
        assert_eq!(status.phase, Some(SessionJobPhase::Running));
        assert_eq!(condition(&status, "Ready").status, "True");
    }

    #[test]
    fn effective_sink_mode_is_never_changed_after_it_is_set() {
        let mut job = fixtures::full();
        reconcile(&mut job, None, 100);
        // The owner edits the spec's initial mode later: status keeps what the job runs with.
        job.spec.sink.initial_mode = SinkMode::Production;
        reconcile(&mut job, None, 200);
        let sink = job.status.as_ref().unwrap().effective_sink.clone().unwrap();
        assert_eq!(sink.mode, SinkMode::DeadLetter);
        assert_eq!(sink.since, Some(at(100)));
    }

    #[test]
    fn other_conditions_and_fields_are_kept() {
        let mut job = fixtures::running();
        let before = job.status.clone().unwrap();
        reconcile(&mut job, Some(&fixtures::statefulset_ready()), 100);
        let after = job.status.clone().unwrap();
        assert_eq!(after.checkpoints, before.checkpoints);
        assert!(after.checkpoints.is_some());
        assert_eq!(
            condition(&after, "CheckpointsHealthy"),
            condition(&before, "CheckpointsHealthy")
        );
    }

    #[test]
    fn balanced_assignment_follows_the_verdict() {
        let job = fixtures::full();
        let verdict = Verdict {
            status: "False",
            reason: "UnevenKeyGroups",
            message: "16 partitions over 3 workers: workers own 6/5/5 key groups; choose a parallelism that divides 16 (1, 2, 4, 8 or 16)".into(),
        };
        let status = desired_status(&job, None, Outcome::Applied, &verdict, &at(100));
        let condition = condition(&status, "BalancedAssignment");
        assert_eq!(condition.status, "False");
        assert_eq!(condition.reason, "UnevenKeyGroups");
        assert!(condition.message.contains("6/5/5"));
    }
}
