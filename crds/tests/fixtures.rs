//! The example manifests deserialize, get the documented defaults, and pass every CEL rule; and
//! the defaults Rust fills in are exactly the ones the API server writes from the schema.

mod common;

use std::time::Duration;

use kube::CustomResourceExt;
use sessionizer_crds::cutover::CutoverStage;
use sessionizer_crds::session_job::{
    CompressionCodec, HistoryBackend, RestoreFrom, SinkMode, SourceKind,
};
use sessionizer_crds::{SessionJob, SessionJobCutover};

use common::{cel_failures, defaulted, fixture};

const HOUR: u64 = 3600;

fn job(name: &str) -> SessionJob {
    serde_json::from_value(fixture(name)).expect("fixture is a SessionJob")
}

#[test]
fn minimal_job_gets_the_documented_defaults() {
    let job = job("sessionjob-minimal.yaml");
    let spec = &job.spec;
    assert_eq!(spec.parallelism, 1);
    assert_eq!(spec.kafka.source_topics[0].kind, SourceKind::Sync);
    assert_eq!(job.consumer_group(), "pageviews");
    assert_eq!(spec.sink.initial_mode, SinkMode::Production);
    assert_eq!(spec.history.backend, HistoryBackend::Embedded);
    assert_eq!(spec.history.compression.codec, CompressionCodec::Zstd);
    assert_eq!(spec.history.compression.level, -1);
    assert_eq!(spec.history_ttl(), Ok(Duration::from_secs(168 * HOUR)));
    assert_eq!(spec.checkpoints.retain, 3);
    assert_eq!(spec.checkpoint_interval(), Ok(Duration::from_secs(300)));
    assert_eq!(spec.checkpoint_max_age(), Ok(None));
    assert_eq!(spec.checkpoints.restore_from(), RestoreFrom::Latest);
    assert_eq!(spec.checkpoints.scheme(), Some("s3"));
    assert_eq!(spec.warmup(), Ok(None));

    let session = spec.session_settings().expect("defaults parse");
    assert_eq!(session.gap, Duration::from_secs(30 * 60));
    assert_eq!(session.max_page_number, 300);
    assert_eq!(session.max_session_bytes, 4 * 1024 * 1024);
    assert_eq!(
        session.allowed_lateness,
        Duration::from_secs(168 * HOUR),
        "= history.ttl"
    );
    assert_eq!(session.late_update_interval, Duration::from_secs(60));
    assert_eq!(session.max_out_of_orderness, Duration::from_secs(5));
    assert_eq!(session.idle_source_timeout, Duration::from_secs(60));
    assert_eq!(session.slow_window_log_threshold, Duration::from_secs(60));
}

#[test]
fn full_job_keeps_every_value() {
    let job = job("sessionjob-full.yaml");
    let spec = &job.spec;
    assert_eq!(spec.parallelism, 4);
    assert_eq!(job.consumer_group(), "sessionizer.pageviews-v2");
    assert_eq!(spec.sink.initial_mode, SinkMode::DeadLetter);
    assert_eq!(
        spec.sink
            .topic_for(SinkMode::DeadLetter)
            .map(|t| t.as_str()),
        Some("sessions-v2-dlq")
    );
    assert_eq!(spec.history.backend, HistoryBackend::Aerospike);
    let aerospike = spec.history.aerospike.as_ref().expect("aerospike is set");
    assert_eq!(aerospike.retry.attempts, 5);
    assert_eq!(aerospike.high_water_mark.warn_margin, 15);
    assert_eq!(
        spec.checkpoints.restore_from(),
        RestoreFrom::Id("chk-000042".into())
    );
    assert_eq!(
        spec.checkpoint_max_age(),
        Ok(Some(Duration::from_secs(24 * HOUR)))
    );
    assert_eq!(spec.warmup(), Ok(Some(Duration::from_secs(168 * HOUR))));
    let session = spec.session_settings().expect("values parse");
    assert_eq!(session.allowed_lateness, Duration::from_secs(72 * HOUR));
    assert_eq!(session.max_session_bytes, 8 * 1024 * 1024);
    let side_run = spec.side_run.as_ref().expect("sideRun is set");
    assert_eq!(side_run.producers.len(), 2);
}

