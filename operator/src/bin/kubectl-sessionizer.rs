//! `kubectl sessionizer …`: the kubectl plugin (see `sessionizer_operator::plugin`). Put this
//! binary on the PATH and kubectl finds it.

use std::process::ExitCode;

use clap::Parser;
use sessionizer_operator::plugin::{Args, run};

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
