//! Where the prebuilt servers and our own binaries are. The versions come from
//! `e2e/toolchain/versions.env` — the same file `build.sh` reads — so the Rust side can never look
//! for a build the script did not make.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const VERSIONS: &str = include_str!("../toolchain/versions.env");

/// Looks up `KEY=value` in `versions.env`.
pub fn version(key: &str) -> Result<&'static str> {
    VERSIONS
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .ok_or_else(|| Error::Other(format!("{key} is missing from e2e/toolchain/versions.env")))
}

/// The cache root: `$SESSIONIZER_CACHE`, or `~/.cache/sessionizer`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SESSIONIZER_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("sessionizer")
}

/// The directory a tool was built into (`<cache>/tools/<name>-<version>`), if its build completed.
pub fn tool_dir(name: &str, version_key: &str) -> Result<PathBuf> {
    let dir = cache_dir()
        .join("tools")
        .join(format!("{name}-{}", version(version_key)?));
    if dir.join(".complete").is_file() {
        Ok(dir)
    } else {
        Err(Error::ToolMissing {
            tool: name.to_owned(),
            path: dir,
        })
    }
}

/// The path of one binary of a Go-built tool.
pub fn go_binary(tool: &str, version_key: &str, binary: &str) -> Result<PathBuf> {
    Ok(tool_dir(tool, version_key)?.join("bin").join(binary))
}

/// `kubectl` of the pinned Kubernetes release.
pub fn kubectl() -> Result<PathBuf> {
    go_binary("k8s", "K8S_VERSION", "kubectl")
}

/// `helm` at its pinned release.
pub fn helm() -> Result<PathBuf> {
    go_binary("helm", "HELM_VERSION", "helm")
}

/// The directory holding this workspace's binaries (worker, operator, node agent, test apps).
///
/// `$SESSIONIZER_BIN_DIR` wins; otherwise it is derived from the running executable, which is
/// either in it (`target/debug/x`) or one level below it (`target/debug/deps/test-…`).
pub fn workspace_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SESSIONIZER_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(Error::io("locating", "the current executable"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_owned()
    } else {
        dir.to_owned()
    })
}

/// A binary of this workspace, which must have been built (`cargo build --workspace --bins`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let path = workspace_bin_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ToolMissing {
            tool: name.to_owned(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_version_is_readable() {
        for key in [
            "K8S_VERSION",
            "ETCD_VERSION",
            "HELM_VERSION",
            "MINIO_VERSION",
            "KAFKA_VERSION",
        ] {
            let value = version(key).unwrap();
            assert!(!value.is_empty(), "{key}");
        }
        assert!(version("NOT_A_KEY").is_err());
    }
}
