//! Startup and shutdown of the worker process: load the configuration, work out who this worker
//! is, open the history store, serve HTTP, run the streaming job (ready once its partitions are
//! assigned), and on SIGTERM or SIGINT stop consuming, flush, write a final checkpoint and commit
//! what was delivered, stop serving and return. After a control stop it stays up, stopped, until
//! the signal comes (the operator deletes the Pod). Every step
//! that can fail returns an error naming the step, and `main` turns it into exit status 1 (a
//! fatal history error included, so the Pod restarts).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::VERSION;
use crate::cli::Args;
use crate::config::{ConfigError, WorkerConfig};
use crate::control::Phase;
use crate::history::{History, HistoryError};
use crate::http::{self, WorkerState};
use crate::identity::{Identity, IdentityError};
use crate::reload;
use crate::stream::{self, StreamError, StreamSettings};

/// How often the embedded history store removes expired records.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration file is missing or invalid.
    #[error("loading the worker configuration: {0}")]
    Config(#[from] ConfigError),
    /// The environment does not describe a valid worker.
    #[error("reading the worker's identity: {0}")]
    Identity(#[from] IdentityError),
    /// The HTTP address could not be bound.
    #[error("binding the HTTP server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    /// The signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The history store could not be opened.
    #[error("opening the history store: {0}")]
    History(HistoryError),
    /// The streaming job failed (a fatal history error, Kafka, the spec).
    #[error("streaming: {0}")]
    Stream(#[from] StreamError),
}

/// Everything the worker knows before it starts serving.
#[derive(Clone, Debug, PartialEq)]
pub struct Startup {
    /// The file the configuration came from.
    pub config_path: PathBuf,
    /// The configuration.
    pub config: WorkerConfig,
    /// Who this worker is.
    pub identity: Identity,
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    /// The Pod's data directory (the embedded history store lives under it).
    pub data_dir: PathBuf,
}

/// Loads the configuration named by `args` and reads the identity from the environment.
pub fn prepare(args: &Args) -> Result<Startup, RunError> {
    let config = WorkerConfig::from_file(&args.config)?;
    let identity = Identity::from_env(&config)?;
    let http_addr = args
        .http_addr
        .unwrap_or_else(|| identity.default_http_addr());
    Ok(Startup {
        config_path: args.config.clone(),
        config,
        identity,
        http_addr,
        data_dir: args.data_dir.clone(),
    })
}

/// Runs the worker until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<(), RunError> {
    let startup = prepare(&args)?;
    // Handlers first: a signal that arrives while binding must not kill the process uncleanly.
    let shutdown = shutdown_signal().map_err(RunError::Signals)?;
    let listener = TcpListener::bind(startup.http_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: startup.http_addr,
            source,
        })?;
    run_worker(startup, listener, shutdown).await
}

/// Runs the whole worker described by `startup`: opens the history store (and its purger), serves
/// `listener`, and runs the stream until `shutdown` completes or the stream fails; then reports
/// not-ready, lets HTTP requests in flight finish and returns the stream's outcome.
pub async fn run_worker(
    startup: Startup,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Startup {
        config_path,
        config,
        identity,
        data_dir,
        ..
    } = startup;
    let mut state = WorkerState::new(&config, identity.clone());
    let history = History::open(&config, &data_dir, state.metrics_mut().registry_mut())
        .await
        .map_err(RunError::History)?;
    let purger = match &history {
        History::Embedded(store) => Some(store.spawn_purger(PURGE_INTERVAL)),
        History::Aerospike(_) => None,
    };
    let state = Arc::new(state);
    let ttl_watcher = reload::spawn_ttl_watcher(
        config_path.clone(),
        History::ttl(&config).map_err(RunError::History)?,
        reload::RELOAD_INTERVAL,
        state.clone(),
    );
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    tracing::info!(
        version = VERSION,
        job = %config.job,
        namespace = %config.namespace,
        pod = identity.pod_name.as_deref().unwrap_or(""),
        ordinal = identity.ordinal,
        replicas = identity.replicas,
        effective_sink = config.effective_sink.as_str(),
        config = %config_path.display(),
        data_dir = %data_dir.display(),
        %addr,
        "worker started"
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, http::router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .into_future(),
    );
    // The signal is watched, not consumed by the stream: after a control stop the worker waits
    // for it, stopped, before exiting.
    let (signalled, mut signal) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = signalled.send(true);
    });
    let mut stream_signal = signal.clone();
    let streaming = stream::run(
        config,
        identity,
        history.clone(),
        state.clone(),
        StreamSettings::default(),
        async move {
            let _ = stream_signal.wait_for(|s| *s).await;
        },
    );
    let outcome = tokio::select! {
        result = streaming => result.map_err(RunError::from),
        served = &mut server => {
            // The HTTP server ended on its own: that is an error whatever it returned.
            let error = match served {
                Ok(Err(error)) => error,
                Ok(Ok(())) => std::io::Error::other("the HTTP server stopped"),
                Err(error) => std::io::Error::other(error),
            };
            state.set_ready(false);
            ttl_watcher.abort();
            if let Some(purger) = purger {
                purger.abort();
            }
            return Err(RunError::Serve(error));
        }
    };
    state.set_ready(false);
    if outcome.is_ok() && state.phase() == Phase::Stopped && !*signal.borrow() {
        tracing::info!("stopped by a control call; waiting to be deleted");
        let _ = signal.wait_for(|s| *s).await;
    }
    watcher.abort();
    ttl_watcher.abort();
    if let Some(purger) = purger {
        purger.abort();
    }
    let _ = stop_http.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the HTTP server failed while stopping"),
        Err(error) => tracing::warn!(%error, "the HTTP server task failed while stopping"),
    }
    if let History::Aerospike(store) = &history {
        store.close().await;
    }
    // `main` logs an error once, with the exit status.
    if outcome.is_ok() {
        tracing::info!("worker stopped");
    }
    outcome
}

/// A future that completes on the first SIGTERM or SIGINT. Installing the handlers can fail,
/// which is reported at once rather than when a signal arrives.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "received"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "received"),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::cli::LogFormat;
    use crate::config::tests::sample_config;

    fn args(config: PathBuf) -> Args {
        Args {
            config,
            data_dir: PathBuf::from("/tmp/sessionizer-test-data"),
            http_addr: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }

    #[test]
    fn a_missing_configuration_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.yaml");
        let err = prepare(&args(path.clone())).unwrap_err();
        assert!(matches!(err, RunError::Config(ConfigError::Read { .. })));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn an_invalid_configuration_is_an_error_naming_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"job: pageviews\nnamespace: [not, a, string]\n")
            .unwrap();
        let err = prepare(&args(file.path().to_owned())).unwrap_err();
        assert!(matches!(err, RunError::Config(ConfigError::Parse { .. })));
        let message = err.to_string();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn a_valid_configuration_prepares_the_worker() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(sample_config().to_yaml().unwrap().as_bytes())
            .unwrap();
        let startup = prepare(&args(file.path().to_owned())).unwrap();
        assert_eq!(startup.config, sample_config());
        assert_eq!(startup.http_addr.ip(), Ipv4Addr::LOCALHOST);
    }
}
