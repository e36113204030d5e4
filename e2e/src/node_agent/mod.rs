//! The node agent: the local environment's kubelet. It registers a Node, binds every
//! unscheduled Pod to it (there is no scheduler) and runs each Pod's containers as local
//! processes — an image name stands for a binary built on this machine — with the kubelet's
//! behaviour where tests can see it: env/envFrom/downward API, a loopback address per Pod,
//! probes, restart policies with back-off, volumes in a private mount namespace, graceful
//! deletion, Pod status and events, and a service-account kubeconfig so RBAC is real.
//!
//! It must never talk to anything but loopback addresses and never touch processes it did not
//! start.
//!
//! Layout: [`config`] (command line, images), `node` (registration, heartbeat), `binder`,
//! `supervisor` (one runner per Pod), `pod_runner` (a Pod's lifecycle: `slot`, `lifecycle`,
//! `stop`), `container` (processes), `sandbox` (pod directory, tokens, volumes), `env`,
//! `volumes`, `atomic_writer`, `mounts`, `probes`, `status`, `token`, `ip`, `sources`, `events`,
//! `quantity`.
//!
//! Files a test can read: [`container_log_path`] (a container's output, appended across
//! restarts), [`pod_kubeconfig_path`] (the Pod's service-account kubeconfig, with `token`,
//! `ca.crt` and `namespace` in `serviceaccount/` beside it) and [`claim_dir`] (a claim's data).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

mod atomic_writer;
mod binder;
pub mod config;
mod container;
mod env;
mod events;
mod ip;
mod mounts;
mod node;
mod pod_runner;
mod probes;
mod quantity;
mod sandbox;
mod sources;
mod status;
mod supervisor;
mod token;
mod volumes;

pub use config::{Config, ImageMapping, ImageRegistry};
pub use ip::FIRST_POD_IP;

use crate::{Error, Result, wait};

/// `<state-dir>/pods/<namespace>/<pod>`: a Pod's directory (logs, kubeconfig, credentials).
pub fn pod_dir(state_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    state_dir.join("pods").join(namespace).join(pod)
}

/// `<state-dir>/pods/<namespace>/<pod>/<container>.log`: where a container's stdout and stderr
/// are appended, across restarts and after the Pod is gone.
pub fn container_log_path(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
) -> PathBuf {
    pod_dir(state_dir, namespace, pod).join(format!("{container}.log"))
}

/// `<state-dir>/pods/<namespace>/<pod>/kubeconfig`: the Pod's service-account kubeconfig.
pub fn pod_kubeconfig_path(state_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    pod_dir(state_dir, namespace, pod).join("kubeconfig")
}

/// `<state-dir>/volumes/<namespace>/<claim>`: a PersistentVolumeClaim's data, kept across Pod
/// restarts and deletions.
pub fn claim_dir(state_dir: &Path, namespace: &str, claim: &str) -> PathBuf {
    state_dir.join("volumes").join(namespace).join(claim)
}

/// Sets up `tracing` output on stderr (`RUST_LOG` filters, default `info`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// What every part of the agent shares.
pub(crate) struct Agent {
    /// The API client (the agent's own kubeconfig).
    pub(crate) client: Client,
    /// The command line.
    pub(crate) config: Config,
    /// Image → binary.
    pub(crate) images: ImageRegistry,
    /// Pod addresses in use.
    pub(crate) ips: Mutex<ip::IpPool>,
    /// ConfigMaps and Secrets.
    pub(crate) sources: sources::ClusterSources,
    /// Event publishing.
    pub(crate) events: events::Events,
    /// The API server as Pods see it.
    pub(crate) api_server: token::ApiServer,
    /// PATH given to containers.
    pub(crate) path_env: String,
}

/// Runs the node agent until SIGTERM or SIGINT, then stops every Pod process and returns.
pub async fn run(config: Config) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir).map_err(Error::io("creating", &config.state_dir))?;
    let images = ImageRegistry::new(&config.images);
    for (image, path) in images.missing_binaries() {
        tracing::warn!(image, path = %path.display(), "image binary does not exist (yet)");
    }
    let api_server = token::ApiServer::from_kubeconfig(&config.kubeconfig)?;
    ensure_loopback(&api_server.host)?;
    check_mount_namespaces(&config.state_dir)?;
    let client = crate::kubeconfig::client(&config.kubeconfig).await?;
    let version = wait::until(
        "the API server to answer",
        Duration::from_secs(60),
        || async { client.apiserver_version().await.map(Some) },
    )
    .await?
    .git_version;

    let node_uid = node::register(&client, &config.node_name, &version).await?;
    let sources = sources::ClusterSources::start(&client);
    if tokio::time::timeout(Duration::from_secs(30), sources.ready())
        .await
        .is_err()
    {
        tracing::warn!("ConfigMap/Secret watches not ready after 30s; continuing");
    }
    let events = events::Events::new(client.clone(), &config.node_name);
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(node::heartbeat(
        client.clone(),
        config.node_name.clone(),
        node_uid,
        version,
        config.heartbeat(),
        shutdown.clone(),
    ));
    tokio::spawn(binder::run(
        client.clone(),
        config.node_name.clone(),
        events.clone(),
        shutdown.clone(),
    ));
    let agent = Arc::new(Agent {
        client,
        images,
        ips: Mutex::new(ip::IpPool::new()),
        sources,
        events,
        api_server,
        path_env: std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }),
        config,
    });
    tracing::info!(node = agent.config.node_name, state_dir = %agent.config.state_dir.display(), images = ?agent.images.known(), "node agent running");
    let supervisor = tokio::spawn(supervisor::run(agent.clone(), shutdown));

    let mut term =
        signal(SignalKind::terminate()).map_err(Error::io("installing", "SIGTERM handler"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(Error::io("installing", "SIGINT handler"))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(15), supervisor)
        .await
        .is_err()
    {
        tracing::warn!("pods did not stop in time");
    }
    Ok(())
}

/// The agent only ever talks to this machine.
fn ensure_loopback(host: &str) -> Result<()> {
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "the API server {host} is not a loopback address; the node agent only runs against a local control plane"
        )))
    }
}

/// Containers need private mount namespaces (root, CAP_SYS_ADMIN); fail early and clearly when
/// this machine cannot give them.
fn check_mount_namespaces(state_dir: &Path) -> Result<()> {
    let mut command = Command::new("/bin/true");
    command.stdin(std::process::Stdio::null());
    mounts::MountPlan::new(&[], state_dir)?.install(&mut command);
    let status = crate::process::spawn(command)
        .and_then(|mut child| child.wait())
        .map_err(|source| Error::Spawn {
            name: "mount-namespace check".into(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "mount-namespace check exited with {status}"
        )))
    }
}
