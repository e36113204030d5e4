//! The worker's command line. Every flag has an environment fallback, so the operator can
//! configure a worker Pod through its environment alone and a person can run the same binary
//! by hand. Parsing only: nothing here reads files or the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};

use crate::config::{CONFIG_FILE_NAME, CONFIG_MOUNT_DIR, ENV_CONFIG};

/// Environment fallback of `--log-format`.
pub const ENV_LOG_FORMAT: &str = "LOG_FORMAT";
/// Environment fallback of `--log-level`.
pub const ENV_LOG_LEVEL: &str = "LOG_LEVEL";
/// Environment fallback of `--data-dir`.
pub const ENV_DATA_DIR: &str = "SESSIONIZER_DATA_DIR";
/// Default of `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sessionizer";

/// The worker's flags.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "sessionizer-worker",
    version,
    about = "Sessionizes Kafka events for one replica of a SessionJob."
)]
pub struct Args {
    /// The worker configuration file the operator writes into the job's ConfigMap.
    #[arg(long, env = ENV_CONFIG, default_value_os_t = default_config_path())]
    pub config: PathBuf,
    /// The Pod's data directory; the embedded history store lives under it.
    #[arg(long, env = ENV_DATA_DIR, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address of the HTTP server (`/healthz`, `/readyz`, `/metrics`, `/status`).
    /// Default: `$POD_IP:8080`, or `0.0.0.0:8080` when `POD_IP` is unset.
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Log format: `json` (one object per line, for log collectors) or `text` (for people).
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `info,sessionizer_worker=debug`.
    #[arg(long, env = ENV_LOG_LEVEL, default_value = "info")]
    pub log_level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `CONFIG_MOUNT_DIR/CONFIG_FILE_NAME`: where the operator mounts the configuration.
pub fn default_config_path() -> PathBuf {
    Path::new(CONFIG_MOUNT_DIR).join(CONFIG_FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_the_mounted_configuration() {
        let args = Args::try_parse_from(["sessionizer-worker"]).unwrap();
        // The environment of the test process may set the fallbacks; only check what it cannot.
        if std::env::var_os(ENV_CONFIG).is_none() {
            assert_eq!(args.config, PathBuf::from("/etc/sessionizer/worker.yaml"));
        }
        assert_eq!(args.http_addr, None);
        if std::env::var_os(ENV_DATA_DIR).is_none() {
            assert_eq!(args.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        }
    }

    #[test]
    fn flags_override_defaults() {
        let args = Args::try_parse_from([
            "sessionizer-worker",
            "--config=/tmp/w.yaml",
            "--data-dir=/tmp/data",
            "--http-addr=127.0.0.1:9000",
            "--log-format=text",
            "--log-level=debug",
        ])
        .unwrap();
        assert_eq!(args.config, PathBuf::from("/tmp/w.yaml"));
        assert_eq!(args.data_dir, PathBuf::from("/tmp/data"));
        assert_eq!(args.http_addr, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.log_level, "debug");
    }

    #[test]
    fn an_unknown_log_format_is_refused() {
        assert!(Args::try_parse_from(["sessionizer-worker", "--log-format=xml"]).is_err());
    }
}
