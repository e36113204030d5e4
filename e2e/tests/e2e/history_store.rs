//! The Aerospike high-water-mark monitor end to end: the operator, installed by the chart, probes
//! Aerospike test servers answering with realistic 7.0+ and pre-7 statistics and a three-node
//! cluster, and reports each level in `status.historyStore`, the HistoryStoreCapacity condition
//! and an Event per level change — and Unreachable once the server is gone.
//!
//! One namespace and one operator serve all the jobs; `highWaterMark.pollInterval: 1s` keeps the
//! run short. The worker Pods (one per job) talk to the same test servers; nothing here depends
//! on them.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use sessionizer_crds::SessionJob;
use sessionizer_crds::session_job::{HistoryStoreLevel, HistoryStoreStatus};
use sessionizer_e2e::aerospike::{
    AerospikeTestCluster, AerospikeTestServer, NamespaceStats, ServerConfig, StatsShape,
};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Error, wait};

use crate::support::{POD_TIMEOUT, env, namespace_with_operator};

const NS: &str = "sessions";
/// A level change shows within a couple of polls; this leaves room for a busy machine.
const LEVEL_TIMEOUT: Duration = Duration::from_secs(60);

fn server_config(shape: StatsShape, name: &str, evict: u32) -> ServerConfig {
    ServerConfig {
        node_name: Some(name.to_owned()),
        namespaces: vec![NS.to_owned()],
        stats_shape: shape,
        namespace_stats: NamespaceStats {
            evict_used_pct: evict,
            stop_writes_used_pct: 70,
            ..NamespaceStats::default()
        },
        ..ServerConfig::default()
    }
}

/// A SessionJob on the Aerospike backend at `hosts`, polled every second.
fn job_manifest(name: &str, hosts: &[String], bootstrap: &str, topic: &str) -> serde_json::Value {
    json!({
        "apiVersion": "sessionizer.dev/v1alpha1",
        "kind": "SessionJob",
        "metadata": {"name": name},
        "spec": {
            "image": "sessionizer/worker:dev",
            "parallelism": 1,
            "kafka": {
                "bootstrapServers": [bootstrap],
                "sourceTopics": [{"name": topic, "kind": "Sync"}]
            },
            "sink": {"topic": format!("{topic}-sessions")},
            "history": {
                "backend": "Aerospike",
                "aerospike": {
                    "hosts": hosts,
                    "namespace": NS,
                    "set": name,
                    "highWaterMark": {"warnMargin": 10, "pollInterval": "1s"}
                }
            },
            "checkpoints": {"location": "file:///var/lib/sessionizer/checkpoints"}
        }
    })
}

struct Monitored {
    jobs: Api<SessionJob>,
    events: Api<Event>,
}

impl Monitored {
    /// Waits until `job` reports `level` (and, when given, from `node`), and returns the status.
    async fn wait_level(
        &self,
        job: &str,
        level: HistoryStoreLevel,
        node: Option<&str>,
    ) -> (HistoryStoreStatus, Condition) {
        let what = format!("{job} to report history store level {level:?} (node {node:?})");
        self.wait_for(job, &what, |store| {
            store.level == level && node.is_none_or(|n| store.node.as_deref() == Some(n))
        })
        .await
    }

    /// Waits until `job`'s `status.historyStore` satisfies `check`; returns it with the
    /// HistoryStoreCapacity condition.
    async fn wait_for(
        &self,
        job: &str,
        what: &str,
        check: impl Fn(&HistoryStoreStatus) -> bool,
    ) -> (HistoryStoreStatus, Condition) {
        wait::until(what, LEVEL_TIMEOUT, || async {
            let sj = self
                .jobs
                .get(job)
                .await
                .map_err(Error::kube("reading the job"))?;
            let status = sj.status.unwrap_or_default();
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "HistoryStoreCapacity")
                .cloned();
            match (status.history_store, condition) {
                (Some(store), Some(condition)) if check(&store) => Ok(Some((store, condition))),
                (store, condition) => Err(Error::Other(format!(
                    "historyStore {store:?}, condition {condition:?}"
                ))),
            }
        })
        .await
        .unwrap()
    }

    /// The reasons of the Events about `job`.
    async fn event_reasons(&self, job: &str) -> BTreeSet<String> {
        self.events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(job))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Waits until Events with every one of `reasons` exist for `job`.
    async fn wait_events(&self, job: &str, reasons: &[&str]) {
        let what = format!("events {reasons:?} for {job}");
        wait::until(&what, LEVEL_TIMEOUT, || async {
            let seen = self.event_reasons(job).await;
            let missing: Vec<_> = reasons.iter().filter(|r| !seen.contains(**r)).collect();
            if missing.is_empty() {
                Ok(Some(()))
            } else {
                Err(Error::Other(format!("missing {missing:?}, seen {seen:?}")))
            }
        })
        .await
        .unwrap();
    }
}

