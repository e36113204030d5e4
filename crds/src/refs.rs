//! References to other objects in the job's namespace: Secrets holding credentials, and the
//! producer workloads a cutover pauses. Shared by `SessionJob` and `SessionJobCutover`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::ObjectName;

/// A Secret in the same namespace, used as a whole (every key is read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    pub name: ObjectName,
}

/// One key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    pub name: ObjectName,
    /// Key in the Secret that holds the PEM-encoded CA certificate bundle. Default: `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret holding a user name and a password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    pub name: ObjectName,
    /// Key in the Secret that holds the user name. Default: `username`.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// Key in the Secret that holds the password. Default: `password`.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

/// A workload (Deployment or StatefulSet) in the same namespace that produces into the job's
/// source topics. A cutover scales it to zero while the jobs drain, then restores its replicas.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Kind of the workload: `Deployment` or `StatefulSet` (group `apps`).
    pub kind: WorkloadKind,
    /// Name of the workload, in the same namespace.
    pub name: ObjectName,
}

/// The kinds of workload a cutover can pause.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum WorkloadKind {
    /// An `apps/v1` Deployment.
    Deployment,
    /// An `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
        }
    }
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}
