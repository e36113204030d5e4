//! The *build* step: pure functions from a [`ValidatedJob`] to the Kubernetes objects that run
//! it. One file per child kind; this file holds what they share (labels, metadata) and
//! [`children`], which builds them all.
//!
//! Builders never read the cluster or the clock and never produce random values: the same job
//! must always give byte-identical objects, or server-side apply would change (and restart)
//! workers on every reconcile.

mod config_map;
mod credentials;
mod pdb;
mod service;
mod service_account;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ObjectMeta;

pub use config_map::{config_hash, config_map, pod_config_hash, worker_config};
pub use pdb::pdb;
pub use service::service;
pub use service_account::service_account;
pub use statefulset::statefulset;

use super::validate::ValidatedJob;
use crate::names::labels;

/// Why the desired objects could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The worker configuration could not be serialized.
    #[error("serializing the worker configuration: {0}")]
    WorkerConfig(#[source] sessionizer_worker::config::ConfigError),
}

/// Every object that runs a job, in the order they are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// The workers' identity (no RBAC: workers never call the API).
    pub service_account: ServiceAccount,
    /// The worker configuration.
    pub config_map: ConfigMap,
    /// The headless Service giving each worker a stable DNS name.
    pub service: Service,
    /// At most one worker down through voluntary disruptions.
    pub pdb: PodDisruptionBudget,
    /// The workers.
    pub statefulset: StatefulSet,
}

/// Builds every child of `job`.
pub fn children(job: &ValidatedJob) -> Result<Children, Error> {
    let config_map = config_map(job)?;
    let hash = pod_config_hash(job)?;
    Ok(Children {
        service_account: service_account(job),
        service: service(job),
        pdb: pdb(job),
        statefulset: statefulset(job, &hash),
        config_map,
    })
}

/// The labels that select a job's worker Pods. Part of the StatefulSet's immutable selector:
/// never add to them.
pub fn selector_labels(job: &ValidatedJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), labels::WORKER_APP.to_owned()),
        (labels::INSTANCE.to_owned(), job.name.clone()),
    ])
}

/// The labels on every object the operator creates for a job.
pub fn common_labels(job: &ValidatedJob) -> BTreeMap<String, String> {
    let mut labels = selector_labels(job);
    labels.insert(
        labels::MANAGED_BY.to_owned(),
        labels::MANAGED_BY_OPERATOR.to_owned(),
    );
    labels.insert(labels::JOB.to_owned(), job.name.clone());
    labels
}

/// Metadata of a child called `name`: namespace, common labels and the controller owner
/// reference, so deleting the job deletes it and changes to it trigger a reconcile.
fn metadata(job: &ValidatedJob, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(job.namespace.clone()),
        labels: Some(common_labels(job)),
        owner_references: Some(vec![job.owner.clone()]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;
    use crate::session_job::fixtures;

    fn assert_owned_and_labelled<K: Resource>(object: &K, job: &ValidatedJob) {
        let meta = object.meta();
        assert_eq!(meta.namespace.as_deref(), Some("analytics"));
        let owners = meta.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(owner.kind, "SessionJob");
        assert_eq!(owner.api_version, "sessionizer.dev/v1alpha1");
        assert_eq!(owner.name, job.name);
        assert_eq!(owner.uid, fixtures::UID);
        assert_eq!(owner.controller, Some(true));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels["app.kubernetes.io/name"], "sessionizer-worker");
        assert_eq!(labels["app.kubernetes.io/instance"], job.name);
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "sessionizer-operator"
        );
        assert_eq!(labels["sessionizer.dev/job"], job.name);
    }

    #[test]
    fn every_child_is_owned_by_the_job_and_labelled() {
        for job in [fixtures::valid_minimal(), fixtures::valid_full()] {
            let children = children(&job).unwrap();
            assert_owned_and_labelled(&children.service_account, &job);
            assert_owned_and_labelled(&children.config_map, &job);
            assert_owned_and_labelled(&children.service, &job);
            assert_owned_and_labelled(&children.pdb, &job);
            assert_owned_and_labelled(&children.statefulset, &job);
        }
    }

    #[test]
    fn building_twice_gives_identical_objects() {
        let job = fixtures::valid_full();
        assert_eq!(children(&job).unwrap(), children(&job).unwrap());
        assert_eq!(
            serde_json::to_string(&children(&job).unwrap().statefulset).unwrap(),
            serde_json::to_string(&children(&job).unwrap().statefulset).unwrap()
        );
    }
}
