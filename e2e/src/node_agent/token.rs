//! Each Pod's service-account credentials: a bound token from the TokenRequest API (bound to the
//! Pod, so it dies with it), refreshed before it expires, written as `token`, `ca.crt` and
//! `namespace` files and wrapped in a kubeconfig whose `tokenFile` always points at the current
//! token. RBAC rules for a Pod's service account are therefore exercised for real.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::atomic_writer;
use super::volumes::{FileSet, TokenSpec};
use crate::{Error, Result};

/// The API server as Pods reach it.
#[derive(Debug, Clone)]
pub struct ApiServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Host for `KUBERNETES_SERVICE_HOST`.
    pub host: String,
    /// Port for `KUBERNETES_SERVICE_PORT`.
    pub port: u16,
    /// The cluster CA bundle (PEM).
    pub ca_pem: Vec<u8>,
}

impl ApiServer {
    /// The server and CA of the current context of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let fail = |what: &str| Error::Other(format!("kubeconfig {}: {what}", path.display()));
        let config = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(&e.to_string()))?;
        let context_name = config.current_context.clone().unwrap_or_default();
        let cluster_name = config
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .or_else(|| config.clusters.first().map(|c| c.name.clone()))
            .ok_or_else(|| fail("no cluster"))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| fail("current cluster not found"))?;
        let url = cluster
            .server
            .clone()
            .ok_or_else(|| fail("cluster has no server"))?;
        let ca_pem = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) => STANDARD
                .decode(data.trim())
                .map_err(|e| fail(&format!("certificate-authority-data: {e}")))?,
            (None, Some(file)) => std::fs::read(file).map_err(Error::io("reading", file))?,
            (None, None) => return Err(fail("cluster has no certificate authority")),
        };
        let parsed = url::Url::parse(&url).map_err(|e| fail(&format!("server {url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| fail("server has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port,
            ca_pem,
        })
    }
}

/// A token and when to replace it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    issued: Instant,
    lifetime: Duration,
}

impl IssuedToken {
    /// Whether 80% of the token's lifetime has passed (the kubelet's rule).
    pub fn needs_refresh(&self) -> bool {
        self.issued.elapsed() >= self.lifetime.mul_f64(0.8)
    }

    /// When the token should be refreshed.
    pub fn refresh_at(&self) -> Instant {
        self.issued + self.lifetime.mul_f64(0.8)
    }
}

/// Requests a token for `service_account`, bound to the Pod `pod_name`/`pod_uid`.
pub async fn request(
    client: &Client,
    namespace: &str,
    service_account: &str,
    pod_name: &str,
    pod_uid: &str,
    spec: &TokenSpec,
) -> Result<IssuedToken> {
    // The API server refuses lifetimes under ten minutes.
    let expiration = spec.expiration_seconds.max(600);
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: Some(spec.audience.iter().cloned().collect()),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name.into()),
                uid: Some(pod_uid.into()),
            }),
            expiration_seconds: Some(expiration),
        }),
        status: None,
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let issued = Instant::now();
    let response: TokenRequest = api
        .create_subresource("token", service_account, &PostParams::default(), &request)
        .await
        .map_err(Error::kube(format!(
            "requesting a token for service account {namespace}/{service_account}"
        )))?;
    let token = response
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| Error::Other("TokenRequest returned no token".into()))?;
    Ok(IssuedToken {
        token,
        issued,
        lifetime: Duration::from_secs(u64::try_from(expiration).unwrap_or(600)),
    })
}

/// The files of `<pod dir>/serviceaccount` (also mounted at the in-cluster path).
pub fn write_service_account(
    dir: &Path,
    token: &str,
    ca_pem: &[u8],
    namespace: &str,
) -> Result<()> {
    let mut files = FileSet::default();
    files
        .files
        .insert("token".into(), (token.as_bytes().to_vec(), 0o644));
    files
        .files
        .insert("ca.crt".into(), (ca_pem.to_vec(), 0o644));
    files
        .files
        .insert("namespace".into(), (namespace.as_bytes().to_vec(), 0o644));
    atomic_writer::write(dir, &files).map_err(Error::io("writing service-account files", dir))?;
    Ok(())
}

/// Writes `<pod dir>/kubeconfig`, reading the token and CA from `sa_dir` so refreshed tokens are
/// picked up by clients without rewriting it.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    sa_dir: &Path,
    namespace: &str,
    user: &str,
) -> Result<PathBuf> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "local",
            "cluster": {
                "server": server,
                "certificate-authority": sa_dir.join("ca.crt").display().to_string(),
            },
        }],
        "users": [{ "name": user, "user": { "tokenFile": sa_dir.join("token").display().to_string() } }],
        "contexts": [{
            "name": "local",
            "context": { "cluster": "local", "user": user, "namespace": namespace },
        }],
        "current-context": "local",
    });
    let yaml = serde_yaml::to_string(&config)
        .map_err(|e| Error::Other(format!("serializing kubeconfig {}: {e}", path.display())))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming", path))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_comes_from_the_current_context() {
        let dir = std::env::temp_dir().join(format!("token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.kubeconfig");
        let ca = STANDARD.encode("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u }}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        let server = ApiServer::from_kubeconfig(&path).unwrap();
        assert_eq!(server.url, "https://127.0.0.1:6443");
        assert_eq!((server.host.as_str(), server.port), ("127.0.0.1", 6443));
        assert!(
            String::from_utf8(server.ca_pem)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );

        let sa = dir.join("serviceaccount");
        write_service_account(&sa, "jwt", b"ca", "jobs").unwrap();
        assert_eq!(std::fs::read_to_string(sa.join("token")).unwrap(), "jwt");
        let kubeconfig =
            write_kubeconfig(&dir.join("kubeconfig"), &server.url, &sa, "jobs", "worker").unwrap();
        let parsed = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.token_file.as_deref(),
            Some(sa.join("token").to_str().unwrap())
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
