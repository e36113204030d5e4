//! The control calls the operator makes on a worker, and the worker's lifecycle phase.
//!
//! `POST /control/stop` (body `{"checkpointId": "chk-…"}`, optional) stops consuming, waits for
//! the deliveries in flight, writes a final checkpoint with that id and answers with it; the
//! worker then stays up in phase `Stopped` (not ready) until its Pod is deleted, so a stopped job
//! does not restart and resume behind the operator's back. Asking again answers the same.
//! `POST /control/checkpoint` takes a checkpoint now without stopping. SIGTERM is a stop with a
//! generated id. Handlers only pass requests to the stream loop; it alone changes state, between
//! two batches. This module must never answer a stop before its checkpoint is stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::http::WorkerState;
use crate::stream::checkpointing::CheckpointSummary;

/// Where the worker is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Opening stores, restoring, assigning partitions.
    #[default]
    Starting,
    /// Consuming.
    Running,
    /// Writing its final checkpoint.
    Stopping,
    /// Stopped with a final checkpoint; waiting to be deleted.
    Stopped,
}

/// A request to the stream loop.
#[derive(Debug)]
pub enum Control {
    /// Stop with a final checkpoint `id`.
    Stop {
        /// The checkpoint id.
        id: String,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<StopReport, String>>,
    },
    /// Take a checkpoint now.
    Checkpoint {
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<CheckpointSummary, String>>,
    },
}

/// Body of `POST /control/stop`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopRequest {
    /// Id of the final checkpoint; default `chk-<now>`.
    #[serde(default)]
    pub checkpoint_id: Option<String>,
}

/// Answer of a stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopReport {
    /// The final checkpoint's id.
    pub checkpoint_id: String,
    /// The key groups it holds.
    pub key_groups: Vec<u32>,
    /// The checkpoint (none when the job has no checkpoint store).
    pub checkpoint: Option<CheckpointSummary>,
}

/// The control channel: the HTTP side sends, the stream loop receives.
pub fn channel() -> (mpsc::Sender<Control>, mpsc::Receiver<Control>) {
    mpsc::channel(8)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

/// `POST /control/stop`.
pub async fn stop(
    State(state): State<Arc<WorkerState>>,
    body: Option<Json<StopRequest>>,
) -> Response {
    if let Some(report) = state.stop_report() {
        return Json(report).into_response();
    }
    let id = body
        .and_then(|Json(b)| b.checkpoint_id)
        .unwrap_or_else(|| crate::checkpoint::final_id(crate::stream::pipeline::now_ms()));
    if !crate::checkpoint::is_checkpoint_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a checkpoint id (chk-<13-digit epoch ms>)"),
        );
    }
    let (reply, answer) = oneshot::channel();
    if state
        .send_control(Control::Stop { id, reply })
        .await
        .is_err()
    {
        return match state.stop_report() {
            Some(report) => Json(report).into_response(),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                String::from("the stream is not running"),
            ),
        };
    }
    match answer.await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(_) => match state.stop_report() {
            Some(report) => Json(report).into_response(),
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                String::from("the stream ended without answering"),
            ),
        },
    }
}

/// `POST /control/checkpoint`.
pub async fn checkpoint(State(state): State<Arc<WorkerState>>) -> Response {
    let (reply, answer) = oneshot::channel();
    if state
        .send_control(Control::Checkpoint { reply })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("the stream is not running"),
        );
    }
    match answer.await {
        Ok(Ok(summary)) => Json(summary).into_response(),
        Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            String::from("the stream ended without answering"),
        ),
    }
}
