//! The job's [`CheckpointStore`], as the operator opens it: same location and layout as the
//! workers, credentials read from the Secret `spec.checkpoints.credentialsSecretRef` names (the
//! workers get the same keys as environment variables). Reads only; secret values never reach
//! a log, an Event or an error message.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sessionizer_crds::session_job::CheckpointsSpec;
use sessionizer_worker::checkpoint::{CheckpointStore, LocalDir, StoreCredentials, StoreError};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The credentials Secret could not be read.
    #[error("reading the checkpoint credentials Secret {name}: {message}")]
    Secret {
        /// The Secret's name.
        name: String,
        /// What went wrong (never a value).
        message: String,
    },
    /// The location cannot be used from here.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpenError {
    /// The reason of the `CheckpointsHealthy` condition while the store cannot be used.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "CredentialsUnavailable",
            Self::Store(StoreError::Location { message, .. })
                if message.contains("not visible here") =>
            {
                "LocationNotVisible"
            }
            Self::Store(StoreError::Location { .. }) => "LocationUnsupported",
            Self::Store(_) => "StoreUnreachable",
        }
    }
}

/// Opens the checkpoint store of job `namespace/job`.
pub async fn open(
    client: &Client,
    namespace: &str,
    job: &str,
    spec: &CheckpointsSpec,
) -> Result<CheckpointStore, OpenError> {
    let credentials = match &spec.credentials_secret_ref {
        None => StoreCredentials::default(),
        Some(secret) => {
            let name = secret.name.to_string();
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let found = secrets
                .get(&name)
                .await
                .map_err(|error| OpenError::Secret {
                    name: name.clone(),
                    message: crate::session_job::apply::describe(&error),
                })?;
            let mut pairs = Vec::new();
            for (key, value) in found.data.unwrap_or_default() {
                let value = String::from_utf8(value.0).map_err(|_| OpenError::Secret {
                    name: name.clone(),
                    message: format!("key {key} is not UTF-8 text"),
                })?;
                pairs.push((key, value));
            }
            for (key, value) in found.string_data.unwrap_or_default() {
                pairs.push((key, value));
            }
            StoreCredentials::from_pairs(pairs)
        }
    };
    Ok(CheckpointStore::open(
        spec,
        namespace,
        job,
        &credentials,
        LocalDir::MustExist,
    )?)
}
