//! Retention without restarts: changing `history.ttl` of a running SessionJob reaches its worker
//! through the ConfigMap (the operator does not roll the StatefulSet for it), and the next
//! history write carries the new TTL — with the worker Pod never replaced or restarted.
//!
//! The operator is installed by the chart; the worker runs as a Pod of the node agent, with
//! history on an Aerospike wire-protocol test server on 127.0.0.1. The TTLs are read back with the
//! real `aerospike` client.

use std::time::Duration;

use aerospike::{Bins, Client, ClientPolicy, Key, ReadPolicy, Value};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sessionizer_crds::SessionJob;
use sessionizer_e2e::aerospike::{AerospikeTestServer, ServerConfig};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Error, smoke, wait};

use crate::support::{POD_TIMEOUT, env, namespace_with_operator};

const NS: &str = "sessions";
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_767_225_600_000;

async fn produce(producer: &FutureProducer, topic: &str, events: &[(&str, &str, i64)]) {
    for (id, user, time) in events {
        let payload = format!(
            r#"{{"eventId":"{id}","userId":"{user}","timestamp":{time},"type":"pageview","pageNumber":1}}"#
        );
        producer
            .send(
                FutureRecord::to(topic)
                    .key(*user)
                    .payload(&payload)
                    .partition(0),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// The TTL of `user`'s history record, once it exists.
async fn wait_for_ttl(client: &Client, set: &str, key: &str) -> Duration {
    wait::until(
        &format!("the history record {key}"),
        POD_TIMEOUT,
        || async {
            let key = Key::new(NS, set, Value::from(key)).unwrap();
            let record = client
                .get(&ReadPolicy::default(), &key, Bins::All)
                .await
                .ok();
            Ok::<_, Error>(record.and_then(|r| r.time_to_live()))
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_ttl_change_reaches_the_running_worker_without_a_restart() {
    let env = env();
    let (client, namespace) =
        namespace_with_operator("ttl", &["replicas=1", "leaderElection.enabled=false"]).await;
    let kafka = env.kafka().unwrap();
    let topic = unique_name("ttl");
    kafka.create_topic(&topic, 1).await.unwrap();
    kafka
        .create_topic(&format!("{topic}-sessions"), 1)
        .await
        .unwrap();
    let server = AerospikeTestServer::start(ServerConfig {
        namespaces: vec![NS.to_owned()],
        ..ServerConfig::default()
    })
    .await
    .unwrap();

    let name = "ttl-job";
    let job = json!({
        "apiVersion": "sessionizer.dev/v1alpha1",
        "kind": "SessionJob",
        "metadata": {"name": name},
        "spec": {
            "image": "sessionizer/worker:dev",
            "parallelism": 1,
            "kafka": {
                "bootstrapServers": [kafka.bootstrap.clone()],
                "sourceTopics": [{"name": topic, "kind": "Sync"}]
            },
            "sink": {"topic": format!("{topic}-sessions")},
            "session": {"maxOutOfOrderness": "5s", "idleSourceTimeout": "1h"},
            "history": {
                "backend": "Aerospike",
                "ttl": "168h",
                "aerospike": {"hosts": [server.host()], "namespace": NS, "set": name}
            },
            "checkpoints": {"location": "file:///var/lib/sessionizer/checkpoints"}
        }
    });
    env.kubectl(
        &["apply", "-n", &namespace, "-f", "-"],
        Some(&serde_json::to_string(&job).unwrap()),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("app.kubernetes.io/instance={name}");
    smoke::wait_ready_pods(&pods, &selector, 1, POD_TIMEOUT)
        .await
        .unwrap();
    let pod = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .remove(0);
    let (pod_name, uid) = (pod.name_any(), pod.uid().unwrap());
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let generation = statefulsets.get(name).await.unwrap().metadata.generation;

    let aerospike = Client::new(
        &ClientPolicy {
            tend_interval: 250,
            ..ClientPolicy::default()
        },
        &server.host(),
    )
    .await
    .unwrap();
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let history_key = |user: &str| format!("{namespace}/{name}/0/{user}");

    // A session closed by a later event is written to history with the TTL of the spec.
    produce(
        &producer,
        &topic,
        &[("b1", "before", T0), ("p1", "pusher", T0 + 2 * HOUR)],
    )
    .await;
    let before = wait_for_ttl(&aerospike, name, &history_key("before")).await;
    assert!(before > Duration::from_secs(167 * 3600), "{before:?}");

    // Change the TTL; the worker picks it up from its ConfigMap.
    let jobs: Api<SessionJob> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({"spec": {"history": {"ttl": "2h"}}});
    jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let log = env.pod_log(&namespace, &pod_name, "worker");
    wait::until("the worker to pick up the new TTL", POD_TIMEOUT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { Ok::<_, Error>(text.contains("history.ttl changed").then_some(())) }
    })
    .await
    .unwrap();

    produce(
        &producer,
        &topic,
        &[
            ("a1", "after", T0 + 3 * HOUR),
            ("p2", "pusher", T0 + 5 * HOUR),
        ],
    )
    .await;
    let after = wait_for_ttl(&aerospike, name, &history_key("after")).await;
    assert!(
        after <= Duration::from_secs(2 * 3600) && after > Duration::from_secs(3600),
        "{after:?}"
    );

    // The same Pod all along, never restarted, and no new pod template.
    let pod = pods.get(&pod_name).await.unwrap();
    assert_eq!(
        pod.uid().as_deref(),
        Some(uid.as_str()),
        "the Pod was not replaced"
    );
    let restarts: i32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0);
    assert_eq!(
        statefulsets.get(name).await.unwrap().metadata.generation,
        generation,
        "the StatefulSet was not rolled"
    );
    server.shutdown().await;
}
