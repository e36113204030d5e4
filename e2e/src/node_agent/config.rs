//! The node agent's command line and its image table.
//!
//! There is no container runtime here: an image name stands for a binary built on this machine.
//! This module owns that mapping and its matching rules, so every part of the agent resolves
//! images the same way and an unknown image fails with a message that lists the known ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// How the node agent is started (`sessionizer-node-agent --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "sessionizer-node-agent",
    about = "Registers a Node and runs its Pods as local processes (the local environment's kubelet)"
)]
pub struct Config {
    /// Kubeconfig with rights over nodes, pods, leases, events and service-account tokens.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Directory for pod logs, volumes and tokens (`pods/<namespace>/<pod>/…`, `volumes/…`).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The name of the Node to register.
    #[arg(long, default_value = "local-node")]
    pub node_name: String,
    /// An image and the local binary that stands for it, as `NAME=PATH`; repeatable.
    #[arg(long = "image", value_name = "NAME=PATH", value_parser = parse_image)]
    pub images: Vec<ImageMapping>,
    /// Environment variables of the agent passed on to every container (for example
    /// `RUST_BACKTRACE`); repeatable.
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Lifetime requested for service-account tokens; they are refreshed at 80% of it.
    #[arg(long, default_value_t = 3600)]
    pub token_expiration_seconds: i64,
    /// How often the Node's Lease is renewed and its status posted.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
}

impl Config {
    /// A configuration with defaults for everything but the kubeconfig and the state directory.
    pub fn new(kubeconfig: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            kubeconfig: kubeconfig.into(),
            state_dir: state_dir.into(),
            node_name: "local-node".into(),
            images: Vec::new(),
            pass_env: Vec::new(),
            token_expiration_seconds: 3600,
            heartbeat_seconds: 10,
            log_json: false,
        }
    }

    /// Adds an image mapping.
    pub fn image(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.images.push(ImageMapping {
            name: name.into(),
            path: path.into(),
        });
        self
    }

    /// The command-line arguments that reproduce this configuration, for starting the agent
    /// binary as a child process.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--kubeconfig".to_owned(),
            self.kubeconfig.display().to_string(),
            "--state-dir".to_owned(),
            self.state_dir.display().to_string(),
            "--node-name".to_owned(),
            self.node_name.clone(),
            "--token-expiration-seconds".to_owned(),
            self.token_expiration_seconds.to_string(),
            "--heartbeat-seconds".to_owned(),
            self.heartbeat_seconds.to_string(),
        ];
        for image in &self.images {
            args.push("--image".to_owned());
            args.push(format!("{}={}", image.name, image.path.display()));
        }
        for name in &self.pass_env {
            args.push("--pass-env".to_owned());
            args.push(name.clone());
        }
        if self.log_json {
            args.push("--log-json".to_owned());
        }
        args
    }

    /// The heartbeat interval as a duration (at least one second).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds.max(1))
    }
}

/// One `--image NAME=PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMapping {
    /// The image name as Pods spell it (with or without a tag).
    pub name: String,
    /// The binary that runs as the image's entrypoint.
    pub path: PathBuf,
}

fn parse_image(value: &str) -> std::result::Result<ImageMapping, String> {
    match value.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(ImageMapping {
            name: name.to_owned(),
            path: PathBuf::from(path),
        }),
        _ => Err(format!("expected NAME=PATH, got {value:?}")),
    }
}

/// The images this node can "pull": a table from image name to local binary.
#[derive(Debug, Clone, Default)]
pub struct ImageRegistry {
    images: BTreeMap<String, PathBuf>,
}

impl ImageRegistry {
    /// A registry of `mappings`; a later mapping of the same name wins.
    pub fn new(mappings: &[ImageMapping]) -> Self {
        let images = mappings
            .iter()
            .map(|m| (m.name.clone(), m.path.clone()))
            .collect();
        Self { images }
    }

    /// The binary for `image`: the exact name first, then the name without its tag or digest.
    pub fn resolve(&self, image: &str) -> Result<&Path> {
        self.images
            .get(image)
            .or_else(|| self.images.get(strip_tag_and_digest(image)))
            .map(PathBuf::as_path)
            .ok_or_else(|| Error::UnknownImage {
                image: image.to_owned(),
                known: self.known().join(", "),
            })
    }

    /// The known image names, sorted.
    pub fn known(&self) -> Vec<&str> {
        self.images.keys().map(String::as_str).collect()
    }

    /// The mappings whose binary does not exist (yet).
    pub fn missing_binaries(&self) -> Vec<(&str, &Path)> {
        self.images
            .iter()
            .filter(|(_, path)| !path.is_file())
            .map(|(name, path)| (name.as_str(), path.as_path()))
            .collect()
    }
}

/// `registry/name:tag@sha256:…` → `registry/name`. A colon before the last slash is a registry
/// port, not a tag.
fn strip_tag_and_digest(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn registry() -> ImageRegistry {
        ImageRegistry::new(&[
            ImageMapping {
                name: "sessionizer/worker".into(),
                path: "/bin/worker".into(),
            },
            ImageMapping {
                name: "sessionizer/worker:legacy".into(),
                path: "/bin/legacy-worker".into(),
            },
            ImageMapping {
                name: "localhost:5000/testapp".into(),
                path: "/bin/testapp".into(),
            },
        ])
    }

    #[test]
    fn exact_name_wins_over_the_untagged_name() {
        let images = registry();
        assert_eq!(
            images.resolve("sessionizer/worker:legacy").unwrap(),
            Path::new("/bin/legacy-worker")
        );
        assert_eq!(
            images.resolve("sessionizer/worker:dev").unwrap(),
            Path::new("/bin/worker")
        );
        assert_eq!(
            images.resolve("sessionizer/worker@sha256:abcd").unwrap(),
            Path::new("/bin/worker")
        );
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        let images = registry();
        assert_eq!(
            images.resolve("localhost:5000/testapp:1.0").unwrap(),
            Path::new("/bin/testapp")
        );
        assert_eq!(
            strip_tag_and_digest("localhost:5000/testapp"),
            "localhost:5000/testapp"
        );
    }

    #[test]
    fn unknown_image_names_the_image_and_the_known_ones() {
        let message = registry().resolve("nginx:1.27").unwrap_err().to_string();
        assert!(message.contains("\"nginx:1.27\""), "{message}");
        assert!(message.contains("sessionizer/worker"), "{message}");
        assert!(message.contains("localhost:5000/testapp"), "{message}");
    }

    #[test]
    fn command_line_round_trips() {
        let config = Config::new("/tmp/admin.kubeconfig", "/tmp/state")
            .image("testapp", "/bin/testapp")
            .image("worker:1", "/bin/worker");
        let mut args = vec!["sessionizer-node-agent".to_owned()];
        args.extend(config.to_args());
        let parsed = Config::try_parse_from(args).unwrap();
        assert_eq!(parsed.images, config.images);
        assert_eq!(parsed.node_name, "local-node");
        assert!(
            Config::try_parse_from([
                "x",
                "--kubeconfig",
                "k",
                "--state-dir",
                "s",
                "--image",
                "noequals"
            ])
            .is_err()
        );
    }
}
