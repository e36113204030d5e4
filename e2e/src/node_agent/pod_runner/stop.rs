//! Stopping a Pod: graceful deletion as the kubelet does it (SIGTERM, the grace period, SIGKILL,
//! final status, delete with grace period 0), and the quick stop when the agent itself exits or
//! the Pod is gone from the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{End, Runner, SlotState};
use crate::node_agent::container::Process;

impl Runner {
    /// Graceful deletion: SIGTERM, wait up to the grace period (which may be shortened while we
    /// wait), SIGKILL, final status, then delete with grace period 0.
    pub(super) async fn terminate(
        &mut self,
        updates: &mut watch::Receiver<Option<Arc<Pod>>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        self.stopping = true;
        let grace = grace_seconds(&self.pod);
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "pod deleted; stopping containers"
        );
        let mut deadline = Instant::now() + grace;
        let pod = self.pod.clone();
        for slot in &mut self.slots {
            if let SlotState::Running(running) = &mut slot.state {
                for probe in &running.probes {
                    probe.abort();
                }
                running.killing = true;
                self.agent.events.normal(
                    &pod,
                    "Killing",
                    format!("Stopping container {}", slot.spec.name),
                );
                running.process.signal(Signal::SIGTERM);
            }
        }
        let mut killed = false;
        let mut gone = false;
        while self.any_running() {
            self.publish(false).await;
            tokio::select! {
                Some(exit) = self.exits.recv() => self.on_exit(exit),
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    tracing::info!("grace period over; sending SIGKILL");
                    self.signal_all(Signal::SIGKILL);
                    killed = true;
                }
                changed = updates.changed(), if !gone => {
                    let latest = if changed.is_ok() { updates.borrow_and_update().clone() } else { None };
                    match latest {
                        Some(pod) if pod.metadata.uid.as_deref() == Some(self.uid.as_str()) => {
                            deadline = deadline.min(Instant::now() + grace_seconds(&pod));
                            self.pod = pod;
                        }
                        Some(_) => {}
                        None => {
                            gone = true;
                            deadline = Instant::now();
                        }
                    }
                }
                _ = shutdown.changed() => {
                    deadline = Instant::now();
                }
            }
        }
        if gone {
            return End::Gone;
        }
        self.publish(true).await;
        // Before the final delete: a StatefulSet recreates a Pod of the same name right after.
        self.sandbox.cleanup(&self.uid);
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => tracing::warn!(%error, "final delete of the pod failed"),
        }
        End::Deleted
    }

    pub(super) fn any_running(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Running(_)))
    }

    pub(super) fn signal_all(&self, signal: Signal) {
        for slot in &self.slots {
            if let SlotState::Running(running) = &slot.state {
                running.process.signal(signal);
            }
        }
    }

    /// Stops every process without touching the API (agent shutdown, Pod gone).
    pub(super) async fn stop_all(&mut self, grace: Duration) {
        self.stopping = true;
        self.signal_all(if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        });
        let deadline = Instant::now() + grace;
        let mut killed = grace.is_zero();
        while self.any_running() {
            tokio::select! {
                Some(exit) = self.exits.recv() => self.on_exit(exit),
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    self.signal_all(Signal::SIGKILL);
                    killed = true;
                }
                // Reaping after SIGKILL is quick; never hang on a lost exit report.
                _ = tokio::time::sleep_until(deadline + Duration::from_secs(5)) => break,
            }
        }
    }
}

/// The grace period for a container kill: the probe's override, else the Pod's.
pub(super) fn grace_period(pod: &Pod, probe_override: Option<i64>) -> Duration {
    let seconds = probe_override
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The deletion grace period: metadata.deletionGracePeriodSeconds, else the spec's.
pub(super) fn grace_seconds(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// SIGTERM now, SIGKILL after `grace` unless the process is gone by then.
pub(super) fn kill(process: &Process, grace: Duration) {
    process.signal(Signal::SIGTERM);
    let process = process.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        process.signal(Signal::SIGKILL);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_prefers_deletion_metadata() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: { name: p, deletionGracePeriodSeconds: 3 }\nspec: { terminationGracePeriodSeconds: 60, containers: [] }",
        )
        .unwrap();
        assert_eq!(grace_seconds(&pod), Duration::from_secs(3));
        assert_eq!(grace_period(&pod, None), Duration::from_secs(60));
        assert_eq!(grace_period(&pod, Some(1)), Duration::from_secs(1));
    }
}
