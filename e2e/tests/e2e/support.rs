//! Helpers the end-to-end tests share.

use std::time::Duration;

use sessionizer_e2e::Env;

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
