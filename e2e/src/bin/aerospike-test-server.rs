//! Runs the Aerospike wire-protocol test server from the command line, on loopback, until it is
//! killed (SIGINT or SIGTERM). The local environment and the demo use it where a real Aerospike
//! server would run; the worker and operator connect to it with the unchanged `aerospike` crate.
//!
//! Prints one line per node, `aerospike-test-server node=<name> addr=<ip>:<port>`, once every
//! node listens, so a parent process that asked for port 0 can read the ports back.

use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sessionizer_e2e::aerospike::{AerospikeTestCluster, ServerConfig, StatsShape};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Aerospike wire-protocol test server (loopback only, in memory)")]
struct Args {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the first node; further nodes take the following ports. 0 picks free ports.
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Number of nodes in the cluster.
    #[arg(long, default_value_t = 1)]
    nodes: u16,
    /// Node names, one per node in order; nodes without one get a generated name.
    #[arg(long = "node-name")]
    node_names: Vec<String>,
    /// The cluster name the nodes report (`cluster-name`).
    #[arg(long)]
    cluster_name: Option<String>,
    /// Namespaces to serve (repeatable).
    #[arg(long = "namespace", default_value = "test")]
    namespaces: Vec<String>,
    /// Which server generation the namespace statistics imitate.
    #[arg(long, value_enum, default_value_t = Shape::V7)]
    stats_shape: Shape,
    /// The build reported by `build`; defaults to one matching the statistics shape.
    #[arg(long)]
    build: Option<String>,
    /// Record-size limit in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_record_size: usize,
    /// Default TTL in seconds for writes that ask for the namespace default (0: never expire).
    #[arg(long, default_value_t = 0)]
    default_ttl: u64,
}

/// The statistics shapes, as named on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shape {
    /// Aerospike before 7.0 (device_*/memory_* statistics).
    Pre7,
    /// Aerospike 7.0 and later (data_* statistics).
    V7,
}

impl From<Shape> for StatsShape {
    fn from(shape: Shape) -> Self {
        match shape {
            Shape::Pre7 => StatsShape::PreV7,
            Shape::V7 => StatsShape::V7,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aerospike-test-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let configs = (0..args.nodes)
        .map(|i| {
            let port = if args.port == 0 {
                Ok(0)
            } else {
                args.port
                    .checked_add(i)
                    .ok_or_else(|| format!("port {} + {i} is out of range", args.port))
            };
            port.map(|port| ServerConfig {
                host: args.host,
                port,
                node_name: args.node_names.get(usize::from(i)).cloned(),
                cluster_name: args.cluster_name.clone(),
                namespaces: args.namespaces.clone(),
                stats_shape: args.stats_shape.into(),
                build: args.build.clone(),
                max_record_size: args.max_record_size,
                default_ttl: Duration::from_secs(args.default_ttl),
                ..ServerConfig::default()
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cluster = AerospikeTestCluster::start(configs).await?;
    {
        let mut stdout = std::io::stdout().lock();
        for node in cluster.nodes() {
            writeln!(
                stdout,
                "aerospike-test-server node={} addr={}",
                node.node_name(),
                node.addr()
            )?;
        }
        stdout.flush()?;
    }
    wait_for_termination().await?;
    cluster.shutdown().await;
    Ok(())
}

async fn wait_for_termination() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}
