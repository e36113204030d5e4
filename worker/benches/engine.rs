#![allow(clippy::unwrap_used)]
//! CPU cost of the session engine alone — no Kafka, no network — so the worker's own work per
//! event can be measured apart from the brokers it shares the machine with:
//!
//! ```text
//! cargo bench -p sessionizer-worker --bench engine                 # 400,000 events
//! BENCH_EVENTS=100000 cargo bench -p sessionizer-worker --bench engine
//! ```
//!
//! One generated stream (`sessionizer_worker::loadgen`, seed 1, the same mix as the throughput
//! benchmark) is split by key group and decoded, read ahead ([`KeyGroup::prefetch_late`]) and
//! accepted in batches of 2,048, each followed by a tick, the way the stream loop does, then finished. Rows: JSON decoding
//! only (the floor), and the engine with the embedded store behind the write-behind layer. Each
//! row reports events per second of one core; the engine's final sessions are checked against
//! the oracle so a fast wrong run cannot pass.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::Instant;

use sessionizer_worker::engine::{KeyGroup, Output};
use sessionizer_worker::history::metrics::{BackendLabel, HistoryMetrics};
use sessionizer_worker::history::{Codec, EmbeddedStore, WriteBehind};
use sessionizer_worker::loadgen::{self, without_sentinels};
use sessionizer_worker::oracle;
use sessionizer_worker::session::final_sessions;

use support::JobSpec;

/// The worker binary's allocator, so the figures are the worker's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: u32 = 4;
const BATCH: usize = 2048;

fn main() {
    let events = support::bench_events(400_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(events));
}

async fn bench(n: u64) {
    let spec = support::bench_load(1, n, PARTITIONS);
    let events = loadgen::generate(&spec);
    let total = events.len();
    let dir = tempfile::tempdir().unwrap();
    let job = JobSpec::offline("engine-bench");
    let (_, config) = job.write(dir.path());
    let engine = support::engine_config(&config);
    let want = without_sentinels(
        oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine).sessions,
    );

    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut decoded = 0usize;
    for event in &events {
        if sessionizer_worker::event::decode(&event.payload, &engine.fields).is_ok() {
            decoded += 1;
        }
    }
    let decode_secs = started.elapsed().as_secs_f64();
    let decode_cpu = cpu_seconds() - cpu_before;
    std::hint::black_box(decoded);

    let store = EmbeddedStore::open(
        &dir.path().join("history"),
        Codec::uncompressed(),
        HistoryMetrics::unregistered().for_backend(BackendLabel::embedded),
    )
    .unwrap();
    let history = WriteBehind::new(store);
    let mut groups: Vec<_> = (0..PARTITIONS)
        .map(|kg| KeyGroup::new(kg, engine.clone(), history.clone()))
        .collect();
    let mut records = Vec::new();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let now = 1_800_000_000_000i64;
    for (batch_no, batch) in events.chunks(BATCH).enumerate() {
        let now = now + batch_no as i64 * 100;
        let decoded: Vec<_> = batch
            .iter()
            .map(|e| {
                (
                    e.partition as usize,
                    &e.payload,
                    groups[e.partition as usize].decode(&e.payload),
                )
            })
            .collect();
        for (kg, group) in groups.iter_mut().enumerate() {
            let late = decoded
                .iter()
                .filter(|(k, _, _)| *k == kg)
                .filter_map(|(_, _, e)| e.as_ref().ok());
            group.prefetch_late(late).await.unwrap();
        }
        for (kg, payload, event) in decoded {
            let outputs = groups[kg]
                .accept_decoded(event, payload, now)
                .await
                .unwrap();
            collect(&mut records, outputs);
        }
        for group in &mut groups {
            collect(&mut records, group.tick(now).await.unwrap());
        }
    }
    for group in &mut groups {
        collect(&mut records, group.finish().await.unwrap());
    }
    history.flush().await.unwrap();
    let engine_secs = started.elapsed().as_secs_f64();
    let engine_cpu = cpu_seconds() - cpu_before;
    let got = without_sentinels(final_sessions(records.iter()));
    assert_eq!(
        got.len(),
        want.len(),
        "session count differs from the oracle"
    );
    assert!(got == want, "final sessions differ from the oracle");

    println!("engine: {total} events, {PARTITIONS} key groups, one core");
    println!(
        "{:<34} {:>9} {:>12} {:>9} {:>13}",
        "run", "seconds", "events/s", "cpu-s", "cpu-µs/event"
    );
    for (name, secs, cpu) in [
        ("event decode only", decode_secs, decode_cpu),
        ("engine + embedded write-behind", engine_secs, engine_cpu),
    ] {
        println!(
            "{name:<34} {secs:>9.2} {:>12.0} {cpu:>9.2} {:>13.2}",
            total as f64 / secs,
            cpu * 1e6 / total as f64
        );
    }
    println!("reproduce: BENCH_EVENTS={n} cargo bench -p sessionizer-worker --bench engine");
}

/// CPU seconds this process used so far (all threads, user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here, in clock ticks.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn collect(records: &mut Vec<sessionizer_worker::session::SessionRecord>, outputs: Vec<Output>) {
    for output in outputs {
        if let Output::Session { record, .. } = output {
            records.push(record);
        }
    }
}
