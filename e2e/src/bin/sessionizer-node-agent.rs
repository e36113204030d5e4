//! `sessionizer-node-agent`: the local environment's kubelet (see
//! `sessionizer_e2e::node_agent`). Registers a Node and runs its Pods as local processes until
//! SIGTERM or SIGINT.

use clap::Parser;
use sessionizer_e2e::node_agent::{self, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    node_agent::init_logging(config.log_json);
    match node_agent::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "node agent failed");
            eprintln!("sessionizer-node-agent: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
