//! One task per Pod: it owns the Pod's processes from the first start to the final delete.
//!
//! The runner reacts to Pod updates (spec changes, deletion), container exits, probe verdicts,
//! ConfigMap/Secret changes and its own timers (restart back-off, token refresh). After each
//! event it starts what is due and writes the Pod status if — and only if — it changed. On
//! deletion it sends SIGTERM, waits up to the grace period, sends SIGKILL, reports the final
//! status and deletes the Pod with grace period 0, as the kubelet does.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::container::{self, ExecContext, Exit, Launch, Process};
use super::env::{self, EnvList, PodNet};
use super::ip::HOST_IP;
use super::mounts;
use super::probes::{self, ProbeKind, ProbeVerdict};
use super::sandbox::Sandbox;
use super::status::{self, StatusInput};
use super::volumes::{self, Mount, SERVICE_ACCOUNT_MOUNT};
use super::{Agent, container_log_path};
use crate::Error;

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

/// A running container.
struct Running {
    run: u64,
    process: Process,
    started_at: Time,
    since: Instant,
    ready: bool,
    started: bool,
    has_readiness: bool,
    /// Opens the liveness and readiness probes once the startup probe passed.
    gate: Arc<AtomicBool>,
    probes: Vec<JoinHandle<()>>,
    killing: bool,
}

enum SlotState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running(Running),
    Terminated(ContainerStateTerminated),
}

/// One container (or init container) of the Pod.
struct Slot {
    spec: Container,
    init: bool,
    state: SlotState,
    last_terminated: Option<ContainerStateTerminated>,
    restart_count: i32,
    ever_started: bool,
    backoff: Duration,
    next_start: Option<Instant>,
    /// Set for an unknown image: no retry until the spec's image changes.
    image_error: bool,
    /// Restart at once when the current run ends (spec changed).
    restart_now: bool,
    last_event: Option<String>,
    container_id: Option<String>,
    image_id: String,
}

impl Slot {
    fn new(spec: Container, init: bool, previous: Option<&ContainerStatus>) -> Self {
        let restart_count = previous.map_or(0, |s| s.restart_count);
        let ever_started = previous.is_some_and(|s| {
            s.restart_count > 0
                || s.state
                    .as_ref()
                    .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
        });
        let reason = if init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        Self {
            spec,
            init,
            state: SlotState::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            last_terminated: previous
                .and_then(|s| s.last_state.as_ref())
                .and_then(|s| s.terminated.clone()),
            restart_count,
            ever_started,
            backoff: BACKOFF_INITIAL,
            next_start: None,
            image_error: false,
            restart_now: false,
            last_event: None,
            container_id: None,
            image_id: String::new(),
        }
    }

