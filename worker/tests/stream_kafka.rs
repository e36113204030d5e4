#![allow(clippy::unwrap_used)]
//! The stream runtime against a real local Kafka: a small generated stream (a few users,
//! out-of-order events, a late event, a duplicate, a malformed event, a page over the limit) on a
//! 4-partition topic read by one worker must end up, after the final-sessions rule, exactly as
//! the oracle computes it; rejected inputs reach the quarantine topic; after a graceful stop the
//! consumer group has committed everything it read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::kafka::Kafka;
use sessionizer_e2e::{Env, EnvConfig};
use sessionizer_worker::config::WorkerConfig;
use sessionizer_worker::engine::{EngineConfig, Quarantine};
use sessionizer_worker::history::History;
use sessionizer_worker::http::WorkerState;
use sessionizer_worker::identity::Identity;
use sessionizer_worker::oracle;
use sessionizer_worker::session::{SessionRecord, final_sessions};
use sessionizer_worker::stream::{self, StreamSettings};

const T0: i64 = 1_700_000_000_000;
const PARTITIONS: i32 = 4;
const SENTINEL: &str = "zz-sentinel";
const TIMEOUT: Duration = Duration::from_secs(30);

fn event(id: &str, user: &str, t: i64, kind: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"eventId":"{id}","userId":"{user}","timestamp":{t},"type":"{kind}"{extra}}}"#)
        .into_bytes()
}

