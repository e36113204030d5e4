//! Thin entry point of the operator binary; all behaviour lives in the library.

fn main() {
    tracing_subscriber::fmt().json().init();
    tracing::info!(
        version = sessionizer_operator::VERSION,
        "sessionizer-operator"
    );
}
