//! The Pod status the kubelet would report, computed from container statuses: the phase (the
//! kubelet's `getPhase` rules, including restart policies and terminal pods) and the conditions
//! (PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled), keeping each
//! condition's `lastTransitionTime` while its status does not change.
//!
//! Pure functions only; the pod runner decides when to write.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Pod phases.
pub const PENDING: &str = "Pending";
/// Pod phases.
pub const RUNNING: &str = "Running";
/// Pod phases.
pub const SUCCEEDED: &str = "Succeeded";
/// Pod phases.
pub const FAILED: &str = "Failed";

/// A container state that is waiting for `reason`.
pub fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// A running container state.
pub fn running(started_at: Time) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(started_at),
        }),
        ..ContainerState::default()
    }
}

/// A terminated container state.
pub fn terminated(terminated: ContainerStateTerminated) -> ContainerState {
    ContainerState {
        terminated: Some(terminated),
        ..ContainerState::default()
    }
}

/// What the phase and conditions are computed from.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// spec.restartPolicy (`Always` when unset).
    pub restart_policy: &'a str,
    /// The init containers' statuses, in spec order.
    pub init_containers: &'a [ContainerStatus],
    /// The containers' statuses, in spec order.
    pub containers: &'a [ContainerStatus],
    /// Whether the Pod is finished for good (deleted and every container stopped).
    pub terminal: bool,
    /// The phase last reported (a terminal phase never changes again).
    pub previous_phase: Option<&'a str>,
    /// The conditions last reported by us, for `lastTransitionTime`.
    pub previous_conditions: &'a [PodCondition],
    /// Condition types named by spec.readinessGates with their current status from the API.
    pub readiness_gates: &'a [(String, bool)],
    /// The Pod's address.
    pub pod_ip: &'a str,
    /// The node's address.
    pub host_ip: &'a str,
    /// When the agent first saw the Pod.
    pub start_time: Time,
    /// metadata.generation.
    pub generation: Option<i64>,
    /// The current time.
    pub now: Time,
}

