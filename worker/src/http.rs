//! The worker's one HTTP port: liveness (`/healthz`), readiness (`/readyz`), Prometheus metrics
//! (`/metrics`) and a JSON summary of what the worker is doing (`/status`, read by the operator
//! and by people). Handlers only read shared state (the stream loop publishes its status
//! periodically); the control calls ([`crate::control`]) only pass requests to the stream loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sessionizer_crds::session_job::SinkMode;

use tokio::sync::{mpsc, watch};

use crate::VERSION;
use crate::config::WorkerConfig;
use crate::control::{self, Control, Phase, StopReport};
use crate::engine::Counters;
use crate::identity::Identity;
use crate::metrics::{self, Metrics};
use crate::stream::checkpointing::CheckpointSummary;
use crate::stream::status::StreamStatus;

/// What the HTTP handlers read: fixed facts about the worker, its readiness and its metrics.
#[derive(Debug)]
pub struct WorkerState {
    job: String,
    namespace: String,
    effective_sink: SinkMode,
    sink_topic: Option<String>,
    identity: Identity,
    ready: AtomicBool,
    metrics: Metrics,
    stream: Mutex<Option<StreamStatus>>,
    phase: Mutex<Phase>,
    last_checkpoint: Mutex<Option<CheckpointSummary>>,
    stopped: Mutex<Option<StopReport>>,
    control: mpsc::Sender<Control>,
    control_rx: Mutex<Option<mpsc::Receiver<Control>>>,
    history_ttl: watch::Sender<Option<Duration>>,
}

impl WorkerState {
    /// The state of a worker that has not finished starting (not ready).
    pub fn new(config: &WorkerConfig, identity: Identity) -> Self {
        let (control, control_rx) = control::channel();
        Self {
            job: config.job.clone(),
            namespace: config.namespace.clone(),
            effective_sink: config.effective_sink,
            sink_topic: config
                .spec
                .sink
                .topic_for(config.effective_sink)
                .map(|t| t.to_string()),
            metrics: Metrics::new(&config.job, identity.ordinal),
            identity,
            ready: AtomicBool::new(false),
            stream: Mutex::new(None),
            phase: Mutex::new(Phase::Starting),
            last_checkpoint: Mutex::new(None),
            stopped: Mutex::new(None),
            control,
            control_rx: Mutex::new(Some(control_rx)),
            history_ttl: watch::Sender::new(None),
        }
    }

    /// Publishes a new `history.ttl` read from the configuration file while running.
    pub fn set_history_ttl(&self, ttl: Duration) {
        self.history_ttl.send_replace(Some(ttl));
    }

    /// Follows live `history.ttl` changes (`None` until the first one).
    pub fn subscribe_history_ttl(&self) -> watch::Receiver<Option<Duration>> {
        self.history_ttl.subscribe()
    }

    /// The receiving end of the control channel (once; the stream loop takes it).
    pub fn take_control(&self) -> Option<mpsc::Receiver<Control>> {
        self.control_rx.lock().ok().and_then(|mut rx| rx.take())
    }

    /// Passes a control request to the stream loop; fails when it no longer listens.
    pub async fn send_control(&self, request: Control) -> Result<(), ()> {
        self.control.send(request).await.map_err(|_| ())
    }

