//! The signature feature, end to end: a producer (the load generator, run as a Deployment) sends
//! a messy stream continuously; the old job (`examples/sessionjob.yaml`) writes sessions to the
//! production topic while the new one (`examples/sessionjob-side-run.yaml`) side-runs into its
//! dead-letter topic; `examples/cutover.yaml` pauses the producer, drains and stops both jobs
//! with final checkpoints (in the S3 server), flips the new job's sink and resumes it, then
//! restores the producer. Afterwards the production topic's final sessions — the old job's
//! records before the flip, the new job's after — equal the oracle's over every event produced:
//! nothing lost, nothing duplicated.
//!
//! A second run kills the operator once in every stage in turn; the new operator carries each
//! stage on from the status and the result is the same.
//!
//! The restored producer starts its seeded stream again from the beginning: every event it
//! re-sends is a duplicate the new job recognises, and the rest of the stream (with the
//! watermark-advancing sentinels at its end) follows.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::json;
use sessionizer_crds::cutover::CutoverStage;
use sessionizer_crds::{SessionJob, SessionJobCutover};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::smoke::is_running_and_ready;
use sessionizer_e2e::{Error, install, wait};
use sessionizer_worker::config::WorkerConfig;
use sessionizer_worker::engine::EngineConfig;
use sessionizer_worker::loadgen::{self, LoadSpec, without_sentinels};
use sessionizer_worker::oracle;
use sessionizer_worker::session::{SessionRecord, final_sessions};

use crate::support::{POD_TIMEOUT, env};

const PARTITIONS: i32 = 2;
const EVENTS: u64 = 6_000;
const USERS: u32 = 200;
const SEED: u64 = 7;
const RATE: u64 = 300;
const SECRET: &str = "checkpoint-store";
const RESULT_TIMEOUT: Duration = Duration::from_secs(360);

fn producer(bootstrap: &str, topic: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: pageview-collector
spec:
  replicas: 1
  selector:
    matchLabels:
      app: pageview-collector
  template:
    metadata:
      labels:
        app: pageview-collector
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: loadgen
        image: sessionizer/loadgen:dev
        args: ["--bootstrap", "{bootstrap}", "--topic", "{topic}", "--events", "{EVENTS}",
               "--users", "{USERS}", "--seed", "{SEED}", "--rate", "{RATE}", "--then-idle"]
"#
    )
}

/// Every record of `topic` so far, from the beginning.
fn read_all(consumer: &BaseConsumer, into: &mut Vec<SessionRecord>) {
    while let Some(message) = consumer.poll(Duration::from_millis(200)) {
        let message = message.unwrap();
        if let Some(payload) = message.payload() {
            into.push(serde_json::from_slice(payload).unwrap());
        }
    }
}

#[tokio::test]
async fn a_cutover_under_continuous_load_loses_and_duplicates_nothing() {
    let pause = cutover_under_load("cutover-oracle", false).await;
    let pause = pause.expect("the producer pause is measured");
    assert!(pause < 30.0, "the producers were paused {pause} s");
}

/// The operator is killed once in every stage in turn (as soon as the cutover has reached it),
/// each time the new operator carries on from the status, and the result is the same.
#[tokio::test]
async fn the_operator_killed_in_every_stage_still_cuts_over_without_loss() {
    cutover_under_load("cutover-kills", true).await;
}

