//! What the worker end-to-end test (`tests/worker_e2e.rs`) and the throughput benchmark
//! (`benches/throughput.rs`) share: a job's configuration file, producing a generated stream,
//! running the worker binary as a job of several replicas, and reading the sink back.
//!
//! Included by both with `#[path]`, so each uses only part of it. It must never talk to anything
//! but the loopback servers of the local environment, and never wait by sleeping.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sessionizer_e2e::net::free_port;
use sessionizer_e2e::process::ManagedProcess;
use sessionizer_e2e::{Env, EnvConfig};
use sessionizer_worker::config::WorkerConfig;
use sessionizer_worker::engine::{EngineConfig, Quarantine};
use sessionizer_worker::loadgen::{GeneratedEvent, LoadSpec, SENTINEL_PREFIX};
use sessionizer_worker::session::SessionRecord;

/// Where a job keeps its history.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded store under each worker's data directory.
    Embedded,
    /// An Aerospike cluster (here: the wire-protocol test server) at `host:port`.
    Aerospike(String),
}

/// Where and how often a job checkpoints.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    /// `file:///…` or `s3://bucket/prefix`.
    pub location: String,
    /// The S3 endpoint, for `s3://`.
    pub endpoint: Option<String>,
    /// `checkpoints.interval`.
    pub interval: String,
}

/// The topics and settings of one job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Job (and consumer group) name; unique per run.
    pub name: String,
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Source topic.
    pub source: String,
    /// Sink topic.
    pub sink: String,
    /// Quarantine topic.
    pub quarantine: String,
    /// History backend.
    pub backend: Backend,
    /// Number of workers.
    pub parallelism: u32,
}

/// Session settings used by the test and the benchmark: the defaults, except that late updates
/// flush after 1 s (so the end of a run is not a minute of waiting) and partitions never count
/// as idle during a run (so one partition's backlog never raises another's watermark).
pub const SESSION_YAML: [&str; 7] = [
    "gap: 30m",
    "maxPageNumber: 300",
    "maxSessionBytes: 4Mi",
    "allowedLateness: 168h",
    "lateUpdateInterval: 1s",
    "maxOutOfOrderness: 5s",
    "idleSourceTimeout: 1h",
];

impl JobSpec {
    /// A one-worker job with the embedded store and no reachable Kafka: for code that only needs
    /// the job's settings (the engine, the oracle).
    pub fn offline(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            bootstrap: String::from("127.0.0.1:9"),
            source: String::from("events"),
            sink: String::from("sessions"),
            quarantine: String::from("quarantine"),
            backend: Backend::Embedded,
            parallelism: 1,
        }
    }

    /// The worker configuration file's text.
    pub fn yaml(&self, checkpoints: &Path) -> String {
        let mut lines = vec![
            format!("job: {}", self.name),
            String::from("namespace: e2e"),
            String::from("effectiveSink: Production"),
            String::from("spec:"),
            String::from("  image: sessionizer/worker:dev"),
            format!("  parallelism: {}", self.parallelism),
            String::from("  kafka:"),
            format!("    bootstrapServers: [\"{}\"]", self.bootstrap),
            String::from("    sourceTopics:"),
            format!("      - name: {}", self.source),
            String::from("        kind: Sync"),
            String::from("  sink:"),
            format!("    topic: {}", self.sink),
            format!("    quarantineTopic: {}", self.quarantine),
            String::from("  session:"),
        ];
        lines.extend(SESSION_YAML.iter().map(|l| format!("    {l}")));
        lines.push(String::from("  history:"));
        lines.push(String::from("    ttl: 168h"));
        match &self.backend {
            Backend::Embedded => lines.push(String::from("    backend: Embedded")),
            Backend::Aerospike(host) => {
                lines.extend([
                    String::from("    backend: Aerospike"),
                    String::from("    aerospike:"),
                    format!("      hosts: [\"{host}\"]"),
                    String::from("      namespace: test"),
                    format!("      set: {}", self.name.replace('-', "_")),
                    String::from("      timeout: 2s"),
                    String::from("      retry:"),
                    String::from("        attempts: 5"),
                    String::from("        backoff: 100ms"),
                ]);
            }
        }
        lines.push(String::from("  checkpoints:"));
        lines.push(format!("    location: file://{}", checkpoints.display()));
        lines.join("\n") + "\n"
    }

    /// The configuration with checkpoints as `checkpoints` says.
    pub fn yaml_with(&self, checkpoints: &Checkpoints) -> String {
        let mut text = self.yaml(Path::new("/unused"));
        let at = text.find("  checkpoints:").unwrap();
        text.truncate(at);
        text.push_str("  checkpoints:\n");
        text.push_str(&format!("    location: {}\n", checkpoints.location));
        if let Some(endpoint) = &checkpoints.endpoint {
            text.push_str(&format!("    endpoint: {endpoint}\n"));
        }
        text.push_str(&format!("    interval: {}\n", checkpoints.interval));
        text
    }

    /// Writes the configuration with `checkpoints` to `dir/worker.yaml`; returns it parsed.
    pub fn write_with(&self, dir: &Path, checkpoints: &Checkpoints) -> (PathBuf, WorkerConfig) {
        let path = dir.join("worker.yaml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, self.yaml_with(checkpoints)).unwrap();
        let config = WorkerConfig::from_file(&path).unwrap();
        (path, config)
    }

    /// Writes the configuration to `dir/worker.yaml` and returns it parsed, proving the text is
    /// a valid worker configuration.
    pub fn write(&self, dir: &Path) -> (PathBuf, WorkerConfig) {
        let path = dir.join("worker.yaml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, self.yaml(&dir.join("checkpoints"))).unwrap();
        let config = WorkerConfig::from_file(&path).unwrap();
        (path, config)
    }
}

/// The engine settings of a configuration (what the oracle needs).
pub fn engine_config(config: &WorkerConfig) -> EngineConfig {
    EngineConfig::from_worker(config).unwrap()
}

/// The worker binary: `$SESSIONIZER_BIN_DIR/sessionizer-worker`, else the one Cargo built for
/// this test or benchmark (same profile).
pub fn worker_binary() -> PathBuf {
    match std::env::var_os("SESSIONIZER_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join("sessionizer-worker"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_sessionizer-worker")),
    }
}

