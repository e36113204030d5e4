#![allow(clippy::unwrap_used)]
//! Throughput of the worker against the plain Kafka consumer it is built on, on this machine, in
//! one run:
//!
//! ```text
//! cargo bench -p sessionizer-worker --bench throughput            # 1,000,000 events
//! BENCH_EVENTS=200000 cargo bench -p sessionizer-worker --bench throughput
//! ```
//!
//! `cargo bench` builds the bench and the worker binary with the release profile. The bench
//! starts the local Kafka (the e2e environment), generates `BENCH_EVENTS` messy events
//! (`sessionizer_worker::loadgen`, seed 1) and produces them once to a source topic with 4
//! partitions, then measures:
//! 1. **raw**: one rdkafka consumer reading the whole topic (assign, from the beginning) — the
//!    ceiling any Kafka application here can reach;
//! 2. **worker, embedded history**: a job of 2 workers (2 key groups each) from process start
//!    until the sink's final sessions (`final_sessions`, latest version per id, tombstones
//!    dropped) equal the oracle's for every session — every session closed, every late update
//!    flushed, every record delivered. That is the most honest end: it is what a downstream
//!    consumer sees, and it includes startup, decode, history reads and writes and producing;
//! 3. **worker, Aerospike history**: the same with history on the Aerospike wire-protocol test
//!    server (in this process, on 127.0.0.1).
//!
//! Each row gives events/s, events/s per core (the machine's cores: Kafka, the workers and the
//! reader share them) and events per CPU-second: of the worker processes for a worker row, of
//! the reader (this bench process while it read) for the raw row — so the two compare what each
//! spends per event. Every row's note gives the CPU the Kafka broker used while the clock ran,
//! and a worker row's note the CPU this bench process spent meanwhile (the sink reader, the
//! status polls and, in the Aerospike row, the test server): they share the cores with the
//! workers, so they are part of what the wall-clock figure pays.
//! The sessions themselves are checked against the oracle, so a fast wrong run cannot pass.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use sessionizer_e2e::aerospike::{AerospikeTestServer, ServerConfig};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::kafka::Kafka;
use sessionizer_e2e::process::ManagedProcess;
use sessionizer_e2e::{Env, EnvConfig};
use sessionizer_worker::loadgen::{self, without_sentinels};
use sessionizer_worker::oracle;

use support::{Backend, JobSpec, SinkState, TopicReader};

/// The worker binary's allocator, so the reader sharing the cores with the workers costs them
/// as little as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 4;
const PARALLELISM: u32 = 2;

/// One measured row.
struct Row {
    name: &'static str,
    outcome: Result<Measured, String>,
}

struct Measured {
    seconds: f64,
    /// CPU seconds of the worker processes, if measured.
    cpu_seconds: Option<f64>,
    note: String,
}

fn main() {
    let events = support::bench_events(1_000_000);
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(events, cores));
}

