//! One container's record in the pod runner: its state (waiting, running, terminated), restart
//! count, back-off and the status the kubelet would report for it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, ContainerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::BACKOFF_INITIAL;
use crate::node_agent::container::Process;
use crate::node_agent::status;

/// A running container.
pub(super) struct Running {
    pub(super) run: u64,
    pub(super) process: Process,
    pub(super) started_at: Time,
    pub(super) since: Instant,
    pub(super) ready: bool,
    pub(super) started: bool,
    pub(super) has_readiness: bool,
    /// Opens the liveness and readiness probes once the startup probe passed.
    pub(super) gate: Arc<AtomicBool>,
    pub(super) probes: Vec<JoinHandle<()>>,
    pub(super) killing: bool,
}

pub(super) enum SlotState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running(Running),
    Terminated(ContainerStateTerminated),
}

/// One container (or init container) of the Pod.
pub(super) struct Slot {
    pub(super) spec: Container,
    pub(super) init: bool,
    pub(super) state: SlotState,
    pub(super) last_terminated: Option<ContainerStateTerminated>,
    pub(super) restart_count: i32,
    pub(super) ever_started: bool,
    pub(super) backoff: Duration,
    pub(super) next_start: Option<Instant>,
    /// Set for an unknown image: no retry until the spec's image changes.
    pub(super) image_error: bool,
    /// Restart at once when the current run ends (spec changed).
    pub(super) restart_now: bool,
    pub(super) last_event: Option<String>,
    pub(super) container_id: Option<String>,
    pub(super) image_id: String,
}

impl Slot {
    pub(super) fn new(spec: Container, init: bool, previous: Option<&ContainerStatus>) -> Self {
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

    pub(super) fn due(&self, now: Instant) -> bool {
        matches!(self.state, SlotState::Waiting { .. })
            && !self.image_error
            && self.next_start.is_none_or(|t| t <= now)
    }

    pub(super) fn succeeded(&self) -> bool {
        matches!(&self.state, SlotState::Terminated(t) if t.exit_code == 0)
    }

    pub(super) fn wait(&mut self, reason: &str, message: Option<String>) {
        self.state = SlotState::Waiting {
            reason: reason.to_owned(),
            message,
        };
    }

    pub(super) fn status(&self) -> ContainerStatus {
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
