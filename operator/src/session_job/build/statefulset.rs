//! The workers' StatefulSet: one Pod per replica, each knowing its ordinal, the replica count and
//! the configuration hash, hardened by default (non-root, read-only root filesystem, no
//! capabilities), with the user's pod template overrides merged in.
//!
//! Everything that ends up in the pod template is derived from the job alone, so an unchanged job
//! gives an unchanged template and server-side apply restarts nothing. Never put anything here
//! that varies between reconciles (time, random values, map iteration order of a `HashMap`).

use std::collections::BTreeMap;

use k8s_openapi::DeepMerge;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use sessionizer_worker::config::{
    CONFIG_FILE_NAME, CONFIG_MOUNT_DIR, ENV_ORDINAL, ENV_POD_IP, ENV_POD_NAME, ENV_REPLICAS,
    HTTP_PORT,
};

use super::credentials::credentials;
use super::{ValidatedJob, common_labels, metadata, selector_labels};
use crate::names::{self, annotations, labels, pod};

/// `<job>`: `spec.parallelism` Pods (zero while the operator holds the job stopped) started in
/// parallel, the pod template annotated with `config_hash` (see [`super::pod_config_hash`]).
pub fn statefulset(job: &ValidatedJob, config_hash: &str) -> StatefulSet {
    StatefulSet {
        metadata: metadata(job, names::statefulset(&job.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(if job.held { 0 } else { job.spec.parallelism }),
            // Workers do not depend on each other: start and stop them all at once.
            pod_management_policy: Some("Parallel".to_owned()),
            service_name: Some(names::service(&job.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(job)),
                ..LabelSelector::default()
            },
            template: pod_template(job, config_hash),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn pod_template(job: &ValidatedJob, config_hash: &str) -> PodTemplateSpec {
    let overrides = job.spec.pod_template.clone().unwrap_or_default();
    // The user's labels and annotations first, so the operator's own keys always win.
    let mut pod_labels = overrides.labels;
    pod_labels.extend(common_labels(job));
    let mut pod_annotations = overrides.annotations;
    pod_annotations.insert(annotations::CONFIG_HASH.to_owned(), config_hash.to_owned());

    let credentials = credentials(&job.spec);
    let mut mounts = vec![
        VolumeMount {
            name: pod::CONFIG_VOLUME.to_owned(),
            mount_path: CONFIG_MOUNT_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: pod::TMP_VOLUME.to_owned(),
            mount_path: pod::TMP_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: pod::DATA_VOLUME.to_owned(),
            mount_path: pod::DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
    ];
    mounts.extend(credentials.mounts);
    let mut volumes = vec![
        Volume {
            name: pod::CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&job.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: pod::TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: pod::DATA_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    volumes.extend(credentials.volumes);
    let mut env = identity_env(job);
    env.extend(credentials.env);

    let mut container_security = default_container_security_context();
    if let Some(user) = overrides.container_security_context {
        container_security.merge_from(user);
    }
    let mut pod_security = default_pod_security_context();
    if let Some(user) = overrides.security_context {
        pod_security.merge_from(user);
    }

    let container = Container {
        name: pod::CONTAINER.to_owned(),
        image: Some(job.spec.image.clone()),
        args: Some(vec![
            "--config".to_owned(),
            format!("{CONFIG_MOUNT_DIR}/{CONFIG_FILE_NAME}"),
        ]),
        env: Some(env),
        env_from: (!credentials.env_from.is_empty()).then_some(credentials.env_from),
        ports: Some(vec![ContainerPort {
            name: Some(pod::HTTP_PORT_NAME.to_owned()),
            container_port: i32::from(HTTP_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe(pod::READINESS_PATH, 5, 3)),
        // Liveness only says "the process answers": generous, so a long restore is not killed.
        liveness_probe: Some(http_probe(pod::LIVENESS_PATH, 10, 6)),
        resources: job.spec.resources.clone(),
        security_context: Some(container_security),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::service_account(&job.name)),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(pod::TERMINATION_GRACE_PERIOD_SECONDS),
            security_context: Some(pod_security),
            node_selector: non_empty_map(overrides.node_selector),
            tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// Who the worker is: its Pod (downward API), its ordinal and the replica count.
fn identity_env(job: &ValidatedJob) -> Vec<EnvVar> {
    vec![
        field_env(ENV_POD_IP, "status.podIP"),
        field_env(ENV_POD_NAME, "metadata.name"),
        field_env(pod::ENV_POD_NAMESPACE, "metadata.namespace"),
        field_env(
            ENV_ORDINAL,
            &format!("metadata.labels['{}']", labels::POD_INDEX),
        ),
        EnvVar {
            name: ENV_REPLICAS.to_owned(),
            value: Some(job.spec.parallelism.to_string()),
            value_from: None,
        },
    ]
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                // The API server defaults it to v1; set it so the applied object matches.
                api_version: Some("v1".to_owned()),
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(pod::HTTP_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Non-root as the `nonroot` user, `RuntimeDefault` seccomp profile; the user's pod security
/// context is merged over it field by field.
fn default_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(pod::WORKER_USER_ID),
        run_as_group: Some(pod::WORKER_USER_ID),
        // Secret volumes are group-readable by this group only.
        fs_group: Some(pod::WORKER_USER_ID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// No privilege escalation, every capability dropped, read-only root filesystem (scratch space is
/// the `/tmp` emptyDir); the user's container security context is merged over it.
fn default_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn non_empty_map(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_job::fixtures;

    const HASH: &str = "0123abcd";

    fn pod_spec(sts: &StatefulSet) -> PodSpec {
        sts.spec.clone().unwrap().template.spec.unwrap()
    }

    fn worker(sts: &StatefulSet) -> Container {
        pod_spec(sts).containers.into_iter().next().unwrap()
    }

    fn env<'a>(container: &'a Container, name: &str) -> &'a EnvVar {
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .expect(name)
    }

    fn field_path(var: &EnvVar) -> &str {
        &var.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path
    }

    #[test]
    fn a_held_job_has_no_workers() {
        let mut job = fixtures::valid_full();
        job.held = true;
        let sts = statefulset(&job, "hash");
        assert_eq!(sts.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn replicas_policy_and_service_follow_the_job() {
        let sts = statefulset(&fixtures::valid_full(), HASH);
        assert_eq!(sts.metadata.name.as_deref(), Some("pageviews-v2"));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(4));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("pageviews-v2"));
        let selector = spec.selector.match_labels.unwrap();
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (key, value) in &selector {
            assert_eq!(template_labels.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn pod_template_carries_the_config_hash_and_user_metadata() {
        let sts = statefulset(&fixtures::valid_full(), HASH);
        let meta = sts.spec.unwrap().template.metadata.unwrap();
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["sessionizer.dev/config-hash"], HASH);
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "analytics");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "sessionizer-operator"
        );
    }

    #[test]
    fn user_labels_cannot_replace_the_selector() {
        let mut job = fixtures::valid_minimal();
        job.spec.pod_template = Some(Default::default());
        if let Some(overrides) = job.spec.pod_template.as_mut() {
            overrides
                .labels
                .insert("app.kubernetes.io/instance".into(), "other".into());
        }
        let sts = statefulset(&job, HASH);
        let labels = sts.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "pageviews");
    }

    #[test]
    fn worker_container_runs_the_image_with_the_mounted_config() {
        let sts = statefulset(&fixtures::valid_minimal(), HASH);
        let pod = pod_spec(&sts);
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("pageviews-worker")
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
        assert_eq!(pod.containers.len(), 1);
        let container = worker(&sts);
        assert_eq!(container.name, "worker");
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/sessionizer/worker:0.1.0")
        );
        assert_eq!(
            container.args.unwrap(),
            ["--config", "/etc/sessionizer/worker.yaml"]
        );
        let mounts = container.volume_mounts.unwrap();
        let config = mounts.iter().find(|m| m.name == "config").unwrap();
        assert_eq!(config.mount_path, CONFIG_MOUNT_DIR);
        assert_eq!(config.read_only, Some(true));
        let tmp = mounts.iter().find(|m| m.name == "tmp").unwrap();
        assert_eq!(tmp.mount_path, "/tmp");
        // Each Pod's local state gets a writable directory of its own.
        let data = mounts.iter().find(|m| m.name == "data").unwrap();
        assert_eq!(data.mount_path, "/var/lib/sessionizer");
        let volumes = pod.volumes.unwrap();
        let config_volume = volumes.iter().find(|v| v.name == "config").unwrap();
        assert_eq!(
            config_volume.config_map.as_ref().unwrap().name,
            "pageviews-config"
        );
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "tmp" && v.empty_dir.is_some())
        );
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "data" && v.empty_dir.is_some())
        );
        assert_eq!(container.resources, None);
    }

    #[test]
    fn worker_knows_its_pod_ordinal_and_replicas() {
        let container = worker(&statefulset(&fixtures::valid_full(), HASH));
        assert_eq!(field_path(env(&container, "POD_IP")), "status.podIP");
        assert_eq!(field_path(env(&container, "POD_NAME")), "metadata.name");
        assert_eq!(
            field_path(env(&container, "POD_NAMESPACE")),
            "metadata.namespace"
        );
        assert_eq!(
            field_path(env(&container, "SESSIONIZER_ORDINAL")),
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        assert_eq!(
            env(&container, "SESSIONIZER_REPLICAS").value.as_deref(),
            Some("4")
        );
    }

    #[test]
    fn probes_hit_the_worker_health_endpoints() {
        let container = worker(&statefulset(&fixtures::valid_minimal(), HASH));
        let port = container.ports.as_ref().unwrap();
        assert_eq!(port[0].name.as_deref(), Some("http"));
        assert_eq!(port[0].container_port, 8080);
        let readiness = container.readiness_probe.unwrap().http_get.unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        assert_eq!(readiness.port, IntOrString::String("http".into()));
        let liveness = container.liveness_probe.unwrap().http_get.unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        assert_eq!(liveness.port, IntOrString::String("http".into()));
    }

    #[test]
    fn hardened_by_default() {
        let sts = statefulset(&fixtures::valid_minimal(), HASH);
        let pod = pod_spec(&sts).security_context.unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(pod.run_as_user, Some(65532));
        assert_eq!(
            pod.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let container = worker(&sts).security_context.unwrap();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(container.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(container.privileged, None);
    }

    #[test]
    fn user_security_context_is_merged_over_the_defaults() {
        // The full fixture sets runAsNonRoot and fsGroup: 2000 on the Pod.
        let sts = statefulset(&fixtures::valid_full(), HASH);
        let pod = pod_spec(&sts).security_context.unwrap();
        assert_eq!(pod.fs_group, Some(2000));
        assert_eq!(pod.run_as_user, Some(65532), "default kept");
        assert_eq!(
            pod.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let container = worker(&sts).security_context.unwrap();
        assert_eq!(container.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    }

    #[test]
    fn scheduling_overrides_and_resources_are_applied() {
        let sts = statefulset(&fixtures::valid_full(), HASH);
        let pod = pod_spec(&sts);
        assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
        let tolerations = pod.tolerations.unwrap();
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        let resources = worker(&sts).resources.unwrap();
        assert_eq!(resources.requests.unwrap()["cpu"].0, "500m");
        assert_eq!(resources.limits.unwrap()["memory"].0, "2Gi");
    }

    #[test]
    fn credentials_come_only_from_secrets() {
        let sts = statefulset(&fixtures::valid_full(), HASH);
        let container = worker(&sts);
        for var in container.env.as_ref().unwrap() {
            if var.name.contains("PASSWORD") || var.name.contains("USERNAME") {
                assert_eq!(var.value, None, "{} inlined", var.name);
                assert!(
                    var.value_from
                        .as_ref()
                        .and_then(|f| f.secret_key_ref.as_ref())
                        .is_some()
                );
            }
        }
        assert_eq!(
            container.env_from.unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "checkpoint-store"
        );
        let volumes = pod_spec(&sts).volumes.unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                    == Some("kafka-ca"))
        );
        let mounts = container.volume_mounts.unwrap();
        assert!(mounts.iter().any(|m| m.name == "kafka-ca"
            && m.mount_path == "/var/run/secrets/sessionizer/kafka-ca"
            && m.read_only == Some(true)));
    }
}
