#![allow(clippy::unwrap_used)]
//! Checkpoint size, checkpoint duration and restore time with history in Aerospike (the e2e
//! wire-protocol test server, on 127.0.0.1) versus the embedded store, for the same workload and
//! the same history — seed 000's comparison of "state outside the job" with "state inside":
//!
//! ```text
//! cargo bench -p sessionizer-worker --bench checkpoint               # 200,000 events
//! BENCH_EVENTS=50000 cargo bench -p sessionizer-worker --bench checkpoint
//! ```
//!
//! For each backend: one generated stream (`sessionizer_worker::loadgen`, seed 3, sentinels
//! left out so sessions stay open) runs through the engine of 4 key groups, the history
//! write-behind is flushed, then
//! 1. **checkpoint**: pending late updates are emitted and history writes flushed (the worker's
//!    pause), then every key group's state (and, embedded, its history records) is encoded,
//!    compressed and written with its manifest to a `file://` checkpoint store, as the worker does;
//! 2. **restore**: a fresh worker directory reads the checkpoint back — key group files checked
//!    and decoded, embedded history imported into a new store — and rebuilds the key groups.
//!
//! The restored key groups must equal the checkpointed ones, and the restored embedded store
//! must hold every history record, so a fast wrong restore cannot pass. Rows give bytes,
//! milliseconds and history records; the summary gives Aerospike relative to embedded.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use sessionizer_e2e::aerospike::{AerospikeTestServer, ServerConfig};
use sessionizer_worker::checkpoint::manifest::MANIFEST_FORMAT_VERSION;
use sessionizer_worker::checkpoint::{
    CheckpointStore, KeyGroupCheckpoint, LocalDir, Manifest, StoreCredentials,
};
use sessionizer_worker::config::WorkerConfig;
use sessionizer_worker::engine::KeyGroup;
use sessionizer_worker::history::{History, WriteBehind};
use sessionizer_worker::loadgen::{self, LoadSpec};
use sessionizer_worker::stream::checkpointing::key_group_prefix;

use support::{Backend, Checkpoints, JobSpec};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: u32 = 4;
const BATCH: usize = 2048;

struct Row {
    backend: &'static str,
    history_records: u64,
    open_sessions: u64,
    bytes: u64,
    checkpoint: Duration,
    restore: Duration,
}

fn main() {
    let events = support::bench_events(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(events));
}

