//! Startup and shutdown of the worker process: load the configuration, work out who this worker
//! is, serve HTTP, become ready, and on SIGTERM or SIGINT stop serving and return. This is where
//! the streaming job will be started and, on SIGTERM, stopped with a final checkpoint; every step
//! that can fail returns an error naming the step, and `main` turns it into exit status 1.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::VERSION;
use crate::cli::Args;
use crate::config::{ConfigError, WorkerConfig};
use crate::http::{self, WorkerState};
use crate::identity::{Identity, IdentityError};

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
    serve(startup, listener, shutdown).await
}

/// Serves `listener` for the worker described by `startup` until `shutdown` completes, then
/// reports not-ready, lets requests in flight finish and returns.
pub async fn serve(
    startup: Startup,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Startup {
        config_path,
        config,
        identity,
        ..
    } = startup;
    let state = Arc::new(WorkerState::new(&config, identity));
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let id = state.identity();
    tracing::info!(
        version = VERSION,
        job = %config.job,
        namespace = %config.namespace,
        pod = id.pod_name.as_deref().unwrap_or(""),
        ordinal = id.ordinal,
        replicas = id.replicas,
        effective_sink = config.effective_sink.as_str(),
        config = %config_path.display(),
        %addr,
        "worker started"
    );
    // Nothing else to start yet: once the listener is bound the worker is ready.
    state.set_ready(true);

    let stopping = state.clone();
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.set_ready(false);
            tracing::info!("shutting down");
        })
        .await
        .map_err(RunError::Serve)?;
    tracing::info!("worker stopped");
    Ok(())
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::cli::LogFormat;
    use crate::config::tests::sample_config;

    fn args(config: PathBuf) -> Args {
        Args {
            config,
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

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_until_told_to_stop_then_returns_ok() {
        let startup = Startup {
            config_path: PathBuf::from("worker.yaml"),
            config: sample_config(),
            identity: Identity {
                pod_name: None,
                pod_ip: None,
                ordinal: 0,
                replicas: 1,
            },
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        };
        let listener = TcpListener::bind(startup.http_addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(startup, listener, async move {
            let _ = stopped.await;
        }));

        let ready = http_get(addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        let status = http_get(addr, "/status").await;
        assert!(status.contains("\"job\":\"pageviews\""), "{status}");

        stop.send(()).unwrap();
        let finished = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
        assert!(finished.is_ok(), "{finished:?}");
    }
}
