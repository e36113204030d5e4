//! Startup, liveness and readiness probes: what a probe is ([`ProbeSpec`], resolved from the
//! container spec against the Pod's address), how results turn into a verdict
//! ([`ProbeTracker`], honouring success and failure thresholds) and how one check is made
//! (`httpGet`, `tcpSocket`; `exec` is made by the pod runner because it needs the container's
//! environment and mounts).
//!
//! The probe loop ([`run`]) reports only verdict changes, so the pod runner never polls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Gates the other two until it first succeeds; failing it restarts the container.
    Startup,
    /// Failing it restarts the container.
    Liveness,
    /// Decides whether the container is ready.
    Readiness,
}

impl ProbeKind {
    /// The name the kubelet uses in events (`Liveness probe failed: …`).
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// How one check is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// An HTTP GET; 200–399 is success.
    Http {
        /// Host (the Pod IP unless the probe says otherwise).
        host: String,
        /// Port.
        port: u16,
        /// Path with query.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// A TCP connect.
    Tcp {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// A command run with the container's environment and mounts; exit 0 is success.
    Exec {
        /// The command line.
        command: Vec<String>,
    },
    /// A probe the agent cannot run; it always fails with this message.
    Unsupported(String),
}

/// A probe with its timing, resolved for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Which probe.
    pub kind: ProbeKind,
    /// How a check is made.
    pub action: ProbeAction,
    /// Delay after the container started before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive successes to turn the verdict to success.
    pub success_threshold: u32,
    /// Consecutive failures to turn the verdict to failure.
    pub failure_threshold: u32,
    /// Grace period when a failure kills the container (probe-level override).
    pub termination_grace_seconds: Option<i64>,
}

fn seconds(value: Option<i32>, default: i32, min: i32) -> Duration {
    let secs = value.unwrap_or(default).max(min);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn count(value: Option<i32>, default: i32) -> u32 {
    u32::try_from(value.unwrap_or(default).max(1)).unwrap_or(1)
}

/// Resolves `probe` of `container` against the Pod IP. Named ports are looked up in the
/// container's ports; liveness and startup probes always need one success.
pub fn spec(kind: ProbeKind, probe: &Probe, container: &Container, pod_ip: &str) -> ProbeSpec {
    let action = if let Some(http) = &probe.http_get {
        match resolve_port(&http.port, container) {
            Ok(port)
                if http
                    .scheme
                    .as_deref()
                    .unwrap_or("HTTP")
                    .eq_ignore_ascii_case("HTTP") =>
            {
                let path = http.path.clone().unwrap_or_else(|| "/".to_owned());
                ProbeAction::Http {
                    host: http
                        .host
                        .clone()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| pod_ip.to_owned()),
                    port,
                    path: if path.starts_with('/') {
                        path
                    } else {
                        format!("/{path}")
                    },
                    headers: http
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                }
            }
            Ok(_) => {
                ProbeAction::Unsupported("HTTPS probes are not supported by the node agent".into())
            }
            Err(message) => ProbeAction::Unsupported(message),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        match resolve_port(&tcp.port, container) {
            Ok(port) => ProbeAction::Tcp {
                host: tcp
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| pod_ip.to_owned()),
                port,
            },
            Err(message) => ProbeAction::Unsupported(message),
        }
    } else if let Some(exec) = &probe.exec {
        ProbeAction::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else {
        ProbeAction::Unsupported("probe has no action the node agent supports (grpc?)".into())
    };
    let success_threshold = match kind {
        ProbeKind::Readiness => count(probe.success_threshold, 1),
        ProbeKind::Liveness | ProbeKind::Startup => 1,
    };
    ProbeSpec {
        kind,
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
        period: seconds(probe.period_seconds, 10, 1),
        timeout: seconds(probe.timeout_seconds, 1, 1),
        success_threshold,
        failure_threshold: count(probe.failure_threshold, 3),
        termination_grace_seconds: probe.termination_grace_period_seconds,
    }
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid probe port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no container port named {name}"))
        }
    }
}

