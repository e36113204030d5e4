//! The *dereference* step: the reads a reconcile needs before it decides anything — the worker
//! StatefulSet as it exists, the source topics' partition counts from Kafka (with the TLS and
//! SASL material from the Secrets the spec names), and the history store capacity report of the
//! Aerospike monitor ([`crate::history_store`]).
//!
//! Reads only: this module never writes to the cluster or to Kafka. A Kafka problem (unreachable,
//! missing Secret) is part of what was observed, not an error; only failing to read the
//! StatefulSet fails the reconcile.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use sessionizer_crds::session_job::KafkaSpec;
use sessionizer_crds::{SessionJob, SessionJobCutover};

use super::kafka::{KafkaTarget, LookupError, PartitionCounts, SaslCredentials, TlsMaterial};
use crate::context::Context;
use crate::history_store::Report;
use crate::names;

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SessionJob has no namespace (cluster-scoped objects cannot be SessionJobs).
    #[error("the SessionJob has no namespace")]
    MissingNamespace,
    /// Listing the SessionJobCutovers failed.
    #[error("listing SessionJobCutovers: {}", super::apply::describe(.0))]
    ListCutovers(#[source] kube::Error),
    /// Reading the worker StatefulSet failed.
    #[error("reading StatefulSet {name}: {}", super::apply::describe(.source))]
    GetStatefulSet {
        /// Its name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// What exists and what Kafka says, as seen at the start of a reconcile.
#[derive(Debug)]
pub struct Observed {
    /// The worker StatefulSet, if it exists.
    pub statefulset: Option<StatefulSet>,
    /// The source topics' partition counts, or why they are unknown.
    pub partitions: PartitionCounts,
    /// The Aerospike capacity report and the time until the next probe is due; `None` when the
    /// job does not use Aerospike.
    pub history_store: Option<(Report, Duration)>,
    /// The SessionJobCutovers of the namespace (the ones naming this job decide its hold).
    pub cutovers: Vec<SessionJobCutover>,
}

/// Reads what `job`'s reconcile needs.
pub async fn observe(job: &SessionJob, ctx: &Context) -> Result<Observed, Error> {
    let namespace = job.namespace().ok_or(Error::MissingNamespace)?;
    let name = names::statefulset(&job.name_any());
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let statefulset = statefulsets
        .get_opt(&name)
        .await
        .map_err(|source| Error::GetStatefulSet { name, source })?;
    let partitions = match kafka_target(&ctx.client, &namespace, &job.spec.kafka).await {
        Ok(target) => ctx.kafka.partition_counts(&target).await,
        Err(error) => Err(error),
    };
    let cutovers = Api::<SessionJobCutover>::namespaced(ctx.client.clone(), &namespace)
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::ListCutovers)?
        .items;
    let history_store = ctx
        .history_store
        .observe(&ctx.client, job, &namespace, &super::reconcile::now())
        .await;
    Ok(Observed {
        statefulset,
        partitions,
        history_store,
        cutovers,
    })
}

/// The Kafka cluster and topics of `spec`, with the credentials its Secrets hold.
async fn kafka_target(
    client: &Client,
    namespace: &str,
    spec: &KafkaSpec,
) -> Result<KafkaTarget, LookupError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let tls = match &spec.tls {
        None => None,
        Some(tls) => {
            let ca_pem = match &tls.ca_secret_ref {
                Some(ca) => Some(secret_value(&secrets, ca.name.as_str(), &ca.key).await?),
                None => None,
            };
            let client = match &tls.client_cert_secret_ref {
                Some(cert) => {
                    let data = secret_data(&secrets, cert.name.as_str()).await?;
                    Some((
                        key_value(&data, cert.name.as_str(), names::credentials::TLS_CERT_FILE)?,
                        key_value(&data, cert.name.as_str(), names::credentials::TLS_KEY_FILE)?,
                    ))
                }
                None => None,
            };
            Some(TlsMaterial { ca_pem, client })
        }
    };
    let sasl = match &spec.sasl {
        None => None,
        Some(sasl) => {
            let secret = &sasl.credentials_secret_ref;
            let data = secret_data(&secrets, secret.name.as_str()).await?;
            Some(SaslCredentials {
                mechanism: sasl.mechanism,
                username: key_value(&data, secret.name.as_str(), &secret.username_key)?,
                password: key_value(&data, secret.name.as_str(), &secret.password_key)?,
            })
        }
    };
    Ok(KafkaTarget {
        bootstrap_servers: spec
            .bootstrap_servers
            .iter()
            .map(|server| server.as_str())
            .collect::<Vec<_>>()
            .join(","),
        topics: spec
            .source_topics
            .iter()
            .map(|topic| topic.name.to_string())
            .collect(),
        tls,
        sasl,
    })
}

async fn secret_data(
    secrets: &Api<Secret>,
    name: &str,
) -> Result<BTreeMap<String, ByteString>, LookupError> {
    let secret = secrets.get(name).await.map_err(|error| {
        LookupError::Credentials(format!(
            "reading Secret {name}: {}",
            super::apply::describe(&error)
        ))
    })?;
    Ok(secret.data.unwrap_or_default())
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, LookupError> {
    key_value(&secret_data(secrets, name).await?, name, key)
}

fn key_value(
    data: &BTreeMap<String, ByteString>,
    secret: &str,
    key: &str,
) -> Result<String, LookupError> {
    let bytes = data
        .get(key)
        .ok_or_else(|| LookupError::Credentials(format!("Secret {secret} has no key {key}")))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| {
        LookupError::Credentials(format!("key {key} of Secret {secret} is not UTF-8 text"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_binary_keys_are_explained_without_their_values() {
        let data = BTreeMap::from([
            ("user".to_owned(), ByteString(b"sessionizer".to_vec())),
            ("bin".to_owned(), ByteString(vec![0xff, 0xfe])),
        ]);
        assert_eq!(
            key_value(&data, "kafka-user", "user").unwrap(),
            "sessionizer"
        );
        let missing = key_value(&data, "kafka-user", "pass").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot connect to Kafka: Secret kafka-user has no key pass"
        );
        let binary = key_value(&data, "kafka-user", "bin").unwrap_err();
        assert!(binary.to_string().contains("not UTF-8"));
    }
}
