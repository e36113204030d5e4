//! The one error type of the local environment. Variants name the step that failed, so a broken
//! environment says which server did not come up and where its log is.

use std::path::PathBuf;
use std::time::Duration;

/// Why starting, using or stopping the local environment failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A prebuilt tool (Kubernetes, etcd, helm, MinIO, Kafka) is missing from the cache.
    #[error("{tool} is not built at {path}; run `make tools` (e2e/toolchain/build.sh) first")]
    ToolMissing {
        /// The tool's name.
        tool: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A child process could not be started.
    #[error("starting {name} failed: {source}")]
    Spawn {
        /// The process's name in the environment.
        name: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A server process exited while the environment needed it.
    #[error("{name} exited ({status}); its log is {log}")]
    Exited {
        /// The process's name in the environment.
        name: String,
        /// How it exited.
        status: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A condition was not reached in time.
    #[error("timed out after {timeout:?} waiting for {what}: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last observation or error.
        last: String,
    },
    /// A file of the run directory could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Generating keys or certificates failed.
    #[error("generating {what}: {source}")]
    Pki {
        /// Which key or certificate.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes: {context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: kube::Error,
    },
    /// A command-line tool (kubectl, helm) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Kafka administration failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: rdkafka::error::KafkaError,
    },
    /// An S3 request to the object store server failed.
    #[error("s3: {0}")]
    S3(String),
    /// A Pod's container cannot be configured: a referenced ConfigMap, Secret or key is missing, or
    /// the Pod uses something the node agent does not support. The message becomes the container's
    /// waiting message, so it must say what is missing.
    #[error("{0}")]
    ContainerConfig(String),
    /// A container names an image the node agent has no binary for.
    #[error(
        "image {image:?} is not known to the node agent (known images: {known}); start the agent with --image {image}=<path to binary>"
    )]
    UnknownImage {
        /// The image the container asked for.
        image: String,
        /// The images the agent knows, comma-separated.
        known: String,
    },
    /// The Aerospike wire-protocol test server could not start or serve.
    #[error("aerospike test server: {context}: {source}")]
    AerospikeTestServer {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Anything else, with a message that says what.
    #[error("{0}")]
    Other(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the action and file it concerns.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// Wraps a Kubernetes client error with what was being done.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }
}
