//! What the cutovers that name a job ask of that job's reconcile: hold it stopped (0 replicas),
//! write to production, count it as retired, show it as cutting over.
//!
//! This is how the cutover controller acts on SessionJobs without writing their status itself:
//! it persists its stage, and the SessionJob reconcile — the one writer of a job's status and
//! children — derives the job's state from it. The user's spec is never touched (GitOps safe).
//! Pure: the SessionJob reconcile passes the cutovers it listed.

use kube::ResourceExt;
use sessionizer_crds::SessionJobCutover;
use sessionizer_crds::cutover::CutoverStage;

/// What the cutovers ask of one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobDirective {
    /// Keep the job's workers at zero replicas (it stopped with a final checkpoint).
    pub hold: bool,
    /// The job's effective sink becomes the production topic.
    pub production_sink: bool,
    /// The job was replaced: phase `Retired`, held stopped for good.
    pub retired: bool,
    /// A cutover naming the job is in progress (phase `CuttingOver`).
    pub cutting_over: bool,
    /// The cutover that asks this, for messages.
    pub cutover: Option<String>,
}

/// The directive for the job `job` from every cutover in its namespace.
pub fn directive(job: &str, cutovers: &[SessionJobCutover]) -> JobDirective {
    let mut directive = JobDirective::default();
    for cutover in cutovers {
        let is_from = cutover.spec.from.as_str() == job;
        let is_to = cutover.spec.to.as_str() == job;
        if !is_from && !is_to {
            continue;
        }
        let status = cutover.status.clone().unwrap_or_default();
        let stage = status.stage.unwrap_or_default();
        let flipped = status.sink_flipped
            && !matches!(stage, CutoverStage::RollingBack | CutoverStage::RolledBack);
        let stopped = status.final_checkpoints.contains_key(job);
        let stopping = matches!(
            stage,
            CutoverStage::StoppingJobs | CutoverStage::FlippingSink
        ) || (stage == CutoverStage::Failed
            && !flipped
            && status.failed_stage != Some(CutoverStage::RollingBack));
        let mut touched = false;
        if is_to {
            directive.production_sink |= flipped;
            if stopped && stopping {
                directive.hold = true;
                touched = true;
            }
        }
        if is_from {
            directive.retired |= flipped;
            if flipped || (stopped && stopping) {
                directive.hold = true;
                touched = true;
            }
        }
        if !stage.is_terminal() {
            directive.cutting_over = true;
            touched = true;
        }
        if touched || flipped {
            directive.cutover = Some(cutover.name_any());
        }
    }
    directive
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sessionizer_crds::SessionJobCutoverSpec;
    use sessionizer_crds::cutover::SessionJobCutoverStatus;

    use super::*;
    use CutoverStage::*;

    fn cutover(stage: CutoverStage, stopped: &[&str], flipped: bool) -> SessionJobCutover {
        let spec: SessionJobCutoverSpec =
            serde_json::from_value(serde_json::json!({"from": "old", "to": "new"})).unwrap();
        let mut cutover = SessionJobCutover::new("switch", spec);
        cutover.status = Some(SessionJobCutoverStatus {
            stage: Some(stage),
            sink_flipped: flipped,
            final_checkpoints: stopped
                .iter()
                .map(|job| ((*job).to_owned(), "chk-0000000001000".to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        });
        cutover
    }

    #[test]
    fn jobs_run_normally_until_they_stopped_with_a_checkpoint() {
        for stage in [Pending, PausingProducers, Draining] {
            let cutovers = [cutover(stage, &[], false)];
            for job in ["old", "new"] {
                let d = directive(job, &cutovers);
                assert!(
                    d.cutting_over && !d.hold && !d.production_sink && !d.retired,
                    "{stage:?} {job}"
                );
            }
        }
        // StoppingJobs: only the job whose workers all stopped is held.
        let cutovers = [cutover(StoppingJobs, &["old"], false)];
        assert!(directive("old", &cutovers).hold);
        assert!(!directive("new", &cutovers).hold);
    }

    #[test]
    fn the_flip_gives_the_new_job_production_and_retires_the_old_one() {
        let cutovers = [cutover(FlippingSink, &["old", "new"], true)];
        let new = directive("new", &cutovers);
        assert!(new.production_sink && new.hold && !new.retired);
        let old = directive("old", &cutovers);
        assert!(old.retired && old.hold && !old.production_sink);
    }

    #[test]
    fn resuming_releases_only_the_new_job() {
        for stage in [Resuming, Completed] {
            let cutovers = [cutover(stage, &["old", "new"], true)];
            let new = directive("new", &cutovers);
            assert!(new.production_sink && !new.hold, "{stage:?}");
            let old = directive("old", &cutovers);
            assert!(old.retired && old.hold, "{stage:?}");
            assert_eq!(new.cutting_over, stage == Resuming);
        }
    }

    #[test]
    fn a_rollback_releases_both_jobs_on_their_own_sinks() {
        for stage in [RollingBack, RolledBack] {
            let cutovers = [cutover(stage, &["old", "new"], false)];
            for job in ["old", "new"] {
                let d = directive(job, &cutovers);
                assert!(
                    !d.hold && !d.production_sink && !d.retired,
                    "{stage:?} {job}"
                );
            }
        }
    }

    #[test]
    fn a_stop_for_a_human_keeps_stopped_jobs_stopped_before_the_flip() {
        let cutovers = [cutover(Failed, &["old", "new"], false)];
        assert!(directive("old", &cutovers).hold);
        assert!(directive("new", &cutovers).hold);
        // A failed rollback leaves both jobs released.
        let mut failed_rollback = cutover(Failed, &["old", "new"], false);
        if let Some(status) = failed_rollback.status.as_mut() {
            status.failed_stage = Some(RollingBack);
        }
        assert!(!directive("old", &[failed_rollback]).hold);
        // After the flip the new job keeps running on production.
        let cutovers = [cutover(Failed, &["old", "new"], true)];
        let new = directive("new", &cutovers);
        assert!(new.production_sink && !new.hold);
        assert!(directive("old", &cutovers).retired);
    }

    #[test]
    fn other_jobs_are_not_affected() {
        let cutovers = [cutover(FlippingSink, &["old", "new"], true)];
        assert_eq!(directive("unrelated", &cutovers), JobDirective::default());
    }
}
