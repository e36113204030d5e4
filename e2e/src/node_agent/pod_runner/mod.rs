//! One task per Pod: it owns the Pod's processes from the first start to the final delete.
//!
//! The runner reacts to Pod updates (spec changes, deletion), container exits, probe verdicts,
//! ConfigMap/Secret changes and its own timers (restart back-off, token refresh). After each
//! event it starts what is due and writes the Pod status if — and only if — it changed. On
//! deletion it sends SIGTERM, waits up to the grace period, sends SIGKILL, reports the final
//! status and deletes the Pod with grace period 0, as the kubelet does.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Agent;
use super::container::Exit;
use super::env::PodNet;
use super::ip::HOST_IP;
use super::probes::ProbeVerdict;
use super::sandbox::Sandbox;
use super::status::{self, StatusInput};

/// First restart delay; doubles per consecutive restart.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest restart delay (the kubelet's is five minutes; tests cannot wait that long).
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run this long resets the back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(20);
/// Retry interval for containers that cannot be configured yet.
const CONFIG_RETRY: Duration = Duration::from_secs(2);
/// Re-sync interval for volumes when nothing else happens.
const RESYNC: Duration = Duration::from_secs(10);
/// How long processes get when the agent itself stops.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(2);

mod lifecycle;
mod slot;
mod stop;

use slot::{Slot, SlotState};
use stop::{grace_period, kill};

/// How the runner's main loop ended.
enum End {
    /// The Pod was deleted gracefully; we already deleted it with grace period 0.
    Deleted,
    /// The Pod object is gone from the API.
    Gone,
    /// The agent is stopping.
    Shutdown,
}

/// Runs `pod` until it is deleted or the agent stops. Releases the Pod's address at the end.
pub async fn run(
    agent: Arc<Agent>,
    pod: Arc<Pod>,
    ip: Ipv4Addr,
    updates: watch::Receiver<Option<Arc<Pod>>>,
    shutdown: watch::Receiver<bool>,
) {
    match Runner::new(agent.clone(), pod, ip) {
        Ok(mut runner) => {
            let end = runner.main(updates, shutdown).await;
            // A graceful deletion cleaned up before its final delete; after an agent stop the
            // Pod lives on and keeps its emptyDirs for the next agent.
            if matches!(end, End::Gone) {
                runner.sandbox.cleanup(&runner.uid);
            }
            match end {
                End::Deleted => tracing::info!("pod finished and deleted"),
                End::Gone => tracing::info!("pod removed from the API; processes killed"),
                End::Shutdown => tracing::info!("agent stopping; pod processes stopped"),
            }
        }
        Err(error) => tracing::error!(%error, "cannot run pod"),
    }
    if let Ok(mut ips) = agent.ips.lock() {
        ips.release(ip);
    }
}

struct Runner {
    agent: Arc<Agent>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    ip: String,
    sandbox: Sandbox,
    sandbox_ready: bool,
    sandbox_error: Option<String>,
    sync_due: bool,
    next_sync: Instant,
    slots: Vec<Slot>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
    verdicts_tx: mpsc::Sender<ProbeVerdict>,
    verdicts: mpsc::Receiver<ProbeVerdict>,
    runs: u64,
    stopping: bool,
    start_time: Time,
    reported: Option<PodStatus>,
    conditions: Vec<PodCondition>,
    phase: Option<String>,
    status_retry: bool,
}

impl Runner {
    fn new(agent: Arc<Agent>, pod: Arc<Pod>, ip: Ipv4Addr) -> crate::Result<Self> {
        let sandbox = Sandbox::create(&agent.config.state_dir, &pod)?;
        let previous = pod.status.clone().unwrap_or_default();
        let find = |list: &Option<Vec<ContainerStatus>>, name: &str| {
            list.iter().flatten().find(|s| s.name == name).cloned()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let mut slots = Vec::new();
        for c in spec.init_containers.iter().flatten() {
            let prev = find(&previous.init_container_statuses, &c.name);
            slots.push(Slot::new(c.clone(), true, prev.as_ref()));
        }
        for c in &spec.containers {
            let prev = find(&previous.container_statuses, &c.name);
            slots.push(Slot::new(c.clone(), false, prev.as_ref()));
        }
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let (verdicts_tx, verdicts) = mpsc::channel(64);
        let phase = previous.phase.clone();
        let terminal = matches!(phase.as_deref(), Some(status::SUCCEEDED | status::FAILED));
        let mut runner = Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip: ip.to_string(),
            agent,
            pod,
            sandbox,
            sandbox_ready: false,
            sandbox_error: None,
            sync_due: true,
            next_sync: Instant::now(),
            slots,
            exits_tx,
            exits,
            verdicts_tx,
            verdicts,
            runs: 0,
            stopping: false,
            start_time: previous
                .start_time
                .unwrap_or_else(|| Time(Timestamp::now())),
            reported: None,
            conditions: previous.conditions.unwrap_or_default(),
            phase,
            status_retry: false,
        };
        if terminal {
            // Finished before the agent (re)started: its containers stay finished.
            runner.stopping = true;
            for (slot, prev) in runner.slots.iter_mut().zip(
                previous
                    .init_container_statuses
                    .iter()
                    .flatten()
                    .chain(previous.container_statuses.iter().flatten()),
            ) {
                if let Some(t) = prev.state.as_ref().and_then(|s| s.terminated.clone()) {
                    slot.state = SlotState::Terminated(t);
                }
            }
        }
        Ok(runner)
    }

