//! The operator process from start to exit: HTTP server first (so probes answer), then leader
//! election, then the SessionJob controllers — one per watched namespace, or one for all — until
//! SIGTERM/SIGINT or the loss of leadership.
//!
//! Shutdown order: stop taking new work and let running reconciles finish, release the Lease so
//! the standby takes over at once, then stop the HTTP server. A lost Lease ends the process with
//! an error (Kubernetes restarts it as a standby): it must never keep reconciling without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use kube::Client;
use kube::runtime::controller::Error as ControllerError;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use crate::cli::Args;
use crate::context::Context;
use crate::cutover::reconcile::{
    error_policy as cutover_error_policy, reconcile as cutover_reconcile,
};
use crate::health::{Health, Phase};
use crate::http::{self, HttpState};
use crate::leader::{self, Elector};
use crate::metrics::Metrics;
use crate::names;
use crate::session_job::kafka::{CACHE_TTL, CachedLookup, RdKafkaLookup};
use crate::session_job::reconcile::{error_policy, reconcile};
use crate::session_job::{Scope, controller};

/// How often readiness checks whether the controllers' caches are filled.
const READY_POLL: Duration = Duration::from_millis(250);

/// Why the operator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client could be built (no kubeconfig, no in-cluster environment).
    #[error("connecting to Kubernetes: {0}")]
    Client(#[source] kube::Error),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] http::Error),
    /// Leader election failed or leadership was lost.
    #[error(transparent)]
    Leader(#[from] leader::Error),
    /// The signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl Error {
    /// A static label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::Http(_) => "http",
            Self::Leader(_) => "leader",
            Self::Signals(_) => "signals",
        }
    }
}

/// Fires once on the first SIGTERM or SIGINT; a second one exits the process at once.
#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Installs the signal handlers.
    pub fn on_signals() -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
        let (sender, requested) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutdown requested; finishing running reconciles");
            let _ = sender.send(true);
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::warn!("second signal; exiting now");
            std::process::exit(130);
        });
        Ok(Self { requested })
    }

    /// Completes once shutdown was requested.
    pub async fn wait(mut self) {
        // An error means the sender is gone, which only happens when the process ends anyway.
        let _ = self.requested.wait_for(|requested| *requested).await;
    }
}

/// Runs the operator until shutdown (Ok) or a fatal error.
pub async fn run(args: Args) -> Result<(), Error> {
    let shutdown = Shutdown::on_signals()?;
    let identity = args.identity();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());

    let (stop_http, http_stopped) = watch::channel(false);
    let server = http::serve(
        SocketAddr::new(args.http_host, args.http_port),
        HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
        },
        Shutdown {
            requested: http_stopped,
        }
        .wait(),
    )
    .await?;
    let server = tokio::spawn(server);

    let client = Client::try_default().await.map_err(Error::Client)?;
    let result = lead_and_reconcile(&args, &identity, client, metrics, &health, shutdown).await;

    health.set(Phase::Stopping);
    let _ = stop_http.send(true);
    match server.await {
        Ok(Err(error)) => tracing::warn!(%error, "HTTP server"),
        Err(error) => tracing::warn!(%error, "HTTP server task"),
        Ok(Ok(())) => {}
    }
    result
}

