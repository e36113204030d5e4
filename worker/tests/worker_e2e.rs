#![allow(clippy::unwrap_used)]
//! The worker binary end to end, against a real Kafka on loopback: a generated stream with every
//! kind of mess (out-of-order and late events, async events days late, bridges that merge
//! sessions, duplicates, malformed events, pageviews over the limit) is produced to a source
//! topic of 4 partitions; a job of two workers (`SESSIONIZER_ORDINAL` 0 and 1, two key groups
//! each) sessionizes it; the test reads the sink topic and waits until `final_sessions` of
//! everything read equals the oracle's final sessions for the same events, and until the
//! quarantine topic holds exactly the malformed and over-limit events.
//!
//! Once for each history backend: the embedded store (each worker's data directory) and
//! Aerospike (the e2e wire-protocol test server on 127.0.0.1).
//!
//! The stream ends with one sentinel event per partition (see `sessionizer_worker::loadgen`)
//! that moves every partition's watermark past every session, so all sessions close while the
//! workers run; the sentinels' own sessions stay open and are left out of the comparison.
//!
//! Needs the Kafka of the local environment (`e2e/toolchain`); the worker binary is the one
//! Cargo builds for this test, or `$SESSIONIZER_BIN_DIR/sessionizer-worker`.

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use sessionizer_e2e::aerospike::{AerospikeTestServer, ServerConfig};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Env, EnvConfig, wait};
use sessionizer_worker::loadgen::{self, Kind, LoadSpec, without_sentinels};
use sessionizer_worker::oracle;

use support::{Backend, JobSpec, SinkState, TopicReader};

const PARTITIONS: i32 = 4;
const RESULT_TIMEOUT: Duration = Duration::from_secs(240);

/// One Kafka for all tests of this file, started on first use in its own runtime.
fn kafka_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| support::start_env(EnvConfig::kafka_only()))
}

/// The messy stream of the test: ~2 days of event time, async events up to a day late.
fn stream_spec(seed: u64) -> LoadSpec {
    LoadSpec {
        seed,
        users: 300,
        events: 12_000,
        partitions: PARTITIONS as u32,
        span_ms: 2 * 24 * 3_600_000,
        async_max_delay_ms: 24 * 3_600_000,
        ..LoadSpec::default()
    }
}

