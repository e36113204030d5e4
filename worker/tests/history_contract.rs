//! The history-store contract: one set of behavioural cases (module `cases`) that every backend
//! must pass, run by the `contract!` macro against
//! 1. the embedded store in a temporary directory (expiry driven by an injected clock),
//! 2. the Aerospike store against the e2e wire-protocol test server on loopback,
//! 3. the Aerospike store against a real Aerospike when `AEROSPIKE_HOSTS` is set (`host:port`,
//!    comma-separated; namespace from `AEROSPIKE_NAMESPACE`, default `test`), skipped with a note
//!    otherwise.
//!
//! Then the fault tests, against the test server only: stop-writes, failing writes, dropped
//! connections, slow answers and records too big. Every wait polls a condition with a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aerospike::{Bin, Client, ClientPolicy, Key, Value, WritePolicy};
use prometheus_client::registry::Registry;
use sessionizer_e2e::aerospike::{AerospikeTestServer, ResultCode, ServerConfig};
use sessionizer_e2e::wait;
use sessionizer_worker::history::aerospike::{BIN, WRITE_BATCH};
use sessionizer_worker::history::embedded::{Clock, ManualClock};
use sessionizer_worker::history::metrics::{BackendLabel, FailureKind, Op, StoreMetrics};
use sessionizer_worker::history::{
    AerospikeSettings, AerospikeStore, Codec, EmbeddedStore, HistoryError, HistoryMetrics,
    HistoryRecord, HistoryStore, KeyChange, KeyWrite, RetryPolicy,
};

const SET: &str = "sessionizer_contract";
/// How long a fault test waits for the store to answer again once the fault is cleared.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TTL case may wait for a 1 s record to disappear.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

/// A backend under test, with what the cases need beyond the trait.
trait Fixture {
    /// The store.
    type Store: HistoryStore;

    fn store(&self) -> &Self::Store;
    fn metrics(&self) -> &StoreMetrics;
    fn registry(&self) -> &Registry;
    /// A key unique to this run (a real Aerospike is shared between runs).
    fn key(&self, name: &str) -> String;
    /// Stores bytes under `key` that no codec wrote.
    async fn write_foreign(&self, key: &str, bytes: &[u8]);
    /// Lets about `step` of (store) time pass.
    async fn let_time_pass(&self, step: Duration);
}

fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn metric_value(registry: &Registry, line_prefix: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
    text.lines()
        .find_map(|line| line.strip_prefix(line_prefix))
        .and_then(|rest| rest.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The embedded backend.

struct Embedded {
    store: EmbeddedStore,
    clock: ManualClock,
    metrics: StoreMetrics,
    registry: Registry,
    _dir: tempfile::TempDir,
}

async fn embedded() -> Option<Embedded> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut registry = Registry::default();
    let metrics = HistoryMetrics::register(&mut registry).for_backend(BackendLabel::embedded);
    let clock = ManualClock::new(1_800_000_000_000);
    let store = EmbeddedStore::open_with_clock(
        &dir.path().join("history"),
        Codec::zstd(3),
        metrics.clone(),
        Arc::new(clock.clone()),
    )
    .expect("the embedded store opens");
    Some(Embedded {
        store,
        clock,
        metrics,
        registry,
        _dir: dir,
    })
}

impl Fixture for Embedded {
    type Store = EmbeddedStore;

    fn store(&self) -> &EmbeddedStore {
        &self.store
    }
    fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }
    fn registry(&self) -> &Registry {
        &self.registry
    }
    fn key(&self, name: &str) -> String {
        name.to_owned()
    }
    async fn write_foreign(&self, key: &str, bytes: &[u8]) {
        // A corrupt checkpoint is how foreign bytes reach the embedded store.
        let imported = self
            .store
            .import([HistoryRecord {
                key: key.to_owned(),
                stored: bytes.to_vec(),
                expires_at_ms: self.clock.now_ms() + 60_000,
            }])
            .expect("import");
        assert_eq!(imported, 1);
    }
    async fn let_time_pass(&self, step: Duration) {
        self.clock.advance(step);
    }
}

// ---------------------------------------------------------------------------------------------
// The Aerospike backend (test server or real cluster).