    fn net(&self) -> PodNet<'_> {
        PodNet {
            pod_ip: &self.ip,
            host_ip: HOST_IP,
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_owned())
    }

    async fn main(
        &mut self,
        mut updates: watch::Receiver<Option<Arc<Pod>>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> End {
        let mut sources = self.agent.sources.changes();
        tracing::info!(uid = %self.uid, "pod accepted");
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                return self.terminate(&mut updates, &mut shutdown).await;
            }
            if !self.stopping {
                if self.sync_due || Instant::now() >= self.next_sync {
                    self.sync_sandbox().await;
                }
                self.start_due();
            }
            self.publish(false).await;
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.changed() => {
                    self.stop_all(AGENT_STOP_GRACE).await;
                    return End::Shutdown;
                }
                changed = updates.changed() => {
                    let latest = if changed.is_ok() { updates.borrow_and_update().clone() } else { None };
                    match latest {
                        Some(pod) => self.on_update(pod),
                        None => {
                            self.stop_all(Duration::ZERO).await;
                            return End::Gone;
                        }
                    }
                }
                Some(exit) = self.exits.recv() => self.on_exit(exit),
                Some(verdict) = self.verdicts.recv() => self.on_verdict(verdict),
                Ok(()) = sources.changed() => self.sync_due = true,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = self.next_sync;
        for slot in &self.slots {
            if let (Some(t), SlotState::Waiting { .. }) = (slot.next_start, &slot.state)
                && !slot.image_error
            {
                wake = wake.min(t);
            }
        }
        if let Some(refresh) = self.sandbox.next_refresh() {
            wake = wake.min(Instant::from_std(refresh));
        }
        if self.status_retry {
            wake = wake.min(now + Duration::from_secs(1));
        }
        wake.max(now)
    }

    async fn sync_sandbox(&mut self) {
        self.sync_due = false;
        let pod = self.pod.clone();
        let agent = self.agent.clone();
        let ip = self.ip.clone();
        let net = PodNet {
            pod_ip: &ip,
            host_ip: HOST_IP,
        };
        let result = self.sandbox.sync(&agent, &pod, net).await;
        match result {
            Ok(()) => {
                self.sandbox_ready = true;
                self.sandbox_error = None;
                self.next_sync = Instant::now() + RESYNC;
            }
            Err(error) => {
                let message = error.to_string();
                if self.sandbox_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "pod sandbox not ready");
                    self.agent
                        .events
                        .warning(&self.pod, "FailedMount", message.clone());
                }
                self.sandbox_error = Some(message);
                self.next_sync = Instant::now() + CONFIG_RETRY;
            }
        }
    }

    fn on_update(&mut self, pod: Arc<Pod>) {
        if pod.metadata.uid.as_deref() != Some(self.uid.as_str()) {
            return;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let Some(slot) = self
                .slots
                .iter_mut()
                .find(|s| s.spec.name == container.name)
            else {
                continue;
            };
            if slot.spec.image != container.image {
                tracing::info!(container = container.name, image = ?container.image, "container image changed");
                slot.spec.image = container.image.clone();
                slot.image_error = false;
                slot.next_start = None;
                if let SlotState::Running(running) = &mut slot.state
                    && !running.killing
                {
                    slot.restart_now = true;
                    running.killing = true;
                    let message = format!(
                        "Container {} definition changed, will be restarted",
                        slot.spec.name
                    );
                    self.agent.events.normal(&pod, "Killing", message);
                    kill(&running.process, grace_period(&pod, None));
                }
            }
        }
        self.pod = pod;
        self.sync_due = true;
    }

    /// Writes the status if it differs from what was last written.
    async fn publish(&mut self, terminal: bool) {
        let policy = self.restart_policy();
        let (init, main): (Vec<&Slot>, Vec<&Slot>) = self.slots.iter().partition(|s| s.init);
        let init: Vec<ContainerStatus> = init.iter().map(|s| s.status()).collect();
        let main: Vec<ContainerStatus> = main.iter().map(|s| s.status()).collect();
        let gates: Vec<(String, bool)> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_ref())
            .into_iter()
            .flatten()
            .map(|g| {
                let ok = self
                    .pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == g.condition_type && c.status == "True");
                (g.condition_type.clone(), ok)
            })
            .collect();
        let input = StatusInput {
            restart_policy: &policy,
            init_containers: &init,
            containers: &main,
            terminal,
            previous_phase: self.phase.as_deref(),
            previous_conditions: &self.conditions,
            readiness_gates: &gates,
            pod_ip: &self.ip,
            host_ip: HOST_IP,
            start_time: self.start_time.clone(),
            generation: self.pod.metadata.generation,
            now: Time(Timestamp::now()),
        };
        let desired = status::pod_status(&input);
        if self.reported.as_ref() == Some(&desired) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace);
        let patch = status::patch_body(&self.uid, &desired);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {
                if self.phase != desired.phase {
                    tracing::info!(phase = ?desired.phase, "pod phase changed");
                }
                self.phase = desired.phase.clone();
                self.conditions = desired.conditions.clone().unwrap_or_default();
                self.reported = Some(desired);
                self.status_retry = false;
            }
            Err(error) => {
                tracing::warn!(%error, "writing pod status failed; will retry");
                self.status_retry = true;
            }
        }
    }
}