/// Drives `server` through Healthy → Warning → Breached → StopWrites → Healthy with eviction at
/// `evict` % and stop-writes at 70 %, checking status, condition and Events at each step.
async fn walk_the_levels(
    monitored: &Monitored,
    job: &str,
    server: &AerospikeTestServer,
    evict: f64,
) {
    use HistoryStoreLevel::*;
    let steps = [
        (evict - 30.0, Healthy, "True", "BelowWarnMargin"),
        (evict - 5.0, Warning, "False", "NearEvictionMark"),
        (evict + 2.0, Breached, "False", "EvictionMarkBreached"),
        (75.0, StopWrites, "False", "StopWrites"),
        (evict - 30.0, Healthy, "True", "BelowWarnMargin"),
    ];
    for (used, level, condition_status, reason) in steps {
        server.update_namespace(NS, |stats| stats.set_used_pct(used));
        let (store, condition) = monitored.wait_level(job, level, None).await;
        assert_eq!(store.used_percent, Some(used.floor() as i32), "{store:?}");
        assert_eq!(store.eviction_mark_percent, Some(evict as i32));
        assert_eq!(store.stop_writes_mark_percent, Some(70));
        assert_eq!(store.eviction_disabled, Some(false));
        assert_eq!(store.node.as_deref(), Some(server.node_name()));
        assert!(store.last_probe_time.is_some());
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            (condition_status, reason),
            "{condition:?}"
        );
    }
    monitored
        .wait_events(
            job,
            &[
                "HistoryStoreHealthy",
                "HistoryStoreNearEvictionMark",
                "HistoryStoreEvictionMarkBreached",
                "HistoryStoreStopWrites",
            ],
        )
        .await;
}

#[tokio::test]
async fn the_operator_reports_aerospike_capacity_levels_from_every_server_shape() {
    let env = env();
    let (client, namespace) =
        namespace_with_operator("hwm", &["replicas=1", "leaderElection.enabled=false"]).await;
    let kafka = env.kafka().unwrap();
    let topic = unique_name("hwm");
    kafka.create_topic(&topic, 1).await.unwrap();

    let v7 = AerospikeTestServer::start(server_config(StatsShape::V7, "BB9000000000701", 60))
        .await
        .unwrap();
    let pre7 = AerospikeTestServer::start(server_config(StatsShape::PreV7, "BB9000000000601", 50))
        .await
        .unwrap();
    let cluster = AerospikeTestCluster::start(
        (1..=3)
            .map(|i| server_config(StatsShape::V7, &format!("BB900000000C00{i}"), 60))
            .collect(),
    )
    .await
    .unwrap();
    for (server, used) in [(&v7, 30.0), (&pre7, 20.0)] {
        server.update_namespace(NS, |stats| stats.set_used_pct(used));
    }
    for node in cluster.nodes() {
        node.update_namespace(NS, |stats| stats.set_used_pct(10.0));
    }

    let jobs = [
        ("hwm-v7", vec![v7.host()]),
        ("hwm-pre7", vec![pre7.host()]),
        ("hwm-cluster", vec![cluster.nodes()[0].host()]),
    ];
    for (name, hosts) in &jobs {
        let manifest = job_manifest(name, hosts, &kafka.bootstrap, &topic).to_string();
        env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
            .await
            .unwrap();
    }
    let monitored = Monitored {
        jobs: Api::namespaced(client.clone(), &namespace),
        events: Api::namespaced(client.clone(), &namespace),
    };
    // The first probe happens once the operator reconciles the new job.
    let first = wait::until("the first probe", POD_TIMEOUT, || async {
        let sj = monitored
            .jobs
            .get("hwm-v7")
            .await
            .map_err(Error::kube("reading"))?;
        Ok::<_, Error>(sj.status.and_then(|s| s.history_store))
    })
    .await
    .unwrap();
    assert_eq!(first.level, HistoryStoreLevel::Healthy, "{first:?}");

    // Both naming schemes, every level, reached and cleared.
    walk_the_levels(&monitored, "hwm-v7", &v7, 60.0).await;
    walk_the_levels(&monitored, "hwm-pre7", &pre7, 50.0).await;

    // Several nodes: the worst one is reported, by level first.
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.node_name().to_owned())
        .collect();
    cluster.nodes()[1].update_namespace(NS, |stats| stats.set_used_pct(62.0));
    cluster.nodes()[2].update_namespace(NS, |stats| stats.set_used_pct(55.0));
    let (store, _) = monitored
        .wait_level("hwm-cluster", HistoryStoreLevel::Breached, Some(&names[1]))
        .await;
    assert_eq!(store.used_percent, Some(62));
    cluster.nodes()[2].update_namespace(NS, |stats| stats.set_used_pct(75.0));
    monitored
        .wait_level(
            "hwm-cluster",
            HistoryStoreLevel::StopWrites,
            Some(&names[2]),
        )
        .await;

    // Eviction turned off (mark 0): said so, and the warning follows the stop-writes mark.
    v7.update_namespace(NS, |stats| {
        stats.evict_used_pct = 0;
        stats.set_used_pct(30.0);
    });
    let (store, condition) = monitored
        .wait_for("hwm-v7", "eviction off to be reported", |store| {
            store.eviction_disabled == Some(true)
        })
        .await;
    assert_eq!(store.level, HistoryStoreLevel::Healthy);
    assert_eq!(store.eviction_mark_percent, Some(0));
    assert_eq!(store.projected_eviction_mark_time, None);
    assert_eq!(condition.reason, "EvictionDisabled");
    assert!(
        condition.message.contains("eviction is off"),
        "{}",
        condition.message
    );
    v7.update_namespace(NS, |stats| stats.set_used_pct(65.0));
    let (_, condition) = monitored
        .wait_level("hwm-v7", HistoryStoreLevel::Warning, None)
        .await;
    assert!(
        condition
            .message
            .contains("stop-writes mark (eviction is off)"),
        "{}",
        condition.message
    );

    // Aerospike gone: its own level, never "healthy".
    v7.shutdown().await;
    let (store, condition) = monitored
        .wait_level("hwm-v7", HistoryStoreLevel::Unreachable, None)
        .await;
    assert_eq!(store.used_percent, None);
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("Unknown", "AerospikeUnreachable")
    );
    monitored
        .wait_events("hwm-v7", &["HistoryStoreUnreachable"])
        .await;

    pre7.shutdown().await;
    cluster.shutdown().await;
    env.kubectl(&["delete", "namespace", &namespace, "--wait=false"], None)
        .await
        .unwrap();
}
