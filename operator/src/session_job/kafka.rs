//! Reading the source topics' partition counts from Kafka, for the BalancedAssignment condition.
//!
//! The lookup is behind the [`PartitionLookup`] trait so unit tests can use an in-memory table;
//! the operator itself always uses [`RdKafkaLookup`] (librdkafka metadata requests with a short
//! timeout) wrapped in [`CachedLookup`], so a burst of reconciles (every Pod getting ready
//! triggers one) asks Kafka once. A failed lookup is a result, not an error: Kafka being down
//! must never fail a reconcile. This module never logs or prints secret material.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use sessionizer_crds::session_job::SaslMechanism;

/// How long one metadata request may take before Kafka counts as unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a lookup result is reused for the same cluster and topics.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Which Kafka cluster to ask about which topics, and how to authenticate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KafkaTarget {
    /// `host:port,host:port`.
    pub bootstrap_servers: String,
    /// The source topics, in spec order.
    pub topics: Vec<String>,
    /// TLS material, when the spec asks for TLS.
    pub tls: Option<TlsMaterial>,
    /// SASL credentials, when the spec asks for SASL.
    pub sasl: Option<SaslCredentials>,
}

/// PEM material for a TLS connection, read from the Secrets the spec names.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsMaterial {
    /// CA bundle; `None` uses the system's trusted roots.
    pub ca_pem: Option<String>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(String, String)>,
}

/// SASL user and password, read from the Secret the spec names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SaslCredentials {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

// Hand-written so secret material can never end up in a log line.
impl fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTarget")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(|s| s.mechanism))
            .finish()
    }
}

/// Why the partition counts are not known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The metadata request failed or timed out.
    #[error("Kafka at {bootstrap_servers} did not answer a metadata request: {message}")]
    Unreachable {
        /// The bootstrap servers asked.
        bootstrap_servers: String,
        /// What librdkafka said.
        message: String,
    },
    /// A Secret the connection needs could not be read.
    #[error("cannot connect to Kafka: {0}")]
    Credentials(String),
    /// The lookup task died (a bug or a panic in librdkafka's wrapper).
    #[error("the Kafka metadata lookup failed: {0}")]
    Task(String),
}

/// What a lookup returns: the partition count of every source topic that exists (missing topics
/// are simply absent).
pub type PartitionCounts = Result<BTreeMap<String, i32>, LookupError>;

/// Something that knows how many partitions topics have.
pub trait PartitionLookup: Send + Sync {
    /// The partition counts of `target.topics` in `target`'s cluster.
    fn partition_counts<'a>(&'a self, target: &'a KafkaTarget) -> BoxFuture<'a, PartitionCounts>;
}

/// Asks Kafka through librdkafka, one short-lived client per lookup.
#[derive(Clone, Debug)]
pub struct RdKafkaLookup {
    timeout: Duration,
}

impl RdKafkaLookup {
    /// A lookup whose metadata requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl Default for RdKafkaLookup {
    fn default() -> Self {
        Self::new(METADATA_TIMEOUT)
    }
}

impl PartitionLookup for RdKafkaLookup {
    fn partition_counts<'a>(&'a self, target: &'a KafkaTarget) -> BoxFuture<'a, PartitionCounts> {
        let target = target.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            // librdkafka's metadata call blocks its thread.
            tokio::task::spawn_blocking(move || fetch_partition_counts(&target, timeout))
                .await
                .unwrap_or_else(|error| Err(LookupError::Task(error.to_string())))
        })
    }
}

fn fetch_partition_counts(target: &KafkaTarget, timeout: Duration) -> PartitionCounts {
    let unreachable = |error: rdkafka::error::KafkaError| LookupError::Unreachable {
        bootstrap_servers: target.bootstrap_servers.clone(),
        message: error.to_string(),
    };
    let consumer: BaseConsumer = client_config(target, timeout)
        .create()
        .map_err(unreachable)?;
    let mut counts = BTreeMap::new();
    for topic in &target.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(unreachable)?;
        for found in metadata.topics() {
            let missing = found.error().map(RDKafkaErrorCode::from)
                == Some(RDKafkaErrorCode::UnknownTopicOrPartition);
            if found.name() == topic && !missing && !found.partitions().is_empty() {
                let partitions = i32::try_from(found.partitions().len()).unwrap_or(i32::MAX);
                counts.insert(topic.clone(), partitions);
            }
        }
    }
    Ok(counts)
}

