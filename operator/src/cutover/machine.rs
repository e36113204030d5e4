//! The cutover state machine as pure functions: which stage follows which, what a stage's
//! outcome (or its timeout, an abort, an approval) leads to, and how entering a stage changes
//! the status. The reconcile persists the result *before* it acts on the new stage, so every
//! decision here must hold when it is made again after an operator restart.
//!
//! Nothing here reads the cluster or the clock: the caller passes "now" and what it observed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sessionizer_crds::cutover::{CutoverStage, SessionJobCutoverStatus, StageTiming};

/// What one attempt at the current stage's work found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The stage's work is complete.
    Done,
    /// Not yet; the message says what the stage waits for.
    Waiting(String),
    /// The stage cannot complete; the message says why.
    Failed(String),
}

/// What to do after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Stay in the stage (and look again), recording the message.
    Stay(String),
    /// Persist the stage, then act on it.
    Enter(CutoverStage),
    /// Leave the normal path after a failure of `failed` (rollback, or a stop for a human).
    Fail {
        /// The stage that failed.
        failed: CutoverStage,
        /// `RollingBack` or `Failed`.
        next: CutoverStage,
        /// What happened and what a human should do.
        message: String,
    },
}

/// The stage after `stage` on the normal path (or on the rollback path); terminal stages stay.
pub fn next_stage(stage: CutoverStage) -> CutoverStage {
    use CutoverStage::*;
    match stage {
        Pending => PausingProducers,
        PausingProducers => Draining,
        Draining => StoppingJobs,
        StoppingJobs => FlippingSink,
        FlippingSink => Resuming,
        Resuming => Completed,
        RollingBack => RolledBack,
        Completed | RolledBack | Failed => stage,
    }
}

/// True for the stages a failure can still undo: before the sink flips.
pub fn can_roll_back(stage: CutoverStage) -> bool {
    use CutoverStage::*;
    matches!(stage, Pending | PausingProducers | Draining | StoppingJobs)
}

/// The transition after an attempt at `stage` that gave `outcome`, `elapsed` after the stage
/// started, with the stage's `timeout` (none: waits forever).
pub fn decide(
    stage: CutoverStage,
    outcome: Outcome,
    elapsed: Duration,
    timeout: Option<Duration>,
    rollback_on_failure: bool,
) -> Transition {
    if stage.is_terminal() {
        return Transition::Stay(String::new());
    }
    match outcome {
        Outcome::Done => Transition::Enter(next_stage(stage)),
        Outcome::Failed(message) => on_failure(stage, message, rollback_on_failure),
        Outcome::Waiting(message) => match timeout {
            Some(timeout) if elapsed > timeout => on_failure(
                stage,
                format!(
                    "{} timed out after {}s: {message}",
                    stage.as_str(),
                    timeout.as_secs()
                ),
                rollback_on_failure,
            ),
            _ => Transition::Stay(message),
        },
    }
}

/// Where a failure of `stage` leads: back before the flip (when allowed), else to a stop that
/// tells a human what to do.
pub fn on_failure(stage: CutoverStage, message: String, rollback_on_failure: bool) -> Transition {
    use CutoverStage::*;
    let failed = stage;
    if can_roll_back(stage) && rollback_on_failure {
        return Transition::Fail {
            failed,
            next: RollingBack,
            message: format!(
                "{message}; rolling back: restarting the old job on its own sink and restoring the producers"
            ),
        };
    }
    let advice = match stage {
        RollingBack => {
            "the rollback did not finish: check the old job (kubectl describe sj) and the producers, restore them by hand if needed, then approve to retry the rollback"
        }
        FlippingSink | Resuming => {
            "the sink has flipped, so the cutover only rolls forward: fix the new job (kubectl describe sj), then approve to retry this stage; the producers stay paused until then"
        }
        _ => {
            "rollbackOnFailure is false: the jobs and producers stay as they are; fix the cause and approve to retry this stage, or abort to roll back"
        }
    };
    Transition::Fail {
        failed,
        next: Failed,
        message: format!("{message}; {advice}"),
    }
}

