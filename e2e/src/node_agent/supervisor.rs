//! Watches the Pods bound to this node and keeps one pod runner per Pod (keyed by uid): it starts
//! a runner for a new Pod (with its own address), forwards every update to it, and tells it when
//! the Pod is gone from the API. On agent shutdown it waits for the runners to stop their
//! processes. It never touches processes itself.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::ip::HOST_IP;
use super::{Agent, pod_runner};

struct Worker {
    updates: watch::Sender<Option<Arc<Pod>>>,
    handle: JoinHandle<()>,
}

/// Runs the Pods of this node until `shutdown` turns true, then waits for their runners.
pub async fn run(agent: Arc<Agent>, shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", agent.config.node_name));
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut detached: Vec<JoinHandle<()>> = Vec::new();
    let mut relisted: Option<HashSet<String>> = None;
    let mut stop = shutdown.clone();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(Event::Init)) => relisted = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                upsert(&agent, &mut workers, pod, &shutdown);
            }
            Some(Ok(Event::InitDone)) => {
                if let Some(seen) = relisted.take() {
                    let gone: Vec<String> = workers
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        detached.extend(remove(&mut workers, &uid));
                    }
                }
            }
            Some(Ok(Event::Apply(pod))) => upsert(&agent, &mut workers, pod, &shutdown),
            Some(Ok(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    detached.extend(remove(&mut workers, uid));
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "watching this node's pods failed"),
            None => break,
        }
        detached.retain(|h| !h.is_finished());
    }
    let handles = workers.into_values().map(|w| w.handle).chain(detached);
    for handle in handles {
        if tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .is_err()
        {
            tracing::warn!("a pod runner did not stop in time");
        }
    }
}

fn upsert(
    agent: &Arc<Agent>,
    workers: &mut HashMap<String, Worker>,
    pod: Pod,
    shutdown: &watch::Receiver<bool>,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(worker) = workers.get(&uid) {
        worker.updates.send_replace(Some(Arc::new(pod)));
        return;
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(ip) = address(agent, &pod) else {
        tracing::error!(%namespace, pod = %name, "no pod address left");
        return;
    };
    let pod = Arc::new(pod);
    let (updates, receiver) = watch::channel(Some(pod.clone()));
    let span = tracing::info_span!("pod", %namespace, pod = %name, %ip);
    let handle = tokio::spawn(
        pod_runner::run(agent.clone(), pod, ip, receiver, shutdown.clone()).instrument(span),
    );
    workers.insert(uid, Worker { updates, handle });
}

/// The Pod's address: the node's for `hostNetwork` Pods, the one it already reports (agent
/// restart), else a fresh one.
fn address(agent: &Agent, pod: &Pod) -> Option<Ipv4Addr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return HOST_IP.parse().ok();
    }
    let mut ips = agent.ips.lock().ok()?;
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    match previous {
        Some(ip) if ips.reserve(ip) => Some(ip),
        _ => ips.allocate(),
    }
}

fn remove(workers: &mut HashMap<String, Worker>, uid: &str) -> Option<JoinHandle<()>> {
    let worker = workers.remove(uid)?;
    worker.updates.send_replace(None);
    Some(worker.handle)
}