async fn bench(n: u64, cores: usize) {
    let env = Env::start(EnvConfig::kafka_only()).await.unwrap();
    let kafka = env.kafka().unwrap();
    let bootstrap = kafka.bootstrap.clone();
    let name = unique_name("bench");
    let source = format!("{name}-events");
    kafka.create_topic(&source, PARTITIONS).await.unwrap();

    let spec = support::bench_load(1, n, PARTITIONS as u32);
    let started = Instant::now();
    let events = loadgen::generate(&spec);
    let total = events.len() as u64;
    let bytes: usize = events.iter().map(|e| e.payload.len()).sum();
    eprintln!(
        "generated {total} events ({:.1} MB) in {:.1}s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let dir = env.run_dir().join(&name);
    // The oracle needs the job's settings: any of the jobs below has the same session settings.
    let probe = JobSpec {
        name: format!("{name}-probe"),
        bootstrap: bootstrap.clone(),
        source: source.clone(),
        sink: String::from("unused"),
        quarantine: String::from("unused"),
        backend: Backend::Embedded,
        parallelism: PARALLELISM,
    };
    let (_, config) = probe.write(&dir.join("probe"));
    let engine = support::engine_config(&config);
    spec.check_fits(&engine).unwrap();
    let started = Instant::now();
    let want = without_sentinels(
        oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine).sessions,
    );
    eprintln!(
        "oracle: {} final sessions in {:.1}s",
        want.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    support::produce(&bootstrap, &source, &events);
    let produce_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced in {produce_secs:.1}s ({:.0} events/s)",
        total as f64 / produce_secs
    );
    drop(events);

    let mut rows = Vec::new();
    rows.push(Row {
        name: "raw rdkafka consume",
        outcome: raw_consume(kafka, &source, total),
    });
    progress(&rows[0]);

    rows.push(Row {
        name: "worker, embedded history",
        outcome: run_job(
            kafka,
            &source,
            &dir,
            &format!("{name}-emb"),
            Backend::Embedded,
            &want,
            total,
        )
        .await,
    });
    progress(&rows[1]);

    let server = AerospikeTestServer::start(ServerConfig {
        namespaces: vec![String::from("test")],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    rows.push(Row {
        name: "worker, Aerospike history",
        outcome: run_job(
            kafka,
            &source,
            &dir,
            &format!("{name}-aer"),
            Backend::Aerospike(server.host()),
            &want,
            total,
        )
        .await,
    });
    progress(&rows[2]);
    server.shutdown().await;

    print_table(&rows, total, cores);
}

/// Progress on stderr as each run ends (the table comes at the end).
fn progress(row: &Row) {
    match &row.outcome {
        Ok(m) => eprintln!("{}: {:.2}s ({})", row.name, m.seconds, m.note),
        Err(e) => eprintln!("{}: FAILED: {e}", row.name),
    }
}

/// CPU seconds `pid` used since `cpu_seconds(pid)` answered `start` (`None` when `/proc` did
/// not answer).
fn cpu_since(pid: u32, start: Option<f64>) -> Option<f64> {
    cpu_seconds(pid).zip(start).map(|(end, start)| end - start)
}

/// A CPU figure for a row's note.
fn cpu_note(cpu: Option<f64>) -> String {
    cpu.map_or_else(|| String::from("?"), |c| format!("{c:.2}"))
}

fn raw_consume(kafka: &Kafka, topic: &str, total: u64) -> Result<Measured, String> {
    let broker = kafka.pid();
    let own_cpu_at_start = cpu_seconds(std::process::id());
    let broker_cpu_at_start = cpu_seconds(broker);
    let started = Instant::now();
    let mut reader = TopicReader::new(&kafka.bootstrap, topic, PARTITIONS);
    let mut bytes = 0usize;
    let deadline = Duration::from_secs(600);
    while reader.messages < total {
        if started.elapsed() > deadline {
            return Err(format!(
                "read {} of {total} in {deadline:?}",
                reader.messages
            ));
        }
        reader.drain(Duration::from_millis(500), 1_000_000, |p| bytes += p.len());
    }
    let seconds = started.elapsed().as_secs_f64();
    let own_cpu = cpu_since(std::process::id(), own_cpu_at_start);
    let broker_cpu = cpu_since(broker, broker_cpu_at_start);
    Ok(Measured {
        seconds,
        cpu_seconds: own_cpu,
        note: format!(
            "{:.1} MB, reader {} CPU-s, broker {} CPU-s",
            bytes as f64 / 1e6,
            cpu_note(own_cpu),
            cpu_note(broker_cpu)
        ),
    })
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

async fn run_job(
    kafka: &Kafka,
    source: &str,
    dir: &std::path::Path,
    name: &str,
    backend: Backend,
    want: &std::collections::BTreeMap<String, sessionizer_worker::session::SessionRecord>,
    total: u64,
) -> Result<Measured, String> {
    let (bootstrap, broker) = (kafka.bootstrap.as_str(), kafka.pid());
    let env_kafka_topics = [format!("{name}-sessions"), format!("{name}-quarantine")];
    let job = JobSpec {
        name: name.to_owned(),
        bootstrap: bootstrap.to_owned(),
        source: source.to_owned(),
        sink: env_kafka_topics[0].clone(),
        quarantine: env_kafka_topics[1].clone(),
        backend,
        parallelism: PARALLELISM,
    };
    create_topics(bootstrap, &env_kafka_topics).await?;
    let job_dir = dir.join(name);
    let (config_path, _) = job.write(&job_dir);
    let mut sink = TopicReader::new(bootstrap, &job.sink, PARTITIONS);
    let mut state = SinkState::expecting(want.clone());

    let started = Instant::now();
    let own_cpu_at_start = cpu_seconds(std::process::id());
    let broker_cpu_at_start = cpu_seconds(broker);
    let workers: Vec<(ManagedProcess, u16)> =
        support::start_workers(&config_path, &job_dir, PARALLELISM);
    // Generous: a slow run should still finish and report its figure.
    let deadline = Duration::from_secs(120 + total / 1_000);
    let mut consumed_at: Option<f64> = None;
    let client = reqwest::Client::new();
    loop {
        if started.elapsed() > deadline {
            let got = without_sentinels(state.final_sessions());
            return Err(format!(
                "no match within {deadline:?}: {} (logs in {})",
                oracle::difference(&got, want).unwrap_or_default(),
                job_dir.display()
            ));
        }
        for (worker, _) in &workers {
            worker
                .ensure_running()
                .map_err(|e| format!("{e} (logs in {})", job_dir.display()))?;
        }
        if consumed_at.is_none() && accepted(&client, &workers).await >= total {
            consumed_at = Some(started.elapsed().as_secs_f64());
        }
        // Blocks in Kafka's poll until records arrive (or 200 ms pass).
        sink.drain(Duration::from_millis(200), 200_000, |p| state.add(p));
        // Kept up to date per record: no full comparison while the clock runs.
        if state.reached() {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let own_cpu = cpu_since(std::process::id(), own_cpu_at_start);
    let broker_cpu = cpu_since(broker, broker_cpu_at_start);
    if consumed_at.is_none() && accepted(&client, &workers).await >= total {
        // Every input was accepted by the time the last session arrived.
        consumed_at = Some(seconds);
    }
    // The definitive check, off the clock.
    if let Some(difference) = oracle::difference(&without_sentinels(state.final_sessions()), want) {
        return Err(format!(
            "the sink reached the expected count but differs: {difference}"
        ));
    }
    let cpu: f64 = workers
        .iter()
        .filter_map(|(w, _)| cpu_seconds(w.pid()))
        .sum();
    drop(workers);
    Ok(Measured {
        seconds,
        cpu_seconds: Some(cpu),
        note: format!(
            "{} sink records, {} sessions, input accepted after {}, bench process {} CPU-s, \
             broker {} CPU-s",
            state.records,
            want.len(),
            consumed_at.map_or_else(|| String::from("?"), |s| format!("{s:.2}s")),
            cpu_note(own_cpu),
            cpu_note(broker_cpu)
        ),
    })
}

/// Input records the workers have accepted so far (their `/status` counters).
async fn accepted(client: &reqwest::Client, workers: &[(ManagedProcess, u16)]) -> u64 {
    let mut sum = 0;
    for (_, port) in workers {
        let url = format!("http://127.0.0.1:{port}/status");
        let Ok(response) = client.get(url).send().await else {
            return 0;
        };
        let Ok(status) = response.json::<serde_json::Value>().await else {
            return 0;
        };
        sum += status
            .pointer("/stream/counters/records")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
    }
    sum
}

async fn create_topics(bootstrap: &str, topics: &[String]) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .map_err(|e| e.to_string())?
    {
        result.map_err(|(t, code)| format!("creating {t}: {code}"))?;
    }
    Ok(())
}

fn print_table(rows: &[Row], total: u64, cores: usize) {
    let raw = rows
        .first()
        .and_then(|r| r.outcome.as_ref().ok())
        .map(|m| total as f64 / m.seconds);
    println!();
    println!(
        "throughput: {total} events, {PARTITIONS} partitions, {PARALLELISM} workers, {cores} cores"
    );
    println!(
        "{:<28} {:>9} {:>12} {:>14} {:>14} {:>8}  note",
        "run", "seconds", "events/s", "events/s/core", "events/cpu-s", "vs raw"
    );
    for row in rows {
        match &row.outcome {
            Ok(m) => {
                let rate = total as f64 / m.seconds;
                println!(
                    "{:<28} {:>9.2} {:>12.0} {:>14.0} {:>14} {:>8}  {}",
                    row.name,
                    m.seconds,
                    rate,
                    rate / cores as f64,
                    m.cpu_seconds
                        .filter(|c| *c > 0.0)
                        .map_or_else(|| String::from("-"), |c| format!("{:.0}", total as f64 / c)),
                    raw.map_or_else(|| String::from("-"), |r| format!("{:.2}", rate / r)),
                    m.note
                );
            }
            Err(e) => println!("{:<28} FAILED: {e}", row.name),
        }
    }
    println!();
    println!(
        "reproduce: BENCH_EVENTS={total_in} cargo bench -p sessionizer-worker --bench throughput",
        total_in = total - u64::from(PARTITIONS as u32)
    );
}
