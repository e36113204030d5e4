//! Kubernetes Events about Pods (Scheduled, Created, Started, Killing, BackOff, Unhealthy,
//! Failed), published in the background: an event that cannot be written is logged, never
//! allowed to hold up a Pod.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes events as the node agent.
#[derive(Clone)]
pub struct Events {
    recorder: Arc<Recorder>,
}

impl Events {
    /// A publisher reporting as `sessionizer-node-agent` on `node`.
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "sessionizer-node-agent".into(),
            instance: Some(node.to_owned()),
        };
        Self {
            recorder: Arc::new(Recorder::new(client, reporter)),
        }
    }

    /// A Normal event about `pod`.
    pub fn normal(&self, pod: &Pod, reason: &str, note: impl Into<String>) {
        self.publish(pod, EventType::Normal, reason, note.into());
    }

    /// A Warning event about `pod`.
    pub fn warning(&self, pod: &Pod, reason: &str, note: impl Into<String>) {
        self.publish(pod, EventType::Warning, reason, note.into());
    }

    fn publish(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let reference = pod.object_ref(&());
        let recorder = self.recorder.clone();
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: reason.to_owned(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::debug!(%error, reason = event.reason, "publishing event failed");
            }
        });
    }
}

fn truncate(mut note: String, max: usize) -> String {
    if note.len() > max {
        let mut end = max;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}
