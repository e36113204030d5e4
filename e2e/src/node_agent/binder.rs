//! The stand-in for a scheduler: every Pod without a node is bound to ours through the
//! `pods/binding` subresource, the same call kube-scheduler makes (so the API server sets
//! `spec.nodeName` and the PodScheduled condition). Pods with scheduling gates wait, deleted and
//! finished Pods are left alone. It never looks at resources, affinities or taints.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use super::events::Events;

/// Binds unscheduled Pods to `node` until `shutdown` turns true.
pub async fn run(
    client: Client,
    node: String,
    events: Events,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let stream = watcher(api, config).default_backoff().applied_objects();
    futures::pin_mut!(stream);
    loop {
        let item = tokio::select! {
            _ = shutdown.changed() => return,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(pod)) if wants_binding(&pod) => {
                let (client, node, events) = (client.clone(), node.clone(), events.clone());
                tokio::spawn(async move { bind(&client, &node, &pod, &events).await });
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => tracing::warn!(%error, "binder: watching unscheduled pods failed"),
            None => return,
        }
    }
}

/// Whether `pod` should be bound now.
pub fn wants_binding(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let gated = spec
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    unbound && !gated && !finished && pod.metadata.deletion_timestamp.is_none()
}

async fn bind(client: &Client, node: &str, pod: &Pod, events: &Events) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        let result: Result<serde_json::Value, _> = api
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%namespace, pod = %name, node, "pod bound");
                events.normal(
                    pod,
                    "Scheduled",
                    format!("Successfully assigned {namespace}/{name} to {node}"),
                );
                return;
            }
            // Already bound, or gone: nothing to do.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                tracing::debug!(%namespace, pod = %name, reason = status.message, "binding skipped");
                return;
            }
            Err(error) => {
                tracing::warn!(%namespace, pod = %name, attempt, %error, "binding failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_only_pending_ungated_live_pods() {
        let pod = |yaml: &str| -> Pod { serde_yaml::from_str(yaml).unwrap() };
        assert!(wants_binding(&pod(
            "metadata: { name: a }\nspec: { containers: [] }"
        )));
        assert!(!wants_binding(&pod(
            "metadata: { name: a }\nspec: { nodeName: n, containers: [] }"
        )));
        assert!(!wants_binding(&pod(
            "metadata: { name: a }\nspec: { schedulingGates: [{ name: g }], containers: [] }"
        )));
        assert!(!wants_binding(&pod(
            "metadata: { name: a, deletionTimestamp: '2024-01-01T00:00:00Z' }\nspec: { containers: [] }"
        )));
        assert!(!wants_binding(&pod(
            "metadata: { name: a }\nspec: { containers: [] }\nstatus: { phase: Failed }"
        )));
    }
}