async fn lead_and_reconcile(
    args: &Args,
    identity: &str,
    client: Client,
    metrics: Arc<Metrics>,
    health: &Arc<Health>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let mut elector = None;
    if args.leader_election {
        let mut candidate = Elector::new(
            client.clone(),
            &args.lease_name,
            &args.lease_namespace,
            identity,
        );
        candidate.join().await?;
        health.set(Phase::Standby);
        tracing::info!(
            lease = %args.lease_name,
            namespace = %args.lease_namespace,
            %identity,
            "standing by for the leader Lease"
        );
        tokio::select! {
            acquired = candidate.acquire() => acquired?,
            () = shutdown.clone().wait() => {
                tracing::info!("shut down while standing by");
                return Ok(());
            }
        }
        elector = Some(candidate);
    }

    metrics.set_leader(true);
    health.set(Phase::Syncing);
    let reporter = Reporter {
        controller: names::CONTROLLER_NAME.to_owned(),
        instance: Some(identity.to_owned()),
    };
    let kafka = Arc::new(CachedLookup::new(
        Arc::new(RdKafkaLookup::default()),
        CACHE_TTL,
    ));
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Recorder::new(client.clone(), reporter),
            metrics.clone(),
            kafka,
        )
        .with_incomplete_checkpoint_grace(args.incomplete_checkpoint_grace),
    );
    let namespaces = args.watch_namespaces();
    let controllers = run_controllers(&client, &namespaces, ctx, health, &shutdown);

    let result = match &elector {
        None => {
            controllers.await;
            Ok(())
        }
        Some(elector) => {
            tokio::select! {
                () = controllers => {
                    if let Err(error) = elector.release().await {
                        tracing::warn!(%error, "could not release the leader Lease; the standby takes over when it expires");
                    }
                    Ok(())
                }
                lost = elector.hold() => {
                    tracing::error!(error = %lost, "lost leadership; stopping");
                    Err(Error::Leader(lost))
                }
            }
        }
    };
    metrics.set_leader(false);
    result
}

/// The caches whose readiness makes the replica ready.
#[derive(Default)]
struct Stores {
    jobs: Vec<kube::runtime::reflector::Store<sessionizer_crds::SessionJob>>,
    cutovers: Vec<kube::runtime::reflector::Store<sessionizer_crds::SessionJobCutover>>,
}

impl Stores {
    fn push(&mut self, store: kube::runtime::reflector::Store<sessionizer_crds::SessionJob>) {
        self.jobs.push(store);
    }

    fn push_cutover(
        &mut self,
        store: kube::runtime::reflector::Store<sessionizer_crds::SessionJobCutover>,
    ) {
        self.cutovers.push(store);
    }
}

/// Runs one SessionJob and one SessionJobCutover controller per scope until shutdown; marks the replica ready once every
/// controller's SessionJob cache is filled.
async fn run_controllers(
    client: &Client,
    namespaces: &[String],
    ctx: Arc<Context>,
    health: &Arc<Health>,
    shutdown: &Shutdown,
) {
    let scopes: Vec<Scope> = if namespaces.is_empty() {
        vec![Scope::All]
    } else {
        namespaces.iter().cloned().map(Scope::Namespace).collect()
    };
    tracing::info!(?scopes, "starting the SessionJob controllers");
    let mut stores = Stores::default();
    let mut runs = Vec::new();
    for scope in scopes {
        let controller = controller(client, &scope).graceful_shutdown_on(shutdown.clone().wait());
        stores.push(controller.store());
        let run = controller
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                    // Already logged by the error policy.
                    Err(ControllerError::ReconcilerFailed(..)) => {}
                    Err(error) => tracing::warn!(%error, "controller"),
                }
            });
        runs.push(run.boxed());
        // The cutover controller of the same scope, next to it.
        let cutovers = crate::cutover::controller(client, &scope)
            .graceful_shutdown_on(shutdown.clone().wait());
        stores.push_cutover(cutovers.store());
        let run = cutovers
            .run(cutover_reconcile, cutover_error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(%object, "reconciled cutover"),
                    Err(ControllerError::ReconcilerFailed(..)) => {}
                    Err(error) => tracing::warn!(%error, "cutover controller"),
                }
            });
        runs.push(run.boxed());
    }
    let health = health.clone();
    let readiness = tokio::spawn(async move {
        for store in stores.jobs {
            // The store's readiness future keeps only its latest waiter's waker, and the
            // controller itself waits on it too: poll again now and then instead of trusting a
            // wake-up (once ready, a poll returns at once).
            loop {
                match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        }
        for store in stores.cutovers {
            loop {
                match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        }
        health.set(Phase::Leading);
        tracing::info!("caches synced; reconciling");
    });
    join_all(runs).await;
    readiness.abort();
}