/// Starts `replicas` workers of the job configured at `config`, each with its own data
/// directory under `dir` and HTTP port on 127.0.0.1. They are killed when dropped.
pub fn start_workers(config: &Path, dir: &Path, replicas: u32) -> Vec<(ManagedProcess, u16)> {
    (0..replicas)
        .map(|ordinal| start_worker(config, dir, ordinal, replicas, &[]))
        .collect()
}

/// Starts worker `ordinal` of `replicas` with extra environment `env`; its data directory is
/// `dir/worker-<ordinal>` (kept across restarts, like a Pod's volume) and its log
/// `dir/worker-<ordinal>.log` (appended to).
pub fn start_worker(
    config: &Path,
    dir: &Path,
    ordinal: u32,
    replicas: u32,
    env: &[(String, String)],
) -> (ManagedProcess, u16) {
    let port = free_port().unwrap();
    let data = dir.join(format!("worker-{ordinal}"));
    std::fs::create_dir_all(&data).unwrap();
    let mut command = Command::new(worker_binary());
    command
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(&data)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--log-format", "text"])
        .env("SESSIONIZER_ORDINAL", ordinal.to_string())
        .env("SESSIONIZER_REPLICAS", replicas.to_string())
        .env("POD_NAME", format!("worker-{ordinal}"))
        .env("POD_IP", "127.0.0.1")
        .env_remove("SESSIONIZER_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let log = dir.join(format!("worker-{ordinal}.log"));
    let process = ManagedProcess::start(&format!("worker-{ordinal}"), command, &log)
        .unwrap_or_else(|e| panic!("starting {}: {e}", worker_binary().display()));
    (process, port)
}

/// Produces `events` to `topic`, each to its generated partition, and waits for every
/// acknowledgement.
pub fn produce(bootstrap: &str, topic: &str, events: &[GeneratedEvent]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .unwrap();
    for event in events {
        let mut record = BaseRecord::to(topic)
            .key(event.key.as_bytes())
            .payload(event.payload.as_slice())
            .partition(i32::try_from(event.partition).unwrap());
        let mut tries = 0u32;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    tries += 1;
                    assert!(tries < 100_000, "the producer queue stayed full");
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => panic!("producing to {topic}: {error}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    assert_eq!(producer.in_flight_count(), 0);
}

/// A reader of a whole topic from the beginning, outside any consumer group.
pub struct TopicReader {
    consumer: BaseConsumer,
    /// Messages read so far (key, payload).
    pub messages: u64,
}

impl TopicReader {
    /// Reads every partition of `topic` (which has `partitions`) from offset 0.
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        Self::assigned(bootstrap, topic, 0..partitions)
    }

    /// Reads the partitions `partitions` of `topic` from offset 0.
    pub fn assigned(bootstrap: &str, topic: &str, partitions: std::ops::Range<i32>) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760")
            // librdkafka's default (1 s) idles a fast reader between fetches once its prefetch
            // queue is full: the raw rate measured with it was 4.6 times too low.
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        Self {
            consumer,
            messages: 0,
        }
    }

    /// Hands every message available now to `each`, waiting at most `wait` for the first;
    /// returns how many there were. Bounded: at most `max` messages per call.
    pub fn drain(&mut self, wait: Duration, max: u64, mut each: impl FnMut(&[u8])) -> u64 {
        let mut n = 0;
        let mut timeout = wait;
        while n < max {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => panic!("consuming: {e}"),
                Some(Ok(message)) => {
                    each(message.payload().unwrap_or_default());
                    n += 1;
                    timeout = Duration::from_millis(20);
                }
            }
        }
        self.messages += n;
        n
    }
}

