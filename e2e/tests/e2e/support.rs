//! Helpers the end-to-end tests share.

use std::time::Duration;

use sessionizer_e2e::{Env, install};

/// How long a test waits for Pods and controllers on this small machine.
pub const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// The shared environment; a failure to start it fails the test with the cause.
pub fn env() -> &'static Env {
    match Env::shared() {
        Ok(env) => env,
        Err(error) => panic!("{error}"),
    }
}

/// Process ids of live processes whose environment contains `entry` (e.g. `POD_NAME=web-0`):
/// how a test sees the processes behind a Pod without asking the node agent.
pub fn processes_with_env(entry: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ
                .split(|b| *b == 0)
                .any(|var| var == entry.as_bytes())
        })
        .collect()
}

/// A fresh namespace `<prefix>-…` with the CRDs installed and the operator chart running in it,
/// set up with `values` (Helm `--set` pairs): the client and the namespace.
pub async fn namespace_with_operator(prefix: &str, values: &[&str]) -> (kube::Client, String) {
    let env = env();
    let client = env.client().await.unwrap();
    sessionizer_e2e::crds::install(&client).await.unwrap();
    let namespace = env.namespace(prefix).await.unwrap();
    install::operator(env, &namespace, "sessionizer", values)
        .await
        .unwrap();
    (client, namespace)
}
