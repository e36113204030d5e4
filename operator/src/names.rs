//! Every name, label key, annotation key and fixed value the operator puts on Kubernetes objects,
//! in one place, so the builders, the watchers' label selectors, the Helm chart and the e2e tests
//! agree on them.
//!
//! Only constants and pure name derivations live here: nothing in this module reads the cluster or
//! decides anything. What the worker reads (config file name, mount dir, port, its env var names)
//! is *not* repeated here: that contract lives in `sessionizer_worker::config`.

/// The one server-side-apply field manager of everything the operator writes (children and the
/// SessionJob status).
pub const FIELD_MANAGER: &str = "sessionizer-operator";

/// The controller name in Events (`reportingController`) and in logs.
pub const CONTROLLER_NAME: &str = "sessionizer-operator";

/// Label keys and the operator's fixed label values.
pub mod labels {
    /// `app.kubernetes.io/name`: what runs ([`WORKER_APP`]).
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/instance`: the SessionJob's name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/managed-by`: always [`MANAGED_BY_OPERATOR`].
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `sessionizer.dev/job`: the SessionJob's name, for `kubectl get -l sessionizer.dev/job=..`.
    pub const JOB: &str = "sessionizer.dev/job";
    /// Value of [`NAME`] on every worker object.
    pub const WORKER_APP: &str = "sessionizer-worker";
    /// Value of [`MANAGED_BY`] on every object the operator creates.
    pub const MANAGED_BY_OPERATOR: &str = "sessionizer-operator";
    /// Label the StatefulSet controller puts on each Pod with its ordinal (Kubernetes >= 1.28).
    pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

    /// The label selector the operator's watchers of children use.
    pub fn managed_by_selector() -> String {
        format!("{MANAGED_BY}={MANAGED_BY_OPERATOR}")
    }
}

/// Annotation keys.
pub mod annotations {
    /// On the worker pod template: sha256 of the worker configuration, so a configuration change
    /// rolls the Pods and an unchanged one restarts nothing.
    pub const CONFIG_HASH: &str = "sessionizer.dev/config-hash";
    /// On a SessionJobCutover: any value asks the operator to abort it (roll back while the
    /// sink has not flipped). The spec is immutable, so requests go through annotations.
    pub const ABORT: &str = "sessionizer.dev/abort";
    /// On a SessionJobCutover stopped for a human (stage `Failed`): a new value (e.g. a time)
    /// approves retrying the stage that failed.
    pub const APPROVE: &str = "sessionizer.dev/approve";
}

/// Name of the SessionJobCutover the operator creates for an automatic side-run cutover:
/// `<new job>-cutover`.
pub fn automatic_cutover(job: &str) -> String {
    format!("{job}-cutover")
}

/// Finalizers the operator puts on its objects.
pub mod finalizers {
    /// On every SessionJob: its checkpoints live outside Kubernetes, so the operator gets a last
    /// word before the job goes (deleting them when `spec.checkpoints.deleteOnJobDeletion`).
    pub const CHECKPOINTS: &str = "sessionizer.dev/checkpoints";
}

/// Names and values inside the worker Pod.
pub mod pod {
    /// The worker container.
    pub const CONTAINER: &str = "worker";
    /// Name of the worker's HTTP port (container port and Service port).
    pub const HTTP_PORT_NAME: &str = "http";
    /// Path of the readiness probe.
    pub const READINESS_PATH: &str = "/readyz";
    /// Path of the liveness probe.
    pub const LIVENESS_PATH: &str = "/healthz";
    /// Volume holding the worker configuration (the job's ConfigMap).
    pub const CONFIG_VOLUME: &str = "config";
    /// Writable scratch volume (the root filesystem is read-only).
    pub const TMP_VOLUME: &str = "tmp";
    /// Where [`TMP_VOLUME`] is mounted.
    pub const TMP_DIR: &str = "/tmp";
    /// The writable emptyDir holding the worker's local state (the embedded history store): the
    /// root filesystem is read-only, and each Pod needs a directory of its own.
    pub const DATA_VOLUME: &str = "data";
    /// Where [`DATA_VOLUME`] is mounted: the worker's default `--data-dir`.
    pub const DATA_DIR: &str = sessionizer_worker::cli::DEFAULT_DATA_DIR;
    /// User and group id the worker runs as by default (the distroless `nonroot` user).
    pub const WORKER_USER_ID: i64 = 65532;
    /// Time the worker gets between SIGTERM and SIGKILL to write its final checkpoint.
    pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 60;
    /// Environment variable: the Pod's namespace (downward API `metadata.namespace`).
    // Not (yet) in `sessionizer_worker::config`; move it there when the worker reads it.
    pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
}

