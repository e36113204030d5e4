//! Kubeconfig files for the local control plane: one per identity, with certificates embedded so
//! a file can be handed to a process (kubectl, helm, the operator) on its own.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::pki::CertFiles;
use crate::{Error, Result};

fn read_b64(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(Error::io("reading", path))?;
    Ok(STANDARD.encode(bytes))
}

/// Writes a kubeconfig for `user` authenticating with a client certificate.
pub fn write_with_cert(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    cert: &CertFiles,
) -> Result<()> {
    let auth = json!({
        "client-certificate-data": read_b64(&cert.cert)?,
        "client-key-data": read_b64(&cert.key)?,
    });
    write(path, server, ca_cert, user, auth)
}

/// Writes a kubeconfig for `user` authenticating with a bearer token.
pub fn write_with_token(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    token: &str,
) -> Result<()> {
    write(path, server, ca_cert, user, json!({ "token": token }))
}

fn write(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    auth: serde_json::Value,
) -> Result<()> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "sessionizer-local",
            "cluster": { "server": server, "certificate-authority-data": read_b64(ca_cert)? },
        }],
        "users": [{ "name": user, "user": auth }],
        "contexts": [{
            "name": "sessionizer-local",
            "context": { "cluster": "sessionizer-local", "user": user, "namespace": "default" },
        }],
        "current-context": "sessionizer-local",
    });
    let yaml = serde_yaml::to_string(&config)
        .map_err(|e| Error::Other(format!("serializing kubeconfig {}: {e}", path.display())))?;
    std::fs::write(path, yaml).map_err(Error::io("writing", path))
}

/// Selects the process-wide TLS crypto provider. Two are linked in (kube-rs uses ring,
/// object_store's S3 client brings aws-lc-rs), and rustls refuses to guess between them.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A kube-rs client for the kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<kube::Client> {
    install_crypto_provider();
    let context = format!("loading kubeconfig {}", path.display());
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Other(format!("{context}: {e}")))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| Error::Other(format!("{context}: {e}")))?;
    kube::Client::try_from(config).map_err(Error::kube(context))
}
