//! The operator's command line. The flags and their environment fallbacks are a contract with
//! the Helm chart (which sets the environment), so names, variables and defaults change only
//! together with it. An environment variable set to the empty string counts as unset (a chart
//! renders unset values that way), so every flag parses empty input as its default.
//! Parsing only: nothing here touches the network or the cluster.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

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
/// Environment fallback of `--incomplete-checkpoint-grace`.
pub const ENV_INCOMPLETE_CHECKPOINT_GRACE: &str = "INCOMPLETE_CHECKPOINT_GRACE";

/// Default name of the leader election Lease.
pub const DEFAULT_LEASE_NAME: &str = "sessionizer-operator";
/// Default of `--http-port`.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default of `--lease-namespace`.
pub const DEFAULT_LEASE_NAMESPACE: &str = "default";
/// Default of `--log-level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default of `--incomplete-checkpoint-grace`.
pub const DEFAULT_INCOMPLETE_CHECKPOINT_GRACE: &str = "10m";

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
    #[arg(long, env = ENV_HTTP_HOST, default_value = "0.0.0.0", value_parser = parse_host)]
    pub http_host: IpAddr,
    /// Port of the HTTP server.
    #[arg(long, env = ENV_HTTP_PORT, default_value = "8080", value_parser = parse_port)]
    pub http_port: u16,
    /// Take part in leader election on a Lease (`true` or `false`); only the leader reconciles.
    #[arg(
        long,
        env = ENV_LEADER_ELECTION,
        default_value = "true",
        value_parser = parse_bool,
        num_args = 1,
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, default_value = DEFAULT_LEASE_NAME, value_parser = non_empty_or(DEFAULT_LEASE_NAME))]
    pub lease_name: String,
    /// Namespace of the leader election Lease.
    #[arg(
        long,
        env = ENV_LEASE_NAMESPACE,
        default_value = DEFAULT_LEASE_NAMESPACE,
        value_parser = non_empty_or(DEFAULT_LEASE_NAMESPACE)
    )]
    pub lease_namespace: String,
    /// This replica's identity in the Lease. Default: the host name.
    #[arg(long, env = ENV_IDENTITY)]
    pub identity: Option<String>,
    /// Log format: `json` (one object per line) or `text` (for people).
    #[arg(long, env = ENV_LOG_FORMAT, default_value = "json", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `info,sessionizer_operator=debug`.
    /// `RUST_LOG`, when set, wins.
    #[arg(
        long,
        env = ENV_LOG_LEVEL,
        default_value = DEFAULT_LOG_LEVEL,
        value_parser = non_empty_or(DEFAULT_LOG_LEVEL)
    )]
    pub log_level: String,
    /// How long a checkpoint without a manifest (unfinished, or left by a crashed worker) is
    /// left alone before retention deletes it; measured from its newest file. A duration such as
    /// `10m` or `90s`.
    #[arg(
        long,
        env = ENV_INCOMPLETE_CHECKPOINT_GRACE,
        default_value = DEFAULT_INCOMPLETE_CHECKPOINT_GRACE,
        value_parser = parse_grace
    )]
    pub incomplete_checkpoint_grace: Duration,
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

fn parse_host(value: &str) -> Result<IpAddr, String> {
    match value.trim() {
        "" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        host => host
            .parse()
            .map_err(|_| format!("{host:?} is not an IP address")),
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    match value.trim() {
        "" => Ok(DEFAULT_HTTP_PORT),
        port => port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number")),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        other => Err(format!("{other:?} is not json or text")),
    }
}

fn parse_grace(value: &str) -> Result<Duration, String> {
    let value = match value.trim() {
        "" => DEFAULT_INCOMPLETE_CHECKPOINT_GRACE,
        value => value,
    };
    sessionizer_crds::duration::parse(value).map_err(|error| error.to_string())
}

fn non_empty_or(default: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |value: &str| match value.trim() {
        "" => Ok(default.to_owned()),
        value => Ok(value.to_owned()),
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
    fn incomplete_checkpoint_grace_is_a_duration() {
        if std::env::var_os(ENV_INCOMPLETE_CHECKPOINT_GRACE).is_none() {
            assert_eq!(
                parse(&[]).incomplete_checkpoint_grace,
                Duration::from_secs(600)
            );
        }
        let args = parse(&["--incomplete-checkpoint-grace", "5s"]);
        assert_eq!(args.incomplete_checkpoint_grace, Duration::from_secs(5));
        let args = parse(&["--incomplete-checkpoint-grace="]);
        assert_eq!(args.incomplete_checkpoint_grace, Duration::from_secs(600));
        assert!(
            Args::try_parse_from(["sessionizer-operator", "--incomplete-checkpoint-grace=7d"])
                .is_err()
        );
    }

    #[test]
    fn empty_values_mean_the_default() {
        // What a chart renders for an unset value; the environment behaves the same way.
        let args = parse(&[
            "--namespaces=",
            "--http-host=",
            "--http-port=",
            "--leader-election=",
            "--lease-name=",
            "--lease-namespace=",
            "--identity=",
            "--log-format=",
            "--log-level=",
        ]);
        assert!(args.watch_namespaces().is_empty());
        assert_eq!(args.http_host.to_string(), "0.0.0.0");
        assert_eq!(args.http_port, 8080);
        assert!(args.leader_election);
        assert_eq!(args.lease_name, "sessionizer-operator");
        assert_eq!(args.lease_namespace, "default");
        assert!(!args.identity().is_empty());
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.log_level, "info");
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            "--http-host=localhost",
            "--http-port=80000",
            "--leader-election=maybe",
            "--log-format=xml",
        ] {
            assert!(
                Args::try_parse_from(["sessionizer-operator", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn leader_election_accepts_boolish_values() {
        assert!(parse(&["--leader-election", "true"]).leader_election);
        assert!(!parse(&["--leader-election", "0"]).leader_election);
        assert!(!parse(&["--leader-election=no"]).leader_election);
    }
}
