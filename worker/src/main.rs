//! Thin entry point of the worker binary: parse flags, set up logging, run the library, and turn
//! the outcome into an exit status (0 after a graceful shutdown, 1 on any error).

use std::process::ExitCode;

use clap::Parser;
use sessionizer_worker::cli::Args;
use sessionizer_worker::{logging, run};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = logging::init(args.log_format, &args.log_level) {
        eprintln!("sessionizer-worker: {error}");
        return ExitCode::FAILURE;
    }
    match run::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "sessionizer-worker failed");
            ExitCode::FAILURE
        }
    }
}
