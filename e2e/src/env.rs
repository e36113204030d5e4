//! The whole local environment as one value: [`Env::start`] brings up the control plane, the node
//! agent, Kafka and the S3 server concurrently in a fresh run directory; dropping the [`Env`]
//! tears everything down. [`Env::shared`] gives the tests of one process a single environment,
//! started on first use, isolated per test by namespace, topic and bucket names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::control_plane::ControlPlane;
use crate::kafka::Kafka;
use crate::process::ManagedProcess;
use crate::s3::S3Server;
use crate::tools::{self, workspace_binary};
use crate::{Error, Result, kubeconfig, wait};

/// The name of the node the node agent registers.
pub const NODE_NAME: &str = "local-node";

/// Container images the node agent can run, and the workspace binary behind each.
pub const IMAGES: &[(&str, &str)] = &[
    ("sessionizer/e2e-testapp", "e2e-testapp"),
    ("sessionizer/worker", "sessionizer-worker"),
    ("sessionizer/loadgen", "sessionizer-loadgen"),
    ("sessionizer/operator", "sessionizer-operator"),
];

/// Which parts to start; everything by default.
#[derive(Debug, Clone)]
pub struct EnvConfig {
    /// Start etcd, kube-apiserver and kube-controller-manager.
    pub kubernetes: bool,
    /// Start the node agent (needs `kubernetes`).
    pub node_agent: bool,
    /// Start Kafka.
    pub kafka: bool,
    /// Start the S3 server.
    pub s3: bool,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            kubernetes: true,
            node_agent: true,
            kafka: true,
            s3: true,
        }
    }
}

impl EnvConfig {
    /// Kafka alone (worker tests and benchmarks run workers as plain processes).
    pub fn kafka_only() -> Self {
        Self::servers(true, false)
    }

    /// The S3 server alone.
    pub fn s3_only() -> Self {
        Self::servers(false, true)
    }

    /// Kafka and the S3 server, without Kubernetes.
    pub fn kafka_and_s3() -> Self {
        Self::servers(true, true)
    }

    fn servers(kafka: bool, s3: bool) -> Self {
        Self {
            kubernetes: false,
            node_agent: false,
            kafka,
            s3,
        }
    }
}

/// A running local environment.
#[derive(Debug)]
pub struct Env {
    // Field order is drop order: the node agent stops its Pods before the API server goes.
    node_agent: Option<ManagedProcess>,
    control_plane: Option<ControlPlane>,
    kafka: Option<Kafka>,
    s3: Option<S3Server>,
    run_dir: PathBuf,
}

impl Env {
    /// Starts the parts `config` asks for, in a new run directory, and waits until each is ready.
    pub async fn start(config: EnvConfig) -> Result<Self> {
        let run_dir = new_run_dir()?;
        tracing::info!(run_dir = %run_dir.display(), "starting the local environment");
        let started = Instant::now();
        let (control_plane, kafka, s3) = tokio::try_join!(
            optional(
                config.kubernetes,
                "control plane",
                ControlPlane::start(&run_dir)
            ),
            optional(config.kafka, "kafka", Kafka::start(&run_dir)),
            optional(config.s3, "s3", S3Server::start(&run_dir)),
        )?;
        let node_agent = match (&control_plane, config.node_agent) {
            (Some(control_plane), true) => Some(start_node_agent(&run_dir, control_plane).await?),
            (None, true) => {
                return Err(Error::Other(
                    "the node agent needs the control plane".into(),
                ));
            }
            _ => None,
        };
        tracing::info!(elapsed = ?started.elapsed(), "local environment ready");
        Ok(Self {
            node_agent,
            control_plane,
            kafka,
            s3,
            run_dir,
        })
    }

