//! Kubernetes Events about checkpoints: one per retention pass that deleted something (a summary,
//! not one per checkpoint), failed deletions, `CheckpointsHealthy` turning False or back to
//! True, and what the finalizer did. Deciding is pure ([`after_pass`]); publishing is best
//! effort and never fails a reconcile.

use std::collections::BTreeMap;

use kube::runtime::events::{Event, EventType};
use sessionizer_crds::session_job::{SessionJobStatus, condition_types};
use sessionizer_worker::checkpoint::Deletion;

use super::pass::Pass;
use crate::session_job::events::{self, ToEvent};

/// Something worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointEvent {
    /// A retention pass deleted checkpoints.
    Deleted {
        /// What went and why.
        summary: String,
    },
    /// Checkpoints that should have gone could not be deleted.
    DeleteFailed {
        /// Which and why.
        message: String,
    },
    /// `CheckpointsHealthy` turned False.
    Unhealthy {
        /// The condition's reason.
        reason: String,
        /// Its message.
        message: String,
    },
    /// `CheckpointsHealthy` turned True again after being False.
    Recovered {
        /// The condition's message.
        message: String,
    },
    /// The finalizer deleted the job's checkpoints.
    CleanedUp {
        /// Checkpoints deleted.
        count: usize,
        /// Where they were.
        location: String,
    },
    /// The finalizer could not delete them and will try again.
    CleanupFailed {
        /// Why.
        message: String,
    },
    /// The finalizer gave up; the checkpoints stay where they are.
    Left {
        /// Why and where.
        message: String,
    },
}

/// What a pass should say: the deletions, the failures, and a flip of `CheckpointsHealthy`
/// between `old` and `new`.
pub fn after_pass(
    pass: &Pass,
    old: Option<&SessionJobStatus>,
    new: &SessionJobStatus,
) -> Vec<CheckpointEvent> {
    let mut events = Vec::new();
    if !pass.deleted.is_empty() {
        events.push(CheckpointEvent::Deleted {
            summary: summary(&pass.deleted),
        });
    }
    if !pass.failed.is_empty() {
        let message = pass
            .failed
            .iter()
            .map(|(id, error)| format!("{id}: {error}"))
            .collect::<Vec<_>>()
            .join("; ");
        events.push(CheckpointEvent::DeleteFailed {
            message: format!(
                "could not delete {} checkpoint(s): {message}",
                pass.failed.len()
            ),
        });
    }
    let condition = |status: Option<&SessionJobStatus>| {
        status?
            .conditions
            .iter()
            .find(|c| c.type_ == condition_types::CHECKPOINTS_HEALTHY)
            .cloned()
    };
    let (before, after) = (condition(old), condition(Some(new)));
    if let Some(after) = after {
        let was = before.as_ref().map(|c| c.status.as_str());
        match after.status.as_str() {
            "False" if was != Some("False") => events.push(CheckpointEvent::Unhealthy {
                reason: after.reason,
                message: after.message,
            }),
            "True" if was == Some("False") => events.push(CheckpointEvent::Recovered {
                message: after.message,
            }),
            _ => {}
        }
    }
    events
}

/// `deleted 3 checkpoints: 2 by retain (chk-…, chk-…), 1 incomplete (chk-…)`.
pub fn summary(deleted: &[Deletion]) -> String {
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for deletion in deleted {
        by_reason
            .entry(deletion.reason.as_str())
            .or_default()
            .push(deletion.id.as_str());
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(reason, ids)| format!("{} by {reason} ({})", ids.len(), ids.join(", ")))
        .collect();
    format!(
        "deleted {} checkpoint(s): {}",
        deleted.len(),
        parts.join(", ")
    )
}

impl CheckpointEvent {
    /// The Kubernetes Event.
    pub fn to_event(&self) -> Event {
        let (type_, reason, note) = match self {
            Self::Deleted { summary } => (EventType::Normal, "CheckpointsDeleted", summary.clone()),
            Self::DeleteFailed { message } => (
                EventType::Warning,
                "CheckpointDeleteFailed",
                message.clone(),
            ),
            Self::Unhealthy { reason, message } => (
                EventType::Warning,
                reason.as_str(),
                format!("checkpoints are not healthy: {message}"),
            ),
            Self::Recovered { message } => (
                EventType::Normal,
                "CheckpointsHealthy",
                format!("checkpoints complete again: {message}"),
            ),
            Self::CleanedUp { count, location } => (
                EventType::Normal,
                "CheckpointsDeleted",
                format!("deleted {count} checkpoint(s) of the deleted job at {location}"),
            ),
            Self::CleanupFailed { message } => (
                EventType::Warning,
                "CheckpointCleanupFailed",
                format!("could not delete the job's checkpoints yet; retrying: {message}"),
            ),
            Self::Left { message } => (EventType::Warning, "CheckpointsLeft", message.clone()),
        };
        Event {
            type_,
            reason: reason.to_owned(),
            note: Some(events::note(note)),
            action: "Checkpoints".to_owned(),
            secondary: None,
        }
    }
}

impl ToEvent for CheckpointEvent {
    fn to_event(&self) -> Event {
        Self::to_event(self)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use sessionizer_worker::checkpoint::DeletionReason;

    use super::*;

    fn pass(deleted: &[(&str, DeletionReason)]) -> Pass {
        Pass {
            listings: Ok(Vec::new()),
            deleted: deleted
                .iter()
                .map(|(id, reason)| Deletion {
                    id: (*id).to_owned(),
                    reason: *reason,
                })
                .collect(),
            failed: Vec::new(),
        }
    }

    fn status(healthy: &str) -> SessionJobStatus {
        SessionJobStatus {
            conditions: vec![Condition {
                type_: condition_types::CHECKPOINTS_HEALTHY.into(),
                status: healthy.into(),
                reason: "CheckpointsStalled".into(),
                message: "no checkpoint completed for 16m".into(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..SessionJobStatus::default()
        }
    }

    #[test]
    fn one_event_summarizes_a_pass() {
        let events = after_pass(
            &pass(&[
                ("chk-1", DeletionReason::Retain),
                ("chk-2", DeletionReason::Retain),
                ("chk-3", DeletionReason::Incomplete),
            ]),
            Some(&status("True")),
            &status("True"),
        );
        assert_eq!(
            events,
            [CheckpointEvent::Deleted {
                summary:
                    "deleted 3 checkpoint(s): 1 by incomplete (chk-3), 2 by retain (chk-1, chk-2)"
                        .into()
            }]
        );
        assert!(after_pass(&pass(&[]), Some(&status("True")), &status("True")).is_empty());
    }

    #[test]
    fn health_flips_are_reported_once() {
        let events = after_pass(&pass(&[]), Some(&status("True")), &status("False"));
        assert!(
            matches!(&events[..], [CheckpointEvent::Unhealthy { reason, .. }] if reason == "CheckpointsStalled")
        );
        assert_eq!(events[0].to_event().type_, EventType::Warning);
        assert!(after_pass(&pass(&[]), Some(&status("False")), &status("False")).is_empty());
        let back = after_pass(&pass(&[]), Some(&status("False")), &status("True"));
        assert!(matches!(&back[..], [CheckpointEvent::Recovered { .. }]));
        assert!(
            after_pass(&pass(&[]), None, &status("True")).is_empty(),
            "a first True is no news"
        );
    }
}
