//! Settings that change without a restart. The operator renders the worker's configuration into
//! a ConfigMap mounted as a file; the kubelet swaps the file in place when the ConfigMap
//! changes. For `history.ttl` the operator does not roll the Pods (seed 000: retention must be
//! changeable without a restart), so the worker watches the file and hands a new TTL to the stream
//! loop, which uses it for every later history write.
//!
//! Only `history.ttl` is applied live; any other change is left for the restart the operator
//! makes for it. A file that cannot be read or parsed keeps the current TTL (logged), never
//! stops the worker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::WorkerConfig;
use crate::http::WorkerState;

/// How often the configuration file is read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Reads `path` every `every` and publishes `history.ttl` to `state` when it differs from
/// `current`, until the task is aborted.
pub fn spawn_ttl_watcher(
    path: PathBuf,
    mut current: Duration,
    every: Duration,
    state: Arc<WorkerState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_problem: Option<String> = None;
        loop {
            ticks.tick().await;
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || WorkerConfig::from_file(&path)).await
            };
            let ttl = match read {
                Ok(Ok(config)) => config.spec.history_ttl().map_err(|e| e.to_string()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match ttl {
                Ok(ttl) => {
                    last_problem = None;
                    if ttl != current {
                        info!(
                            old_ttl_seconds = current.as_secs(),
                            new_ttl_seconds = ttl.as_secs(),
                            "history.ttl in the configuration file changed"
                        );
                        current = ttl;
                        state.set_history_ttl(ttl);
                    }
                }
                Err(problem) => {
                    if last_problem.as_ref() != Some(&problem) {
                        warn!(%problem, "re-reading the configuration; keeping the current history.ttl");
                    }
                    last_problem = Some(problem);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::identity::Identity;

    #[tokio::test]
    async fn a_changed_ttl_in_the_file_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.yaml");
        let mut config = sample_config();
        std::fs::write(&path, config.to_yaml().unwrap()).unwrap();
        let initial = config.spec.history_ttl().unwrap();
        let identity = Identity {
            pod_name: None,
            pod_ip: None,
            ordinal: 0,
            replicas: 1,
        };
        let state = Arc::new(WorkerState::new(&config, identity));
        let mut ttl = state.subscribe_history_ttl();
        let watcher = spawn_ttl_watcher(
            path.clone(),
            initial,
            Duration::from_millis(10),
            state.clone(),
        );

        // A broken file keeps the TTL.
        std::fs::write(&path, "job: [broken").unwrap();
        config.spec.history.ttl = "36h".into();
        // An atomic swap, as the kubelet does it.
        let next = dir.path().join("next.yaml");
        std::fs::write(&next, config.to_yaml().unwrap()).unwrap();
        std::fs::rename(&next, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(10), ttl.wait_for(Option::is_some))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*ttl.borrow(), Some(Duration::from_secs(36 * 3600)));
        watcher.abort();
    }
}