struct Aerospike {
    store: AerospikeStore,
    raw: Client,
    namespace: String,
    metrics: StoreMetrics,
    registry: Registry,
    prefix: String,
    server: Option<AerospikeTestServer>,
}

fn settings(hosts: &str, namespace: &str) -> AerospikeSettings {
    AerospikeSettings {
        hosts: hosts.split(',').map(str::to_owned).collect(),
        namespace: namespace.to_owned(),
        set: SET.to_owned(),
        timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(20),
        },
        codec: Codec::zstd(3),
        credentials: None,
    }
}

async fn aerospike_with(
    settings: AerospikeSettings,
    server: Option<AerospikeTestServer>,
) -> Aerospike {
    let mut registry = Registry::default();
    let metrics = HistoryMetrics::register(&mut registry).for_backend(BackendLabel::aerospike);
    let hosts = settings.hosts.join(",");
    let namespace = settings.namespace.clone();
    let store = AerospikeStore::connect(settings, metrics.clone())
        .await
        .expect("the Aerospike store connects");
    let raw = Client::new(&ClientPolicy::default(), &hosts)
        .await
        .expect("a raw client connects");
    Aerospike {
        store,
        raw,
        namespace,
        metrics,
        registry,
        prefix: run_id(),
        server,
    }
}

async fn test_server(config: ServerConfig) -> AerospikeTestServer {
    AerospikeTestServer::start(config)
        .await
        .expect("the Aerospike test server starts")
}

async fn aerospike_test_server() -> Option<Aerospike> {
    let server = test_server(ServerConfig::default()).await;
    let settings = settings(&server.host(), "test");
    Some(aerospike_with(settings, Some(server)).await)
}

async fn aerospike_real() -> Option<Aerospike> {
    let Ok(hosts) = std::env::var("AEROSPIKE_HOSTS") else {
        println!("AEROSPIKE_HOSTS is not set: skipping the contract against a real Aerospike");
        return None;
    };
    let namespace = std::env::var("AEROSPIKE_NAMESPACE").unwrap_or_else(|_| String::from("test"));
    Some(aerospike_with(settings(&hosts, &namespace), None).await)
}

impl Fixture for Aerospike {
    type Store = AerospikeStore;

    fn store(&self) -> &AerospikeStore {
        &self.store
    }
    fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }
    fn registry(&self) -> &Registry {
        &self.registry
    }
    fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }
    async fn write_foreign(&self, key: &str, bytes: &[u8]) {
        let key = Key::new(self.namespace.clone(), SET, Value::from(key)).expect("a key");
        let policy = WritePolicy {
            expiration: aerospike::Expiration::Seconds(60),
            ..WritePolicy::default()
        };
        self.raw
            .put(&policy, &key, &[Bin::new(BIN, Value::Blob(bytes.to_vec()))])
            .await
            .expect("a raw write");
    }
    async fn let_time_pass(&self, step: Duration) {
        // Real time: Aerospike expires by its own clock. Polling interval, not a fixed wait.
        tokio::time::sleep(step.min(Duration::from_millis(100))).await;
    }
}

