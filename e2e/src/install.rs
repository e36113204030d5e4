//! Installing Sessionizer into the local cluster the way a user does: `helm install` of the
//! operator chart, then `kubectl apply` of a manifest from `examples/`. The demo and the
//! end-to-end tests both go through here.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::{Env, Error, Result, wait};

/// How long the operator Deployment may take to become available.
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository root (for `charts/` and `examples/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), PathBuf::from)
}

/// The operator chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/sessionizer-operator")
}

/// Installs the operator chart as `release` into `namespace`, watching only that namespace, and
/// waits until every operator replica is available. `extra` are further `--set` values.
pub async fn operator(env: &Env, namespace: &str, release: &str, extra: &[&str]) -> Result<()> {
    let chart = chart_dir();
    let watch = format!("watchNamespaces={{{namespace}}}");
    let mut args = vec![
        "install",
        release,
        chart.to_str().unwrap_or("charts/sessionizer-operator"),
        "--namespace",
        namespace,
        "--set",
        &watch,
        "--set",
        "logFormat=text",
        "--wait",
        "--timeout",
        "3m",
    ];
    for value in extra {
        args.extend(["--set", value]);
    }
    env.helm(&args).await?;
    wait_operator_available(env, namespace, release).await
}

/// Waits until the operator Deployment of `release` has all its replicas available.
pub async fn wait_operator_available(env: &Env, namespace: &str, release: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(env.client().await?, namespace);
    let what = format!("the operator deployment of release {release} to be available");
    wait::until(&what, OPERATOR_TIMEOUT, || async {
        let list = deployments
            .list(&Default::default())
            .await
            .map_err(Error::kube("listing deployments"))?;
        let ready = list.items.iter().any(|d| {
            let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let available = d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            d.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains(release))
                && available >= desired
        });
        Ok::<_, Error>(ready.then_some(()))
    })
    .await
}

/// Reads `examples/<file>` and replaces each `${KEY}` by its value.
pub fn example(file: &str, substitutions: &[(&str, &str)]) -> Result<String> {
    let path = repo_root().join("examples").join(file);
    let mut text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    for (key, value) in substitutions {
        text = text.replace(&format!("${{{key}}}"), value);
    }
    Ok(text)
}
