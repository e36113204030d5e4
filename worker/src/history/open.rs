//! Builds the history store `spec.history` asks for: one value, [`History`], that the session
//! engine uses without knowing which backend is behind it.
//!
//! The runtime calls [`History::open`] with the job's configuration, the pod's data directory
//! (the embedded store goes to `<data dir>/history`) and the worker's metrics registry. This module
//! must never read Kubernetes objects (the operator already turned the credentials Secret into
//! environment variables) nor fall back to another backend than the one configured.

use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sessionizer_crds::session_job::HistoryBackend;

use super::aerospike::{AerospikeSettings, AerospikeStore, Credentials};
use super::codec::Codec;
use super::embedded::EmbeddedStore;
use super::metrics::{BackendLabel, HistoryMetrics};
use super::{HistoryError, HistoryStore, KeyWrite};
use crate::config::WorkerConfig;

/// Sub-directory of the data directory that holds the embedded store.
pub const EMBEDDED_DIR: &str = "history";

/// The configured history store.
#[derive(Clone, Debug)]
pub enum History {
    /// An Aerospike cluster.
    Aerospike(AerospikeStore),
    /// The embedded store in the pod.
    Embedded(EmbeddedStore),
}

impl History {
    /// Opens the backend of `config.spec.history`, registering its metrics into `registry`.
    /// Aerospike credentials are read from the environment ([`Credentials::from_env`]).
    pub async fn open(
        config: &WorkerConfig,
        data_dir: &Path,
        registry: &mut Registry,
    ) -> Result<Self, HistoryError> {
        let spec = &config.spec.history;
        let metrics = HistoryMetrics::register(registry);
        match spec.backend {
            HistoryBackend::Aerospike => {
                let aerospike = spec.aerospike.as_ref().ok_or_else(|| {
                    HistoryError::Open(String::from(
                        "history.backend is Aerospike but history.aerospike is not set",
                    ))
                })?;
                let mut settings = AerospikeSettings::from_spec(
                    aerospike,
                    &spec.compression,
                    Credentials::from_env(),
                )?;
                // The engine compresses each session itself (`spec.history.compression`, see
                // `engine::closed`); compressing the value again would only cost CPU.
                settings.codec = Codec::uncompressed();
                let store =
                    AerospikeStore::connect(settings, metrics.for_backend(BackendLabel::aerospike))
                        .await?;
                Ok(Self::Aerospike(store))
            }
            HistoryBackend::Embedded => {
                let store = EmbeddedStore::open(
                    &data_dir.join(EMBEDDED_DIR),
                    // Compressed by the engine, session by session.
                    Codec::uncompressed(),
                    metrics.for_backend(BackendLabel::embedded),
                )?;
                Ok(Self::Embedded(store))
            }
        }
    }

    /// The TTL every write of the job must carry (`spec.history.ttl`).
    pub fn ttl(config: &WorkerConfig) -> Result<Duration, HistoryError> {
        config
            .spec
            .history
            .ttl
            .to_duration()
            .map_err(|error| HistoryError::Open(format!("history.ttl: {error}")))
    }
}

impl HistoryStore for History {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        match self {
            Self::Aerospike(store) => store.get(key).await,
            Self::Embedded(store) => store.get(key).await,
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), HistoryError> {
        match self {
            Self::Aerospike(store) => store.put(key, value, ttl).await,
            Self::Embedded(store) => store.put(key, value, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), HistoryError> {
        match self {
            Self::Aerospike(store) => store.delete(key).await,
            Self::Embedded(store) => store.delete(key).await,
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, HistoryError> {
        match self {
            Self::Aerospike(store) => store.get_many(keys).await,
            Self::Embedded(store) => store.get_many(keys).await,
        }
    }

    async fn write_many(&self, writes: &[KeyWrite]) -> Vec<Result<(), HistoryError>> {
        match self {
            Self::Aerospike(store) => store.write_many(writes).await,
            Self::Embedded(store) => store.write_many(writes).await,
        }
    }

    async fn sync(&self) -> Result<(), HistoryError> {
        match self {
            Self::Aerospike(store) => store.sync().await,
            Self::Embedded(store) => store.sync().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;

    #[tokio::test]
    async fn the_default_backend_is_the_embedded_store_under_the_data_dir() {
        let config = sample_config();
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let history = History::open(&config, dir.path(), &mut registry)
            .await
            .unwrap();
        let History::Embedded(store) = &history else {
            panic!("{history:?}");
        };
        assert_eq!(store.dir(), dir.path().join(EMBEDDED_DIR));
        history
            .put("k", b"v", History::ttl(&config).unwrap())
            .await
            .unwrap();
        assert_eq!(history.get("k").await.unwrap(), Some(b"v".to_vec()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("sessionizer_history_writes_total{backend=\"embedded\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_aerospike_fails_to_open() {
        let mut config = sample_config();
        config.spec.history.backend = HistoryBackend::Aerospike;
        // A loopback port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        config.spec.history.aerospike = Some(
            serde_json::from_value(serde_json::json!({
                "hosts": [format!("127.0.0.1:{port}")],
                "namespace": "test",
                "set": "sessions",
                "timeout": "200ms",
            }))
            .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let error = History::open(&config, dir.path(), &mut Registry::default())
            .await
            .unwrap_err();
        assert!(matches!(error, HistoryError::Open(_)), "{error:?}");
    }
}
