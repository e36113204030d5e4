//! `sessionizer-env`: the local environment from the command line.
//!
//! `up` starts it and keeps it running until Ctrl-C or SIGTERM, printing how to reach each server;
//! `demo` starts it and shows every part working. Either way, nothing is left running afterwards.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Env, EnvConfig, Result, smoke};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "The Sessionizer local environment: Kubernetes, Kafka and S3 on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the environment and keep it running until Ctrl-C.
    Up {
        /// Do not start Kafka.
        #[arg(long)]
        no_kafka: bool,
        /// Do not start the S3 server.
        #[arg(long)]
        no_s3: bool,
        /// Do not start the node agent (no Pods will run).
        #[arg(long)]
        no_node_agent: bool,
    },
    /// Start the environment, show each part working, then tear it down.
    Demo {
        /// Keep the environment running after the demo until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            no_kafka,
            no_s3,
            no_node_agent,
        } => {
            let config = EnvConfig {
                kubernetes: true,
                node_agent: !no_node_agent,
                kafka: !no_kafka,
                s3: !no_s3,
            };
            up(config).await
        }
        Command::Demo { keep } => demo(keep).await,
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

/// Starts the environment, but gives up (tearing down what started) on Ctrl-C or SIGTERM.
async fn start(config: EnvConfig) -> Result<Option<Env>> {
    tokio::select! {
        env = Env::start(config) => env.map(Some),
        () = shutdown_signal() => Ok(None),
    }
}

async fn up(config: EnvConfig) -> Result<()> {
    let Some(env) = start(config).await? else {
        return Ok(());
    };
    print_endpoints(&env)?;
    println!("\nRunning. Press Ctrl-C to stop and clean up.");
    shutdown_signal().await;
    println!("Stopping…");
    drop(env);
    Ok(())
}

fn print_endpoints(env: &Env) -> Result<()> {
    println!("Run directory (logs, data): {}", env.run_dir().display());
    if let Ok(kubeconfig) = env.kubeconfig() {
        println!("  export KUBECONFIG={}", kubeconfig.display());
    }
    if let Ok(kafka) = env.kafka() {
        println!("  Kafka bootstrap servers:  {}", kafka.bootstrap);
    }
    if let Ok(s3) = env.s3() {
        println!(
            "  S3 endpoint:              {} (access key {}, secret {})",
            s3.endpoint, s3.access_key, s3.secret_key
        );
    }
    Ok(())
}

async fn demo(keep: bool) -> Result<()> {
    let started = Instant::now();
    println!("== Starting the local environment (first run builds nothing here: `make tools` did)");
    let Some(env) = start(EnvConfig::default()).await? else {
        return Ok(());
    };
    println!("== Ready in {:.1}s", started.elapsed().as_secs_f64());
    print_endpoints(&env)?;

    let steps = async {
        println!("\n== Kubernetes: the node agent's node");
        print!(
            "{}",
            env.kubectl(&["get", "nodes", "-o", "wide"], None).await?
        );

        println!("\n== A StatefulSet of 2 test-app replicas, run as local processes");
        let namespace = env.namespace("demo").await?;
        let manifest = smoke::testapp_statefulset("hello", 2);
        env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
            .await?;
        let pods: Api<Pod> = Api::namespaced(env.client().await?, &namespace);
        smoke::wait_ready_pods(&pods, "app=hello", 2, Duration::from_secs(120)).await?;
        print!(
            "{}",
            env.kubectl(&["get", "pods", "-n", &namespace, "-o", "wide"], None)
                .await?
        );

        println!("\n== Kafka: produce one message and consume it back");
        let topic = unique_name("demo");
        let echoed = smoke::kafka_roundtrip(env.kafka()?, &topic, "hello, kafka").await?;
        println!("topic {topic}: produced and consumed {echoed:?}");

        println!("\n== S3: write one object through object_store and read it back");
        let bucket = unique_name("demo");
        let body = b"hello, object storage";
        let read = smoke::s3_roundtrip(env.s3()?, &bucket, "greeting.txt", body).await?;
        println!(
            "s3://{bucket}/greeting.txt: wrote {} bytes, read back {:?}",
            body.len(),
            String::from_utf8_lossy(&read)
        );
        Result::Ok(())
    };
    tokio::select! {
        result = steps => result?,
        () = shutdown_signal() => {
            println!("Interrupted; cleaning up.");
            return Ok(());
        }
    }

    println!(
        "\n== Demo complete in {:.1}s; logs are in {}",
        started.elapsed().as_secs_f64(),
        env.run_dir().join("logs").display()
    );
    if keep {
        println!("Environment kept running. Press Ctrl-C to stop and clean up.");
        shutdown_signal().await;
    }
    println!("Tearing down…");
    drop(env);
    println!("Done: no process of this run is left.");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the environment");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