impl Drop for Aerospike {
    fn drop(&mut self) {
        // The test server (if any) stops with its fixture.
        self.server.take();
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

// The cases are called from the tests; an unwrap here is a failed assertion of the case.
#[allow(clippy::unwrap_used)]
mod cases {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    pub async fn round_trips_binary_values(f: &impl Fixture) {
        let key = f.key("binary");
        let value: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
        f.store().put(&key, &value, HOUR).await.unwrap();
        assert_eq!(f.store().get(&key).await.unwrap(), Some(value));

        let empty = f.key("empty");
        f.store().put(&empty, &[], HOUR).await.unwrap();
        assert_eq!(f.store().get(&empty).await.unwrap(), Some(Vec::new()));
        assert!(f.metrics().writes() >= 2);
        assert!(f.metrics().reads(true) >= 2);
    }

    pub async fn overwrite_replaces_the_value(f: &impl Fixture) {
        let key = f.key("overwrite");
        f.store().put(&key, b"first", HOUR).await.unwrap();
        f.store().put(&key, b"second", HOUR).await.unwrap();
        assert_eq!(f.store().get(&key).await.unwrap(), Some(b"second".to_vec()));
    }

    pub async fn delete_removes_and_tolerates_absence(f: &impl Fixture) {
        let key = f.key("delete");
        f.store().put(&key, b"v", HOUR).await.unwrap();
        f.store().delete(&key).await.unwrap();
        assert_eq!(f.store().get(&key).await.unwrap(), None);
        f.store().delete(&key).await.unwrap();
        f.store().delete(&f.key("never-written")).await.unwrap();
    }

    pub async fn get_many_answers_each_key_in_order(f: &impl Fixture) {
        let keys: Vec<String> = (0..300).map(|n| f.key(&format!("many-{n}"))).collect();
        for (n, key) in keys.iter().enumerate() {
            if n % 3 != 0 {
                f.store()
                    .put(key, n.to_string().as_bytes(), HOUR)
                    .await
                    .unwrap();
            }
        }
        f.store().delete(&keys[1]).await.unwrap();
        let (hits, misses) = (f.metrics().reads(true), f.metrics().reads(false));
        let got = f.store().get_many(&keys).await.unwrap();
        assert_eq!(got.len(), keys.len());
        for (n, value) in got.iter().enumerate() {
            let want = (n % 3 != 0 && n != 1).then(|| n.to_string().into_bytes());
            assert_eq!(value, &want, "key {n}");
        }
        assert_eq!(f.metrics().reads(true), hits + 199);
        assert_eq!(f.metrics().reads(false), misses + 101);
        assert!(f.store().get_many(&[]).await.unwrap().is_empty());
    }

    pub async fn write_many_applies_and_answers_each_write(f: &impl Fixture) {
        let keys: Vec<String> = (0..200).map(|n| f.key(&format!("batch-{n}"))).collect();
        for key in &keys[..50] {
            f.store().put(key, b"before", HOUR).await.unwrap();
        }
        let writes_before = f.metrics().writes();
        // Keys 0..25 are deleted, 25..200 (re)written with their number.
        let batch: Vec<KeyWrite> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| KeyWrite {
                key: key.clone(),
                change: if n < 25 {
                    KeyChange::Delete
                } else {
                    KeyChange::Put(Arc::from(n.to_string().into_bytes()), HOUR)
                },
            })
            .collect();
        let outcomes = f.store().write_many(&batch).await;
        assert_eq!(outcomes.len(), batch.len());
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(f.metrics().writes(), writes_before + 175);
        let got = f.store().get_many(&keys).await.unwrap();
        for (n, value) in got.iter().enumerate() {
            let want = (n >= 25).then(|| n.to_string().into_bytes());
            assert_eq!(value, &want, "key {n}");
        }
        assert!(f.store().write_many(&[]).await.is_empty());
    }

    pub async fn a_missing_key_is_none_and_a_miss(f: &impl Fixture) {
        let misses = f.metrics().reads(false);
        assert_eq!(f.store().get(&f.key("missing")).await.unwrap(), None);
        assert_eq!(f.metrics().reads(false), misses + 1);
    }

    pub async fn records_expire_after_their_ttl(f: &impl Fixture) {
        let short = f.key("short");
        let long = f.key("long");
        f.store()
            .put(&short, b"brief", Duration::from_secs(1))
            .await
            .unwrap();
        f.store().put(&long, b"kept", HOUR).await.unwrap();
        assert_eq!(
            f.store().get(&short).await.unwrap(),
            Some(b"brief".to_vec())
        );

        let started = Instant::now();
        while f.store().get(&short).await.unwrap().is_some() {
            assert!(
                started.elapsed() < EXPIRY_TIMEOUT,
                "a 1 s record still exists after {EXPIRY_TIMEOUT:?}"
            );
            f.let_time_pass(Duration::from_millis(250)).await;
        }
        assert_eq!(f.store().get(&long).await.unwrap(), Some(b"kept".to_vec()));
    }

    pub async fn large_values_are_compressed(f: &impl Fixture) {
        let key = f.key("large");
        let value: Vec<u8> = (0..20_000u32)
            .flat_map(|n| format!("{{\"page\":{},\"event\":\"view\"}};", n % 50).into_bytes())
            .collect();
        assert!(value.len() > 400_000);
        f.store().put(&key, &value, HOUR).await.unwrap();
        assert_eq!(
            f.store().get(&key).await.unwrap().as_deref(),
            Some(&value[..])
        );
        let label = format!("{:?}", f.metrics().backend());
        let stored = metric_value(
            f.registry(),
            &format!("sessionizer_history_record_size_bytes_sum{{backend=\"{label}\"}}"),
        )
        .expect("the record size is recorded");
        assert!(
            stored < value.len() as f64 / 10.0,
            "{stored} bytes stored for {} bytes",
            value.len()
        );
    }

    pub async fn foreign_values_are_corrupt(f: &impl Fixture) {
        let key = f.key("foreign");
        f.write_foreign(&key, b"{\"not\":\"ours\"}").await;
        let error = f.store().get(&key).await.unwrap_err();
        assert!(
            matches!(&error, HistoryError::Corrupt { key: k, .. } if *k == key),
            "{error:?}"
        );
        assert_eq!(f.metrics().failures(Op::get, FailureKind::corrupt), 1);
        // Writing it again heals the key.
        f.store().put(&key, b"ours", HOUR).await.unwrap();
        assert_eq!(f.store().get(&key).await.unwrap(), Some(b"ours".to_vec()));
    }

    pub async fn concurrent_writers_do_not_interfere(f: &impl Fixture) {
        let keys: Vec<String> = (0..16).map(|n| f.key(&format!("concurrent-{n}"))).collect();
        let writes = keys
            .iter()
            .map(|key| f.store().put(key, key.as_bytes(), HOUR));
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
        for key in &keys {
            assert_eq!(
                f.store().get(key).await.unwrap(),
                Some(key.as_bytes().to_vec())
            );
        }
    }
}

macro_rules! contract {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            contract!(@case $fixture, round_trips_binary_values);
            contract!(@case $fixture, overwrite_replaces_the_value);
            contract!(@case $fixture, delete_removes_and_tolerates_absence);
            contract!(@case $fixture, a_missing_key_is_none_and_a_miss);
            contract!(@case $fixture, get_many_answers_each_key_in_order);
            contract!(@case $fixture, write_many_applies_and_answers_each_write);
            contract!(@case $fixture, records_expire_after_their_ttl);
            contract!(@case $fixture, large_values_are_compressed);
            contract!(@case $fixture, foreign_values_are_corrupt);
            contract!(@case $fixture, concurrent_writers_do_not_interfere);
        }
    };
    (@case $fixture:expr, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            if let Some(fixture) = $fixture.await {
                cases::$case(&fixture).await;
            }
        }
    };
}