/// The latest version of every session id seen on the sink (what `final_sessions` keeps, before
/// tombstones are dropped), maintained incrementally — and, when built [`SinkState::expecting`]
/// a set of final sessions, how far the sink is from it, kept up to date per record so a
/// benchmark can tell the moment it is reached without comparing everything again.
///
/// It runs while a benchmark's clock runs, on the cores the workers use, so it reads only the
/// head of each record (id, version, key, deleted) and keeps the payload as is: a record whose
/// version is the expected one is compared as bytes with the expected record as the worker
/// writes it, and parsed only if those differ. Whole records are parsed off the clock, by
/// [`SinkState::final_sessions`].
#[derive(Default)]
pub struct SinkState {
    latest: HashMap<String, Latest>,
    /// Records read.
    pub records: u64,
    /// The final sessions expected (sentinel sessions left out).
    want: HashMap<String, SessionRecord>,
    /// The expected records as JSON, as the worker serializes them.
    want_json: HashMap<String, Vec<u8>>,
    /// Live non-sentinel sessions whose latest record is not the expected one.
    unexpected: usize,
    /// Expected sessions whose latest record is the expected one.
    matching: usize,
}

/// The latest record of one session id.
struct Latest {
    version: u64,
    payload: Vec<u8>,
    judged: Judged,
}

/// What the latest record of an id means for the distance to the expected sessions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// The expected final record of an expected session.
    Expected,
    /// A live session that is not (yet) as expected.
    Unexpected,
    /// A tombstone or a sentinel session: neither.
    Neither,
}

/// The fields of a sink record [`SinkState::add`] reads; the rest is skipped.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(borrow)]
    session_id: std::borrow::Cow<'a, str>,
    version: u64,
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(default)]
    deleted: bool,
}

impl SinkState {
    /// A state that tracks its distance to `want` (final sessions without sentinels).
    pub fn expecting(want: BTreeMap<String, SessionRecord>) -> Self {
        let want_json = want
            .iter()
            .map(|(id, record)| (id.clone(), serde_json::to_vec(record).unwrap()))
            .collect();
        Self {
            want: want.into_iter().collect(),
            want_json,
            ..Self::default()
        }
    }

    /// Adds one sink record.
    pub fn add(&mut self, payload: &[u8]) {
        let head: Head = serde_json::from_slice(payload)
            .unwrap_or_else(|e| panic!("a sink record is not a session record: {e}"));
        self.records += 1;
        let old = match self.latest.get(head.session_id.as_ref()) {
            Some(old) if old.version >= head.version => return,
            old => old.map(|old| old.judged),
        };
        let new = self.judge(&head, payload);
        if let Some(old) = old {
            self.count(old, -1);
        }
        self.count(new, 1);
        let latest = Latest {
            version: head.version,
            payload: payload.to_vec(),
            judged: new,
        };
        self.latest.insert(head.session_id.into_owned(), latest);
    }

    fn count(&mut self, judged: Judged, by: isize) {
        let counter = match judged {
            Judged::Expected => &mut self.matching,
            Judged::Unexpected => &mut self.unexpected,
            Judged::Neither => return,
        };
        *counter = counter.checked_add_signed(by).unwrap();
    }

    /// What `payload` (whose head is `head`) means as the latest record of its id.
    fn judge(&self, head: &Head, payload: &[u8]) -> Judged {
        if head.deleted || head.key.starts_with(SENTINEL_PREFIX) {
            return Judged::Neither;
        }
        let id = head.session_id.as_ref();
        let expected = match self.want.get(id) {
            Some(want) if want.version == head.version => {
                self.want_json.get(id).is_some_and(|json| json == payload)
                    || serde_json::from_slice::<SessionRecord>(payload).unwrap() == *want
            }
            _ => false,
        };
        if expected {
            Judged::Expected
        } else {
            Judged::Unexpected
        }
    }

    /// Whether the final sessions (sentinels left out) are exactly the expected ones.
    pub fn reached(&self) -> bool {
        self.matching == self.want.len() && self.unexpected == 0
    }

    /// `final_sessions` of everything read.
    pub fn final_sessions(&self) -> BTreeMap<String, SessionRecord> {
        let records: Vec<SessionRecord> = self
            .latest
            .values()
            .map(|latest| serde_json::from_slice(&latest.payload).unwrap())
            .collect();
        sessionizer_worker::session::final_sessions(records.iter())
    }
}

/// Decodes a quarantine record.
pub fn quarantine(payload: &[u8]) -> Quarantine {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("a quarantine record is not a Quarantine: {e}"))
}

/// The event count a benchmark runs with: `$BENCH_EVENTS` (underscores allowed), else `default`.
pub fn bench_events(default: u64) -> u64 {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The generated workload of the benchmarks: `n` events over `partitions`, one user per 40
/// events (at least 100).
pub fn bench_load(seed: u64, n: u64, partitions: u32) -> LoadSpec {
    LoadSpec {
        seed,
        events: n,
        users: u32::try_from((n / 40).max(100)).unwrap_or(u32::MAX),
        partitions,
        ..LoadSpec::default()
    }
}

/// Starts a local environment on its own thread and runtime, so a `OnceLock` can share it
/// between the tests of a file whatever runtime each test runs on.
pub fn start_env(config: EnvConfig) -> Env {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(Env::start(config)).unwrap()
    })
    .join()
    .unwrap()
}
