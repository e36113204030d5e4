//! `kubectl sessionizer`: the kubectl plugin for people running Sessionizer. It shows jobs and
//! follows a cutover live, and starts, aborts or approves one — all through the user's
//! kubeconfig and RBAC, never through the operator.
//!
//! Abort and approve are annotations on the SessionJobCutover (its spec is immutable):
//! `sessionizer.dev/abort` asks for a rollback while the sink has not flipped;
//! `sessionizer.dev/approve` (a fresh value each time) lets a cutover stopped for a human
//! (stage `Failed`) retry the stage that failed — after the flip that is the only way forward.

pub mod format;

use std::time::Duration;

use clap::{Parser, Subcommand};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sessionizer_crds::cutover::CutoverStage;
use sessionizer_crds::{SessionJob, SessionJobCutover, SessionJobCutoverSpec};

use crate::names::annotations;

/// How often `cutover watch` looks.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client from the kubeconfig.
    #[error("connecting to Kubernetes: {0}")]
    Client(#[source] kube::Error),
    /// An API call failed.
    #[error("{0}: {1}")]
    Api(&'static str, #[source] kube::Error),
    /// The command cannot be carried out.
    #[error("{0}")]
    Usage(String),
}

/// `kubectl sessionizer`: show Sessionizer jobs and run cutovers.
#[derive(Debug, Parser)]
#[command(name = "kubectl-sessionizer", version)]
pub struct Args {
    /// Namespace (default: the kubeconfig's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List SessionJobs with phase, sink, parallelism, ready workers and side-run parity.
    Get,
    /// Cutovers.
    Cutover {
        /// What to do with a cutover.
        #[command(subcommand)]
        action: CutoverCommand,
    },
}

/// Cutover commands.
#[derive(Debug, Subcommand)]
pub enum CutoverCommand {
    /// Create a SessionJobCutover from the job `new` replaces (or `--from`) to `new`.
    Start {
        /// The side-running job taking over.
        new: String,
        /// The job being replaced (default: `new`'s `sideRun.replaces`).
        #[arg(long)]
        from: Option<String>,
        /// Name of the cutover (default: `<new>-cutover`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Follow a cutover stage by stage until it finishes (exit 0 only when Completed).
    Watch {
        /// The cutover.
        name: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_seconds: u64,
    },
    /// Ask for a rollback (only before the sink flipped).
    Abort {
        /// The cutover.
        name: String,
    },
    /// Let a cutover stopped for a human retry the stage that failed.
    Approve {
        /// The cutover.
        name: String,
    },
}

/// Runs one command; the exit status is `Ok(true)` for success.
pub async fn run(args: Args) -> Result<bool, Error> {
    let client = Client::try_default().await.map_err(Error::Client)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let jobs: Api<SessionJob> = Api::namespaced(client.clone(), &namespace);
    let cutovers: Api<SessionJobCutover> = Api::namespaced(client, &namespace);
    match args.command {
        Command::Get => {
            let list = jobs
                .list(&ListParams::default())
                .await
                .map_err(|e| Error::Api("listing SessionJobs", e))?;
            print!("{}", format::jobs_table(&list.items));
            Ok(true)
        }
        Command::Cutover { action } => match action {
            CutoverCommand::Start { new, from, name } => {
                start(&jobs, &cutovers, &new, from, name).await
            }
            CutoverCommand::Watch {
                name,
                timeout_seconds,
            } => watch(&cutovers, &name, Duration::from_secs(timeout_seconds)).await,
            CutoverCommand::Abort { name } => {
                annotate(&cutovers, &name, annotations::ABORT, "true").await
            }
            CutoverCommand::Approve { name } => {
                let cutover = cutovers
                    .get(&name)
                    .await
                    .map_err(|e| Error::Api("reading the cutover", e))?;
                if cutover.status.and_then(|s| s.stage) != Some(CutoverStage::Failed) {
                    return Err(Error::Usage(format!(
                        "cutover {name} is not stopped for a human (stage Failed): nothing to approve"
                    )));
                }
                annotate(
                    &cutovers,
                    &name,
                    annotations::APPROVE,
                    &Timestamp::now().to_string(),
                )
                .await
            }
        },
    }
}

async fn start(
    jobs: &Api<SessionJob>,
    cutovers: &Api<SessionJobCutover>,
    new: &str,
    from: Option<String>,
    name: Option<String>,
) -> Result<bool, Error> {
    let job = jobs
        .get(new)
        .await
        .map_err(|e| Error::Api("reading the new job", e))?;
    let from = match from.or_else(|| job.spec.side_run.as_ref().map(|s| s.replaces.to_string())) {
        Some(from) => from,
        None => {
            return Err(Error::Usage(format!(
                "{new} has no sideRun.replaces; pass --from"
            )));
        }
    };
    let name = name.unwrap_or_else(|| crate::names::automatic_cutover(new));
    let spec: SessionJobCutoverSpec =
        serde_json::from_value(serde_json::json!({ "from": from, "to": new }))
            .map_err(|e| Error::Usage(e.to_string()))?;
    cutovers
        .create(&PostParams::default(), &SessionJobCutover::new(&name, spec))
        .await
        .map_err(|e| Error::Api("creating the cutover", e))?;
    println!("sessionjobcutover/{name} created: {from} → {new}");
    Ok(true)
}

async fn annotate(
    cutovers: &Api<SessionJobCutover>,
    name: &str,
    key: &str,
    value: &str,
) -> Result<bool, Error> {
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    cutovers
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::Api("annotating the cutover", e))?;
    println!("sessionjobcutover/{name} annotated {key}={value}");
    Ok(true)
}

async fn watch(
    cutovers: &Api<SessionJobCutover>,
    name: &str,
    timeout: Duration,
) -> Result<bool, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut printed = 0usize;
    let mut last_message = None;
    loop {
        let cutover = cutovers
            .get(name)
            .await
            .map_err(|e| Error::Api("reading the cutover", e))?;
        let status = cutover.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let lines = format::stage_lines(&status, &now);
        // Finished stages are printed once; the running one is printed whenever it changes.
        let finished = lines.len().saturating_sub(1);
        for line in lines.iter().take(finished).skip(printed) {
            println!("{line}");
        }
        printed = printed.max(finished);
        if status.message != last_message {
            if let Some(message) = &status.message {
                println!("  {message}");
            }
            last_message = status.message.clone();
        }
        let stage = status.stage.unwrap_or_default();
        if stage.is_terminal() {
            if let Some(last) = lines.last() {
                println!("{last}");
            }
            println!("{}", format::summary(&cutover));
            return Ok(stage == CutoverStage::Completed);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "cutover {name} still in {} after {}s",
                stage.as_str(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}
