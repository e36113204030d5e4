#![allow(clippy::unwrap_used)]
//! Checkpoints and restore of the worker binary, against the real Kafka and the real S3 server
//! (MinIO) of the local environment:
//!
//! - workers killed with SIGKILL at random points in the middle of a stream restart from their
//!   last checkpoint, and the sink's final sessions still equal the oracle's — nothing lost,
//!   nothing counted twice (replayed events are deduplicated, re-emitted records carry the same
//!   ids and versions);
//! - a job rescaled 2 → 4 → 1 while events keep arriving (each step: the workers stop with a
//!   final checkpoint, the new replica count restores each key group from it) ends with the
//!   oracle's final sessions; a stop through `POST /control/stop` answers with its checkpoint,
//!   leaves the worker `Stopped`, and the next start resumes exactly at the checkpoint's offsets.
//!
//! Both use the embedded history backend, whose data travels inside the checkpoints — the harder
//! case: a key group's history must follow it to whichever worker owns it next.

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::process::{ManagedProcess, signal_group};
use sessionizer_e2e::{Env, EnvConfig, wait};
use sessionizer_worker::checkpoint::{CheckpointStore, LocalDir, StoreCredentials};
use sessionizer_worker::loadgen::{self, GeneratedEvent, LoadSpec, without_sentinels};
use sessionizer_worker::oracle;
use sessionizer_worker::session::SessionRecord;

use support::{Backend, Checkpoints, JobSpec, SinkState, TopicReader};

const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(240);

/// Kafka and S3 for all tests of this file, started on first use in their own runtime.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| support::start_env(EnvConfig::kafka_and_s3()))
}

/// One job of the test: its topics, configuration, checkpoint store and expected result.
struct Job {
    spec: JobSpec,
    config: PathBuf,
    dir: PathBuf,
    events: Vec<GeneratedEvent>,
    want: BTreeMap<String, SessionRecord>,
    /// The S3 credentials, as the operator would pass them from the Secret.
    s3_env: Vec<(String, String)>,
}

async fn job(seed: u64, events: u64) -> Job {
    let env = env();
    let kafka = env.kafka().unwrap();
    let s3 = env.s3().unwrap();
    let name = unique_name("ckpt");
    let spec = JobSpec {
        name: name.clone(),
        bootstrap: kafka.bootstrap.clone(),
        source: format!("{name}-events"),
        sink: format!("{name}-sessions"),
        quarantine: format!("{name}-quarantine"),
        backend: Backend::Embedded,
        parallelism: 2,
    };
    for topic in [&spec.source, &spec.sink, &spec.quarantine] {
        kafka.create_topic(topic, PARTITIONS).await.unwrap();
    }
    s3.create_bucket(&name).await.unwrap();
    let dir = env.run_dir().join(&name);
    let checkpoints = Checkpoints {
        location: format!("s3://{name}/checkpoints"),
        endpoint: Some(s3.endpoint.clone()),
        interval: String::from("1s"),
    };
    let (config, parsed) = spec.write_with(&dir, &checkpoints);
    let engine = support::engine_config(&parsed);
    let load = LoadSpec {
        seed,
        users: 300,
        events,
        partitions: PARTITIONS as u32,
        span_ms: 2 * 24 * 3_600_000,
        async_max_delay_ms: 24 * 3_600_000,
        ..LoadSpec::default()
    };
    load.check_fits(&engine).unwrap();
    let events = loadgen::generate(&load);
    let want = without_sentinels(
        oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine).sessions,
    );
    let s3_env = vec![
        (String::from("AWS_ACCESS_KEY_ID"), s3.access_key.clone()),
        (String::from("AWS_SECRET_ACCESS_KEY"), s3.secret_key.clone()),
        (String::from("AWS_REGION"), String::from("us-east-1")),
    ];
    Job {
        spec,
        config,
        dir,
        events,
        want,
        s3_env,
    }
}

impl Job {
    fn start(&self, ordinal: u32, replicas: u32) -> (ManagedProcess, u16) {
        support::start_worker(&self.config, &self.dir, ordinal, replicas, &self.s3_env)
    }

