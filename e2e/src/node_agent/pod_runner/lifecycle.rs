//! Starting containers and reacting to what they do: building the launch (program, env,
//! mounts), starting probes, applying the restart policy with back-off when a run ends, and
//! acting on probe verdicts (readiness, liveness and startup failures kill the container).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::slot::Running;
use super::stop::{grace_period, kill};
use super::{BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET_AFTER, CONFIG_RETRY, Runner, SlotState};
use crate::Error;
use crate::node_agent::container::{self, ExecContext, Exit, Launch};
use crate::node_agent::container_log_path;
use crate::node_agent::env::{self, EnvList};
use crate::node_agent::mounts;
use crate::node_agent::probes::{self, ProbeKind, ProbeVerdict};
use crate::node_agent::sandbox::Sandbox;
use crate::node_agent::volumes::{self, Mount, SERVICE_ACCOUNT_MOUNT};

impl Runner {
    /// Starts whatever is due: init containers one at a time, then all containers.
    pub(super) fn start_due(&mut self) {
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

    pub(super) fn on_exit(&mut self, exit: Exit) {
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

    pub(super) fn on_verdict(&mut self, verdict: ProbeVerdict) {
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
}