contract!(embedded_store, embedded());
contract!(aerospike_test_server_store, aerospike_test_server());
contract!(aerospike_real_store, aerospike_real());

// ---------------------------------------------------------------------------------------------
// Faults, against the test server.

async fn faulty(config: ServerConfig) -> Aerospike {
    let server = test_server(config).await;
    let settings = settings(&server.host(), "test");
    aerospike_with(settings, Some(server)).await
}

fn server(f: &Aerospike) -> &AerospikeTestServer {
    f.server.as_ref().expect("a test server fixture")
}

/// `len` incompressible bytes (xorshift), so a compressed record stays about that large.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// The TTL of record `key` of the contract set, read with the plain client.
async fn ttl_of(f: &Aerospike, key: &str) -> Duration {
    let key = Key::new("test", SET, Value::from(key)).expect("a valid key");
    let record = f
        .raw
        .get(
            &aerospike::ReadPolicy::default(),
            &key,
            aerospike::Bins::None,
        )
        .await
        .expect("the record is there");
    record.time_to_live().expect("the record has a TTL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_writes_is_retried_then_refused_while_reads_go_on() {
    let f = faulty(ServerConfig::default()).await;
    f.store
        .put("kept", b"v", Duration::from_secs(60))
        .await
        .unwrap();
    server(&f).set_stop_writes(true);

    let error = f
        .store
        .put("new", b"v", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(error, HistoryError::WritesRefused(_)), "{error:?}");
    assert_eq!(
        f.metrics.retries(Op::put),
        2,
        "3 attempts, 2 of them retries"
    );
    assert_eq!(f.metrics.failures(Op::put, FailureKind::writes_refused), 1);
    assert_eq!(f.store.get("kept").await.unwrap(), Some(b"v".to_vec()));

    server(&f).set_stop_writes(false);
    f.store
        .put("new", b"v", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(f.store.get("new").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_failing_writes_than_attempts_succeed_after_retries() {
    let f = faulty(ServerConfig::default()).await;
    server(&f).fail_next_writes(2, ResultCode::DeviceOverload);
    f.store
        .put("k", b"v", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(server(&f).pending_write_failures(), 0);
    assert_eq!(f.metrics.retries(Op::put), 2);
    assert_eq!(f.store.get("k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_many_failing_writes_as_attempts_make_the_store_unavailable() {
    let f = faulty(ServerConfig::default()).await;
    server(&f).fail_next_writes(3, ResultCode::DeviceOverload);
    let error = f
        .store
        .put("k", b"v", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(error, HistoryError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(f.metrics.failures(Op::put, FailureKind::unavailable), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_fail_within_the_attempts_and_recover_when_cleared() {
    let f = faulty(ServerConfig::default()).await;
    f.store
        .put("k", b"v", Duration::from_secs(60))
        .await
        .unwrap();

    server(&f).set_refuse_connections(true);
    let started = Instant::now();
    let error = f.store.get("k").await.unwrap_err();
    assert!(
        matches!(error, HistoryError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(f.metrics.retries(Op::get), 2);
    assert_eq!(f.metrics.failures(Op::get, FailureKind::unavailable), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by attempts × timeout: {:?}",
        started.elapsed()
    );

    server(&f).set_refuse_connections(false);
    let value = wait::until("the store to recover", RECOVERY_TIMEOUT, || async {
        f.store.get("k").await.map(Some)
    })
    .await
    .unwrap();
    assert_eq!(value, Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_fail_within_the_attempts_and_recover_when_cleared() {
    let f = faulty(ServerConfig::default()).await;
    let keys = ["a", "b", "c"].map(String::from);
    f.store
        .put("b", b"v", Duration::from_secs(60))
        .await
        .unwrap();

    server(&f).set_refuse_connections(true);
    let error = f.store.get_many(&keys).await.unwrap_err();
    assert!(
        matches!(error, HistoryError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(f.metrics.failures(Op::get, FailureKind::unavailable), 1);

    server(&f).set_refuse_connections(false);
    let values = wait::until("batch reads to recover", RECOVERY_TIMEOUT, || async {
        f.store.get_many(&keys).await.map(Some)
    })
    .await
    .unwrap();
    assert_eq!(values, vec![None, Some(b"v".to_vec()), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_and_are_retried() {
    let server_handle = test_server(ServerConfig::default()).await;
    let mut settings = settings(&server_handle.host(), "test");
    settings.timeout = Duration::from_millis(200);
    settings.retry.attempts = 2;
    let f = aerospike_with(settings, Some(server_handle)).await;
    f.store
        .put("k", b"v", Duration::from_secs(60))
        .await
        .unwrap();

    server(&f).set_response_delay(Duration::from_secs(2));
    let started = Instant::now();
    let error = f.store.get("k").await.unwrap_err();
    assert!(
        matches!(error, HistoryError::Unavailable { attempts: 2, .. }),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(f.metrics.retries(Op::get), 1);
    server(&f).set_response_delay(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_big_fail_at_once_without_retries() {
    let f = faulty(ServerConfig {
        max_record_size: 4096,
        ..ServerConfig::default()
    })
    .await;
    let value = incompressible(64 * 1024);
    let error = f
        .store
        .put("big", &value, Duration::from_secs(60))
        .await
        .unwrap_err();
    match &error {
        HistoryError::TooBig { key, bytes } => {
            assert_eq!(key, "big");
            assert!(*bytes > 4096, "{error:?}");
        }
        other => panic!("expected TooBig, got {other:?}"),
    }
    assert_eq!(f.metrics.retries(Op::put), 0);
    assert_eq!(f.metrics.failures(Op::put, FailureKind::too_big), 1);
    // The same value compresses below the limit when it is repetitive.
    f.store
        .put("big", &vec![7u8; 64 * 1024], Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_carries_the_ttl() {
    let f = faulty(ServerConfig {
        // A namespace default of "never" would hide a write without TTL.
        default_ttl: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await;
    f.store
        .put("k", b"v", Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    let ttl = ttl_of(&f, "k").await;
    assert!(
        ttl > Duration::from_secs(7 * 24 * 3600 - 60) && ttl <= Duration::from_secs(7 * 24 * 3600),
        "{ttl:?}"
    );
}

/// A put of `value` under `key` for `ttl`, as the write-behind layer hands it over.
fn put(key: &str, value: &[u8], ttl: Duration) -> KeyWrite {
    KeyWrite {
        key: key.to_owned(),
        change: KeyChange::Put(Arc::from(value), ttl),
    }
}

/// A batch of puts of `values` under their keys, for an hour each.
fn puts(values: &[(&str, &[u8])]) -> Vec<KeyWrite> {
    values
        .iter()
        .map(|(key, value)| put(key, value, Duration::from_secs(3600)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writes_under_stop_writes_are_retried_then_refused() {
    let f = faulty(ServerConfig::default()).await;
    server(&f).set_stop_writes(true);
    let batch = puts(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
    let outcomes = f.store.write_many(&batch).await;
    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(HistoryError::WritesRefused(_))),
            "{outcome:?}"
        );
    }
    assert_eq!(f.metrics.retries(Op::put), 2, "3 attempts of the batch");
    assert_eq!(f.metrics.failures(Op::put, FailureKind::writes_refused), 3);
    assert_eq!(f.store.get("a").await.unwrap(), None);

    server(&f).set_stop_writes(false);
    let outcomes = f.store.write_many(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(f.store.get("c").await.unwrap(), Some(b"3".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_fewer_failing_rows_than_attempts_succeeds_after_a_retry() {
    let f = faulty(ServerConfig::default()).await;
    server(&f).fail_next_writes(2, ResultCode::DeviceOverload);
    let outcomes = f
        .store
        .write_many(&puts(&[("a", b"1"), ("b", b"2"), ("c", b"3")]))
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(server(&f).pending_write_failures(), 0);
    assert_eq!(
        f.metrics.retries(Op::put),
        1,
        "both failures hit the first attempt"
    );
    for (key, value) in [("a", b"1"), ("b", b"2"), ("c", b"3")] {
        assert_eq!(
            f.store.get(key).await.unwrap(),
            Some(value.to_vec()),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_big_fails_alone_in_its_batch_without_retries() {
    let f = faulty(ServerConfig {
        max_record_size: 4096,
        ..ServerConfig::default()
    })
    .await;
    let big = incompressible(64 * 1024);
    let mut batch = puts(&[("small", b"v"), ("big", &big)]);
    batch.push(KeyWrite {
        key: String::from("absent"),
        change: KeyChange::Delete,
    });
    let outcomes = f.store.write_many(&batch).await;
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert!(
        matches!(&outcomes[1], Err(HistoryError::TooBig { key, bytes }) if key == "big" && *bytes > 4096),
        "{outcomes:?}"
    );
    assert!(outcomes[2].is_ok(), "deleting an absent key: {outcomes:?}");
    assert_eq!(f.metrics.retries(Op::put), 0);
    assert_eq!(f.metrics.failures(Op::put, FailureKind::too_big), 1);
    assert_eq!(f.store.get("small").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(f.store.get("big").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_write_carries_the_ttl() {
    let f = faulty(ServerConfig {
        default_ttl: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await;
    let week = Duration::from_secs(7 * 24 * 3600);
    let outcomes = f.store.write_many(&[put("k", b"v", week)]).await;
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    let ttl = ttl_of(&f, "k").await;
    assert!(
        ttl > week - Duration::from_secs(60) && ttl <= week,
        "{ttl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_many_sends_batch_commands_not_one_command_per_record() {
    let f = faulty(ServerConfig::default()).await;
    let batches = || {
        server(&f)
            .info("statistics")
            .split(';')
            .find_map(|kv| kv.strip_prefix("batch_index_initiate="))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .expect("the test server reports its batch count")
    };
    let before = batches();
    // Two full batches (the client may send a batch of one key as a single-record command).
    let writes: Vec<KeyWrite> = (0..2 * WRITE_BATCH)
        .map(|n| {
            put(
                &format!("k{n}"),
                n.to_string().as_bytes(),
                Duration::from_secs(60),
            )
        })
        .collect();
    let outcomes = f.store.write_many(&writes).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        batches() - before,
        2,
        "{} writes in batches of {WRITE_BATCH}",
        writes.len()
    );
    assert_eq!(f.store.get("k511").await.unwrap(), Some(b"511".to_vec()));
}
