//! Kubernetes Events for the transitions a person watching `kubectl describe sj` cares about:
//! workers created, scaled, configuration rolled, job became Ready, job degraded, history store
//! capacity level changed.
//!
//! Which events to emit is decided by a pure comparison of before and after ([`transitions`]), so
//! a reconcile that changes nothing emits nothing. Publishing is best effort: a failed Event
//! never fails a reconcile. Never put secret values into an event note.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use sessionizer_crds::session_job::{
    HistoryStoreLevel, SessionJob, SessionJobStatus, condition_types,
};

use super::conditions::status_of;
use crate::history_store::publish;
use crate::names::annotations;

/// A transition worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// The worker StatefulSet was created.
    Created {
        /// Workers started.
        replicas: i32,
    },
    /// The number of workers changed.
    Scaled {
        /// Before.
        from: i32,
        /// After.
        to: i32,
    },
    /// The worker configuration changed: the Pods roll.
    ConfigRolled,
    /// All workers became ready.
    BecameReady,
    /// The history store capacity level changed.
    HistoryStoreLevel {
        /// The level before (`None`: first measurement).
        from: Option<HistoryStoreLevel>,
        /// The level now.
        to: HistoryStoreLevel,
        /// The HistoryStoreCapacity condition's message.
        message: String,
    },
    /// The job became degraded.
    Degraded {
        /// The Degraded condition's reason.
        reason: String,
        /// Its message.
        message: String,
    },
}