    fn produce(&self, events: &[GeneratedEvent]) {
        support::produce(&self.spec.bootstrap, &self.spec.source, events);
    }

    /// Waits until the sink's final sessions equal the oracle's, while `workers` keep running.
    async fn wait_for_oracle(&self, workers: &[(ManagedProcess, u16)]) {
        let mut sink = TopicReader::new(&self.spec.bootstrap, &self.spec.sink, PARTITIONS);
        let mut state = SinkState::default();
        wait::until(
            "the sink's final sessions to equal the oracle's",
            TIMEOUT,
            || {
                let mut result = Ok(None);
                for (worker, _) in workers {
                    if let Err(e) = worker.ensure_running() {
                        result = Err(e.to_string());
                    }
                }
                sink.drain(Duration::from_millis(200), 100_000, |p| state.add(p));
                let got = without_sentinels(state.final_sessions());
                if result.is_ok() {
                    result = match oracle::difference(&got, &self.want) {
                        None => Ok(Some(())),
                        Some(difference) => Err(difference),
                    };
                }
                async move { result }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e} (worker logs in {})", self.dir.display()));
    }
}

async fn status(port: u16) -> Option<Value> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/status"))
        .await
        .ok()?;
    response.json().await.ok()
}

/// Waits until the worker on `port` has completed a checkpoint and counted at least
/// `min_records` input records.
async fn wait_for_progress(port: u16, min_records: u64, log: &Path) {
    wait::until(
        "the worker to checkpoint and make progress",
        TIMEOUT,
        || async move {
            let Some(status) = status(port).await else {
                return Ok::<_, String>(None);
            };
            let records = status["counters"]["records"].as_u64().unwrap_or(0);
            let checkpointed = !status["lastCheckpoint"].is_null();
            Ok((checkpointed && records >= min_records).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e} (log: {})", log.display()));
}

/// A small deterministic generator for the kill points.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_points_lose_and_double_count_nothing() {
    let job = job(21, 16_000).await;
    let mut workers: Vec<(ManagedProcess, u16)> = (0..2).map(|o| job.start(o, 2)).collect();
    let chunks: Vec<&[GeneratedEvent]> = job.events.chunks(job.events.len() / 4 + 1).collect();
    let mut rng = Lcg(0x5eed);
    let mut produced_per_worker = [0u64; 2];
    let mut kills = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        job.produce(chunk);
        for event in *chunk {
            produced_per_worker[(event.partition / 2) as usize] += 1;
        }
        if i + 1 == chunks.len() {
            break;
        }
        // A random worker, at a random point of what it has been given so far.
        let victim = (rng.next() % 2) as usize;
        let share = 20 + rng.next() % 70;
        let min_records = produced_per_worker[victim] * share / 100;
        let (process, port) = &workers[victim];
        wait_for_progress(*port, min_records, process.log()).await;
        signal_group(process.pid(), Signal::SIGKILL);
        eprintln!(
            "killed worker {victim} (SIGKILL) after {min_records}+ of {} records",
            produced_per_worker[victim]
        );
        workers[victim] = job.start(victim as u32, 2);
        kills += 1;
    }
    assert_eq!(kills, chunks.len() - 1);
    job.wait_for_oracle(&workers).await;
    let restored = (0..2)
        .map(|o| std::fs::read_to_string(job.dir.join(format!("worker-{o}.log"))).unwrap())
        .filter(|log| log.contains("restoring key group"))
        .count();
    assert!(
        restored >= 1,
        "a restarted worker restores from a checkpoint"
    );
}

