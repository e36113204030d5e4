//! The producer workloads a cutover pauses: read and set their replicas through the `scale`
//! subresource (Deployments and StatefulSets alike), so nothing but `spec.replicas` is touched.
//!
//! Never scale a producer whose original replicas are not recorded in the cutover's status
//! first: restoring "exactly what was there" depends on it.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use sessionizer_crds::cutover::ProducerStatus;
use sessionizer_crds::refs::{WorkloadKind, WorkloadRef};

use crate::names::FIELD_MANAGER;
use crate::session_job::apply::describe;

/// A producer could not be read or scaled.
#[derive(Debug, thiserror::Error)]
#[error("{step} {kind} {name}: {}", describe(.source))]
pub struct Error {
    /// `reading` or `scaling`.
    pub step: &'static str,
    /// The workload's kind.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Replicas of a producer: wanted (`spec`) and existing (`status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    /// `spec.replicas`.
    pub wanted: i32,
    /// `status.replicas` (Pods that exist).
    pub existing: i32,
}

async fn scale_of(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Scale, kube::Error> {
    match workload.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_scale(workload.name.as_str())
                .await
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_scale(workload.name.as_str())
                .await
        }
    }
}

/// The replicas of `workload`.
pub async fn replicas(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Replicas, Error> {
    let scale = scale_of(client, namespace, workload)
        .await
        .map_err(|source| Error {
            step: "reading",
            kind: workload.kind.as_str(),
            name: workload.name.to_string(),
            source,
        })?;
    Ok(Replicas {
        wanted: scale.spec.and_then(|s| s.replicas).unwrap_or(0),
        existing: scale.status.map_or(0, |s| s.replicas),
    })
}

/// Sets `spec.replicas` of `workload` to `replicas`.
pub async fn scale(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    replicas: i32,
) -> Result<(), Error> {
    let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let name = workload.name.as_str();
    let result = match workload.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch_scale(name, &params, &patch)
                .await
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch_scale(name, &params, &patch)
                .await
        }
    };
    result.map(|_| ()).map_err(|source| Error {
        step: "scaling",
        kind: workload.kind.as_str(),
        name: name.to_owned(),
        source,
    })
}

/// The workload a recorded producer refers to.
pub fn workload(producer: &ProducerStatus) -> Option<WorkloadRef> {
    serde_json::from_value(serde_json::json!({ "kind": producer.kind, "name": producer.name })).ok()
}

/// The producers in `wanted` whose original replicas are not recorded yet.
pub fn unrecorded<'a>(
    wanted: &'a [WorkloadRef],
    recorded: &[ProducerStatus],
) -> Vec<&'a WorkloadRef> {
    wanted
        .iter()
        .filter(|w| {
            !recorded
                .iter()
                .any(|r| r.kind == w.kind && r.name == w.name.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(kind: WorkloadKind, name: &str) -> WorkloadRef {
        serde_json::from_value(serde_json::json!({ "kind": kind, "name": name })).unwrap()
    }

    #[test]
    fn only_producers_without_a_record_are_read() {
        let wanted = [
            producer(WorkloadKind::Deployment, "loadgen"),
            producer(WorkloadKind::StatefulSet, "loadgen"),
        ];
        let recorded = [ProducerStatus {
            kind: WorkloadKind::Deployment,
            name: "loadgen".into(),
            original_replicas: 3,
        }];
        assert_eq!(unrecorded(&wanted, &recorded), vec![&wanted[1]]);
        assert_eq!(workload(&recorded[0]), Some(wanted[0].clone()));
    }
}
