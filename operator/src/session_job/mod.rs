//! The SessionJob controller: runs each SessionJob as a StatefulSet of workers with its
//! ServiceAccount, ConfigMap, headless Service and PodDisruptionBudget, and reports how it goes in
//! the job's status.
//!
//! Reconcile pipeline (see [`reconcile`]): [`observe`] → [`validate`] → [`build`] → [`apply`] →
//! [`status`] (+ [`events`]); [`balance`] and [`kafka`] produce the BalancedAssignment condition.
//! This module only wires the controller: which objects it watches and owns. It never writes a
//! SessionJob's spec.

pub mod apply;
pub mod balance;
pub mod build;
pub mod conditions;
pub mod events;
pub mod held;
pub mod kafka;
pub mod observe;
pub mod reconcile;
pub mod rescale;
pub mod status;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use sessionizer_crds::{SessionJob, SessionJobCutover};

use crate::names;

/// Where a controller looks: one namespace, or all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (cluster-wide watches).
    All,
    /// One namespace.
    Namespace(String),
}

impl Scope {
    /// An `Api` of `K` in this scope.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Self::All => Api::all(client.clone()),
            Self::Namespace(namespace) => Api::namespaced(client.clone(), namespace),
        }
    }
}

/// A SessionJob controller for `scope`, owning every kind of child it creates, so a change to (or
/// deletion of) a child reconciles its job. Children are watched only if they carry the
/// operator's `managed-by` label, which keeps the watch caches small.
pub fn controller(client: &Client, scope: &Scope) -> Controller<SessionJob> {
    let children = watcher::Config::default().labels(&names::labels::managed_by_selector());
    Controller::new(scope.api::<SessionJob>(client), watcher::Config::default())
        .owns(scope.api::<StatefulSet>(client), children.clone())
        .owns(scope.api::<ConfigMap>(client), children.clone())
        .owns(scope.api::<Service>(client), children.clone())
        .owns(scope.api::<PodDisruptionBudget>(client), children.clone())
        .owns(scope.api::<ServiceAccount>(client), children)
        // A cutover's stage decides whether its jobs are held, flipped or retired.
        .watches(
            scope.api::<SessionJobCutover>(client),
            watcher::Config::default(),
            |cutover| {
                let namespace = cutover.namespace().unwrap_or_default();
                [cutover.spec.from.to_string(), cutover.spec.to.to_string()]
                    .map(|job| ObjectRef::<SessionJob>::new(&job).within(&namespace))
            },
        )
}