/// The verdict of a probe from its consecutive results.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    verdict: bool,
    successes: u32,
    failures: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl ProbeTracker {
    /// A tracker starting at the kubelet's initial verdict: liveness passes until proven
    /// otherwise, readiness and startup fail until proven otherwise.
    pub fn new(spec: &ProbeSpec) -> Self {
        Self {
            verdict: spec.kind == ProbeKind::Liveness,
            successes: 0,
            failures: 0,
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
        }
    }

    /// The current verdict.
    #[cfg(test)]
    pub fn verdict(&self) -> bool {
        self.verdict
    }

    /// Records one result; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.verdict && self.successes >= self.success_threshold {
                self.verdict = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.verdict && self.failures >= self.failure_threshold {
                self.verdict = false;
                return Some(false);
            }
            // A startup probe "fails" (restarts the container) after the threshold even though
            // its verdict was never true.
            if !self.verdict && self.failures == self.failure_threshold {
                return Some(false);
            }
        }
        None
    }
}

/// A verdict change, sent to the pod runner.
#[derive(Debug, Clone)]
pub struct ProbeVerdict {
    /// The container.
    pub container: String,
    /// The container run the probe belongs to (stale verdicts are ignored).
    pub run: u64,
    /// Which probe.
    pub kind: ProbeKind,
    /// The new verdict.
    pub ok: bool,
    /// The last check's output or error.
    pub message: String,
}

/// Makes one check, failing after the spec's timeout. `exec` runs exec actions.
pub async fn check<F, Fut>(spec: &ProbeSpec, exec: F) -> Result<(), String>
where
    F: FnOnce(Vec<String>, Duration) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let timeout = spec.timeout;
    match &spec.action {
        ProbeAction::Http {
            host,
            port,
            path,
            headers,
        } => tokio::time::timeout(timeout, http_get(host, *port, path, headers))
            .await
            .map_err(|_| {
                format!("Get \"http://{host}:{port}{path}\": timeout after {timeout:?}")
            })?,
        ProbeAction::Tcp { host, port } => {
            tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), *port)))
                .await
                .map_err(|_| format!("dial tcp {host}:{port}: i/o timeout"))?
                .map(|_| ())
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        }
        ProbeAction::Exec { command } => exec(command.clone(), timeout).await,
        ProbeAction::Unsupported(message) => Err(message.clone()),
    }
}

