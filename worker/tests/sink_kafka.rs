#![allow(clippy::unwrap_used)]
//! The sink against a real local Kafka: every record's delivery report comes back tagged with
//! the batch it was produced in, so the commit ledger releases a batch's positions only once all
//! of its records are acknowledged; a record the broker refuses fails the sink instead of being
//! counted as delivered.

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sessionizer_crds::session_job::SinkMode;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::kafka::Kafka;
use sessionizer_e2e::{Env, EnvConfig};
use sessionizer_worker::config::WorkerConfig;
use sessionizer_worker::engine::Output;
use sessionizer_worker::metrics::StreamMetrics;
use sessionizer_worker::session::SessionRecord;
use sessionizer_worker::stream::commit::CommitLedger;
use sessionizer_worker::stream::producer::{Sink, create_producer};
use support::{Backend, JobSpec, TopicReader};

const TIMEOUT: Duration = Duration::from_secs(30);

/// One Kafka for both tests of this file, started on first use in its own runtime.
fn kafka() -> &'static Kafka {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| support::start_env(EnvConfig::kafka_only()))
        .kafka()
        .unwrap()
}

/// A job configuration whose sink is `sink` (its source and quarantine topics are never used).
fn config(kafka: &Kafka, sink: &str, dir: &std::path::Path) -> WorkerConfig {
    let job = JobSpec {
        name: unique_name("sinktest"),
        bootstrap: kafka.bootstrap.clone(),
        source: String::from("unused"),
        sink: sink.to_owned(),
        quarantine: String::from("unused-quarantine"),
        backend: Backend::Embedded,
        parallelism: 1,
    };
    job.write(dir).1
}

fn sink(config: &WorkerConfig) -> Sink {
    let metrics = StreamMetrics::register(&mut Registry::default());
    Sink::new(create_producer(config).unwrap(), config, metrics).unwrap()
}

/// A session record of user `key` whose `note` attribute is `note`.
fn output(key: &str, note: &str) -> Output {
    let mut record = SessionRecord::tombstone(key, &format!("{key}-session"), 1, "none");
    record.deleted = false;
    record.merged_into = None;
    record.attributes = Some([(String::from("note"), note.into())].into());
    Output::Session {
        sink: SinkMode::Production,
        record,
    }
}

/// The first `n` records of a one-partition topic, read from its beginning (at most 30 s).
fn read(kafka: &Kafka, topic: &str, n: usize) -> Vec<SessionRecord> {
    let mut reader = TopicReader::new(&kafka.bootstrap, topic, 1);
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while records.len() < n && std::time::Instant::now() < deadline {
        reader.drain(Duration::from_millis(200), 1_000, |payload| {
            records.push(serde_json::from_slice(payload).unwrap());
        });
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_settles_the_batch_its_record_was_produced_in() {
    let kafka = kafka();
    let topic = unique_name("sessions");
    kafka.create_topic(&topic, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(kafka, &topic, dir.path());
    let mut sink = sink(&config);
    let mut ledger = CommitLedger::new();

    // Batch 0 consumed up to offset 10 and produced three records; batch 1 up to 20, two.
    let first = ledger.open();
    ledger.consumed(first, (0, 0), 10);
    let outputs = (0..3).map(|i| output(&format!("a{i}"), "first"));
    sink.send_all(outputs, first, &mut ledger).await.unwrap();
    ledger.seal(first);
    let second = ledger.open();
    ledger.consumed(second, (0, 0), 20);
    let outputs = (0..2).map(|i| output(&format!("b{i}"), "second"));
    sink.send_all(outputs, second, &mut ledger).await.unwrap();
    ledger.seal(second);
    assert_eq!(sink.in_flight(), 5);
    // Nothing is committable before its deliveries are settled.
    assert!(ledger.take_commit().is_empty());

    // Settle reports one at a time: the first batch's position is released exactly when its
    // third record is acknowledged, never earlier, whatever order the reports arrive in.
    let mut settled_first = 0;
    let mut released = None;
    while sink.in_flight() > 0 {
        let (batch, outcome) = tokio::time::timeout(TIMEOUT, sink.next_delivery())
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(batch == first || batch == second, "batch {batch}");
        let before = settled_first;
        settled_first += usize::from(batch == first);
        sink.settle((batch, outcome), &mut ledger).unwrap();
        let committable = ledger.take_commit();
        if settled_first < 3 {
            assert!(committable.is_empty(), "released early: {committable:?}");
        } else if before < 3 {
            let position = committable.get(&(0, 0)).copied();
            assert!(position >= Some(10), "not released: {committable:?}");
        }
        released = committable.get(&(0, 0)).copied().or(released);
    }
    assert_eq!(released, Some(20));
    assert_eq!(ledger.unsettled(), 0);
    sink.drain(&mut ledger, TIMEOUT).await.unwrap();

    let records = read(kafka, &topic, 5);
    let mut keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a0", "a1", "a2", "b0", "b1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_fails_the_sink() {
    let kafka = kafka();
    let topic = unique_name("small");
    // The broker refuses record batches above 1 KiB on this topic; the producer's own limit
    // (1 MB) lets the record through to the broker.
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().unwrap();
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "1024");
    for result in admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(kafka, &topic, dir.path());
    let mut sink = sink(&config);
    let mut ledger = CommitLedger::new();

    let batch = ledger.open();
    ledger.consumed(batch, (0, 0), 1);
    // Incompressible: a pseudo-random 8 KiB of hex.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: String = (0..1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{:08x}", state as u32)
        })
        .collect();
    sink.send(output("big", &noise), batch, &mut ledger)
        .await
        .unwrap();
    ledger.seal(batch);
    let error = sink
        .drain(&mut ledger, TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    // The broker's refusal itself, not a drain that timed out waiting for a report.
    assert!(error.to_lowercase().contains("too large"), "{error}");
    // The refused record never counts as delivered: its batch's position is not committable.
    assert!(ledger.take_commit().is_empty());
    assert_eq!(ledger.unsettled(), 1);
}
