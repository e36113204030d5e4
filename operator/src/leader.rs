//! Leader election on a `coordination.k8s.io/v1` Lease (via `kube-lease-manager`), so the
//! operator Deployment can run two replicas with exactly one reconciling.
//!
//! - [`Elector::acquire`] waits until this replica holds the Lease. A standby also watches the
//!   Lease, so when the leader *releases* it (graceful shutdown) the standby takes over at once
//!   instead of sleeping until the old expiry.
//! - [`Elector::hold`] keeps renewing and returns only when the Lease is lost (taken over, or not
//!   renewable before it would expire); the caller must then stop reconciling.
//! - [`Elector::release`] frees the Lease on shutdown.
//!
//! This module never reconciles anything and never decides what happens after a loss.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerError, LeaseParams};
use tokio::time::Instant;

/// How long a Lease stays valid after its last renewal: a crashed leader is replaced within
/// about this long.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// The leader renews this long before expiry; it is also the longest it keeps retrying failed
/// renewals before giving up leadership (minus a second of margin for clock skew).
pub const RENEW_GRACE_SECONDS: u64 = 5;

// `LeaseParams::new` panics unless 0 < grace < duration; failed renewals are given up a second
// before the grace runs out, so the grace must be longer than that second.
const _: () = assert!(RENEW_GRACE_SECONDS > 1 && RENEW_GRACE_SECONDS < LEASE_DURATION_SECONDS);

/// Why leader election failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be created, read or written.
    #[error("leader election on Lease {lease}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The underlying error.
        source: LeaseManagerError,
    },
    /// Another replica took the Lease, or it could not be renewed in time.
    #[error("lost the leader Lease {lease}: {reason}")]
    Lost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What happened.
        reason: String,
    },
}

/// One replica's part in the election.
pub struct Elector {
    client: Client,
    name: String,
    namespace: String,
    identity: String,
    manager: Option<LeaseManager>,
}

impl Elector {
    /// An elector for Lease `namespace/name` as `identity` (unique per replica: the Pod name).
    pub fn new(client: Client, name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            manager: None,
        }
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn lease_error(&self, source: LeaseManagerError) -> Error {
        Error::Lease {
            lease: self.lease(),
            source,
        }
    }

    /// Creates the Lease if needed and checks it can be read: after this, the replica is a
    /// healthy standby.
    pub async fn join(&mut self) -> Result<(), Error> {
        let manager = self.new_manager().await?;
        self.manager = Some(manager);
        Ok(())
    }

    async fn new_manager(&self) -> Result<LeaseManager, Error> {
        LeaseManager::new(
            self.client.clone(),
            &self.name,
            &self.namespace,
            LeaseParams::new(
                self.identity.clone(),
                LEASE_DURATION_SECONDS,
                RENEW_GRACE_SECONDS,
            ),
            LeaseCreateMode::AutoCreate,
        )
        .await
        .map_err(|source| self.lease_error(source))
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) -> Result<(), Error> {
        loop {
            let manager = match self.manager.take() {
                Some(manager) => manager,
                None => self.new_manager().await?,
            };
            tokio::select! {
                acquired = manager.changed() => {
                    match acquired {
                        Ok(true) => {
                            self.manager = Some(manager);
                            tracing::info!(lease = %self.lease(), identity = %self.identity, "acquired the leader Lease");
                            return Ok(());
                        }
                        // Not ours (yet): keep waiting with the same manager.
                        Ok(false) => self.manager = Some(manager),
                        Err(error) => {
                            tracing::warn!(lease = %self.lease(), %error, "leader election failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                // The manager sleeps until the expiry it last saw; a fresh one reads the Lease
                // again right away and takes it.
                () = released(Api::namespaced(self.client.clone(), &self.namespace), &self.name) => {
                    tracing::info!(lease = %self.lease(), "the leader released the Lease; taking over");
                }
            }
        }
    }

    /// Keeps the Lease renewed; returns only when leadership is lost.
    pub async fn hold(&self) -> Error {
        let Some(manager) = &self.manager else {
            return self.lost("not holding the Lease");
        };
        let give_up_after = Duration::from_secs(RENEW_GRACE_SECONDS.saturating_sub(1).max(1));
        let mut failing_since: Option<Instant> = None;
        loop {
            let result = match failing_since {
                None => manager.changed().await,
                // While renewals fail, a `changed()` that runs `give_up_after` without an error
                // has renewed (it retries at once) and is sleeping until the next renewal.
                Some(_) => match tokio::time::timeout(give_up_after, manager.changed()).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::info!(lease = %self.lease(), "renewing the Lease works again");
                        failing_since = None;
                        continue;
                    }
                },
            };
            match result {
                Ok(true) => {}
                Ok(false) => return self.lost("another replica holds it"),
                Err(error) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= give_up_after {
                        return self.lost(&format!("renewal kept failing: {error}"));
                    }
                    tracing::warn!(lease = %self.lease(), %error, "renewing the Lease failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Frees the Lease so a standby takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        if let Some(manager) = &self.manager {
            manager
                .release()
                .await
                .map_err(|source| self.lease_error(source))?;
            tracing::info!(lease = %self.lease(), "released the leader Lease");
        }
        Ok(())
    }

    fn lost(&self, reason: &str) -> Error {
        Error::Lost {
            lease: self.lease(),
            reason: reason.to_owned(),
        }
    }
}

/// Completes when the Lease goes from held to free (its holder released it) while watching.
/// Watch errors just end the wait after a pause; the caller then re-reads the Lease anyway.
async fn released(api: Api<Lease>, name: &str) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config));
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => listed = true,
            Ok(watcher::Event::Apply(lease)) if listed && is_free(&lease) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "watching the leader Lease failed");
                tokio::time::sleep(Duration::from_secs(LEASE_DURATION_SECONDS)).await;
                return;
            }
        }
    }
}

fn is_free(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;

    #[test]
    fn a_lease_without_holder_is_free() {
        let held = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("operator-0".into()),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(!is_free(&held));
        assert!(is_free(&Lease::default()));
        assert!(is_free(&Lease {
            spec: Some(LeaseSpec::default()),
            ..Lease::default()
        }));
    }
}
