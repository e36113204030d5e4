//! Thin entry point of the operator binary: parse flags, set up logging and the TLS crypto
//! provider, run the library. No behaviour lives here.

use std::process::ExitCode;

use clap::Parser;
use sessionizer_operator::{cli, logging, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(error) = logging::init(args.log_format, &args.log_level) {
        eprintln!("sessionizer-operator: {error}");
        return ExitCode::from(2);
    }
    // Two rustls crypto providers are linked into the workspace (ring and aws-lc-rs); pick one
    // before any client is built. An error only means one was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing::info!(
        version = sessionizer_operator::VERSION,
        "sessionizer-operator starting"
    );
    match run::run(args).await {
        Ok(()) => {
            tracing::info!("sessionizer-operator stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, cause = error.metric_label(), "sessionizer-operator failed");
            ExitCode::FAILURE
        }
    }
}
