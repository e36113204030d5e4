//! Rescaling without two owners for a key group: when `parallelism` changes, every running
//! worker is stopped with a final checkpoint (`POST /control/stop`) *before* the StatefulSet gets
//! the new replica count. The new workers then restore each key group from the checkpoint its
//! last owner wrote at the stop — nothing is replayed, and at no moment do an old worker (with
//! the old key-group ranges) and a new one consume the same partition.
//!
//! Stopped workers stay up, `Stopped` and not ready, until the StatefulSet replaces them, so a
//! slow roll never lets an old worker resume. A Pod that does not answer is not consuming
//! (workers serve HTTP from their first moment), so it does not hold the rescale up. This module
//! must never change the StatefulSet itself: it only says whether the apply may go on.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::events::{Event, EventType};
use sessionizer_worker::checkpoint::final_id;
use sessionizer_worker::stream::pipeline::now_ms;

use crate::context::Context;
use crate::workers;

/// What the apply may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Apply as built: no rescale, or every worker is stopped.
    Proceed,
    /// Every worker was stopped for the rescale just now (for the Event).
    Stopped {
        /// `<pod>: <checkpoint id>` for each stopped worker.
        stopped: Vec<String>,
    },
    /// Not yet: a worker could not be stopped (retried at the next reconcile).
    Wait(String),
}

impl Gate {
    /// Whether the StatefulSet may get the new replica count now.
    pub fn may_apply(&self) -> bool {
        !matches!(self, Gate::Wait(_))
    }

    /// The Event to record, if any.
    pub fn event(&self, from: i32, to: i32) -> Option<Event> {
        match self {
            Gate::Stopped { stopped } => Some(Event {
                type_: EventType::Normal,
                reason: String::from("WorkersStoppedForRescale"),
                note: Some(format!(
                    "rescaling {from} → {to}: stopped with a final checkpoint: {}",
                    stopped.join(", ")
                )),
                action: String::from("Rescale"),
                secondary: None,
            }),
            Gate::Wait(why) => Some(Event {
                type_: EventType::Warning,
                reason: String::from("RescaleWaiting"),
                note: Some(format!("rescaling {from} → {to} waits: {why}")),
                action: String::from("Rescale"),
                secondary: None,
            }),
            Gate::Proceed => None,
        }
    }
}

/// The replica count the StatefulSet runs now, if it exists.
pub fn current_replicas(statefulset: Option<&StatefulSet>) -> Option<i32> {
    statefulset
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
}

/// Whether going from `current` to `desired` replicas needs the workers stopped first: only
/// between two non-zero counts (from zero nothing runs; to zero the workers stop on SIGTERM
/// with a final checkpoint anyway).
pub fn needs_stop(current: Option<i32>, desired: i32) -> bool {
    matches!(current, Some(current) if current > 0 && desired > 0 && current != desired)
}

/// Stops every running worker of the job with a final checkpoint; see the module documentation.
pub async fn stop_workers(ctx: &Context, namespace: &str, job: &str) -> Gate {
    let pods = match workers::pods(&ctx.client, namespace, job).await {
        Ok(pods) => pods,
        Err(error) => return Gate::Wait(error.to_string()),
    };
    let mut stopped = Vec::new();
    for pod in pods.iter().filter(|p| !p.terminating && p.ip.is_some()) {
        let Ok(report) = workers::status(&ctx.workers, pod).await else {
            // Not answering: not consuming either.
            continue;
        };
        if report.phase == "Stopped" {
            continue;
        }
        let id = final_id(now_ms());
        match workers::stop(&ctx.workers, pod, &id).await {
            Ok(()) => stopped.push(format!("{}: {id}", pod.name)),
            Err(error) => return Gate::Wait(format!("stopping {}: {error}", pod.name)),
        }
    }
    if stopped.is_empty() {
        Gate::Proceed
    } else {
        tracing::info!(
            ?stopped,
            "workers stopped with a final checkpoint for a rescale"
        );
        Gate::Stopped { stopped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_between_running_counts_stops_the_workers() {
        assert!(needs_stop(Some(2), 4));
        assert!(needs_stop(Some(4), 1));
        assert!(!needs_stop(Some(2), 2), "no change");
        assert!(!needs_stop(None, 2), "first start");
        assert!(!needs_stop(Some(0), 2), "nothing runs");
        assert!(!needs_stop(Some(2), 0), "held at zero: SIGTERM checkpoints");
    }

    #[test]
    fn events_name_the_stopped_workers_or_why_it_waits() {
        let stopped = Gate::Stopped {
            stopped: vec![String::from("job-0: chk-0000000000001")],
        };
        let event = stopped.event(2, 4).unwrap();
        assert_eq!(event.reason, "WorkersStoppedForRescale");
        assert!(event.note.unwrap().contains("job-0: chk-0000000000001"));
        assert!(stopped.may_apply());
        let wait = Gate::Wait(String::from("stopping job-1: refused"));
        assert!(!wait.may_apply());
        assert_eq!(wait.event(2, 4).unwrap().type_, EventType::Warning);
        assert!(Gate::Proceed.event(2, 4).is_none());
    }
}