    /// Sets the phase `/status` shows.
    pub fn set_phase(&self, phase: Phase) {
        if let Ok(mut slot) = self.phase.lock() {
            *slot = phase;
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase.lock().map_or(Phase::Starting, |p| *p)
    }

    /// Records a finished checkpoint.
    pub fn set_last_checkpoint(&self, summary: CheckpointSummary) {
        if let Ok(mut slot) = self.last_checkpoint.lock() {
            *slot = Some(summary);
        }
    }

    /// Records the outcome of a stop: later stop calls answer with it.
    pub fn set_stopped(&self, report: StopReport) {
        if let Ok(mut slot) = self.stopped.lock() {
            *slot = Some(report);
        }
        self.set_phase(Phase::Stopped);
    }

    /// The outcome of the stop, once stopped.
    pub fn stop_report(&self) -> Option<StopReport> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, to register more families before the state is shared.
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// Replaces the streaming part of `/status` (called periodically by the stream loop).
    pub fn publish_stream(&self, status: StreamStatus) {
        if let Ok(mut slot) = self.stream.lock() {
            *slot = Some(status);
        }
    }

    /// Marks the worker ready (started) or not (starting, or shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.set_ready(ready);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The worker's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The body of `/status`.
    pub fn status(&self) -> WorkerStatus {
        let stream = self.stream.lock().ok().and_then(|s| s.clone());
        WorkerStatus {
            phase: self.phase(),
            in_flight: stream.as_ref().map_or(0, |s| s.in_flight),
            counters: stream
                .as_ref()
                .map(|s| s.counters.clone())
                .unwrap_or_default(),
            last_checkpoint: self.last_checkpoint.lock().ok().and_then(|c| c.clone()),
            job: self.job.clone(),
            namespace: self.namespace.clone(),
            pod_name: self.identity.pod_name.clone(),
            ordinal: self.identity.ordinal,
            replicas: self.identity.replicas,
            effective_sink: self.effective_sink,
            sink_topic: self.sink_topic.clone(),
            version: VERSION,
            ready: self.is_ready(),
            uptime_seconds: self.metrics.uptime().as_secs(),
            stream,
        }
    }
}

/// The JSON `/status` returns. Checkpoints join it with the checkpointing issue; the key groups
/// follow from `ordinal` and `replicas` once the partition count is known (see
/// [`Identity::key_groups`]) and are listed under `stream` once the stream runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Where the worker is in its life.
    pub phase: Phase,
    /// Records produced and not yet acknowledged.
    pub in_flight: u64,
    /// What happened to the input since the worker started, over all its key groups (restored
    /// key groups continue their counts).
    pub counters: Counters,
    /// This worker's last finished checkpoint.
    pub last_checkpoint: Option<CheckpointSummary>,
    /// Name of the SessionJob.
    pub job: String,
    /// Namespace of the SessionJob.
    pub namespace: String,
    /// The Pod's name, when running in a Pod.
    pub pod_name: Option<String>,
    /// This worker's index among the job's workers.
    pub ordinal: u32,
    /// How many workers the job runs.
    pub replicas: u32,
    /// Where sessions go now.
    pub effective_sink: SinkMode,
    /// The topic of the effective sink (none when the mode has no topic configured).
    pub sink_topic: Option<String>,
    /// The worker's version.
    pub version: &'static str,
    /// Whether the worker is ready.
    pub ready: bool,
    /// Whole seconds since the worker started.
    pub uptime_seconds: u64,
    /// The streaming job: per-key-group positions, log-end offsets, lag, watermarks, open
    /// sessions, and the history store's health; absent until the stream has started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
}

/// The routes, over `state`.
pub fn router(state: Arc<WorkerState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .route("/control/stop", post(control::stop))
        .route("/control/checkpoint", post(control::checkpoint))
        .with_state(state)
}

/// Alive as long as the process can answer.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<WorkerState>>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(state): State<Arc<WorkerState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn status(State(state): State<Arc<WorkerState>>) -> axum::Json<WorkerStatus> {
    axum::Json(state.status())
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::tests::sample_config;

    fn state() -> Arc<WorkerState> {
        let identity = Identity {
            pod_name: Some("pageviews-1".into()),
            pod_ip: None,
            ordinal: 1,
            replicas: 2,
        };
        Arc::new(WorkerState::new(&sample_config(), identity))
    }

    async fn get(state: &Arc<WorkerState>, path: &str) -> (StatusCode, String, String) {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn healthz_answers_while_starting() {
        let state = state();
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_follows_readiness() {
        let state = state();
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.set_ready(true);
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
        state.set_ready(false);
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let state = state();
        state.set_ready(true);
        let (status, content_type, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(
            body.contains("sessionizer_worker_info{job=\"pageviews\",ordinal=\"1\""),
            "{body}"
        );
        assert!(body.contains("sessionizer_worker_ready 1"), "{body}");
    }

    #[tokio::test]
    async fn status_reports_identity_and_sink() {
        let state = state();
        let (status, content_type, body) = get(&state, "/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["job"], "pageviews");
        assert_eq!(json["namespace"], "analytics");
        assert_eq!(json["podName"], "pageviews-1");
        assert_eq!(json["ordinal"], 1);
        assert_eq!(json["replicas"], 2);
        assert_eq!(json["effectiveSink"], "Production");
        assert_eq!(json["sinkTopic"], "sessions");
        assert_eq!(json["version"], VERSION);
        assert_eq!(json["ready"], false);
        assert!(json.get("stream").is_none(), "{json}");
        state.publish_stream(StreamStatus {
            partitions: 4,
            end_key_group: 2,
            ..StreamStatus::default()
        });
        let (_, _, body) = get(&state, "/status").await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["stream"]["partitions"], 4);
        assert_eq!(json["stream"]["history"]["ok"], false);
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        assert_eq!(get(&state(), "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