async fn bench(n: u64) {
    let spec = LoadSpec {
        sentinels: false,
        ..support::bench_load(3, n, PARTITIONS)
    };
    let events = loadgen::generate(&spec);
    let root = tempfile::tempdir().unwrap();
    let server = AerospikeTestServer::start(ServerConfig {
        namespaces: vec![String::from("test")],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let mut rows = Vec::new();
    for (name, backend) in [
        ("embedded", Backend::Embedded),
        ("Aerospike", Backend::Aerospike(server.host())),
    ] {
        let dir = root.path().join(name);
        rows.push(run(name, backend, &events, &dir).await);
    }
    server.shutdown().await;

    println!(
        "checkpoint: {} events, {PARTITIONS} key groups, same workload and history per backend",
        events.len()
    );
    println!(
        "{:<10} {:>15} {:>13} {:>14} {:>15} {:>12}",
        "history", "records in chk", "open sessions", "checkpoint B", "checkpoint ms", "restore ms"
    );
    for row in &rows {
        println!(
            "{:<10} {:>15} {:>13} {:>14} {:>15.1} {:>12.1}",
            row.backend,
            row.history_records,
            row.open_sessions,
            row.bytes,
            row.checkpoint.as_secs_f64() * 1e3,
            row.restore.as_secs_f64() * 1e3
        );
    }
    let (embedded, aerospike) = (&rows[0], &rows[1]);
    println!(
        "Aerospike vs embedded: checkpoints {:.0}% smaller, checkpointing {:.0}% faster, \
         restore {:.0}% faster (seed 000: 81% smaller, restarts over 60% faster)",
        100.0 * (1.0 - aerospike.bytes as f64 / embedded.bytes as f64),
        100.0 * (1.0 - aerospike.checkpoint.as_secs_f64() / embedded.checkpoint.as_secs_f64()),
        100.0 * (1.0 - aerospike.restore.as_secs_f64() / embedded.restore.as_secs_f64()),
    );
    println!("reproduce: BENCH_EVENTS={n} cargo bench -p sessionizer-worker --bench checkpoint");
}

fn config(name: &str, backend: Backend, dir: &Path) -> WorkerConfig {
    let job = JobSpec {
        name: format!("bench-{}", name.to_ascii_lowercase()),
        bootstrap: String::from("127.0.0.1:9"),
        source: String::from("events"),
        sink: String::from("sessions"),
        quarantine: String::from("quarantine"),
        backend,
        parallelism: 1,
    };
    let checkpoints = Checkpoints {
        location: format!("file://{}", dir.join("checkpoints").display()),
        endpoint: None,
        interval: String::from("5m"),
    };
    job.write_with(dir, &checkpoints).1
}

async fn run(
    name: &'static str,
    backend: Backend,
    events: &[loadgen::GeneratedEvent],
    dir: &Path,
) -> Row {
    let config = config(name, backend, dir);
    let engine = support::engine_config(&config);
    let history = History::open(&config, &dir.join("data"), &mut Registry::default())
        .await
        .unwrap();
    let behind = WriteBehind::new(history.clone());
    let mut groups: Vec<_> = (0..PARTITIONS)
        .map(|kg| KeyGroup::new(kg, engine.for_key_group(kg), behind.clone()))
        .collect();
    let now = 1_800_000_000_000i64;
    for (batch_no, batch) in events.chunks(BATCH).enumerate() {
        let now = now + batch_no as i64 * 100;
        for event in batch {
            let group = &mut groups[event.partition as usize];
            group.accept_record(&event.payload, now).await.unwrap();
        }
        for group in &mut groups {
            group.tick(now).await.unwrap();
        }
    }
    // Checkpoint: what the worker does, timed from its pause (pending late updates emitted,
    // history writes flushed) to the manifest.
    let started = Instant::now();
    for group in &mut groups {
        group.flush_pending().await.unwrap();
    }
    behind.flush().await.unwrap();
    let store = CheckpointStore::open(
        &config.spec.checkpoints,
        &config.namespace,
        &config.job,
        &StoreCredentials::from_pairs(Vec::new()),
        LocalDir::Create,
    )
    .unwrap();
    let id = sessionizer_worker::checkpoint::id_at(now);
    let started_at = jiff::Timestamp::now();
    let mut entries = Vec::new();
    let mut history_records = 0;
    let mut snapshots = Vec::new();
    for (kg, group) in groups.iter().enumerate() {
        let kg = kg as u32;
        let mut checkpoint = KeyGroupCheckpoint {
            key_group: kg,
            offsets: [(String::from("events"), 1)].into(),
            state: group.snapshot(),
            history: Vec::new(),
        };
        if let History::Embedded(embedded) = &history {
            let prefix = key_group_prefix(&engine.history_prefix, kg);
            embedded
                .export_prefix(&prefix, |record| {
                    checkpoint.history.push(record);
                    Ok(())
                })
                .unwrap();
        }
        history_records += checkpoint.history.len() as u64;
        entries.push(store.write_key_group(&id, &checkpoint).await.unwrap());
        snapshots.push(checkpoint);
    }
    let completed_at = jiff::Timestamp::now();
    let bytes = entries.iter().map(|e| e.bytes).sum();
    store
        .write_manifest(&Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint_id: id.clone(),
            namespace: config.namespace.clone(),
            job: config.job.clone(),
            partitions: PARTITIONS,
            first_key_group: 0,
            end_key_group: PARTITIONS,
            history_backend: config.spec.history.backend,
            started_at,
            completed_at,
            duration_millis: 0,
            total_bytes: bytes,
            key_groups: entries.clone(),
            is_final: true,
        })
        .await
        .unwrap();
    let checkpoint = started.elapsed();
    // Restore into a fresh worker directory.
    let restore_dir = dir.join("restored");
    let started = Instant::now();
    let restored_history = History::open(&config, &restore_dir, &mut Registry::default())
        .await
        .unwrap();
    let listings = store.list().await.unwrap();
    let mut restored = Vec::new();
    let mut imported = 0;
    for kg in 0..PARTITIONS {
        let listing = sessionizer_worker::checkpoint::manifest::latest_for(&listings, kg).unwrap();
        let (_, entry) = listing.entry(kg).unwrap();
        let mut checkpoint = store.read_key_group(&listing.id, entry).await.unwrap();
        if let History::Embedded(embedded) = &restored_history {
            let records = std::mem::take(&mut checkpoint.history);
            let embedded = embedded.clone();
            imported += tokio::task::spawn_blocking(move || embedded.import(records))
                .await
                .unwrap()
                .unwrap();
        }
        restored.push(KeyGroup::restore(
            engine.for_key_group(kg),
            WriteBehind::new(restored_history.clone()),
            checkpoint.state,
        ));
    }
    let restore = started.elapsed();
    for (group, snapshot) in restored.iter().zip(&snapshots) {
        assert!(group.snapshot() == snapshot.state, "restored state differs");
    }
    if matches!(restored_history, History::Embedded(_)) {
        assert_eq!(imported, history_records, "every history record restored");
    }
    let open_sessions = snapshots
        .iter()
        .map(KeyGroupCheckpoint::open_sessions)
        .sum();
    eprintln!(
        "{name}: {bytes} bytes, {history_records} history records, checkpoint {:.0} ms, restore {:.0} ms",
        checkpoint.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3
    );
    Row {
        backend: name,
        history_records,
        open_sessions,
        bytes,
        checkpoint,
        restore,
    }
}
