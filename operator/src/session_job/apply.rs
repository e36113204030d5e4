//! The *apply* step: server-side apply of a job's children, in a fixed order, under the
//! operator's one field manager with `force` (the operator owns these fields; a conflicting
//! manager is overridden rather than left to fight).
//!
//! Applying an unchanged object is a no-op on the server (no new generation, no restart), which
//! is what makes "a reconcile that changes nothing restarts nothing" hold. This module never
//! deletes: children go with the job through their owner references.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::Children;
use crate::names::FIELD_MANAGER;

/// A child could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("applying {kind} {name}: {}", describe(.source))]
pub struct Error {
    /// The child's kind.
    pub kind: &'static str,
    /// The child's name.
    pub name: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Applies `children` in `namespace` and returns the StatefulSet as the API server stored it.
///
/// Order matters: the ServiceAccount and ConfigMap the Pods use exist before the StatefulSet
/// that starts them, and so do the Service and PodDisruptionBudget that cover them.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<StatefulSet, Error> {
    apply(
        client,
        namespace,
        &children.service_account,
        "ServiceAccount",
    )
    .await?;
    apply(client, namespace, &children.config_map, "ConfigMap").await?;
    apply(client, namespace, &children.service, "Service").await?;
    apply(client, namespace, &children.pdb, "PodDisruptionBudget").await?;
    apply(client, namespace, &children.statefulset, "StatefulSet").await
}

/// Server-side apply of one object.
async fn apply<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    kind: &'static str,
) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| Error { kind, name, source })
}

/// A Kubernetes error in one line for people: the API server's own message for API errors
/// (what `kubectl` would print), the error itself otherwise.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.code)
        }
        other => other.to_string(),
    }
}

/// Server-side apply as the operator, taking ownership of conflicting fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    #[test]
    fn api_errors_read_like_kubectl() {
        let status = Status::failure(
            "serviceaccounts \"pageviews-worker\" is forbidden: cannot create",
            "Forbidden",
        )
        .with_code(403);
        let error = Error {
            kind: "ServiceAccount",
            name: "pageviews-worker".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert_eq!(
            error.to_string(),
            "applying ServiceAccount pageviews-worker: serviceaccounts \"pageviews-worker\" is forbidden: cannot create (403)"
        );
    }
}