/// The transition a user's abort asks for: roll back while that is still possible.
pub fn abort(stage: CutoverStage) -> Transition {
    if stage.is_terminal() || stage == CutoverStage::RollingBack {
        Transition::Stay(String::new())
    } else if can_roll_back(stage) {
        Transition::Fail {
            failed: stage,
            next: CutoverStage::RollingBack,
            message: format!("aborted by a user during {}; rolling back", stage.as_str()),
        }
    } else {
        Transition::Stay(format!(
            "abort ignored: the sink already flipped during {}; the cutover rolls forward",
            stage.as_str()
        ))
    }
}

/// The stage a user's approval resumes: the failed one, when the cutover stopped for a human.
pub fn approve(status: &SessionJobCutoverStatus) -> Option<CutoverStage> {
    match status.stage {
        Some(CutoverStage::Failed) => status.failed_stage,
        _ => None,
    }
}

/// The current stage (unset: `Pending`).
pub fn current(status: &SessionJobCutoverStatus) -> CutoverStage {
    status.stage.unwrap_or_default()
}

/// When the current stage started.
pub fn started(status: &SessionJobCutoverStatus) -> Option<&Time> {
    let stage = current(status);
    status
        .stages
        .iter()
        .find(|timing| timing.stage == stage)
        .and_then(|timing| timing.start_time.as_ref())
}

