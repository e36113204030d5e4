//! The operator's command line. The flags and their environment fallbacks are a contract with
//! the Helm chart (which sets the environment), so names, variables and defaults change only
//! together with it. Parsing only: nothing here touches the network or the cluster.

use std::net::IpAddr;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

/// Environment fallback of `--namespaces`.
pub const ENV_WATCH_NAMESPACES: &str = "SESSIONIZER_WATCH_NAMESPACES";
/// Environment fallback of `--http-host`.
pub const ENV_HTTP_HOST: &str = "POD_IP";
/// Environment fallback of `--http-port`.
pub const ENV_HTTP_PORT: &str = "HTTP_PORT";
/// Environment fallback of `--leader-election`.
pub const ENV_LEADER_ELECTION: &str = "LEADER_ELECTION";
/// Environment fallback of `--lease-namespace`.
pub const ENV_LEASE_NAMESPACE: &str = "POD_NAMESPACE";
/// Environment fallback of `--identity`.
pub const ENV_IDENTITY: &str = "POD_NAME";
/// Environment fallback of `--log-format`.
pub const ENV_LOG_FORMAT: &str = "LOG_FORMAT";
/// Environment fallback of `--log-level`.
pub const ENV_LOG_LEVEL: &str = "LOG_LEVEL";

/// Default name of the leader election Lease.
pub const DEFAULT_LEASE_NAME: &str = "sessionizer-operator";

/// The operator's flags.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "sessionizer-operator",
    version,
    about = "Runs SessionJobs as worker StatefulSets."
)]
pub struct Args {
    /// Namespaces to watch, comma-separated. Empty: all namespaces.
    #[arg(long, env = ENV_WATCH_NAMESPACES, value_delimiter = ',', default_value = "")]
    pub namespaces: Vec<String>,
    /// Address the HTTP server (`/metrics`, `/healthz`, `/readyz`) binds.
    #[arg(long, env = ENV_HTTP_HOST, default_value = "0.0.0.0")]
    pub http_host: IpAddr,
    /// Port of the HTTP server.
    #[arg(long, env = ENV_HTTP_PORT, default_value_t = 8080)]
    pub http_port: u16,
    /// Take part in leader election on a Lease (`true` or `false`); only the leader reconciles.
    #[arg(
        long,
        env = ENV_LEADER_ELECTION,
        default_value = "true",
        value_parser = BoolishValueParser::new(),
        num_args = 1,
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Namespace of the leader election Lease.
    #[arg(long, env = ENV_LEASE_NAMESPACE, default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease. Default: the host name.
    #[arg(long, env = ENV_IDENTITY)]
    pub identity: Option<String>,
    /// Log format: `json` (one object per line) or `text` (for people).
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `info,sessionizer_operator=debug`.
    /// `RUST_LOG`, when set, wins.
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

impl Args {
    /// The namespaces to watch; empty means all.
    pub fn watch_namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .namespaces
            .iter()
            .map(|namespace| namespace.trim().to_owned())
            .filter(|namespace| !namespace.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }

    /// `--identity`, else the host name, else a fixed name.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|identity| !identity.trim().is_empty())
            .or_else(hostname)
            .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned())
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("sessionizer-operator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_match_the_chart_contract() {
        // Run without the environment the chart sets; clap reads only the named variables.
        let args = parse(&[]);
        if std::env::var_os(ENV_WATCH_NAMESPACES).is_none() {
            assert!(args.watch_namespaces().is_empty(), "all namespaces");
        }
        if std::env::var_os(ENV_HTTP_PORT).is_none() {
            assert_eq!(args.http_port, 8080);
        }
        if std::env::var_os(ENV_LEADER_ELECTION).is_none() {
            assert!(args.leader_election);
        }
        assert_eq!(args.lease_name, "sessionizer-operator");
        if std::env::var_os(ENV_LOG_FORMAT).is_none() {
            assert_eq!(args.log_format, LogFormat::Json);
        }
        assert!(!args.identity().is_empty());
    }

    #[test]
    fn flags_override_everything() {
        let args = parse(&[
            "--namespaces",
            "team-b, team-a,,team-b",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            "9090",
            "--leader-election",
            "false",
            "--lease-name",
            "lease",
            "--lease-namespace",
            "ops",
            "--identity",
            "operator-0",
            "--log-format",
            "text",
            "--log-level",
            "debug",
        ]);
        assert_eq!(args.watch_namespaces(), ["team-a", "team-b"]);
        assert_eq!(args.http_host.to_string(), "127.0.0.1");
        assert_eq!(args.http_port, 9090);
        assert!(!args.leader_election);
        assert_eq!(args.lease_name, "lease");
        assert_eq!(args.lease_namespace, "ops");
        assert_eq!(args.identity(), "operator-0");
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.log_level, "debug");
    }

    #[test]
    fn leader_election_accepts_boolish_values() {
        assert!(parse(&["--leader-election", "true"]).leader_election);
        assert!(!parse(&["--leader-election", "0"]).leader_election);
        assert!(!parse(&["--leader-election=no"]).leader_election);
    }
}
