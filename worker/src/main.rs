//! Thin entry point of the worker binary; all behaviour lives in the library.

fn main() {
    tracing_subscriber::fmt().json().init();
    tracing::info!(version = sessionizer_worker::VERSION, "sessionizer-worker");
}
