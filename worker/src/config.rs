//! The contract between the operator and the worker: the file the operator writes into each
//! job's ConfigMap and the environment it gives each Pod. Both sides use these types and
//! constants, so they cannot drift apart.
//!
//! The worker never reads the Kubernetes API: everything it needs is here.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sessionizer_crds::session_job::{SessionJobSpec, SinkMode};

/// Key of the worker configuration in the job's ConfigMap.
pub const CONFIG_FILE_NAME: &str = "worker.yaml";
/// Directory the ConfigMap is mounted at in worker Pods.
pub const CONFIG_MOUNT_DIR: &str = "/etc/sessionizer";
/// Port of the worker's HTTP server (`/healthz`, `/readyz`, `/metrics`, `/status`).
pub const HTTP_PORT: u16 = 8080;

/// Environment variable: the Pod's IP (downward API `status.podIP`); the HTTP server binds it.
pub const ENV_POD_IP: &str = "POD_IP";
/// Environment variable: the Pod's name (downward API `metadata.name`).
pub const ENV_POD_NAME: &str = "POD_NAME";
/// Environment variable: the worker's ordinal in its StatefulSet (downward API label
/// `apps.kubernetes.io/pod-index`).
pub const ENV_ORDINAL: &str = "SESSIONIZER_ORDINAL";
/// Environment variable: how many workers the job runs (= `spec.parallelism`).
pub const ENV_REPLICAS: &str = "SESSIONIZER_REPLICAS";
/// Environment variable: path of the configuration file (default
/// `CONFIG_MOUNT_DIR/CONFIG_FILE_NAME`).
pub const ENV_CONFIG: &str = "SESSIONIZER_CONFIG";

/// The worker's whole configuration: which job it belongs to, the job's spec as the operator
/// validated it, and the sink the job writes to now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerConfig {
    /// Name of the SessionJob.
    pub job: String,
    /// Namespace of the SessionJob.
    pub namespace: String,
    /// Where sessions go now: set by the operator from `status.effectiveSink`, never from the
    /// spec, so a cutover can flip it.
    pub effective_sink: SinkMode,
    /// The job's spec.
    pub spec: SessionJobSpec,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid worker configuration.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The underlying error.
        source: serde_yaml::Error,
    },
    /// The configuration could not be serialized.
    #[error("serializing the worker configuration: {0}")]
    Serialize(serde_yaml::Error),
}

impl WorkerConfig {
    /// Reads the configuration from a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: display,
            source,
        })
    }

    /// The YAML the operator puts into the ConfigMap.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(self).map_err(ConfigError::Serialize)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A worker configuration for tests: `pageviews` in `analytics`, writing to production, with
    /// the spec of the minimal fixture.
    pub(crate) fn sample_config() -> WorkerConfig {
        let job: sessionizer_crds::session_job::SessionJob = serde_yaml::from_str(include_str!(
            "../../crds/tests/fixtures/sessionjob-minimal.yaml"
        ))
        .unwrap();
        WorkerConfig {
            job: "pageviews".into(),
            namespace: "analytics".into(),
            effective_sink: SinkMode::Production,
            spec: job.spec,
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let job: sessionizer_crds::session_job::SessionJob = serde_yaml::from_str(include_str!(
            "../../crds/tests/fixtures/sessionjob-full.yaml"
        ))
        .unwrap();
        let config = WorkerConfig {
            job: "pageviews".into(),
            namespace: "analytics".into(),
            effective_sink: SinkMode::DeadLetter,
            spec: job.spec,
        };
        let yaml = config.to_yaml().unwrap();
        let back: WorkerConfig = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn the_examples_become_worker_configurations() {
        for (name, text) in [
            (
                "sessionjob.yaml",
                include_str!("../../examples/sessionjob.yaml"),
            ),
            (
                "sessionjob-aerospike.yaml",
                include_str!("../../examples/sessionjob-aerospike.yaml"),
            ),
        ] {
            // The placeholders the examples document, filled in as the demo does.
            let text = text
                .replace("${KAFKA_BOOTSTRAP}", "127.0.0.1:9092")
                .replace("${SOURCE_TOPIC}", "pageviews")
                .replace("${AEROSPIKE_HOST}", "127.0.0.1:3000");
            let job: sessionizer_crds::session_job::SessionJob =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("examples/{name}: {e}"));
            let config = WorkerConfig {
                job: job.metadata.name.clone().unwrap(),
                namespace: "default".into(),
                effective_sink: job.spec.sink.initial_mode,
                spec: job.spec,
            };
            let back: WorkerConfig = serde_yaml::from_str(&config.to_yaml().unwrap()).unwrap();
            assert_eq!(back, config, "examples/{name}");
        }
    }

    #[test]
    fn loads_a_file_the_operator_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE_NAME);
        std::fs::write(&path, sample_config().to_yaml().unwrap()).unwrap();
        assert_eq!(WorkerConfig::from_file(&path).unwrap(), sample_config());
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.yaml");
        let err = WorkerConfig::from_file(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("reading {}", path.display()))
        );
    }

    #[test]
    fn a_file_that_is_not_a_worker_configuration_is_a_parse_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty.yaml", ""),
            ("not-yaml.yaml", "job: [unclosed"),
            (
                "no-spec.yaml",
                "job: a\nnamespace: b\neffectiveSink: Production\n",
            ),
            (
                "bad-sink.yaml",
                "job: a\nnamespace: b\neffectiveSink: Nowhere\nspec: {}\n",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = WorkerConfig::from_file(&path).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{name}: {err:?}");
            assert!(
                err.to_string()
                    .starts_with(&format!("parsing {}", path.display())),
                "{name}: {err}"
            );
        }
    }
}