fn client_config(target: &KafkaTarget, timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    let timeout_ms = timeout.as_millis().to_string();
    config
        .set("bootstrap.servers", &target.bootstrap_servers)
        .set("client.id", crate::names::CONTROLLER_NAME)
        // Asking about a topic must never create it.
        .set("allow.auto.create.topics", "false")
        .set("socket.connection.setup.timeout.ms", &timeout_ms)
        .set("socket.timeout.ms", &timeout_ms);
    let protocol = match (&target.tls, &target.sasl) {
        (None, None) => "plaintext",
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(tls) = &target.tls {
        if let Some(ca) = &tls.ca_pem {
            config.set("ssl.ca.pem", ca);
        }
        if let Some((cert, key)) = &tls.client {
            config.set("ssl.certificate.pem", cert);
            config.set("ssl.key.pem", key);
        }
    }
    if let Some(sasl) = &target.sasl {
        config
            .set("sasl.mechanism", sasl.mechanism.as_str())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", &sasl.password);
    }
    config
}

/// Reuses a lookup's result for [`CACHE_TTL`] per target (successes and failures alike, so an
/// unreachable cluster costs one timeout per TTL, not one per reconcile).
pub struct CachedLookup {
    inner: Arc<dyn PartitionLookup>,
    ttl: Duration,
    cache: Mutex<HashMap<KafkaTarget, (Instant, PartitionCounts)>>,
}

impl CachedLookup {
    /// Caches `inner`'s answers for `ttl`.
    pub fn new(inner: Arc<dyn PartitionLookup>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, target: &KafkaTarget) -> Option<PartitionCounts> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        cache.get(target).map(|(_, counts)| counts.clone())
    }

    fn store(&self, target: &KafkaTarget, counts: &PartitionCounts) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.insert(target.clone(), (Instant::now(), counts.clone()));
    }
}

impl PartitionLookup for CachedLookup {
    fn partition_counts<'a>(&'a self, target: &'a KafkaTarget) -> BoxFuture<'a, PartitionCounts> {
        Box::pin(async move {
            if let Some(counts) = self.cached(target) {
                return counts;
            }
            let counts = self.inner.partition_counts(target).await;
            self.store(target, &counts);
            counts
        })
    }
}

#[cfg(test)]
pub mod testing {
    //! An in-memory [`PartitionLookup`] for unit tests only.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers from a fixed table, or with a fixed error; counts its calls.
    pub struct StaticLookup {
        /// The answer.
        pub answer: PartitionCounts,
        /// How often it was asked.
        pub calls: AtomicUsize,
    }

    impl StaticLookup {
        /// Every topic in `counts` exists with that many partitions.
        pub fn topics(counts: &[(&str, i32)]) -> Self {
            Self {
                answer: Ok(counts.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()),
                calls: AtomicUsize::new(0),
            }
        }

        /// Kafka does not answer.
        pub fn unreachable() -> Self {
            Self {
                answer: Err(LookupError::Unreachable {
                    bootstrap_servers: "kafka-0.kafka:9092".into(),
                    message: "Local: Broker transport failure".into(),
                }),
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl PartitionLookup for StaticLookup {
        fn partition_counts<'a>(
            &'a self,
            target: &'a KafkaTarget,
        ) -> BoxFuture<'a, PartitionCounts> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answer.clone().map(|counts| {
                counts
                    .into_iter()
                    .filter(|(topic, _)| target.topics.contains(topic))
                    .collect()
            });
            Box::pin(async move { answer })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::testing::StaticLookup;
    use super::*;

    fn target() -> KafkaTarget {
        KafkaTarget {
            bootstrap_servers: "kafka-0.kafka:9092".into(),
            topics: vec!["pageviews".into()],
            tls: None,
            sasl: Some(SaslCredentials {
                mechanism: SaslMechanism::ScramSha512,
                username: "sessionizer".into(),
                password: "hunter2".into(),
            }),
        }
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let text = format!("{:?}", target());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("sessionizer\""), "{text}");
        assert!(text.contains("kafka-0.kafka:9092"));
    }

    #[test]
    fn client_config_follows_the_security_settings() {
        let config = client_config(&target(), METADATA_TIMEOUT);
        assert_eq!(config.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("allow.auto.create.topics"), Some("false"));

        let mut tls = target();
        tls.sasl = None;
        tls.tls = Some(TlsMaterial {
            ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
            client: None,
        });
        let config = client_config(&tls, METADATA_TIMEOUT);
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(
            config.get("ssl.ca.pem"),
            Some("-----BEGIN CERTIFICATE-----")
        );
    }

    #[tokio::test]
    async fn cache_asks_once_per_target_within_the_ttl() {
        let inner = Arc::new(StaticLookup::topics(&[("pageviews", 12)]));
        let cached = CachedLookup::new(inner.clone(), Duration::from_secs(60));
        let target = target();
        for _ in 0..3 {
            let counts = cached.partition_counts(&target).await.unwrap();
            assert_eq!(counts["pageviews"], 12);
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

        let mut other = target.clone();
        other.topics = vec!["clicks".into()];
        assert!(cached.partition_counts(&other).await.unwrap().is_empty());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn closed_port_counts_as_unreachable() {
        // Nothing listens on port 1 of the loopback address: the request fails within the timeout.
        let lookup = RdKafkaLookup::new(Duration::from_millis(500));
        let mut target = target();
        target.sasl = None;
        target.bootstrap_servers = "127.0.0.1:1".into();
        match lookup.partition_counts(&target).await {
            Err(LookupError::Unreachable {
                bootstrap_servers, ..
            }) => assert_eq!(bootstrap_servers, "127.0.0.1:1"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cache_expires() {
        let inner = Arc::new(StaticLookup::unreachable());
        let cached = CachedLookup::new(inner.clone(), Duration::ZERO);
        let target = target();
        assert!(cached.partition_counts(&target).await.is_err());
        assert!(cached.partition_counts(&target).await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }
}
