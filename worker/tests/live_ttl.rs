#![allow(clippy::unwrap_used)]
//! A `history.ttl` change reaches a running worker without a restart: the worker binary runs
//! against the real Kafka of the local environment with history on the Aerospike wire-protocol
//! test server; a session closed before the change is stored with the old TTL; the configuration
//! file is then replaced the way the kubelet updates a mounted ConfigMap (write aside, rename
//! over); a session closed afterwards is stored with the new TTL — by the same process, never
//! restarted.

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use aerospike::{Bins, Client, ClientPolicy, Key, ReadPolicy, Value};
use sessionizer_e2e::aerospike::{AerospikeTestServer, ServerConfig};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Env, EnvConfig, wait};
use sessionizer_worker::loadgen::{GeneratedEvent, Kind};

use support::{Backend, JobSpec};

const TIMEOUT: Duration = Duration::from_secs(120);
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_767_225_600_000;

fn event(id: &str, user: &str, time: i64) -> GeneratedEvent {
    GeneratedEvent {
        key: user.to_owned(),
        partition: 0,
        payload: format!(
            r#"{{"eventId":"{id}","userId":"{user}","timestamp":{time},"type":"pageview","pageNumber":1}}"#
        )
        .into_bytes(),
        time,
        kind: Kind::Pageview,
    }
}

/// The TTL Aerospike holds for `user`'s history record of `job`, once it exists.
async fn stored_ttl(client: &Client, set: &str, job: &str, user: &str) -> Option<Duration> {
    let key = Key::new("test", set, Value::from(format!("e2e/{job}/0/{user}"))).unwrap();
    let record = client
        .get(&ReadPolicy::default(), &key, Bins::All)
        .await
        .ok()?;
    record.time_to_live()
}

async fn wait_for_ttl(client: &Client, set: &str, job: &str, user: &str) -> Duration {
    wait::until(
        &format!("{user}'s history record"),
        TIMEOUT,
        || async move { Ok::<_, String>(stored_ttl(client, set, job, user).await) },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_history_ttl_applies_to_later_writes_without_a_restart() {
    let env = Env::start(EnvConfig::kafka_only()).await.unwrap();
    let kafka = env.kafka().unwrap();
    let server = AerospikeTestServer::start(ServerConfig {
        namespaces: vec![String::from("test")],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let name = unique_name("ttl");
    let job = JobSpec {
        name: name.clone(),
        bootstrap: kafka.bootstrap.clone(),
        source: format!("{name}-events"),
        sink: format!("{name}-sessions"),
        quarantine: format!("{name}-quarantine"),
        backend: Backend::Aerospike(server.host()),
        parallelism: 1,
    };
    for topic in [&job.source, &job.sink, &job.quarantine] {
        kafka.create_topic(topic, 1).await.unwrap();
    }
    let dir = env.run_dir().join(&name);
    let (config_path, _) = job.write(&dir);
    let set = name.replace('-', "_");
    let client = Client::new(
        &ClientPolicy {
            tend_interval: 250,
            ..ClientPolicy::default()
        },
        &server.host(),
    )
    .await
    .unwrap();

    let workers = support::start_workers(&config_path, &dir, 1);
    let (worker, _) = &workers[0];
    // A session, then an event two hours later that moves the watermark past it: it closes and
    // its history is written with the configured TTL (168h).
    support::produce(
        &kafka.bootstrap,
        &job.source,
        &[
            event("b1", "before", T0),
            event("p1", "pusher", T0 + 2 * HOUR),
        ],
    );
    let before = wait_for_ttl(&client, &set, &name, "before").await;
    assert!(
        before > Duration::from_secs(167 * 3600),
        "written with the original TTL: {before:?}"
    );

    // The operator updates the ConfigMap; the kubelet swaps the file.
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(text.contains("ttl: 168h"), "{text}");
    let next = dir.join("worker.yaml.next");
    std::fs::write(&next, text.replace("ttl: 168h", "ttl: 2h")).unwrap();
    std::fs::rename(&next, &config_path).unwrap();
    wait::until("the worker to pick up the new TTL", TIMEOUT, || {
        let log = std::fs::read_to_string(worker.log()).unwrap_or_default();
        async move { Ok::<_, String>(log.contains("history.ttl changed").then_some(())) }
    })
    .await
    .unwrap();

    support::produce(
        &kafka.bootstrap,
        &job.source,
        &[
            event("a1", "after", T0 + 3 * HOUR),
            event("p2", "pusher", T0 + 5 * HOUR),
        ],
    );
    let after = wait_for_ttl(&client, &set, &name, "after").await;
    assert!(
        after <= Duration::from_secs(2 * 3600) && after > Duration::from_secs(3600),
        "written with the new TTL: {after:?}"
    );
    // Same process all along.
    worker.ensure_running().unwrap();
    let log = std::fs::read_to_string(worker.log()).unwrap();
    assert_eq!(log.matches("worker started").count(), 1, "never restarted");
    drop(workers);
    server.shutdown().await;
}