async fn sessionizes_a_messy_stream_like_the_oracle(backend: Backend, seed: u64) {
    let env = kafka_env();
    let kafka = env.kafka().unwrap();
    let name = unique_name("wk");
    let job = JobSpec {
        name: name.clone(),
        bootstrap: kafka.bootstrap.clone(),
        source: format!("{name}-events"),
        sink: format!("{name}-sessions"),
        quarantine: format!("{name}-quarantine"),
        backend,
        parallelism: 2,
    };
    for topic in [&job.source, &job.sink, &job.quarantine] {
        kafka.create_topic(topic, PARTITIONS).await.unwrap();
    }
    let dir = env.run_dir().join(&name);
    let (config_path, config) = job.write(&dir);
    let engine = support::engine_config(&config);

    let spec = stream_spec(seed);
    spec.check_fits(&engine).unwrap();
    let events = loadgen::generate(&spec);
    for kind in Kind::ALL {
        assert!(
            events.iter().any(|e| e.kind == kind),
            "the stream has no {kind:?}"
        );
    }
    let expected = oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine);
    let want = without_sentinels(expected.sessions.clone());
    let max_bytes = want.values().filter_map(|r| r.bytes).max().unwrap();
    assert!(
        max_bytes < engine.max_session_bytes,
        "the byte cap must not be reached"
    );
    let mut want_quarantined: Vec<String> = events
        .iter()
        .filter(|e| matches!(e.kind, Kind::Malformed | Kind::OverPage))
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    want_quarantined.sort();
    assert_eq!(
        want_quarantined.len() as u64,
        expected.malformed + expected.page_number_dropped
    );

    support::produce(&kafka.bootstrap, &job.source, &events);
    let workers = support::start_workers(&config_path, &dir, job.parallelism);

    let mut sink = TopicReader::new(&kafka.bootstrap, &job.sink, PARTITIONS);
    let mut state = SinkState::default();
    wait::until(
        "the sink's final sessions to equal the oracle's",
        RESULT_TIMEOUT,
        || {
            let mut result = Ok(None);
            for (worker, _) in &workers {
                if let Err(e) = worker.ensure_running() {
                    result = Err(e.to_string());
                }
            }
            sink.drain(Duration::from_millis(200), 100_000, |p| state.add(p));
            let got = without_sentinels(state.final_sessions());
            if result.is_ok() {
                result = match oracle::difference(&got, &want) {
                    None => Ok(Some(())),
                    Some(difference) => Err(difference),
                };
            }
            async move { result }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e} (worker logs in {})", dir.display()));

    let mut quarantine = TopicReader::new(&kafka.bootstrap, &job.quarantine, PARTITIONS);
    let mut quarantined: Vec<String> = Vec::new();
    wait::until(
        "the quarantine topic to hold every rejected event",
        RESULT_TIMEOUT,
        || {
            quarantine.drain(Duration::from_millis(200), 100_000, |p| {
                quarantined.push(support::quarantine(p).raw);
            });
            let n = quarantined.len();
            let want = want_quarantined.len();
            async move {
                if n >= want {
                    Ok(Some(()))
                } else {
                    Err(format!("{n} quarantined, want {want}"))
                }
            }
        },
    )
    .await
    .unwrap();
    quarantined.sort();
    assert_eq!(quarantined, want_quarantined);

    // Nothing more arrives on the sink that would change the result (for instance a late
    // update emitted twice with different content).
    sink.drain(Duration::from_millis(500), 100_000, |p| state.add(p));
    assert_eq!(without_sentinels(state.final_sessions()), want);
    let kinds: BTreeMap<&str, usize> = Kind::ALL
        .iter()
        .map(|k| (k.name(), events.iter().filter(|e| e.kind == *k).count()))
        .collect();
    eprintln!(
        "{} events {kinds:?} -> {} sink records, {} final sessions ({} duplicates, {} malformed, \
         {} over the page limit)",
        events.len(),
        state.records,
        want.len(),
        expected.duplicates,
        expected.malformed,
        expected.page_number_dropped,
    );
    for (worker, _) in &workers {
        worker.ensure_running().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_embedded_history_match_the_oracle() {
    sessionizes_a_messy_stream_like_the_oracle(Backend::Embedded, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_aerospike_history_match_the_oracle() {
    let server = AerospikeTestServer::start(ServerConfig {
        namespaces: vec![String::from("test")],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    sessionizes_a_messy_stream_like_the_oracle(Backend::Aerospike(server.host()), 12).await;
    server.shutdown().await;
}

/// The `sessionizer-loadgen` binary produces exactly the library's stream: same seed and
/// settings, same messages, in the same order within each partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loadgen_binary_produces_the_generated_stream() {
    let env = kafka_env();
    let kafka = env.kafka().unwrap();
    let topic = unique_name("loadgen");
    kafka.create_topic(&topic, PARTITIONS).await.unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sessionizer-loadgen"));
    command
        .args(["--bootstrap", &kafka.bootstrap, "--topic", &topic])
        .args(["--seed", "5", "--events", "3000", "--users", "60"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the load generator finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("acknowledged     3004"), "{stdout}");

    let spec = LoadSpec {
        seed: 5,
        events: 3_000,
        users: 60,
        partitions: PARTITIONS as u32,
        ..LoadSpec::default()
    };
    let want: Vec<Vec<Vec<u8>>> = (0..PARTITIONS as u32)
        .map(|p| {
            loadgen::generate(&spec)
                .into_iter()
                .filter(|e| e.partition == p)
                .map(|e| e.payload)
                .collect()
        })
        .collect();
    for (p, want) in want.iter().enumerate() {
        let p = p as i32;
        let mut reader = TopicReader::assigned(&kafka.bootstrap, &topic, p..p + 1);
        let mut got: Vec<Vec<u8>> = Vec::new();
        wait::until("every message of the partition", RESULT_TIMEOUT, || {
            reader.drain(Duration::from_millis(200), 100_000, |m| {
                got.push(m.to_vec())
            });
            let (n, w) = (got.len(), want.len());
            async move { Ok::<_, String>((n >= w).then_some(())) }
        })
        .await
        .unwrap();
        assert_eq!(&got, want, "partition {p}");
    }
}

/// The benchmark's end condition: reached exactly when the sink's final sessions (sentinels
/// left out) are the expected ones, whatever order versions arrive in.
#[test]
fn sink_state_reaches_the_expected_sessions_only_when_they_are_equal() {
    let spec = LoadSpec {
        events: 2_000,
        users: 40,
        ..LoadSpec::default()
    };
    let events = loadgen::generate(&spec);
    let dir = tempfile::tempdir().unwrap();
    let job = JobSpec::offline("sink-state");
    let (_, config) = job.write(dir.path());
    let engine = support::engine_config(&config);
    let all = oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine).sessions;
    let want = without_sentinels(all.clone());
    assert!(
        want.len() > 10 && all.len() > want.len(),
        "sentinels and sessions"
    );
    let json = |r: &sessionizer_worker::session::SessionRecord| serde_json::to_vec(r).unwrap();
    let mut state = SinkState::expecting(want.clone());
    let records: Vec<_> = all.values().collect();
    for record in &records[1..] {
        state.add(&json(record));
    }
    assert!(!state.reached(), "one session missing");
    // An older version of the missing session does not complete it.
    let mut older = records[0].clone();
    older.version = 0;
    older.end = older.end.map(|e| e - 1);
    state.add(&json(&older));
    assert!(!state.reached(), "an older version of the missing session");
    state.add(&json(records[0]));
    assert!(state.reached());
    // A stale version changes nothing; a newer, different one, or an unexpected session, does.
    state.add(&json(&older));
    assert!(state.reached());
    let mut newer = records[0].clone();
    newer.version += 1;
    newer.event_count = Some(newer.event_count.unwrap_or(0) + 1);
    state.add(&json(&newer));
    assert!(!state.reached());
    let mut restored = records[0].clone();
    restored.version += 2;
    state.add(&json(&restored));
    assert!(
        !state.reached(),
        "the version differs from the expected one"
    );
    let mut tombstoned = restored.clone();
    tombstoned.version += 1;
    tombstoned.deleted = true;
    state.add(&json(&tombstoned));
    assert!(!state.reached(), "an expected session deleted");

    // The expected version is judged by content, not by bytes.
    let last = |payload: Vec<u8>| {
        let mut state = SinkState::expecting(want.clone());
        for record in &records[1..] {
            state.add(&json(record));
        }
        state.add(&payload);
        state.reached()
    };
    let mut changed = records[0].clone();
    changed.bytes = changed.bytes.map(|b| b + 1);
    assert!(!last(json(&changed)), "the expected version, other content");
    // Fields in another order (a JSON value's sorted keys): other bytes, the same record.
    let reordered = serde_json::to_vec(&serde_json::to_value(records[0]).unwrap()).unwrap();
    assert_ne!(reordered, json(records[0]));
    assert!(last(reordered), "the expected record, serialized otherwise");
}