/// Deletes every operator Pod and waits until a new one is ready.
async fn kill_the_operator(pods: &Api<Pod>) {
    let selector = ListParams::default().labels("app.kubernetes.io/name=sessionizer-operator");
    let before: Vec<String> = pods
        .list(&selector)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(ResourceExt::uid)
        .collect();
    for uid_pod in pods.list(&selector).await.unwrap().items {
        pods.delete(&uid_pod.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait::until("a new operator Pod to be ready", POD_TIMEOUT, || async {
        let now = pods.list(&selector).await.map_err(Error::kube("listing"))?;
        let fresh = now
            .items
            .iter()
            .any(|p| is_running_and_ready(p) && !before.contains(&p.uid().unwrap_or_default()));
        Ok::<_, Error>(fresh.then_some(()))
    })
    .await
    .unwrap();
}

/// Runs the whole story in a fresh namespace; returns the producer pause in seconds.
async fn cutover_under_load(prefix: &str, kill_in_every_stage: bool) -> Option<f64> {
    let env = env();
    let client = env.client().await.unwrap();
    sessionizer_e2e::crds::install(&client).await.unwrap();
    let namespace = env.namespace(prefix).await.unwrap();
    install::operator(env, &namespace, "sessionizer", &[])
        .await
        .unwrap();
    let kafka = env.kafka().unwrap();
    let source = unique_name("pageviews");
    for (topic, partitions) in [
        (source.clone(), PARTITIONS),
        (format!("{source}-sessions"), PARTITIONS),
        (format!("{source}-quarantine"), 1),
        (format!("{source}-sessions-v2-dlq"), PARTITIONS),
        (format!("{source}-quarantine-v2"), 1),
    ] {
        kafka.create_topic(&topic, partitions).await.unwrap();
    }
    // Checkpoints in the S3 server: the new job's Pods are replaced at the cutover and resume
    // from the final checkpoint there.
    let s3 = env.s3().unwrap();
    let bucket = unique_name("cutover");
    s3.create_bucket(&bucket).await.unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "stringData": {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": "us-east-1",
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let mut new_spec = None;
    for file in ["sessionjob.yaml", "sessionjob-side-run.yaml"] {
        let text = install::example(
            file,
            &[
                ("KAFKA_BOOTSTRAP", &kafka.bootstrap),
                ("SOURCE_TOPIC", &source),
            ],
        )
        .unwrap();
        let mut job: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        job["spec"]["checkpoints"] = json!({
            "location": format!("s3://{bucket}/checkpoints"),
            "endpoint": s3.endpoint,
            "credentialsSecretRef": {"name": SECRET},
            "interval": "30s",
        });
        if file == "sessionjob-side-run.yaml" {
            new_spec = Some(job["spec"].clone());
        }
        env.kubectl(
            &["apply", "-n", &namespace, "-f", "-"],
            Some(&serde_json::to_string(&job).unwrap()),
        )
        .await
        .unwrap();
    }
    env.kubectl(
        &["apply", "-n", &namespace, "-f", "-"],
        Some(&producer(&kafka.bootstrap, &source)),
    )
    .await
    .unwrap();

    // What the stream must come to: the oracle over every event the producer sends.
    let config = WorkerConfig {
        job: String::from("pageviews-v2"),
        namespace: namespace.clone(),
        effective_sink: sessionizer_crds::session_job::SinkMode::Production,
        spec: serde_json::from_value(new_spec.unwrap()).unwrap(),
    };
    let engine = EngineConfig::from_worker(&config).unwrap();
    let spec = LoadSpec {
        seed: SEED,
        events: EVENTS,
        users: USERS,
        partitions: PARTITIONS as u32,
        ..LoadSpec::default()
    };
    spec.check_fits(&engine).unwrap();
    let events = loadgen::generate(&spec);
    let want = without_sentinels(
        oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine).sessions,
    );

    let jobs: Api<SessionJob> = Api::namespaced(client.clone(), &namespace);
    for name in ["pageviews", "pageviews-v2"] {
        wait::until(&format!("{name} to be Ready"), POD_TIMEOUT, || async {
            let job = jobs.get(name).await.map_err(Error::kube("reading job"))?;
            let ready = job.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok::<_, Error>(ready.then_some(()))
        })
        .await
        .unwrap();
    }

    // Cut over while the producer is mid-stream.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", unique_name("oracle-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    wait::until("a third of the stream to be produced", POD_TIMEOUT, || {
        let produced: i64 = (0..PARTITIONS)
            .map(|p| {
                consumer
                    .fetch_watermarks(&source, p, Duration::from_secs(5))
                    .map_or(0, |(_, high)| high)
            })
            .sum();
        async move { Ok::<_, Error>((produced >= EVENTS as i64 / 3).then_some(())) }
    })
    .await
    .unwrap();
    let text = install::example("cutover.yaml", &[]).unwrap();
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&text))
        .await
        .unwrap();
    let cutovers: Api<SessionJobCutover> = Api::namespaced(client.clone(), &namespace);
    if kill_in_every_stage {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        for stage in [
            CutoverStage::PausingProducers,
            CutoverStage::Draining,
            CutoverStage::StoppingJobs,
            CutoverStage::FlippingSink,
            CutoverStage::Resuming,
        ] {
            let reached = wait::until(
                &format!("the cutover to reach {stage:?}"),
                RESULT_TIMEOUT,
                || async {
                    let cutover = cutovers
                        .get("pageviews-v2-cutover")
                        .await
                        .map_err(Error::kube("reading the cutover"))?;
                    let now = cutover.status.as_ref().and_then(|s| s.stage);
                    Ok::<_, Error>(now.filter(|now| *now >= stage))
                },
            )
            .await
            .unwrap();
            if reached.is_terminal() {
                break;
            }
            eprintln!("killing the operator in {reached:?}");
            kill_the_operator(&pods).await;
        }
    }
    let done = wait::until("the cutover to complete", RESULT_TIMEOUT, || async {
        let cutover = cutovers
            .get("pageviews-v2-cutover")
            .await
            .map_err(Error::kube("reading the cutover"))?;
        let stage = cutover.status.as_ref().and_then(|s| s.stage);
        match stage {
            Some(CutoverStage::Completed) => Ok(Some(cutover)),
            Some(CutoverStage::RolledBack | CutoverStage::Failed) => Err(Error::Other(format!(
                "the cutover ended in {stage:?}: {:?}",
                cutover.status
            ))),
            _ => Err(Error::Other(format!("status now: {:?}", cutover.status))),
        }
    })
    .await
    .unwrap();
    let pause = done.status.and_then(|s| s.producer_pause_seconds);
    eprintln!("producer pause: {pause:?} s");
    let old = jobs.get("pageviews").await.unwrap();
    assert_eq!(
        old.status.and_then(|s| s.phase),
        Some(sessionizer_crds::session_job::SessionJobPhase::Retired)
    );

    // The production topic: the old job's records before the flip, the new job's after.
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(&format!("{source}-sessions"), p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut records = Vec::new();
    let mut last = BTreeMap::new();
    wait::until(
        "the production topic's final sessions to equal the oracle's",
        RESULT_TIMEOUT,
        || {
            read_all(&consumer, &mut records);
            last = without_sentinels(final_sessions(records.iter()));
            let missing = want.keys().filter(|k| !last.contains_key(*k)).count();
            let extra = last.keys().filter(|k| !want.contains_key(*k)).count();
            let differ = want
                .iter()
                .filter(|(k, w)| last.get(*k).is_some_and(|g| g != *w))
                .count();
            let equal = last == want;
            async move {
                if equal {
                    Ok(Some(()))
                } else {
                    Err(Error::Other(format!(
                        "{missing} missing, {extra} unexpected, {differ} different"
                    )))
                }
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "{} events, {} production records, {} final sessions equal the oracle's",
        events.len(),
        records.len(),
        want.len()
    );
    pause
}
