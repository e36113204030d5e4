//! The Kubernetes control plane of the local environment: etcd, kube-apiserver and
//! kube-controller-manager, the official binaries built from the pinned release, on loopback.
//!
//! The API server runs with RBAC and service-account tokens (TokenRequest, bound tokens) exactly
//! as a production cluster does; the controller manager runs every default controller with
//! per-controller service-account credentials, so StatefulSets, garbage collection and service
//! accounts behave as they would in a real cluster. There is no scheduler and no kubelet: the
//! node agent binds and runs Pods.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::net::{free_port, loopback};
use crate::pki::Pki;
use crate::process::ManagedProcess;
use crate::tools::go_binary;
use crate::{Error, Result, kubeconfig, wait};

/// How long each component may take to become ready on a busy 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running control plane. Dropping it stops the controller manager, the API server and etcd,
/// in that order.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: clients of a component go before the component.
    controller_manager: ManagedProcess,
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub server: String,
    /// The keys and certificates of this run.
    pub pki: Pki,
    /// A `system:masters` kubeconfig.
    pub admin_kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager under `dir` and waits until the API
    /// server is ready and the controller manager has created the `default` service account.
    pub async fn start(dir: &Path) -> Result<Self> {
        let pki = Pki::generate(&dir.join("pki"))?;
        let etcd = start_etcd(dir)?;
        wait_etcd(&etcd.1, &etcd.0).await?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let apiserver = start_apiserver(dir, &pki, port, &etcd.1)?;
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        kubeconfig::write_with_cert(
            &admin_kubeconfig,
            &server,
            &pki.ca_cert,
            "admin",
            &pki.admin,
        )?;
        let client = kubeconfig::client(&admin_kubeconfig).await?;
        wait_apiserver(&client, &apiserver).await?;

        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        kubeconfig::write_with_cert(
            &kcm_kubeconfig,
            &server,
            &pki.ca_cert,
            "system:kube-controller-manager",
            &pki.controller_manager,
        )?;
        let controller_manager = start_controller_manager(dir, &pki, &kcm_kubeconfig)?;
        wait_default_service_account(&client, &controller_manager).await?;

        Ok(Self {
            controller_manager,
            apiserver,
            etcd: etcd.0,
            server,
            pki,
            admin_kubeconfig,
        })
    }

    /// A client with administrator rights.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.admin_kubeconfig).await
    }

    /// Fails if any component has exited.
    pub fn ensure_running(&self) -> Result<()> {
        self.etcd.ensure_running()?;
        self.apiserver.ensure_running()?;
        self.controller_manager.ensure_running()
    }

    /// The log files of the three components.
    pub fn logs(&self) -> [&Path; 3] {
        [
            self.etcd.log(),
            self.apiserver.log(),
            self.controller_manager.log(),
        ]
    }
}

fn k8s_binary(name: &str) -> Result<PathBuf> {
    go_binary("k8s", "K8S_VERSION", name)
}

fn start_etcd(dir: &Path) -> Result<(ManagedProcess, String)> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("http://{}", loopback(client_port));
    let peer_url = format!("http://{}", loopback(peer_port));
    let mut command = Command::new(go_binary("etcd", "ETCD_VERSION", "etcd")?);
    command.args([
        "--name=local",
        &format!("--data-dir={}", dir.join("etcd").display()),
        &format!("--listen-client-urls={client_url}"),
        &format!("--advertise-client-urls={client_url}"),
        &format!("--listen-peer-urls={peer_url}"),
        &format!("--initial-advertise-peer-urls={peer_url}"),
        &format!("--initial-cluster=local={peer_url}"),
        // A test cluster's data dies with the run: durability buys nothing but latency here.
        "--unsafe-no-fsync",
        "--log-level=warn",
        "--quota-backend-bytes=4294967296",
    ]);
    let process = ManagedProcess::start("etcd", command, &dir.join("logs/etcd.log"))?;
    Ok((process, client_url))
}

async fn wait_etcd(url: &str, process: &ManagedProcess) -> Result<()> {
    let http = reqwest::Client::new();
    let health = format!("{url}/health");
    wait::until("etcd to report healthy", READY_TIMEOUT, || async {
        process.ensure_running()?;
        let body = match http.get(&health).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(error) => return Err(Error::Other(error.to_string())),
        };
        Ok::<_, Error>(body.contains("\"health\":\"true\"").then_some(()))
    })
    .await
}

fn start_apiserver(dir: &Path, pki: &Pki, port: u16, etcd_url: &str) -> Result<ManagedProcess> {
    let path = |p: &Path| p.display().to_string();
    let mut command = Command::new(k8s_binary("kube-apiserver")?);
    command.args([
        &format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        &format!("--secure-port={port}"),
        &format!("--cert-dir={}", dir.join("apiserver").display()),
        &format!("--tls-cert-file={}", path(&pki.apiserver.cert)),
        &format!("--tls-private-key-file={}", path(&pki.apiserver.key)),
        &format!("--client-ca-file={}", path(&pki.ca_cert)),
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        &format!(
            "--service-account-key-file={}",
            path(&pki.service_account_pub)
        ),
        &format!(
            "--service-account-signing-key-file={}",
            path(&pki.service_account_key)
        ),
        "--service-cluster-ip-range=10.0.0.0/24",
        // The `kubernetes` Service cannot point at a loopback address; nothing needs it here.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]);
    ManagedProcess::start(
        "kube-apiserver",
        command,
        &dir.join("logs/kube-apiserver.log"),
    )
}

async fn wait_apiserver(client: &kube::Client, process: &ManagedProcess) -> Result<()> {
    wait::until("kube-apiserver /readyz", READY_TIMEOUT, || async {
        process.ensure_running()?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::Other(e.to_string()))?;
        let body = client
            .request_text(request)
            .await
            .map_err(Error::kube("GET /readyz"))?;
        Ok::<_, Error>((body.trim() == "ok").then_some(()))
    })
    .await
}

fn start_controller_manager(dir: &Path, pki: &Pki, kubeconfig: &Path) -> Result<ManagedProcess> {
    let path = |p: &Path| p.display().to_string();
    let mut command = Command::new(k8s_binary("kube-controller-manager")?);
    command.args([
        &format!("--kubeconfig={}", path(kubeconfig)),
        &format!("--authentication-kubeconfig={}", path(kubeconfig)),
        &format!("--authorization-kubeconfig={}", path(kubeconfig)),
        "--bind-address=127.0.0.1",
        &format!("--secure-port={}", free_port()?),
        &format!("--cert-dir={}", dir.join("controller-manager").display()),
        // Each controller acts as its own service account, as in production clusters.
        "--use-service-account-credentials=true",
        &format!("--root-ca-file={}", path(&pki.ca_cert)),
        &format!(
            "--service-account-private-key-file={}",
            path(&pki.service_account_key)
        ),
        "--leader-elect=false",
        "--controllers=*",
        "--concurrent-statefulset-syncs=5",
        "--profiling=false",
        "--v=1",
    ]);
    ManagedProcess::start(
        "kube-controller-manager",
        command,
        &dir.join("logs/kube-controller-manager.log"),
    )
}

async fn wait_default_service_account(
    client: &kube::Client,
    process: &ManagedProcess,
) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait::until(
        "kube-controller-manager to create the default service account",
        READY_TIMEOUT,
        || async {
            process.ensure_running()?;
            let found = accounts
                .get_opt("default")
                .await
                .map_err(Error::kube("reading serviceaccount default/default"))?;
            Ok::<_, Error>(found.map(|_| ()))
        },
    )
    .await
}
