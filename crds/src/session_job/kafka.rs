//! `spec.kafka`: where the job reads its input and how it connects to Kafka.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{HostPort, TopicName};
use crate::refs::{CaSecretRef, CredentialsSecretRef, SecretRef};

/// The Kafka cluster the job reads from (and writes its sessions to).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.sourceTopics.exists(t, t.kind == 'Sync')")
    .message("at least one of kafka.sourceTopics must be of kind Sync: sessions are opened by sync events")
    .field_path(".sourceTopics"))]
pub struct KafkaSpec {
    /// Bootstrap brokers as `host:port` (1 to 16 entries).
    #[schemars(length(min = 1, max = 16))]
    pub bootstrap_servers: Vec<HostPort>,
    /// Topics the job consumes (1 to 16, names unique). All source topics must have the same
    /// number of partitions and be keyed by the session key (co-partitioned): partition `n` of
    /// every topic belongs to key group `n`. At least one must be of kind `Sync`.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub source_topics: Vec<SourceTopic>,
    /// Kafka consumer group id of the workers (letters, digits, `.`, `_`, `-`; at most 255
    /// characters). Default: the SessionJob's name. Changing it makes the job lose its committed
    /// offsets (checkpoints still hold the positions it restores from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9._-]+$')")
        .message("consumerGroup may only contain letters, digits, '.', '_' and '-'"))]
    pub consumer_group: Option<String>,
    /// TLS to the brokers. Unset: plaintext connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL authentication. Unset: no authentication. Works with and without `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// One topic the job consumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceTopic {
    /// Kafka topic name.
    pub name: TopicName,
    /// `Sync` (default): events that open and extend sessions. `Async`: events produced later by
    /// other services about an existing session; they are merged into it, reading the closed
    /// session from history when needed (within `session.allowedLateness`).
    #[serde(default)]
    pub kind: SourceKind,
}

/// How events of a source topic relate to sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SourceKind {
    /// Events that open and extend sessions.
    #[default]
    Sync,
    /// Late updates about an existing session, merged from history when it is closed.
    Async,
}

/// TLS settings for the Kafka connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Secret key holding the CA bundle that signs the brokers' certificates. Unset: the
    /// system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
    /// Secret of type `kubernetes.io/tls` (keys `tls.crt`, `tls.key`) with the client
    /// certificate for mutual TLS. Unset: no client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
}

/// SASL authentication to Kafka.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Default: `SCRAM-SHA-512`.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Secret holding the SASL user name and password.
    pub credentials_secret_ref: CredentialsSecretRef,
}

/// A SASL mechanism supported by the worker's Kafka client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    /// `PLAIN`: the password is sent as is; use it only together with TLS.
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism as librdkafka's `sasl.mechanism` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}