/// Stops `workers` through `POST /control/stop` with one checkpoint id, checks the answers and
/// the `Stopped` phase, then lets them exit.
async fn stop_all(workers: Vec<(ManagedProcess, u16)>, id: &str) -> BTreeMap<u32, Value> {
    let client = reqwest::Client::new();
    let mut key_groups = BTreeMap::new();
    for (process, port) in &workers {
        let response = client
            .post(format!("http://127.0.0.1:{port}/control/stop"))
            .json(&serde_json::json!({ "checkpointId": id }))
            .timeout(TIMEOUT)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "stop answered {} (log: {})",
            response.status(),
            process.log().display()
        );
        let report: Value = response.json().await.unwrap();
        assert_eq!(report["checkpointId"], id);
        assert_eq!(report["checkpoint"]["final"], true);
        // Asking again answers the same, and the worker stays up, stopped and not ready.
        let again: Value = client
            .post(format!("http://127.0.0.1:{port}/control/stop"))
            .json(&serde_json::json!({ "checkpointId": id }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again, report);
        let status = status(*port).await.unwrap();
        assert_eq!(status["phase"], "Stopped");
        assert_eq!(status["ready"], false);
        process.ensure_running().unwrap();
        for entry in status["stream"]["keyGroups"].as_array().unwrap() {
            let kg = u32::try_from(entry["keyGroup"].as_u64().unwrap()).unwrap();
            key_groups.insert(kg, entry["partitions"][0]["position"].clone());
        }
    }
    for (process, _) in &workers {
        let exit = process.stop(Duration::from_secs(30)).unwrap();
        assert!(exit.success(), "a stopped worker exits cleanly: {exit}");
    }
    key_groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_rescaled_two_four_one_while_events_flow_matches_the_oracle() {
    let job = job(22, 16_000).await;
    let chunks: Vec<&[GeneratedEvent]> = job.events.chunks(job.events.len() / 3 + 1).collect();

    job.produce(chunks[0]);
    let two: Vec<_> = (0..2).map(|o| job.start(o, 2)).collect();
    for (process, port) in &two {
        wait_for_progress(*port, 1, process.log()).await;
    }
    // Events keep arriving while the job is rescaled.
    job.produce(chunks[1]);
    let stop_id =
        sessionizer_worker::checkpoint::final_id(sessionizer_worker::stream::pipeline::now_ms());
    let stopped_at = stop_all(two, &stop_id).await;
    assert_eq!(stopped_at.len(), 4, "two workers, two key groups each");

    // The stop's checkpoint holds every key group at exactly the position the workers had
    // consumed: the next start replays nothing.
    let config = sessionizer_worker::config::WorkerConfig::from_file(&job.config).unwrap();
    let store = CheckpointStore::open(
        &config.spec.checkpoints,
        &config.namespace,
        &config.job,
        &StoreCredentials::from_pairs(job.s3_env.clone()),
        LocalDir::MustExist,
    )
    .unwrap();
    let manifests = store.manifests(&stop_id).await.unwrap();
    let mut offsets = BTreeMap::new();
    for manifest in &manifests {
        assert!(manifest.is_final);
        for entry in &manifest.key_groups {
            offsets.insert(entry.key_group, entry.offsets[&job.spec.source]);
        }
    }
    let positions: BTreeMap<u32, i64> = stopped_at
        .iter()
        .map(|(kg, p)| (*kg, p.as_i64().unwrap()))
        .collect();
    assert_eq!(offsets, positions);

    let four: Vec<_> = (0..4).map(|o| job.start(o, 4)).collect();
    for (ordinal, (process, port)) in four.iter().enumerate() {
        wait::until("the worker to restore and run", TIMEOUT, || async move {
            let running = status(*port).await.is_some_and(|s| s["phase"] == "Running");
            Ok::<_, String>(running.then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e} (log: {})", process.log().display()));
        let log = std::fs::read_to_string(process.log()).unwrap();
        assert!(
            log.contains("restoring key group") && log.contains(&stop_id),
            "worker {ordinal} of 4 restores from the stop's checkpoint"
        );
    }
    job.produce(chunks[2]);
    for (process, port) in &four {
        wait_for_progress(*port, 1, process.log()).await;
    }
    // SIGTERM is a stop with a final checkpoint too.
    for (process, _) in &four {
        let exit = process.stop(Duration::from_secs(60)).unwrap();
        assert!(exit.success(), "SIGTERM stops cleanly: {exit}");
    }
    drop(four);

    let one = vec![job.start(0, 1)];
    job.wait_for_oracle(&one).await;
}
