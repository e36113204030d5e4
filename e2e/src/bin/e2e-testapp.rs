//! `e2e-testapp`: a small HTTP server the smoke tests run as a container image.
//!
//! It binds `$POD_IP:$PORT` (default `127.0.0.1:8080`) and serves `/healthz` and `/readyz`
//! (200), `/env` (its environment as JSON) and `/file?path=…` (a file's content, for volume
//! tests). It logs one line at start. On SIGTERM it exits with `$EXIT_CODE_ON_TERM` (default 0),
//! or, with `$IGNORE_SIGTERM` set to `1`/`true`, logs the signal and keeps running (grace-period
//! tests); with `$EXIT_AFTER_MS` set it exits on its own after that many milliseconds with
//! `$EXIT_CODE` (default 1), for restart tests.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
}

async fn file(Query(query): Query<FileQuery>) -> Result<String, (StatusCode, String)> {
    tokio::fs::read_to_string(&query.path)
        .await
        .map_err(|e| (StatusCode::NOT_FOUND, format!("{}: {e}\n", query.path)))
}

async fn environment() -> Json<BTreeMap<String, String>> {
    Json(std::env::vars().collect())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let ip: IpAddr = env_or("POD_IP", IpAddr::from([127, 0, 0, 1]));
    let port: u16 = env_or("PORT", 8080);
    let exit_on_term: u8 = env_or("EXIT_CODE_ON_TERM", 0);
    let exit_after: Option<u64> = std::env::var("EXIT_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let exit_code: u8 = env_or("EXIT_CODE", 1);
    let ignore_term = matches!(std::env::var("IGNORE_SIGTERM").as_deref(), Ok("1" | "true"));

    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route("/env", get(environment))
        .route("/file", get(file));
    let addr = SocketAddr::new(ip, port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("e2e-testapp: cannot listen on {addr}: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            eprintln!("e2e-testapp: cannot handle SIGTERM: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "e2e-testapp listening on {addr} (pid {}, hostname {})",
        std::process::id(),
        std::env::var("HOSTNAME").unwrap_or_default()
    );
    let server = axum::serve(listener, app);
    let terminated = async {
        loop {
            term.recv().await;
            if !ignore_term {
                return;
            }
            println!("e2e-testapp: SIGTERM received, ignoring it (IGNORE_SIGTERM)");
        }
    };
    let exit_timer = async {
        match exit_after {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => {
            eprintln!("e2e-testapp: server stopped: {result:?}");
            std::process::ExitCode::from(2)
        }
        () = terminated => {
            println!("e2e-testapp: SIGTERM, exiting with {exit_on_term}");
            std::process::ExitCode::from(exit_on_term)
        }
        () = exit_timer => {
            println!("e2e-testapp: EXIT_AFTER_MS elapsed, exiting with {exit_code}");
            std::process::ExitCode::from(exit_code)
        }
    }
}