/// Seconds between two times (0 if `to` is earlier).
pub fn seconds_between(from: &Time, to: &Time) -> Duration {
    let seconds = to.0.as_second() - from.0.as_second();
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// `status` after entering `stage` at `now`: the current stage ends, the new one starts (again,
/// when it is retried), the message is cleared.
pub fn enter(
    status: &SessionJobCutoverStatus,
    stage: CutoverStage,
    now: &Time,
) -> SessionJobCutoverStatus {
    let mut next = status.clone();
    let previous = current(status);
    if let Some(timing) = next.stages.iter_mut().find(|t| t.stage == previous)
        && timing.end_time.is_none()
        && status.stage.is_some()
    {
        timing.end_time = Some(now.clone());
    }
    next.stages.retain(|t| t.stage != stage);
    next.stages.push(StageTiming {
        stage,
        start_time: Some(now.clone()),
        end_time: stage.is_terminal().then(|| now.clone()),
    });
    next.stage = Some(stage);
    next.message = None;
    if stage == CutoverStage::FlippingSink {
        next.sink_flipped = true;
    }
    next
}

/// A final checkpoint id for a cutover stopping jobs at `now`: `chk-<13-digit unix ms>`.
pub fn checkpoint_id(now: &Time) -> String {
    format!("chk-{:013}", now.0.as_millisecond())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use CutoverStage::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_normal_path_visits_every_stage_in_order() {
        let mut stage = Pending;
        let mut seen = vec![stage];
        while !stage.is_terminal() {
            match decide(stage, Outcome::Done, Duration::ZERO, Some(MIN), true) {
                Transition::Enter(next) => stage = next,
                other => panic!("{other:?}"),
            }
            seen.push(stage);
        }
        assert_eq!(
            seen,
            [
                Pending,
                PausingProducers,
                Draining,
                StoppingJobs,
                FlippingSink,
                Resuming,
                Completed
            ]
        );
    }

    #[test]
    fn waiting_stays_until_the_timeout() {
        let waiting = || Outcome::Waiting("lag 5".into());
        assert_eq!(
            decide(
                Draining,
                waiting(),
                Duration::from_secs(59),
                Some(MIN),
                true
            ),
            Transition::Stay("lag 5".into())
        );
        assert_eq!(
            decide(Draining, waiting(), Duration::from_secs(3600), None, true),
            Transition::Stay("lag 5".into()),
            "no timeout: waits"
        );
        match decide(
            Draining,
            waiting(),
            Duration::from_secs(61),
            Some(MIN),
            true,
        ) {
            Transition::Fail {
                failed,
                next,
                message,
            } => {
                assert_eq!((failed, next), (Draining, RollingBack));
                assert!(
                    message.contains("Draining timed out after 60s: lag 5"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_before_the_flip_roll_back() {
        for stage in [PausingProducers, Draining, StoppingJobs] {
            match decide(
                stage,
                Outcome::Failed("boom".into()),
                Duration::ZERO,
                Some(MIN),
                true,
            ) {
                Transition::Fail { next, .. } => assert_eq!(next, RollingBack, "{stage:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn failures_before_the_flip_without_rollback_stop_for_a_human() {
        match decide(
            Draining,
            Outcome::Failed("boom".into()),
            Duration::ZERO,
            Some(MIN),
            false,
        ) {
            Transition::Fail { next, message, .. } => {
                assert_eq!(next, Failed);
                assert!(message.contains("rollbackOnFailure is false"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_after_the_flip_never_roll_back() {
        for stage in [FlippingSink, Resuming] {
            for rollback in [true, false] {
                match decide(
                    stage,
                    Outcome::Failed("x".into()),
                    Duration::ZERO,
                    Some(MIN),
                    rollback,
                ) {
                    Transition::Fail {
                        failed,
                        next,
                        message,
                    } => {
                        assert_eq!((failed, next), (stage, Failed));
                        assert!(message.contains("only rolls forward"), "{message}");
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_failed_rollback_asks_for_a_human() {
        match decide(
            RollingBack,
            Outcome::Failed("x".into()),
            Duration::ZERO,
            None,
            true,
        ) {
            Transition::Fail { next, message, .. } => {
                assert_eq!(next, Failed);
                assert!(message.contains("rollback did not finish"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(RollingBack, Outcome::Done, Duration::ZERO, None, true),
            Transition::Enter(RolledBack)
        );
    }

    #[test]
    fn terminal_stages_never_move() {
        for stage in [Completed, RolledBack, Failed] {
            assert_eq!(
                decide(stage, Outcome::Done, Duration::MAX, Some(MIN), true),
                Transition::Stay(String::new())
            );
        }
    }

    #[test]
    fn abort_rolls_back_only_before_the_flip() {
        assert!(matches!(
            abort(Draining),
            Transition::Fail {
                next: RollingBack,
                ..
            }
        ));
        assert!(matches!(
            abort(Pending),
            Transition::Fail {
                next: RollingBack,
                ..
            }
        ));
        match abort(Resuming) {
            Transition::Stay(message) => assert!(message.contains("rolls forward")),
            other => panic!("{other:?}"),
        }
        assert_eq!(abort(Completed), Transition::Stay(String::new()));
        assert_eq!(abort(RollingBack), Transition::Stay(String::new()));
    }

    #[test]
    fn approval_retries_the_failed_stage() {
        let mut status = SessionJobCutoverStatus {
            stage: Some(Failed),
            failed_stage: Some(Resuming),
            ..Default::default()
        };
        assert_eq!(approve(&status), Some(Resuming));
        status.stage = Some(Draining);
        assert_eq!(approve(&status), None, "only a stopped cutover is approved");
    }

    #[test]
    fn entering_a_stage_closes_the_previous_one_and_marks_the_flip() {
        let status = SessionJobCutoverStatus::default();
        let status = enter(&status, PausingProducers, &at(10));
        assert_eq!(status.stages.len(), 1);
        assert_eq!(started(&status), Some(&at(10)));
        let status = enter(&status, Draining, &at(20));
        assert_eq!(status.stages[0].end_time, Some(at(20)));
        assert_eq!(current(&status), Draining);
        assert!(!status.sink_flipped);
        let status = enter(&status, FlippingSink, &at(30));
        assert!(status.sink_flipped);
        // Retrying a stage restarts its timer.
        let status = enter(&status, FlippingSink, &at(40));
        assert_eq!(started(&status), Some(&at(40)));
        let done = enter(&status, Completed, &at(50));
        let last = done.stages.last().unwrap();
        assert_eq!(
            (last.start_time.clone(), last.end_time.clone()),
            (Some(at(50)), Some(at(50)))
        );
        assert_eq!(seconds_between(&at(10), &at(50)), Duration::from_secs(40));
        assert_eq!(seconds_between(&at(50), &at(10)), Duration::ZERO);
    }

    #[test]
    fn checkpoint_ids_have_thirteen_digits() {
        assert_eq!(checkpoint_id(&at(1_700_000_000)), "chk-1700000000000");
        assert_eq!(checkpoint_id(&at(1)), "chk-0000000001000");
    }
}
