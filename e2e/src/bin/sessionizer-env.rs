//! `sessionizer-env`: the local environment from the command line.
//!
//! `up` starts it and keeps it running until Ctrl-C or SIGTERM, printing how to reach each server;
//! `demo` starts it and shows every part working. Either way, nothing is left running afterwards.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kube::Api;
use sessionizer_crds::SessionJob;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Env, EnvConfig, Result, install, smoke, wait};
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
    println!(
        "== Starting the local environment: Kubernetes, node agent, Kafka, S3 (all on loopback)"
    );
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

        println!(
            "\n== Sessionizer: helm install of the operator chart (2 replicas, leader elected)"
        );
        let namespace = env.namespace("demo").await?;
        sessionizer_e2e::crds::install(&env.client().await?).await?;
        install::operator(&env, &namespace, "sessionizer", &[]).await?;
        print!(
            "{}",
            env.kubectl(
                &["get", "deploy,pods", "-n", &namespace, "-o", "wide"],
                None
            )
            .await?
        );

        println!("\n== kubectl apply -f examples/sessionjob.yaml");
        let kafka = env.kafka()?;
        let source = unique_name("pageviews");
        kafka.create_topic(&source, 4).await?;
        let manifest = install::example(
            "sessionjob.yaml",
            &[
                ("KAFKA_BOOTSTRAP", &kafka.bootstrap),
                ("SOURCE_TOPIC", &source),
            ],
        )?;
        env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
            .await?;
        let job: SessionJob = serde_yaml::from_str(&manifest)
            .map_err(|e| sessionizer_e2e::Error::Other(format!("examples/sessionjob.yaml: {e}")))?;
        let jobs: Api<SessionJob> = Api::namespaced(env.client().await?, &namespace);
        let name = job.metadata.name.clone().unwrap_or_default();
        wait::until(
            "the SessionJob to be Ready",
            Duration::from_secs(180),
            || async {
                let job = jobs
                    .get(&name)
                    .await
                    .map_err(sessionizer_e2e::Error::kube("reading the SessionJob"))?;
                let ready = job
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter())
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok::<_, sessionizer_e2e::Error>(ready.then_some(()))
            },
        )
        .await?;
        print!(
            "{}",
            env.kubectl(
                &[
                    "get",
                    "sessionjobs,statefulsets,pods,services,configmaps,pdb",
                    "-n",
                    &namespace
                ],
                None
            )
            .await?
        );
        println!("\n== The job's conditions");
        print!(
            "{}",
            env.kubectl(
                &[
                    "get", "sessionjob", &name, "-n", &namespace, "-o",
                    "jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{\"\\n\"}{end}",
                ],
                None
            )
            .await?
        );

        println!(
            "\n== The whole story: a load generator produces; the old job runs on production, a \
             new one side-runs; a cutover replaces it under load"
        );
        let report = sessionizer_e2e::story::cutover_story(
            &env,
            "story",
            sessionizer_e2e::story::Twist::None,
            |line| {
                println!("-- {line}");
            },
        )
        .await?;
        println!("\n== Verification");
        println!(
            "{} events produced (the producer re-sent its whole stream after the pause: every \
             re-sent event was recognised as a duplicate)",
            report.events
        );
        println!(
            "production topic: {} records; their final sessions (latest version per id) equal the \
             oracle's {} sessions: 0 lost, 0 duplicated",
            report.production_records, report.sessions
        );
        if let Some(pause) = report.producer_pause_seconds {
            println!("producers paused for {pause:.0} s");
        }
        print!(
            "{}",
            env.kubectl(
                &[
                    "get",
                    "sessionjobs,sessionjobcutovers",
                    "-n",
                    &report.namespace
                ],
                None
            )
            .await?
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