/// The kubelet's phase rules.
pub fn phase(input: &StatusInput<'_>) -> &'static str {
    if let Some(previous) = input.previous_phase {
        if previous == SUCCEEDED {
            return SUCCEEDED;
        }
        if previous == FAILED {
            return FAILED;
        }
    }
    let mut pending_init = 0;
    let mut failed_init = 0;
    for status in input.init_containers {
        let state = status.state.as_ref();
        if state.and_then(|s| s.terminated.as_ref()).is_some() {
            if exit_code(state) != Some(0) {
                failed_init += 1;
            }
        } else if let Some(last) = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            && state.and_then(|s| s.waiting.as_ref()).is_some()
        {
            if last.exit_code != 0 {
                failed_init += 1;
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for status in input.containers {
        let Some(state) = status.state.as_ref() else {
            unknown += 1;
            continue;
        };
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            let restarted = status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some();
            if restarted {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && input.restart_policy == "Never" {
        return FAILED;
    }
    if input.terminal && running == 0 && unknown == 0 {
        return if stopped > 0 && stopped == succeeded && pending_init == 0 {
            SUCCEEDED
        } else {
            FAILED
        };
    }
    if pending_init > 0 || waiting > 0 {
        return PENDING;
    }
    if running > 0 && unknown == 0 {
        return RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if input.restart_policy == "Always" {
            return RUNNING;
        }
        if stopped == succeeded {
            return SUCCEEDED;
        }
        if input.restart_policy == "Never" {
            return FAILED;
        }
        return RUNNING;
    }
    PENDING
}

fn exit_code(state: Option<&ContainerState>) -> Option<i32> {
    state
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn condition(
    input: &StatusInput<'_>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = input
        .previous_conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status);
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(
            previous
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| input.now.clone()),
        ),
        observed_generation: input.generation,
        last_probe_time: None,
    }
}

/// The conditions, in the kubelet's order.
pub fn conditions(input: &StatusInput<'_>, phase: &str) -> Vec<PodCondition> {
    let incomplete: Vec<&str> = input
        .init_containers
        .iter()
        .filter(|s| exit_code(s.state.as_ref()) != Some(0))
        .map(|s| s.name.as_str())
        .collect();
    let initialized = incomplete.is_empty() || phase == SUCCEEDED;
    let unready: Vec<&str> = input
        .containers
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let completed = phase == SUCCEEDED || phase == FAILED;
    let containers_ready = unready.is_empty() && !completed;
    let gates_unready: Vec<&str> = input
        .readiness_gates
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name.as_str())
        .collect();
    let ready = containers_ready && gates_unready.is_empty();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = if completed {
        (Some("PodCompleted"), None)
    } else if !containers_ready {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    } else if !ready {
        (
            Some("ReadinessGatesNotReady"),
            Some(format!(
                "corresponding condition of pod readiness gate {} does not exist or is False",
                list(&gates_unready)
            )),
        )
    } else {
        (None, None)
    };
    let (containers_reason, containers_message) = if completed {
        (Some("PodCompleted"), None)
    } else if containers_ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    vec![
        condition(
            input,
            "PodReadyToStartContainers",
            !input.terminal,
            None,
            None,
        ),
        if initialized {
            condition(input, "Initialized", true, None, None)
        } else {
            condition(
                input,
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: {}",
                    list(&incomplete)
                )),
            )
        },
        condition(input, "Ready", ready, ready_reason, ready_message),
        condition(
            input,
            "ContainersReady",
            containers_ready,
            containers_reason,
            containers_message,
        ),
        condition(input, "PodScheduled", true, None, None),
    ]
}

/// The whole status the agent owns.
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let phase = phase(input);
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions(input, phase)),
        host_ip: Some(input.host_ip.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.to_owned(),
        }]),
        pod_ip: Some(input.pod_ip.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: input.pod_ip.to_owned(),
        }]),
        start_time: Some(input.start_time.clone()),
        init_container_statuses: (!input.init_containers.is_empty())
            .then(|| input.init_containers.to_vec()),
        container_statuses: Some(input.containers.to_vec()),
        observed_generation: input.generation,
        ..PodStatus::default()
    }
}