/// Where credentials from Secrets appear in the worker Pod. The worker finds them by these
/// names; the Secrets' contents never enter the ConfigMap, the Pod spec or the operator's logs.
// TODO(worker contract): these belong in `sessionizer_worker::config` once the worker reads
// them; until then this module is their one definition.
pub mod credentials {
    /// Environment variable: Kafka SASL user name (`secretKeyRef`).
    pub const ENV_KAFKA_SASL_USERNAME: &str = "SESSIONIZER_KAFKA_SASL_USERNAME";
    /// Environment variable: Kafka SASL password (`secretKeyRef`).
    pub const ENV_KAFKA_SASL_PASSWORD: &str = "SESSIONIZER_KAFKA_SASL_PASSWORD";
    /// Environment variable: Aerospike user name (`secretKeyRef`).
    pub const ENV_AEROSPIKE_USERNAME: &str = "SESSIONIZER_AEROSPIKE_USERNAME";
    /// Environment variable: Aerospike password (`secretKeyRef`).
    pub const ENV_AEROSPIKE_PASSWORD: &str = "SESSIONIZER_AEROSPIKE_PASSWORD";

    /// Directory below which every Secret volume is mounted (read-only).
    pub const SECRETS_DIR: &str = "/var/run/secrets/sessionizer";
    /// Kafka CA bundle: `SECRETS_DIR/kafka-ca/ca.crt`.
    pub const KAFKA_CA: SecretMount = SecretMount {
        volume: "kafka-ca",
        dir: "/var/run/secrets/sessionizer/kafka-ca",
    };
    /// Kafka client certificate: `SECRETS_DIR/kafka-client/tls.crt` and `tls.key`.
    pub const KAFKA_CLIENT_CERT: SecretMount = SecretMount {
        volume: "kafka-client-cert",
        dir: "/var/run/secrets/sessionizer/kafka-client",
    };
    /// Aerospike CA bundle: `SECRETS_DIR/aerospike-ca/ca.crt`.
    pub const AEROSPIKE_CA: SecretMount = SecretMount {
        volume: "aerospike-ca",
        dir: "/var/run/secrets/sessionizer/aerospike-ca",
    };
    /// Aerospike client certificate: `SECRETS_DIR/aerospike-client/tls.crt` and `tls.key`.
    pub const AEROSPIKE_CLIENT_CERT: SecretMount = SecretMount {
        volume: "aerospike-client-cert",
        dir: "/var/run/secrets/sessionizer/aerospike-client",
    };
    /// File name of a CA bundle inside its mount directory, whatever the Secret key is called.
    pub const CA_FILE: &str = "ca.crt";
    /// Client certificate file (key of a `kubernetes.io/tls` Secret).
    pub const TLS_CERT_FILE: &str = "tls.crt";
    /// Client private key file (key of a `kubernetes.io/tls` Secret).
    pub const TLS_KEY_FILE: &str = "tls.key";

    /// A Secret volume of the worker Pod: its volume name and mount directory.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SecretMount {
        /// Name of the Pod volume.
        pub volume: &'static str,
        /// Directory it is mounted at.
        pub dir: &'static str,
    }
}

/// Longest SessionJob name whose children get valid names: the StatefulSet (named like the job)
/// labels its Pods with `controller-revision-hash: <name>-<10-character hash>`, which must fit a
/// 63-character label value.
pub const MAX_JOB_NAME_LEN: usize = 63 - 11;

/// Name of the worker StatefulSet: the job's name (Pods are `<job>-<ordinal>`).
pub fn statefulset(job: &str) -> String {
    job.to_owned()
}

/// Name of the headless Service of the workers (the StatefulSet's `serviceName`): the job's name.
pub fn service(job: &str) -> String {
    job.to_owned()
}

/// Name of the workers' PodDisruptionBudget: the job's name.
pub fn pdb(job: &str) -> String {
    job.to_owned()
}

/// Name of the workers' ServiceAccount: `<job>-worker`.
pub fn service_account(job: &str) -> String {
    format!("{job}-worker")
}

/// Name of the ConfigMap holding the worker configuration: `<job>-config`.
pub fn config_map(job: &str) -> String {
    format!("{job}-config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_named_after_the_job() {
        assert_eq!(statefulset("pageviews"), "pageviews");
        assert_eq!(service("pageviews"), "pageviews");
        assert_eq!(pdb("pageviews"), "pageviews");
        assert_eq!(service_account("pageviews"), "pageviews-worker");
        assert_eq!(config_map("pageviews"), "pageviews-config");
    }

    #[test]
    fn longest_job_name_leaves_room_for_the_revision_hash() {
        let name = "a".repeat(MAX_JOB_NAME_LEN);
        // `<statefulset>-<10 hex-ish characters>` is the controller-revision-hash label value.
        assert_eq!(statefulset(&name).len() + 1 + 10, 63);
    }

    #[test]
    fn secret_mounts_live_below_the_secrets_dir() {
        for mount in [
            credentials::KAFKA_CA,
            credentials::KAFKA_CLIENT_CERT,
            credentials::AEROSPIKE_CA,
            credentials::AEROSPIKE_CLIENT_CERT,
        ] {
            assert!(mount.dir.starts_with(credentials::SECRETS_DIR), "{mount:?}");
        }
    }
}