/// The events between the StatefulSet that existed (`before`) and the one applied (`applied`,
/// `None` when nothing was applied), and between the old and new status.
pub fn transitions(
    before: Option<&StatefulSet>,
    applied: Option<&StatefulSet>,
    old_status: Option<&SessionJobStatus>,
    new_status: &SessionJobStatus,
) -> Vec<JobEvent> {
    let mut events = Vec::new();
    if let Some(applied) = applied {
        match before {
            None => events.push(JobEvent::Created {
                replicas: replicas(applied).unwrap_or(0),
            }),
            Some(before) => {
                if let (Some(from), Some(to)) = (replicas(before), replicas(applied))
                    && from != to
                {
                    events.push(JobEvent::Scaled { from, to });
                }
                if let (Some(old), Some(new)) = (config_hash(before), config_hash(applied))
                    && old != new
                {
                    events.push(JobEvent::ConfigRolled);
                }
            }
        }
    }
    let old_conditions = old_status.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let became = |type_: &str| {
        status_of(old_conditions, type_) != Some("True")
            && status_of(&new_status.conditions, type_) == Some("True")
    };
    if became(condition_types::READY) {
        events.push(JobEvent::BecameReady);
    }
    let old_level = old_status
        .and_then(|s| s.history_store.as_ref())
        .map(|h| h.level);
    if let Some(new) = &new_status.history_store
        && Some(new.level) != old_level
        && new.level != HistoryStoreLevel::Unknown
    {
        let message = new_status
            .conditions
            .iter()
            .find(|c| c.type_ == condition_types::HISTORY_STORE_CAPACITY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push(JobEvent::HistoryStoreLevel {
            from: old_level,
            to: new.level,
            message,
        });
    }
    if became(condition_types::DEGRADED)
        && let Some(degraded) = new_status
            .conditions
            .iter()
            .find(|c| c.type_ == condition_types::DEGRADED)
    {
        events.push(JobEvent::Degraded {
            reason: degraded.reason.clone(),
            message: degraded.message.clone(),
        });
    }
    events
}

impl JobEvent {
    /// The Kubernetes Event for this transition.
    pub fn to_event(&self) -> Event {
        let (type_, reason, action, note) = match self {
            Self::Created { replicas } => (
                EventType::Normal,
                "Created".to_owned(),
                "CreateWorkers",
                format!("created the worker StatefulSet with {replicas} workers"),
            ),
            Self::Scaled { from, to } => (
                EventType::Normal,
                "Scaled".to_owned(),
                "ScaleWorkers",
                format!("scaled from {from} to {to} workers"),
            ),
            Self::ConfigRolled => (
                EventType::Normal,
                "ConfigRolled".to_owned(),
                "RollWorkers",
                "the worker configuration changed; rolling the workers".to_owned(),
            ),
            Self::BecameReady => (
                EventType::Normal,
                "Ready".to_owned(),
                "Observe",
                "all workers are ready".to_owned(),
            ),
            Self::HistoryStoreLevel { from, to, message } => (
                if matches!(to, HistoryStoreLevel::Healthy) {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                publish::event_reason(*to).to_owned(),
                "MonitorHistoryStore",
                match from {
                    Some(from) => format!("history store level {from:?} -> {to:?}: {message}"),
                    None => format!("history store level {to:?}: {message}"),
                },
            ),
            Self::Degraded { reason, message } => (
                EventType::Warning,
                reason.clone(),
                "Reconcile",
                message.clone(),
            ),
        };
        Event {
            type_,
            reason,
            note: Some(self::note(note)),
            action: action.to_owned(),
            secondary: None,
        }
    }
}

/// Something the operator reports as a Kubernetes Event about a job.
pub trait ToEvent: std::fmt::Debug {
    /// The Event.
    fn to_event(&self) -> Event;
}

impl ToEvent for JobEvent {
    fn to_event(&self) -> Event {
        Self::to_event(self)
    }
}

/// Publishes `events` about `job`, logging (not failing) when the API refuses one.
pub async fn publish<E: ToEvent>(recorder: &Recorder, job: &SessionJob, events: &[E]) {
    let reference = job.object_ref(&());
    for event in events {
        if let Err(error) = recorder.publish(&event.to_event(), &reference).await {
            tracing::warn!(%error, event = ?event, "could not publish an event");
        }
    }
}

fn replicas(statefulset: &StatefulSet) -> Option<i32> {
    statefulset.spec.as_ref().and_then(|spec| spec.replicas)
}

fn config_hash(statefulset: &StatefulSet) -> Option<&str> {
    statefulset
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(annotations::CONFIG_HASH)
        .map(String::as_str)
}

/// Longest Event note the API accepts, in bytes.
const NOTE_MAX: usize = 1000;

/// `text` as an Event note: cut to [`NOTE_MAX`] bytes on a character boundary.
pub fn note(text: String) -> String {
    truncate(text, NOTE_MAX)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::session_job::fixtures;

    fn status_with(conditions: &[(&str, &str)]) -> SessionJobStatus {
        SessionJobStatus {
            conditions: conditions
                .iter()
                .map(|(type_, status)| Condition {
                    type_: (*type_).to_owned(),
                    status: (*status).to_owned(),
                    reason: "Test".into(),
                    message: "because".into(),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..SessionJobStatus::default()
        }
    }

    fn with_replicas(replicas: i32) -> StatefulSet {
        let mut sts = fixtures::statefulset_ready();
        if let Some(spec) = sts.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        sts
    }

    #[test]
    fn nothing_changed_means_no_events() {
        let sts = fixtures::statefulset_ready();
        let status = status_with(&[("Ready", "True"), ("Degraded", "False")]);
        assert!(transitions(Some(&sts), Some(&sts), Some(&status), &status).is_empty());
    }

    #[test]
    fn first_apply_is_created() {
        let sts = fixtures::statefulset_ready();
        let events = transitions(None, Some(&sts), None, &status_with(&[]));
        assert_eq!(events, [JobEvent::Created { replicas: 4 }]);
    }

    #[test]
    fn replica_change_is_scaled() {
        let events = transitions(
            Some(&with_replicas(4)),
            Some(&with_replicas(6)),
            None,
            &status_with(&[]),
        );
        assert_eq!(events, [JobEvent::Scaled { from: 4, to: 6 }]);
    }

    #[test]
    fn hash_change_is_config_rolled() {
        let events = transitions(
            Some(&fixtures::statefulset_ready()),
            Some(&fixtures::statefulset_rolling()),
            None,
            &status_with(&[]),
        );
        assert_eq!(events, [JobEvent::ConfigRolled]);
    }

    #[test]
    fn ready_and_degraded_are_reported_when_they_become_true() {
        let old = status_with(&[("Ready", "False"), ("Degraded", "False")]);
        let new = status_with(&[("Ready", "True"), ("Degraded", "True")]);
        let events = transitions(None, None, Some(&old), &new);
        assert_eq!(
            events,
            [
                JobEvent::BecameReady,
                JobEvent::Degraded {
                    reason: "Test".into(),
                    message: "because".into()
                }
            ]
        );
        assert!(transitions(None, None, Some(&new), &new).is_empty());
    }

    #[test]
    fn every_history_store_level_change_is_an_event() {
        use sessionizer_crds::session_job::HistoryStoreStatus;
        let with_level = |level| SessionJobStatus {
            history_store: Some(HistoryStoreStatus {
                level,
                ..HistoryStoreStatus::default()
            }),
            ..status_with(&[("HistoryStoreCapacity", "False")])
        };
        let healthy = with_level(HistoryStoreLevel::Healthy);
        let breached = with_level(HistoryStoreLevel::Breached);
        let events = transitions(None, None, Some(&healthy), &breached);
        assert_eq!(
            events,
            [JobEvent::HistoryStoreLevel {
                from: Some(HistoryStoreLevel::Healthy),
                to: HistoryStoreLevel::Breached,
                message: "because".into()
            }]
        );
        let event = events[0].to_event();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "HistoryStoreEvictionMarkBreached");
        assert!(transitions(None, None, Some(&breached), &breached).is_empty());
        let back = transitions(None, None, Some(&breached), &healthy);
        assert_eq!(back[0].to_event().reason, "HistoryStoreHealthy");
        assert_eq!(back[0].to_event().type_, EventType::Normal);
    }

    #[test]
    fn degraded_event_is_a_warning_with_the_cause() {
        let event = JobEvent::Degraded {
            reason: "InvalidSpec".into(),
            message: "spec.session.gap: bad".into(),
        }
        .to_event();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "InvalidSpec");
        assert_eq!(event.note.as_deref(), Some("spec.session.gap: bad"));
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(text, 1001);
        assert_eq!(cut.len(), 1000);
    }
}