/// The strategic-merge patch that sets `status`. Conditions merge by type, so a condition's
/// `reason` and `message` are sent as `null` when unset; otherwise the old text would outlive a
/// flip to True. The uid makes the write fail if the Pod was replaced by a namesake.
pub fn patch_body(uid: &str, status: &PodStatus) -> serde_json::Value {
    let mut status = serde_json::to_value(status).unwrap_or_default();
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions.iter_mut().filter_map(|c| c.as_object_mut()) {
            for key in ["reason", "message"] {
                condition.entry(key).or_insert(serde_json::Value::Null);
            }
        }
    }
    serde_json::json!({ "metadata": { "uid": uid }, "status": status })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn status(
        name: &str,
        state: ContainerState,
        last: Option<ContainerState>,
        ready: bool,
    ) -> ContainerStatus {
        ContainerStatus {
            name: name.to_owned(),
            image: "img".to_owned(),
            image_id: String::new(),
            state: Some(state),
            last_state: last,
            ready,
            ..ContainerStatus::default()
        }
    }

    fn exited(code: i32) -> ContainerState {
        terminated(ContainerStateTerminated {
            exit_code: code,
            ..ContainerStateTerminated::default()
        })
    }

    fn input<'a>(policy: &'a str, containers: &'a [ContainerStatus]) -> StatusInput<'a> {
        StatusInput {
            restart_policy: policy,
            init_containers: &[],
            containers,
            terminal: false,
            previous_phase: None,
            previous_conditions: &[],
            readiness_gates: &[],
            pod_ip: "127.1.0.2",
            host_ip: "127.0.0.1",
            start_time: at(100),
            generation: Some(1),
            now: at(200),
        }
    }

    #[test]
    fn phase_follows_the_kubelet_rules() {
        let pull = [status("c", waiting("ErrImagePull", None), None, false)];
        assert_eq!(phase(&input("Always", &pull)), PENDING);
        let run = [status("c", running(at(1)), None, true)];
        assert_eq!(phase(&input("Always", &run)), RUNNING);
        let crash = [status(
            "c",
            waiting("CrashLoopBackOff", None),
            Some(exited(1)),
            false,
        )];
        assert_eq!(
            phase(&input("Always", &crash)),
            RUNNING,
            "crash-looping pods are Running"
        );
        let done = [status("c", exited(0), None, false)];
        assert_eq!(phase(&input("Never", &done)), SUCCEEDED);
        assert_eq!(phase(&input("OnFailure", &done)), SUCCEEDED);
        let failed = [status("c", exited(2), None, false)];
        assert_eq!(phase(&input("Never", &failed)), FAILED);
        assert_eq!(phase(&input("OnFailure", &failed)), RUNNING);
        let mut deleted = input("Always", &done);
        deleted.terminal = true;
        assert_eq!(phase(&deleted), SUCCEEDED);
        let killed = [status("c", exited(137), None, false)];
        let mut deleted = input("Always", &killed);
        deleted.terminal = true;
        assert_eq!(phase(&deleted), FAILED);
        let mut sticky = input("Always", &run);
        sticky.previous_phase = Some(FAILED);
        assert_eq!(phase(&sticky), FAILED, "terminal phases never change");
    }

    #[test]
    fn init_containers_gate_the_phase() {
        let main = [status("c", waiting("PodInitializing", None), None, false)];
        let init_running = [status("init", running(at(1)), None, false)];
        let mut pending = input("Always", &main);
        pending.init_containers = &init_running;
        assert_eq!(phase(&pending), PENDING);
        let conditions = conditions(&pending, PENDING);
        let initialized = conditions
            .iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(initialized.status, "False");
        assert_eq!(
            initialized.message.as_deref(),
            Some("containers with incomplete status: [init]")
        );
        let init_failed = [status("init", exited(1), None, false)];
        let mut failed = input("Never", &main);
        failed.init_containers = &init_failed;
        assert_eq!(phase(&failed), FAILED);
    }

    #[test]
    fn conditions_keep_their_transition_time_until_they_flip() {
        let unready = [
            status("a", running(at(1)), None, true),
            status("b", running(at(1)), None, false),
        ];
        let first = input("Always", &unready);
        let before = conditions(&first, RUNNING);
        let ready = before.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );

        let all_ready = [
            status("a", running(at(1)), None, true),
            status("b", running(at(1)), None, true),
        ];
        let mut later = input("Always", &all_ready);
        later.previous_conditions = &before;
        later.now = at(300);
        let after = conditions(&later, RUNNING);
        let ready = after.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, Some(at(300)));
        let scheduled = after.iter().find(|c| c.type_ == "PodScheduled").unwrap();
        assert_eq!(
            scheduled.last_transition_time,
            Some(at(200)),
            "unchanged condition keeps its time"
        );
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let ready = [status("a", running(at(1)), None, true)];
        let gates = [("example.com/gate".to_owned(), false)];
        let mut gated = input("Always", &ready);
        gated.readiness_gates = &gates;
        let conditions = conditions(&gated, RUNNING);
        let by_type = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(by_type("ContainersReady"), "True");
        assert_eq!(by_type("Ready"), "False");
    }

    #[test]
    fn patch_clears_stale_condition_text() {
        let run = [status("c", running(at(1)), None, true)];
        let body = patch_body("u-1", &pod_status(&input("Always", &run)));
        assert_eq!(body["metadata"]["uid"], "u-1");
        let ready = body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert!(ready["message"].is_null() && ready.get("message").is_some());
        assert!(ready.get("reason").is_some());
    }

    #[test]
    fn status_reports_addresses() {
        let run = [status("c", running(at(1)), None, true)];
        let status = pod_status(&input("Always", &run));
        assert_eq!(status.pod_ip.as_deref(), Some("127.1.0.2"));
        assert_eq!(status.pod_ips.unwrap()[0].ip, "127.1.0.2");
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(status.phase.as_deref(), Some(RUNNING));
    }
}