#[test]
fn full_job_round_trips_without_loss() {
    let original = fixture("sessionjob-full.yaml");
    let job: SessionJob = serde_json::from_value(original.clone()).expect("deserializes");
    let mut again = serde_json::to_value(&job).expect("serializes");
    // The fixture states every field, so nothing is added or lost on the way.
    again.as_object_mut().expect("object").remove("status");
    let mut added = Vec::new();
    differences(&original, &again, String::new(), &mut added);
    assert!(
        added.is_empty(),
        "not in the fixture or changed: {added:#?}"
    );
}

fn differences(
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    path: String,
    out: &mut Vec<String>,
) {
    match (expected, actual) {
        (serde_json::Value::Object(e), serde_json::Value::Object(a)) => {
            for (key, value) in a {
                match e.get(key) {
                    Some(expected) => differences(expected, value, format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}")),
                }
            }
            for key in e.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{key} (lost)"));
            }
        }
        (e, a) if e != a => out.push(path),
        _ => {}
    }
}

#[test]
fn cutover_gets_the_documented_defaults() {
    let cutover: SessionJobCutover =
        serde_json::from_value(fixture("cutover.yaml")).expect("fixture is a cutover");
    let spec = &cutover.spec;
    assert_eq!(spec.from.as_str(), "pageviews");
    assert_eq!(spec.to.as_str(), "pageviews-v2");
    assert!(spec.rollback_on_failure);
    assert_eq!(spec.producers, None);
    let timeout = |stage| spec.timeouts.for_stage(stage).map(|t| t.expect("parses"));
    assert_eq!(
        timeout(CutoverStage::PausingProducers),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        timeout(CutoverStage::Draining),
        Some(Duration::from_secs(45 * 60))
    );
    assert_eq!(
        timeout(CutoverStage::StoppingJobs),
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        timeout(CutoverStage::FlippingSink),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        timeout(CutoverStage::Resuming),
        Some(Duration::from_secs(900))
    );
    assert_eq!(timeout(CutoverStage::Completed), None);
}

#[test]
fn every_fixture_passes_every_cel_rule() {
    for (name, crd) in [
        ("sessionjob-minimal.yaml", SessionJob::crd()),
        ("sessionjob-full.yaml", SessionJob::crd()),
        ("cutover.yaml", SessionJobCutover::crd()),
    ] {
        let failures = cel_failures(&crd, &fixture(name), None);
        assert!(failures.is_empty(), "{name}: {failures:#?}");
    }
}

/// What the API server stores (schema defaults applied) must read back as what Rust defaults to,
/// and Rust must not invent defaults the schema lacks.
#[test]
fn schema_defaults_match_serde_defaults() {
    for (name, crd) in [
        ("sessionjob-minimal.yaml", SessionJob::crd()),
        ("sessionjob-full.yaml", SessionJob::crd()),
    ] {
        let raw = fixture(name);
        let from_rust =
            serde_json::to_value(serde_json::from_value::<SessionJob>(raw.clone()).unwrap())
                .unwrap();
        let from_server = defaulted(&crd, &raw);
        let server_read_by_rust = serde_json::to_value(
            serde_json::from_value::<SessionJob>(from_server.clone()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            from_server, server_read_by_rust,
            "{name}: schema defaults are all Rust fields"
        );
        assert_eq!(
            from_rust, from_server,
            "{name}: Rust and schema defaults agree"
        );
    }
    let raw = fixture("cutover.yaml");
    let crd = SessionJobCutover::crd();
    let from_rust =
        serde_json::to_value(serde_json::from_value::<SessionJobCutover>(raw.clone()).unwrap())
            .unwrap();
    assert_eq!(from_rust, defaulted(&crd, &raw));
}

/// An object stored before a rule existed still reads; the helpers name the bad field.
#[test]
fn bad_values_read_but_helpers_report_the_field() {
    let raw = common::merge_patch(
        &fixture("sessionjob-minimal.yaml"),
        &serde_json::json!({"spec": {"session": {"gap": "7d", "maxSessionBytes": "1.5Gi"}}}),
    );
    let job: SessionJob = serde_json::from_value(raw).expect("bad values still deserialize");
    let err = job
        .spec
        .session_settings()
        .expect_err("7d is not a duration");
    assert!(err.to_string().starts_with("spec.session.gap: "), "{err}");
    let mut job = job;
    job.spec.session.gap = "30m".into();
    let err = job
        .spec
        .session_settings()
        .expect_err("1.5Gi is not whole bytes");
    assert!(
        err.to_string()
            .starts_with("spec.session.maxSessionBytes: "),
        "{err}"
    );
}
