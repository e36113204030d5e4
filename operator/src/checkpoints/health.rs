//! What a job's status says about its checkpoints: `status.checkpoints` from the newest complete
//! checkpoint and the `CheckpointsHealthy` condition. Pure: the pass's outcome, the job and
//! "now" in, status fields out.
//!
//! `CheckpointsHealthy` is True while the newest complete checkpoint is younger than
//! [`STALE_AFTER_INTERVALS`] intervals (reason `CheckpointsCompleting`), and also while a job
//! younger than that has none yet (`NoCheckpointYet`) or the job does not run (`JobNotRunning`);
//! False when none has completed for that long (`CheckpointsStalled`, `NoCheckpoint`); Unknown
//! when the store cannot be looked at (the reason says why).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sessionizer_crds::SessionJob;
use sessionizer_crds::session_job::{
    CheckpointsStatus, SessionJobPhase, SessionJobStatus, condition_types,
};
use sessionizer_worker::checkpoint::CheckpointListing;
use sessionizer_worker::checkpoint::manifest::latest_complete;

use super::pass::Pass;
use crate::session_job::conditions::{self, Desired};

/// Checkpoints are stalled when none completed for this many intervals.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// The verdict for `CheckpointsHealthy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

/// `status.checkpoints` for `listings` (the checkpoints that remain).
pub fn checkpoints_status(listings: &[CheckpointListing]) -> CheckpointsStatus {
    let retained = listings.iter().filter(|l| l.is_complete()).count();
    let mut status = CheckpointsStatus {
        retained_count: Some(i32::try_from(retained).unwrap_or(i32::MAX)),
        ..CheckpointsStatus::default()
    };
    if let Some(latest) = latest_complete(listings) {
        status.latest_id = Some(latest.id.clone());
        status.latest_time = latest.completed_at().map(whole_seconds);
        status.latest_bytes = Some(i64::try_from(latest.checkpoint_bytes()).unwrap_or(i64::MAX));
        status.latest_duration_millis = latest
            .duration_millis()
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    }
    status
}

/// The `CheckpointsHealthy` verdict for a job created at `created` whose checkpoints are
/// `listings`, taken every `interval`, at `now`.
pub fn health(
    listings: &[CheckpointListing],
    interval: Duration,
    created: Option<Timestamp>,
    phase: Option<SessionJobPhase>,
    now: Timestamp,
) -> Health {
    let stale_after = interval.saturating_mul(STALE_AFTER_INTERVALS);
    let every = human(interval);
    let latest = latest_complete(listings).and_then(|l| Some((l.id.as_str(), l.completed_at()?)));
    if let Some((id, at)) = latest {
        let age = age(now, at);
        if age <= stale_after {
            return Health {
                status: "True",
                reason: "CheckpointsCompleting",
                message: format!("{id} completed {} ago (one every {every})", human(age)),
            };
        }
    }
    if matches!(
        phase,
        Some(SessionJobPhase::Stopped | SessionJobPhase::Retired)
    ) {
        return Health {
            status: "True",
            reason: "JobNotRunning",
            message: "the job does not run, so it takes no checkpoints".into(),
        };
    }
    match latest {
        Some((id, at)) => Health {
            status: "False",
            reason: "CheckpointsStalled",
            message: format!(
                "no checkpoint completed for {}: the newest complete one is {id}; expected one every {every}",
                human(age(now, at))
            ),
        },
        None => {
            let job_age = created.map_or(Duration::ZERO, |created| age(now, created));
            if job_age <= stale_after {
                Health {
                    status: "True",
                    reason: "NoCheckpointYet",
                    message: format!("no checkpoint has completed yet (one every {every})"),
                }
            } else {
                Health {
                    status: "False",
                    reason: "NoCheckpoint",
                    message: format!(
                        "no checkpoint completed in the {} since the job was created; expected one every {every}",
                        human(job_age)
                    ),
                }
            }
        }
    }
}

/// Writes what `pass` found into `status`: `status.checkpoints` (kept as it was when the store
/// could not be read) and the `CheckpointsHealthy` condition.
pub fn apply(status: &mut SessionJobStatus, job: &SessionJob, pass: &Pass, now: &Time) {
    let verdict = match &pass.listings {
        Ok(listings) => {
            status.checkpoints = Some(checkpoints_status(listings));
            let interval = job
                .spec
                .checkpoints
                .interval
                .to_duration()
                .unwrap_or(Duration::from_secs(300));
            let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
            health(listings, interval, created, status.phase, now.0)
        }
        Err(unavailable) => Health {
            status: "Unknown",
            reason: unavailable.reason,
            message: unavailable.message.clone(),
        },
    };
    conditions::set(
        &mut status.conditions,
        Desired {
            type_: condition_types::CHECKPOINTS_HEALTHY,
            status: verdict.status,
            reason: verdict.reason,
            message: &verdict.message,
        },
        job.metadata.generation,
        now,
    );
}

fn age(now: Timestamp, then: Timestamp) -> Duration {
    let millis = now.duration_since(then).as_millis().max(0);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// `90s` → `1m30s`: whole seconds, as people write durations.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 || text.is_empty() {
        text.push_str(&format!("{s}s"));
    }
    text
}

/// Status times are whole seconds (what the API server keeps), so an unchanged status compares
/// equal to the stored one.
fn whole_seconds(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

#[cfg(test)]
mod tests;