/// A minimal HTTP/1.1 GET: success is a 2xx or 3xx status line.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// Runs a probe for one container run until `verdicts` closes: waits the initial delay, then
/// checks every period (skipping while `gate` is closed, for probes held back by the startup
/// probe), and sends each verdict change. A startup probe stops after its first success.
pub async fn run<F, Fut>(
    spec: ProbeSpec,
    container: String,
    run: u64,
    gate: Arc<AtomicBool>,
    exec: F,
    verdicts: mpsc::Sender<ProbeVerdict>,
) where
    F: Fn(Vec<String>, Duration) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut tracker = ProbeTracker::new(&spec);
    tokio::time::sleep(spec.initial_delay).await;
    let mut interval = tokio::time::interval(spec.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if verdicts.is_closed() {
            return;
        }
        if !gate.load(Ordering::Acquire) {
            continue;
        }
        let result = check(&spec, &exec).await;
        let ok = result.is_ok();
        if let Some(verdict) = tracker.record(ok) {
            let message = result.err().unwrap_or_default();
            let sent = verdicts
                .send(ProbeVerdict {
                    container: container.clone(),
                    run,
                    kind: spec.kind,
                    ok: verdict,
                    message,
                })
                .await;
            if sent.is_err() || (spec.kind == ProbeKind::Startup && verdict) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    fn probe_spec(kind: ProbeKind, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            kind,
            action: ProbeAction::Unsupported(String::new()),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
            termination_grace_seconds: None,
        }
    }

    #[test]
    fn readiness_needs_consecutive_successes_and_failures() {
        let mut tracker = ProbeTracker::new(&probe_spec(ProbeKind::Readiness, 2, 3));
        assert!(!tracker.verdict());
        assert_eq!(tracker.record(true), None);
        assert_eq!(
            tracker.record(false),
            None,
            "a failure resets the success count"
        );
        assert_eq!(tracker.record(true), None);
        assert_eq!(tracker.record(true), Some(true));
        assert_eq!(tracker.record(false), None);
        assert_eq!(tracker.record(false), None);
        assert_eq!(tracker.record(false), Some(false));
        assert_eq!(tracker.record(false), None, "only changes are reported");
    }

    #[test]
    fn liveness_starts_healthy_and_startup_fails_at_threshold() {
        let mut liveness = ProbeTracker::new(&probe_spec(ProbeKind::Liveness, 1, 2));
        assert!(liveness.verdict());
        assert_eq!(liveness.record(false), None);
        assert_eq!(liveness.record(false), Some(false));
        let mut startup = ProbeTracker::new(&probe_spec(ProbeKind::Startup, 1, 2));
        assert_eq!(startup.record(false), None);
        assert_eq!(startup.record(false), Some(false));
        assert_eq!(startup.record(true), Some(true));
    }

    #[test]
    fn spec_resolves_named_ports_and_defaults() {
        let container: Container =
            serde_yaml::from_str("name: c\nports: [{ name: http, containerPort: 8080 }]").unwrap();
        let probe: Probe = serde_yaml::from_str(
            "httpGet: { path: healthz, port: http }\nperiodSeconds: 2\nsuccessThreshold: 5",
        )
        .unwrap();
        let liveness = spec(ProbeKind::Liveness, &probe, &container, "127.1.0.2");
        assert_eq!(
            liveness.action,
            ProbeAction::Http {
                host: "127.1.0.2".into(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![],
            }
        );
        assert_eq!(liveness.period, Duration::from_secs(2));
        assert_eq!(liveness.timeout, Duration::from_secs(1));
        assert_eq!(liveness.failure_threshold, 3);
        assert_eq!(
            liveness.success_threshold, 1,
            "liveness always needs one success"
        );
        let readiness = spec(ProbeKind::Readiness, &probe, &container, "127.1.0.2");
        assert_eq!(readiness.success_threshold, 5);
        let bad: Probe = serde_yaml::from_str("tcpSocket: { port: metrics }").unwrap();
        assert!(matches!(
            spec(ProbeKind::Readiness, &bad, &container, "127.1.0.2").action,
            ProbeAction::Unsupported(_)
        ));
    }

    /// Serves `status` once per connection on a local port.
    async fn server(status: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probe_against_a_local_listener() {
        let ok = server(200).await;
        let redirect = server(302).await;
        let broken = server(503).await;
        assert_eq!(http_get("127.0.0.1", ok, "/healthz", &[]).await, Ok(()));
        assert_eq!(http_get("127.0.0.1", redirect, "/", &[]).await, Ok(()));
        let error = http_get("127.0.0.1", broken, "/", &[]).await.unwrap_err();
        assert!(error.contains("503"), "{error}");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(http_get("127.0.0.1", closed, "/", &[]).await.is_err());
    }

    #[tokio::test]
    async fn probe_loop_reports_readiness_then_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut spec = probe_spec(ProbeKind::Readiness, 1, 1);
        spec.action = ProbeAction::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        spec.period = Duration::from_millis(1000);
        let (tx, mut rx) = mpsc::channel(4);
        let gate = Arc::new(AtomicBool::new(true));
        let exec = |_: Vec<String>, _: Duration| async { Ok(()) };
        let task = tokio::spawn(run(spec, "c".into(), 7, gate, exec, tx));
        let ready = rx.recv().await.unwrap();
        assert!(ready.ok);
        assert_eq!((ready.container.as_str(), ready.run), ("c", 7));
        drop(listener);
        let failed = rx.recv().await.unwrap();
        assert!(!failed.ok);
        assert!(failed.message.contains("dial tcp"), "{}", failed.message);
        drop(rx);
        task.abort();
    }
}
