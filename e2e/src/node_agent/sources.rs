//! The ConfigMaps and Secrets Pods refer to, kept current by watches.
//!
//! Env resolution and volume contents are pure functions over [`Sources`]; the agent feeds them
//! from cluster-wide reflectors so a changed ConfigMap reaches running Pods' volumes within moments
//! and without a request per Pod. Tests feed them from fixtures.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

/// Where ConfigMaps and Secrets are looked up.
pub trait Sources: Send + Sync {
    /// The ConfigMap `namespace/name`, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>>;
    /// The Secret `namespace/name`, if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
}

/// ConfigMaps and Secrets of the whole cluster, as last seen by the watches.
#[derive(Clone)]
pub struct ClusterSources {
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    changes: watch::Receiver<u64>,
}

impl ClusterSources {
    /// Starts the two watches on the current runtime; they run until the process ends.
    pub fn start(client: &Client) -> Self {
        let (changes_tx, changes) = watch::channel(0u64);
        let changes_tx = Arc::new(changes_tx);
        let config_maps = reflect(Api::<ConfigMap>::all(client.clone()), changes_tx.clone());
        let secrets = reflect(Api::<Secret>::all(client.clone()), changes_tx);
        Self {
            config_maps,
            secrets,
            changes,
        }
    }

    /// A receiver that changes whenever any ConfigMap or Secret changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Waits until both watches have listed everything once.
    pub async fn ready(&self) {
        let _ = self.config_maps.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
    }
}

fn reflect<K>(api: Api<K>, changes: Arc<watch::Sender<u64>>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(error) => tracing::warn!(%error, kind = K::kind(&()).as_ref(), "watch failed"),
            }
        }
    });
    reader
}

impl Sources for ClusterSources {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Fixed ConfigMaps and Secrets, for tests of the pure parts.
#[cfg(test)]
#[derive(Default)]
pub struct FixedSources {
    /// The ConfigMaps.
    pub config_maps: Vec<ConfigMap>,
    /// The Secrets.
    pub secrets: Vec<Secret>,
}

#[cfg(test)]
impl Sources for FixedSources {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(name)
                    && c.metadata.namespace.as_deref() == Some(namespace)
            })
            .cloned()
            .map(Arc::new)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(name)
                    && c.metadata.namespace.as_deref() == Some(namespace)
            })
            .cloned()
            .map(Arc::new)
    }
}
