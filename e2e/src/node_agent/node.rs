//! The Node object: registration, and the heartbeat that keeps it Ready. The node-lifecycle
//! controller taints a node whose Lease (in `kube-node-lease`) or Ready condition stops being
//! renewed and then evicts its Pods, so the heartbeat must keep going for the agent's lifetime.
//! Capacity is generous on purpose: resource requests must never be why a Pod does not run.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::{Error, Result};

/// Allocatable CPU cores.
pub const ALLOCATABLE_CPU: &str = "64";
/// Allocatable memory.
pub const ALLOCATABLE_MEMORY: &str = "256Gi";
/// Allocatable ephemeral storage.
pub const ALLOCATABLE_EPHEMERAL_STORAGE: &str = "1Ti";
/// Allocatable Pods.
pub const ALLOCATABLE_PODS: &str = "250";
/// The field manager for server-side apply.
const FIELD_MANAGER: &str = "sessionizer-node-agent";
/// How long the Lease is valid without renewal.
const LEASE_SECONDS: i32 = 40;

/// Creates the Node `name` (or adopts the existing one) and posts a Ready status. Returns its uid.
pub async fn register(client: &Client, name: &str, version: &str) -> Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("sessionizer.dev/node-agent", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let created = match api.create(&PostParams::default(), &node).await {
        Ok(node) => node,
        Err(kube::Error::Api(status)) if status.code == 409 => api
            .get(name)
            .await
            .map_err(Error::kube(format!("reading node {name}")))?,
        Err(error) => return Err(Error::kube(format!("registering node {name}"))(error)),
    };
    let uid = created.metadata.uid.unwrap_or_default();
    let now = Time(Timestamp::now());
    post_status(&api, name, &node_status(name, version, now.clone(), now)).await?;
    tracing::info!(node = name, uid, "node registered");
    Ok(uid)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The status the agent reports: Ready, no pressure, generous capacity, loopback address.
pub fn node_status(name: &str, version: &str, heartbeat: Time, since: Time) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", ALLOCATABLE_CPU),
        ("memory", ALLOCATABLE_MEMORY),
        ("ephemeral-storage", ALLOCATABLE_EPHEMERAL_STORAGE),
        ("pods", ALLOCATABLE_PODS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(heartbeat.clone()),
        last_transition_time: Some(since.clone()),
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "sessionizer node agent is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_owned(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().to_owned(),
            boot_id: boot_id.trim().to_owned(),
            container_runtime_version: "sessionizer-local://0.1.0".into(),
            kernel_version: kernel.trim().to_owned(),
            kube_proxy_version: String::new(),
            kubelet_version: version.to_owned(),
            machine_id: machine_id.trim().to_owned(),
            operating_system: "linux".into(),
            os_image: "Sessionizer node agent (local processes)".into(),
            system_uuid: machine_id.trim().to_owned(),
            swap: None,
        }),
        ..NodeStatus::default()
    }
}

async fn post_status(api: &Api<Node>, name: &str, status: &NodeStatus) -> Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": status })),
    )
    .await
    .map_err(Error::kube(format!("posting status of node {name}")))?;
    Ok(())
}

async fn renew_lease(client: &Client, name: &str, uid: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid }],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(lease),
    )
    .await
    .map_err(Error::kube(format!("renewing the lease of node {name}")))?;
    Ok(())
}

/// Renews the Lease and posts the Ready status every `interval` until `shutdown` turns true.
pub async fn heartbeat(
    client: Client,
    name: String,
    uid: String,
    version: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client.clone());
    let since = Time(Timestamp::now());
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = renew_lease(&client, &name, &uid).await {
            tracing::warn!(%error, "node heartbeat: lease not renewed");
        }
        let status = node_status(&name, &version, Time(Timestamp::now()), since.clone());
        if let Err(error) = post_status(&api, &name, &status).await {
            tracing::warn!(%error, "node heartbeat: status not posted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_generous_capacity() {
        let now = Time(Timestamp::now());
        let status = node_status("local-node", "v1.36.3", now.clone(), now);
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let allocatable = status.allocatable.unwrap();
        assert_eq!(allocatable["cpu"].0, "64");
        assert_eq!(allocatable["memory"].0, "256Gi");
        assert_eq!(allocatable["pods"].0, "250");
        assert_eq!(status.addresses.unwrap()[0].address, "127.0.0.1");
    }
}