    fn due(&self, now: Instant) -> bool {
        matches!(self.state, SlotState::Waiting { .. })
            && !self.image_error
            && self.next_start.is_none_or(|t| t <= now)
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, SlotState::Terminated(t) if t.exit_code == 0)
    }

    fn wait(&mut self, reason: &str, message: Option<String>) {
        self.state = SlotState::Waiting {
            reason: reason.to_owned(),
            message,
        };
    }

    fn status(&self) -> ContainerStatus {
        let (state, ready, started) = match &self.state {
            SlotState::Waiting { reason, message } => {
                (status::waiting(reason, message.clone()), false, false)
            }
            SlotState::Running(r) => (status::running(r.started_at.clone()), r.ready, r.started),
            SlotState::Terminated(t) => (status::terminated(t.clone()), false, false),
        };
        ContainerStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            state: Some(state),
            last_state: Some(
                self.last_terminated
                    .clone()
                    .map(status::terminated)
                    .unwrap_or_default(),
            ),
            ready,
            restart_count: self.restart_count,
            started: Some(started),
            ..ContainerStatus::default()
        }
    }
}

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
            runner.sandbox.cleanup();
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

    /// Starts whatever is due: init containers one at a time, then all containers.
    fn start_due(&mut self) {
        let now = Instant::now();
        if !self.sandbox_ready {
            let message = self.sandbox_error.clone();
            for slot in &mut self.slots {
                if matches!(slot.state, SlotState::Waiting { .. }) && !slot.image_error {
                    let reason = if slot.init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    };
                    slot.wait(reason, message.clone());
                }
            }
            return;
        }
        let inits = self.slots.iter().filter(|s| s.init).count();
        for i in 0..inits {
            if self.slots[i].succeeded() {
                continue;
            }
            if self.slots[i].due(now) {
                self.start(i);
            }
            for slot in self.slots.iter_mut().skip(inits) {
                if matches!(slot.state, SlotState::Waiting { .. }) {
                    slot.wait("PodInitializing", None);
                }
            }
            return;
        }
        for i in inits..self.slots.len() {
            if self.slots[i].due(now) {
                self.start(i);
            }
        }
    }

    fn start(&mut self, i: usize) {
        self.runs += 1;
        let run = self.runs;
        let launch = match self.launch(i) {
            Ok(launch) => launch,
            Err(error) => return self.start_failed(i, error),
        };
        let name = self.slots[i].spec.name.clone();
        let process = match container::start(&launch, &name, run, self.exits_tx.clone()) {
            Ok(process) => process,
            Err(error) => return self.start_failed(i, error),
        };
        let pod = self.pod.clone();
        let slot = &mut self.slots[i];
        if slot.ever_started {
            slot.restart_count += 1;
        }
        slot.ever_started = true;
        slot.next_start = None;
        slot.last_event = None;
        slot.container_id = Some(format!("sessionizer://{}", process.pid));
        slot.image_id = format!("local://{}", launch.program.display());
        let image = slot.spec.image.clone().unwrap_or_default();
        self.agent.events.normal(
            &pod,
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
        self.agent
            .events
            .normal(&pod, "Created", format!("Created container: {name}"));
        self.agent
            .events
            .normal(&pod, "Started", format!("Started container {name}"));
        tracing::info!(container = name, pid = process.pid, run, program = %launch.program.display(), "container started");

        let spec = slot.spec.clone();
        let has_startup = spec.startup_probe.is_some() && !slot.init;
        let has_readiness = spec.readiness_probe.is_some() && !slot.init;
        let gate = Arc::new(AtomicBool::new(!has_startup));
        let context = Arc::new(ExecContext { launch });
        let mut handles = Vec::new();
        if !slot.init {
            let probes = [
                (
                    ProbeKind::Startup,
                    spec.startup_probe.as_ref(),
                    Arc::new(AtomicBool::new(true)),
                ),
                (
                    ProbeKind::Liveness,
                    spec.liveness_probe.as_ref(),
                    gate.clone(),
                ),
                (
                    ProbeKind::Readiness,
                    spec.readiness_probe.as_ref(),
                    gate.clone(),
                ),
            ];
            for (kind, probe, probe_gate) in probes {
                let Some(probe) = probe else { continue };
                let probe_spec = probes::spec(kind, probe, &spec, &self.ip);
                let context = context.clone();
                let exec = move |argv: Vec<String>, timeout: Duration| {
                    container::exec(context.clone(), argv, timeout)
                };
                handles.push(tokio::spawn(probes::run(
                    probe_spec,
                    name.clone(),
                    run,
                    probe_gate,
                    exec,
                    self.verdicts_tx.clone(),
                )));
            }
        }
        slot.state = SlotState::Running(Running {
            run,
            process,
            started_at: Time(Timestamp::now()),
            since: Instant::now(),
            ready: !has_startup && !has_readiness,
            started: !has_startup,
            has_readiness,
            gate,
            probes: handles,
            killing: false,
        });
    }

    /// Why a container could not be started, in the kubelet's words.
    fn start_failed(&mut self, i: usize, error: Error) {
        let pod = self.pod.clone();
        let slot = &mut self.slots[i];
        let message = error.to_string();
        let first = slot.last_event.as_deref() != Some(message.as_str());
        slot.last_event = Some(message.clone());
        match error {
            Error::UnknownImage { ref image, .. } => {
                tracing::warn!(container = slot.spec.name, image, "unknown image");
                slot.image_error = true;
                slot.wait("ErrImagePull", Some(message.clone()));
                if first {
                    self.agent.events.warning(
                        &pod,
                        "Failed",
                        format!("Failed to pull image \"{image}\": {message}"),
                    );
                    self.agent
                        .events
                        .warning(&pod, "Failed", "Error: ErrImagePull");
                }
            }
            Error::ContainerConfig(_) => {
                slot.wait("CreateContainerConfigError", Some(message.clone()));
                slot.next_start = Some(Instant::now() + CONFIG_RETRY);
                if first {
                    tracing::warn!(
                        container = slot.spec.name,
                        error = message,
                        "container cannot be configured"
                    );
                    self.agent
                        .events
                        .warning(&pod, "Failed", format!("Error: {message}"));
                }
            }
            _ => {
                tracing::warn!(
                    container = slot.spec.name,
                    error = message,
                    "container failed to start"
                );
                if first {
                    self.agent
                        .events
                        .warning(&pod, "Failed", format!("Error: {message}"));
                }
                let now = Time(Timestamp::now());
                let terminated = ContainerStateTerminated {
                    exit_code: 128,
                    reason: Some("StartError".into()),
                    message: Some(message),
                    started_at: Some(now.clone()),
                    finished_at: Some(now),
                    ..ContainerStateTerminated::default()
                };
                if slot.ever_started {
                    slot.restart_count += 1;
                }
                slot.ever_started = true;
                self.after_run(i, terminated, Duration::ZERO);
            }
        }
    }

    /// Builds the launch of container `i`: program, environment, mounts, log.
    fn launch(&self, i: usize) -> crate::Result<Launch> {
        let slot = &self.slots[i];
        let spec = &slot.spec;
        let pod_env = env::resolve(&self.pod, spec, self.net(), &self.agent.sources)?;
        let mut full = self.base_env();
        for (k, v) in pod_env.vars() {
            full.set(k.clone(), v.clone());
        }
        let path_env = full.get("PATH").unwrap_or_default().to_owned();
        let (program, args) = container::entrypoint(&self.agent.images, spec, &pod_env, &path_env)?;
        if !program.is_file() {
            return Err(Error::Other(format!(
                "the binary {} for image {:?} does not exist; build it first",
                program.display(),
                spec.image.as_deref().unwrap_or_default()
            )));
        }
        let mut mounts = volumes::container_mounts(spec, &self.sandbox.volume_dirs, &full)?;
        if Sandbox::automount(&self.pod)
            && !volumes::mounts_service_account(spec)
            && let Some(sa_dir) = &self.sandbox.service_account_dir
        {
            mounts.push(Mount {
                source: sa_dir.clone(),
                target: SERVICE_ACCOUNT_MOUNT.into(),
                read_only: true,
                sub_path: false,
            });
            mounts.sort_by_key(|m| m.target.components().count());
        }
        mounts::prepare(&mounts)?;
        let working_dir = match spec.working_dir.as_deref().filter(|w| !w.is_empty()) {
            Some(dir) => {
                let dir = Path::new(dir).to_owned();
                std::fs::create_dir_all(&dir).map_err(Error::io("creating workingDir", &dir))?;
                dir
            }
            None => self.sandbox.dir.clone(),
        };
        Ok(Launch {
            name: format!("{}/{}/{}", self.namespace, self.name, spec.name),
            program,
            args,
            env: full.vars().to_vec(),
            working_dir,
            mounts,
            log: container_log_path(
                &self.agent.config.state_dir,
                &self.namespace,
                &self.name,
                &spec.name,
            ),
        })
    }

    /// What every container gets before the Pod's own variables.
    fn base_env(&self) -> EnvList {
        let mut env = EnvList::default();
        env.set("PATH", self.agent.path_env.clone());
        env.set("HOME", "/root");
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.name.clone());
        env.set("HOSTNAME", hostname);
        for name in &self.agent.config.pass_env {
            if let Ok(value) = std::env::var(name) {
                env.set(name.clone(), value);
            }
        }
        let api = &self.agent.api_server;
        env.set("KUBERNETES_SERVICE_HOST", api.host.clone());
        env.set("KUBERNETES_SERVICE_PORT", api.port.to_string());
        env.set("KUBERNETES_SERVICE_PORT_HTTPS", api.port.to_string());
        env.set(
            "KUBERNETES_PORT",
            format!("tcp://{}:{}", api.host, api.port),
        );
        if let Some(kubeconfig) = &self.sandbox.kubeconfig {
            env.set("KUBECONFIG", kubeconfig.display().to_string());
        }
        env
    }

    fn on_exit(&mut self, exit: Exit) {
        let Some(i) = self.slots.iter().position(|s| {
            s.spec.name == exit.container
                && matches!(&s.state, SlotState::Running(r) if r.run == exit.run)
        }) else {
            return;
        };
        let slot = &mut self.slots[i];
        let SlotState::Running(running) = std::mem::replace(
            &mut slot.state,
            SlotState::Waiting {
                reason: String::new(),
                message: None,
            },
        ) else {
            return;
        };
        for probe in &running.probes {
            probe.abort();
        }
        let reason = if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        tracing::info!(container = exit.container, run = exit.run, exit_code = exit.exit_code, signal = ?exit.signal, "container exited");
        let terminated = ContainerStateTerminated {
            exit_code: exit.exit_code,
            signal: exit.signal,
            reason: Some(reason.to_owned()),
            started_at: Some(running.started_at),
            finished_at: Some(exit.finished_at),
            container_id: slot.container_id.clone(),
            message: None,
        };
        self.after_run(i, terminated, running.since.elapsed());
    }

    /// Applies the restart policy to container `i`, which just ended with `terminated`.
    fn after_run(&mut self, i: usize, terminated: ContainerStateTerminated, ran_for: Duration) {
        let policy = self.restart_policy();
        let pod = self.pod.clone();
        let slot = &mut self.slots[i];
        let failed = terminated.exit_code != 0;
        let restart = !self.stopping
            && (slot.restart_now
                || if slot.init {
                    failed && policy != "Never"
                } else {
                    match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => failed,
                        _ => true,
                    }
                });
        if !restart {
            slot.state = SlotState::Terminated(terminated);
            return;
        }
        if ran_for >= BACKOFF_RESET_AFTER {
            slot.backoff = BACKOFF_INITIAL;
        }
        let delay = if slot.restart_now {
            Duration::ZERO
        } else {
            slot.backoff
        };
        if !slot.restart_now {
            slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
        }
        slot.restart_now = false;
        slot.last_terminated = Some(terminated);
        slot.next_start = Some(Instant::now() + delay);
        let message = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            delay.as_secs(),
            slot.spec.name,
            self.name,
            self.namespace,
            self.uid
        );
        slot.wait("CrashLoopBackOff", Some(message));
        if !delay.is_zero() {
            let note = format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                slot.spec.name, self.name, self.namespace, self.uid
            );
            self.agent.events.warning(&pod, "BackOff", note);
        }
    }

    fn on_verdict(&mut self, verdict: ProbeVerdict) {
        let pod = self.pod.clone();
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.spec.name == verdict.container)
        else {
            return;
        };
        let name = slot.spec.name.clone();
        let SlotState::Running(running) = &mut slot.state else {
            return;
        };
        if running.run != verdict.run || running.killing {
            return;
        }
        let events = &self.agent.events;
        if !verdict.ok {
            events.warning(
                &pod,
                "Unhealthy",
                format!("{} probe failed: {}", verdict.kind.label(), verdict.message),
            );
        }
        tracing::info!(
            container = name,
            probe = verdict.kind.label(),
            ok = verdict.ok,
            message = verdict.message,
            "probe verdict changed"
        );
        match (verdict.kind, verdict.ok) {
            (ProbeKind::Startup, true) => {
                running.started = true;
                running.gate.store(true, Ordering::Release);
                if !running.has_readiness {
                    running.ready = true;
                }
            }
            (ProbeKind::Readiness, ok) => running.ready = ok && running.started,
            (ProbeKind::Liveness, true) => {}
            (kind @ (ProbeKind::Startup | ProbeKind::Liveness), false) => {
                running.killing = true;
                running.ready = false;
                let what = if kind == ProbeKind::Startup {
                    "startup"
                } else {
                    "liveness"
                };
                events.normal(
                    &pod,
                    "Killing",
                    format!("Container {name} failed {what} probe, will be restarted"),
                );
                let probe = match kind {
                    ProbeKind::Startup => slot.spec.startup_probe.as_ref(),
                    _ => slot.spec.liveness_probe.as_ref(),
                };
                let grace =
                    grace_period(&pod, probe.and_then(|p| p.termination_grace_period_seconds));
                kill(&running.process, grace);
            }
        }
    }

    /// Graceful deletion: SIGTERM, wait up to the grace period (which may be shortened while we
    /// wait), SIGKILL, final status, then delete with grace period 0.
    async fn terminate(
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

    fn any_running(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Running(_)))
    }

    fn signal_all(&self, signal: Signal) {
        for slot in &self.slots {
            if let SlotState::Running(running) = &slot.state {
                running.process.signal(signal);
            }
        }
    }

    /// Stops every process without touching the API (agent shutdown, Pod gone).
    async fn stop_all(&mut self, grace: Duration) {
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
        let patch = json!({ "metadata": { "uid": self.uid }, "status": desired });
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

/// The grace period for a container kill: the probe's override, else the Pod's.
fn grace_period(pod: &Pod, probe_override: Option<i64>) -> Duration {
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
fn grace_seconds(pod: &Pod) -> Duration {
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
fn kill(process: &Process, grace: Duration) {
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