    /// The environment shared by all tests of this process, started on first use with
    /// everything enabled. Its processes end when the test process exits, however it exits.
    pub fn shared() -> Result<&'static Env> {
        static SHARED: OnceLock<std::result::Result<Env, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                // Its own thread and runtime: a test's runtime ends with the test, and the
                // environment must outlive it.
                let started = std::thread::spawn(|| {
                    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
                    runtime
                        .block_on(Env::start(EnvConfig::default()))
                        .map_err(|e| e.to_string())
                })
                .join();
                match started {
                    Ok(result) => result,
                    Err(_) => Err("starting the shared environment panicked".to_owned()),
                }
            })
            .as_ref()
            .map_err(|e| Error::Other(format!("the shared environment failed to start: {e}")))
    }

    /// The run directory: logs, data, kubeconfigs and certificates of this run.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The control plane, if started.
    pub fn control_plane(&self) -> Result<&ControlPlane> {
        self.control_plane
            .as_ref()
            .ok_or_else(|| Error::Other("the control plane is not part of this environment".into()))
    }

    /// Kafka, if started.
    pub fn kafka(&self) -> Result<&Kafka> {
        self.kafka
            .as_ref()
            .ok_or_else(|| Error::Other("kafka is not part of this environment".into()))
    }

    /// The S3 server, if started.
    pub fn s3(&self) -> Result<&S3Server> {
        self.s3
            .as_ref()
            .ok_or_else(|| Error::Other("the S3 server is not part of this environment".into()))
    }

    /// The administrator's kubeconfig.
    pub fn kubeconfig(&self) -> Result<&Path> {
        Ok(&self.control_plane()?.admin_kubeconfig)
    }

    /// A new administrator client (create one per test: clients belong to the runtime they
    /// were made on).
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(self.kubeconfig()?).await
    }

    /// Where the node agent keeps Pod directories and logs.
    pub fn node_state_dir(&self) -> PathBuf {
        self.run_dir.join("node")
    }

    /// The log file of one container of one Pod, as the node agent writes it.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.node_state_dir()
            .join("pods")
            .join(namespace)
            .join(pod)
            .join(format!("{container}.log"))
    }

    /// Fails if any server of the environment has exited.
    pub fn ensure_running(&self) -> Result<()> {
        if let Some(node_agent) = &self.node_agent {
            node_agent.ensure_running()?;
        }
        if let Some(control_plane) = &self.control_plane {
            control_plane.ensure_running()?;
        }
        if let Some(kafka) = &self.kafka {
            kafka.ensure_running()?;
        }
        if let Some(s3) = &self.s3 {
            s3.ensure_running()?;
        }
        Ok(())
    }

    /// Runs `kubectl` against this cluster as the administrator, feeding it `stdin`, and returns
    /// its standard output.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut command = Command::new(tools::kubectl()?);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig()?.display()))
            .args(args);
        run_tool(command, stdin).await
    }

    /// Runs `helm` against this cluster as the administrator and returns its standard output.
    pub async fn helm(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(tools::helm()?);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig()?.display()))
            .args(args)
            .env("HELM_CACHE_HOME", self.run_dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.run_dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.run_dir.join("helm/data"));
        run_tool(command, None).await
    }

    /// Creates a namespace with a unique name starting with `prefix`, for one test.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(self.client().await?);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(Error::kube(format!("creating namespace {name}")))?;
        Ok(name)
    }
}

/// A name unique within this process and across processes: `<prefix>-<pid>-<n>`, lower case.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

async fn optional<T>(
    enabled: bool,
    what: &'static str,
    start: impl std::future::Future<Output = Result<T>>,
) -> Result<Option<T>> {
    if !enabled {
        return Ok(None);
    }
    let started = Instant::now();
    let value = start.await?;
    tracing::info!(component = what, elapsed = ?started.elapsed(), "ready");
    Ok(Some(value))
}

async fn start_node_agent(run_dir: &Path, control_plane: &ControlPlane) -> Result<ManagedProcess> {
    let started = Instant::now();
    let mut command = Command::new(workspace_binary("sessionizer-node-agent")?);
    command
        .arg(format!(
            "--kubeconfig={}",
            control_plane.admin_kubeconfig.display()
        ))
        .arg(format!("--state-dir={}", run_dir.join("node").display()))
        .arg(format!("--node-name={NODE_NAME}"));
    for (image, binary) in IMAGES {
        // Images whose binary is not built yet are simply unknown to the node agent.
        if let Ok(path) = workspace_binary(binary) {
            command.arg(format!("--image={image}={}", path.display()));
        }
    }
    let agent = ManagedProcess::start("node-agent", command, &run_dir.join("logs/node-agent.log"))?;
    let nodes: Api<Node> = Api::all(control_plane.client().await?);
    wait::until(
        "the node agent's Node to be Ready",
        Duration::from_secs(60),
        || async {
            agent.ensure_running()?;
            let node = nodes
                .get_opt(NODE_NAME)
                .await
                .map_err(Error::kube("reading the node"))?;
            let ready = node
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Ok::<_, Error>(ready.then_some(()))
        },
    )
    .await?;
    tracing::info!(component = "node agent", elapsed = ?started.elapsed(), "ready");
    Ok(agent)
}

async fn run_tool(command: Command, stdin: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let line = format!("{command:?}");
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        name: line.clone(),
        source,
    })?;
    // Taking stdin out of the child closes it after writing, so the tool sees end of input.
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(Error::io("writing stdin of", &line))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(Error::io("waiting for", &line))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The root of all run directories: `$SESSIONIZER_RUNS`, or `<cache>/runs`.
///
/// Not under `/tmp`: Pods commonly mount an emptyDir at `/tmp`, which would hide their own
/// sandbox (kubeconfig, volumes) inside their mount namespace.
pub fn runs_root() -> PathBuf {
    std::env::var_os("SESSIONIZER_RUNS")
        .map_or_else(|| tools::cache_dir().join("runs"), PathBuf::from)
}

/// How many finished runs to keep for post-mortems.
const KEEP_RUNS: usize = 5;

/// Creates `<runs root>/<unix seconds>-<pid>`, pruning old runs whose process is gone.
fn new_run_dir() -> Result<PathBuf> {
    let root = runs_root();
    std::fs::create_dir_all(&root).map_err(Error::io("creating", &root))?;
    prune_runs(&root);
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = root.join(format!("{seconds}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(Error::io("creating", &dir))?;
    Ok(dir)
}

fn prune_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut finished: Vec<(String, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit('-').next()?.parse::<u32>().ok()?;
            let alive = Path::new("/proc").join(pid.to_string()).exists();
            (!alive).then(|| (name, entry.path()))
        })
        .collect();
    finished.sort();
    let excess = finished.len().saturating_sub(KEEP_RUNS);
    for (_, path) in finished.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
        assert!(unique_name("smoke").starts_with("smoke-"));
    }
}