/// `(partition, payload)` in production order. Users are co-partitioned: `u<i>` → `i % 4`.
fn generated_stream() -> Vec<(i32, Vec<u8>)> {
    let s = 1_000;
    let mut out = Vec::new();
    for u in 0..6 {
        let user = format!("u{u}");
        let p = u % PARTITIONS;
        // Session 1, out of order within maxOutOfOrderness (5 s).
        for i in [1, 0, 3, 2] {
            let extra = format!(r#","page":"/p{i}""#);
            out.push((
                p,
                event(
                    &format!("{user}-a{i}"),
                    &user,
                    T0 + i * 2 * s,
                    "pageview",
                    &extra,
                ),
            ));
        }
        // An async event inside session 1.
        out.push((
            p,
            event(
                &format!("{user}-buy"),
                &user,
                T0 + 5 * s,
                "purchase",
                r#","amount":3"#,
            ),
        ));
        // Session 2, more than the 30 s gap later.
        for i in 0..3 {
            let t = T0 + 100 * s + i * 3 * s;
            out.push((p, event(&format!("{user}-b{i}"), &user, t, "pageview", "")));
        }
    }
    // Partition 0 moves far ahead (u4 ... belongs to partition 0): u0's and u4's sessions close.
    out.push((0, event("u4-far", "u4", T0 + 300 * s, "pageview", "")));
    // Late for partition 0 (watermark ≈ T0+295 s), within allowedLateness, touching u0's closed
    // session 1: a late update.
    out.push((
        0,
        event("u0-late", "u0", T0 + 9 * s, "purchase", r#","amount":7"#),
    ));
    // A duplicate with the original's content.
    out.push((1, event("u1-a0", "u1", T0, "pageview", r#","page":"/p0""#)));
    // Malformed, and a page over maxPageNumber (300).
    out.push((2, b"{not json".to_vec()));
    out.push((
        3,
        event(
            "u3-deep",
            "u3",
            T0 + 8 * s,
            "pageview",
            r#","pageNumber":999"#,
        ),
    ));
    out
}

fn worker_config(
    kafka: &Kafka,
    source: &str,
    sink: &str,
    quarantine: &str,
    checkpoints: &std::path::Path,
) -> String {
    format!(
        r#"job: streamtest
namespace: e2e
effectiveSink: Production
spec:
  image: sessionizer/worker:test
  parallelism: 1
  kafka:
    bootstrapServers: ["{bootstrap}"]
    sourceTopics:
      - name: {source}
    consumerGroup: {group}
  sink:
    topic: {sink}
    quarantineTopic: {quarantine}
  session:
    gap: 30s
    maxOutOfOrderness: 5s
    # Longer than the sentinel's jump: the engine prunes closed sessions the watermark has left
    # behind by more than this, even one whose late update is still waiting to be flushed.
    allowedLateness: 2h
    lateUpdateInterval: 1s
    idleSourceTimeout: 1s
  history:
    backend: Embedded
    ttl: 3h
  checkpoints:
    location: file://{checkpoints}
"#,
        checkpoints = checkpoints.display(),
        bootstrap = kafka.bootstrap,
        group = unique_name("streamtest"),
    )
}

async fn produce(producer: &FutureProducer, topic: &str, events: &[(i32, Vec<u8>)]) {
    for (partition, payload) in events {
        let record = FutureRecord::<str, [u8]>::to(topic)
            .partition(*partition)
            .payload(payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// A reader of a whole one-partition topic from its beginning.
fn reader(kafka: &Kafka, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    consumer
}

/// Appends whatever `consumer` has now (waiting at most `wait` for each next message).
async fn drain(consumer: &StreamConsumer, into: &mut Vec<Vec<u8>>, wait: Duration) {
    while let Ok(Ok(message)) = tokio::time::timeout(wait, consumer.recv()).await {
        into.push(message.payload().unwrap_or_default().to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_stream_is_sessionized_like_the_oracle() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let env = Env::start(EnvConfig::kafka_only()).await.unwrap();
    let kafka = env.kafka().unwrap();
    let (source, sink, quarantine) = (
        unique_name("views"),
        unique_name("sessions"),
        unique_name("quarantine"),
    );
    kafka.create_topic(&source, PARTITIONS).await.unwrap();
    kafka.create_topic(&sink, 1).await.unwrap();
    kafka.create_topic(&quarantine, 1).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("worker.yaml");
    std::fs::write(
        &config_path,
        worker_config(
            kafka,
            &source,
            &sink,
            &quarantine,
            &dir.path().join("checkpoints"),
        ),
    )
    .unwrap();
    let config = WorkerConfig::from_file(&config_path).unwrap();
    let identity = Identity {
        pod_name: None,
        pod_ip: None,
        ordinal: 0,
        replicas: 1,
    };

    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let events = generated_stream();
    // Two rounds: up to the event that moves partition 0 far ahead, then (once u0's first
    // session is emitted) the late event and the rest, so the late event meets a closed
    // session in history rather than an open one in memory.
    let far = events
        .iter()
        .position(|(_, e)| String::from_utf8_lossy(e).contains("u4-far"))
        .unwrap();
    let (first_round, second_round) = events.split_at(far + 1);
    produce(&producer, &source, first_round).await;

    let mut state = WorkerState::new(&config, identity.clone());
    let history = History::open(
        &config,
        &dir.path().join("data"),
        state.metrics_mut().registry_mut(),
    )
    .await
    .unwrap();
    let state = Arc::new(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(stream::run(
        config.clone(),
        identity,
        history,
        state.clone(),
        StreamSettings::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // Once every main event is read, a far-future sentinel lets the watermark close everything
    // (produced earlier, it could make partitions read later drop their events as too late).
    let mut per_partition = BTreeMap::<i32, i64>::new();
    for (p, _) in &events {
        *per_partition.entry(*p).or_default() += 1;
    }
    let all_read = || {
        let status = state.status();
        let Some(stream) = status.stream else {
            return false;
        };
        stream.key_groups.len() == PARTITIONS as usize
            && stream.key_groups.iter().all(|kg| {
                kg.partitions[0].position >= per_partition.get(&(kg.key_group as i32)).copied()
            })
    };
    let sessions_reader = reader(kafka, &sink);
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let u0_emitted = |records: &[Vec<u8>]| {
        records
            .iter()
            .any(|r| String::from_utf8_lossy(r).contains(r#""key":"u0""#))
    };
    while !u0_emitted(&records) {
        assert!(!worker.is_finished(), "the stream stopped early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "u0's first session was not emitted: {:?}",
            state.status()
        );
        drain(&sessions_reader, &mut records, Duration::from_millis(100)).await;
    }
    produce(&producer, &source, second_round).await;
    while !all_read() {
        assert!(!worker.is_finished(), "the stream stopped early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            state.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.is_ready());
    let sentinel = (
        3,
        event("sentinel", SENTINEL, T0 + 3_600_000, "pageview", ""),
    );
    produce(&producer, &source, std::slice::from_ref(&sentinel)).await;

    let engine = EngineConfig::from_worker(&config).unwrap();
    let raw: Vec<&[u8]> = events.iter().map(|(_, e)| e.as_slice()).collect();
    let expected: BTreeMap<String, SessionRecord> = oracle::sessionize(raw, &engine).sessions;
    assert_eq!(
        expected.len(),
        13,
        "two sessions for each of six users, one more for u4"
    );

    loop {
        drain(&sessions_reader, &mut records, Duration::from_millis(300)).await;
        let parsed: Vec<SessionRecord> = records
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        let actual = final_sessions(&parsed);
        if actual == expected {
            break;
        }
        assert!(!worker.is_finished(), "the stream stopped early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "final sessions differ from the oracle\nactual: {actual:#?}\nexpected: {expected:#?}\nrecords: {:#?}\nmetrics: {}",
            records
                .iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>(),
            state.metrics().encode().unwrap()
        );
    }
    assert!(
        records.len() > expected.len(),
        "the late event produced an update"
    );

    let quarantine_reader = reader(kafka, &quarantine);
    let mut rejected = Vec::new();
    while rejected.len() < 2 {
        drain(
            &quarantine_reader,
            &mut rejected,
            Duration::from_millis(300),
        )
        .await;
        assert!(tokio::time::Instant::now() < deadline, "{rejected:?}");
    }
    let rejected: Vec<Quarantine> = rejected
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    assert!(
        rejected
            .iter()
            .any(|q| q.raw == "{not json" && q.reason.starts_with("not JSON")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|q| q.key.as_deref() == Some("u3") && q.reason.contains("maxPageNumber")),
        "{rejected:?}"
    );

    let status = serde_json::to_value(state.status()).unwrap();
    assert_eq!(status["stream"]["partitions"], 4, "{status}");
    assert_eq!(status["stream"]["history"]["ok"], true, "{status}");
    // A graceful stop commits everything that was read (every output is delivered by then).
    stop.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, worker)
        .await
        .expect("the stream stops")
        .unwrap()
        .unwrap();
    assert!(!state.is_ready());
    // The last status refresh happens on the way out, so every counter is in by now.
    let metrics = state.metrics().encode().unwrap();
    for result in ["duplicate", "malformed", "page_dropped"] {
        let line = format!(r#"sessionizer_events_total{{result="{result}"}} 1"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    let emitted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sessionizer_sessions_emitted_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(emitted >= 13, "{metrics}");
    per_partition.entry(3).and_modify(|n| *n += 1);
    let group = config.spec.kafka.consumer_group.clone().unwrap();
    let committed: StreamConsumer = kafka
        .client_config()
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(&source, p);
    }
    let committed = tokio::task::spawn_blocking(move || {
        committed
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    for element in committed.elements() {
        assert_eq!(
            element.offset(),
            Offset::Offset(per_partition[&element.partition()]),
            "partition {}",
            element.partition()
        );
    }
}
