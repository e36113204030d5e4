//! The monitor's only I/O with Aerospike: connect with the `aerospike` crate, ask every node the
//! client discovered for `namespace/<ns>` and the namespace configuration, and close again.
//!
//! A fresh client per probe keeps no connections open between polls and always sees the current
//! cluster membership. The whole probe is bounded by a deadline so an unresponsive cluster can
//! never stall a reconcile. Read-only: it never writes to or reconfigures the cluster, and never
//! logs a password.

use std::time::Duration;

use aerospike::{AdminPolicy, AuthMode, Client, ClientPolicy};

use super::stats::{self, NodeFigures};

/// Why the cluster could not be queried at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// TLS to Aerospike is not supported by the monitor yet.
    #[error("history.aerospike.tls is not supported by the capacity monitor yet")]
    TlsUnsupported,
    /// Connecting to the seeds failed.
    #[error("connecting to Aerospike {hosts}: {message}")]
    Connect {
        /// The seed list.
        hosts: String,
        /// The client's error.
        message: String,
    },
    /// The probe took longer than its deadline.
    #[error("Aerospike {hosts} did not answer within {seconds}s")]
    Deadline {
        /// The seed list.
        hosts: String,
        /// The deadline.
        seconds: u64,
    },
    /// The client found no node.
    #[error("Aerospike {hosts}: the client discovered no node")]
    NoNodes {
        /// The seed list.
        hosts: String,
    },
}

/// What to probe.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Seeds, `host:port,host:port`.
    pub hosts: String,
    /// The namespace.
    pub namespace: String,
    /// Timeout of one connect or info round trip.
    pub timeout: Duration,
    /// User and password, when the cluster wants them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("hosts", &self.hosts)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// One node's answer: its figures, or why they could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAnswer {
    /// The node's name.
    pub node: String,
    /// Its figures or the error.
    pub figures: Result<NodeFigures, String>,
}

/// Queries every node of `target`'s cluster.
pub async fn probe(target: &Target) -> Result<Vec<NodeAnswer>, Error> {
    // Connect, tend and one info per node, each bounded by the timeout, plus slack.
    let deadline = target.timeout.saturating_mul(4) + Duration::from_secs(2);
    tokio::time::timeout(deadline, probe_unbounded(target))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Deadline {
                hosts: target.hosts.clone(),
                seconds: deadline.as_secs(),
            })
        })
}

async fn probe_unbounded(target: &Target) -> Result<Vec<NodeAnswer>, Error> {
    let millis = u32::try_from(target.timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut policy = ClientPolicy {
        timeout: millis,
        ..ClientPolicy::default()
    };
    if let Some((user, password)) = &target.credentials {
        policy.auth_mode = AuthMode::Internal(user.clone(), password.clone());
    }
    let client = Client::new(&policy, &target.hosts.clone())
        .await
        .map_err(|error| Error::Connect {
            hosts: target.hosts.clone(),
            message: error.to_string(),
        })?;
    let answers = ask_every_node(&client, target, millis).await;
    if let Err(error) = client.close().await {
        tracing::debug!(%error, "closing the Aerospike monitor client");
    }
    if answers.is_empty() {
        return Err(Error::NoNodes {
            hosts: target.hosts.clone(),
        });
    }
    Ok(answers)
}

async fn ask_every_node(client: &Client, target: &Target, millis: u32) -> Vec<NodeAnswer> {
    let statistics = format!("namespace/{}", target.namespace);
    let config = format!("get-config:context=namespace;id={}", target.namespace);
    let policy = AdminPolicy { timeout: millis };
    let mut answers = Vec::new();
    for node in client.nodes() {
        let name = node.name().to_owned();
        let figures = match node
            .info(&policy, &[statistics.as_str(), config.as_str()])
            .await
        {
            Ok(reply) => {
                let texts: Vec<&str> = [&statistics, &config]
                    .iter()
                    .filter_map(|command| reply.get(command.as_str()).map(String::as_str))
                    .collect();
                stats::node_figures(&name, &stats::parse_info(&texts)).map_err(|e| e.to_string())
            }
            Err(error) => Err(format!("node {name}: {error}")),
        };
        answers.push(NodeAnswer {
            node: name,
            figures,
        });
    }
    answers
}
