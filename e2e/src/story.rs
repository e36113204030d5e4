//! The product's whole story on the local environment, shared by `sessionizer-env demo` and the
//! end-to-end tests: a producer (the load generator, run as a Deployment) sends a messy stream
//! continuously; the old job (`examples/sessionjob.yaml`) writes sessions to the production
//! topic while the new one (`examples/sessionjob-side-run.yaml`) side-runs into its dead-letter
//! topic; `examples/cutover.yaml` pauses the producer, drains and stops both jobs with final
//! checkpoints (in the S3 server), flips the new job's sink and resumes it, then restores the
//! producer. The verification: the production topic's final sessions — the old job's records
//! before the flip, the new job's after — equal the oracle's over every event produced.
//!
//! The restored producer starts its seeded stream again from the beginning: every event it
//! re-sends is a duplicate the new job recognises, and the rest of the stream (with the
//! watermark-advancing sentinels at its end) follows. Optionally the operator is killed once in
//! every stage in turn. This module only drives and observes; it never decides for the operator.

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
use sessionizer_crds::session_job::{SessionJobPhase, SinkMode};
use sessionizer_crds::{SessionJob, SessionJobCutover};
use sessionizer_worker::config::WorkerConfig;
use sessionizer_worker::engine::EngineConfig;
use sessionizer_worker::loadgen::{self, LoadSpec, without_sentinels};
use sessionizer_worker::oracle;
use sessionizer_worker::session::{SessionRecord, final_sessions};

use crate::env::{Env, unique_name};
use crate::smoke::is_running_and_ready;
use crate::{Error, Result, install, wait};

const PARTITIONS: i32 = 2;
const EVENTS: u64 = 6_000;
const USERS: u32 = 200;
const SEED: u64 = 7;
const RATE: u64 = 300;
const SECRET: &str = "checkpoint-store";
const OLD: &str = "pageviews";
const NEW: &str = "pageviews-v2";
const CUTOVER: &str = "pageviews-v2-cutover";
/// How long any one step (Pods ready, the cutover, the result) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(360);

/// What the story measured.
#[derive(Debug, Clone)]
pub struct StoryReport {
    /// The namespace it ran in.
    pub namespace: String,
    /// Events in the producer's stream (sentinels included).
    pub events: usize,
    /// Records read from the production topic.
    pub production_records: usize,
    /// Final sessions (the oracle's, which the production topic matched).
    pub sessions: usize,
    /// How long the producers were paused, from the cutover's status.
    pub producer_pause_seconds: Option<f64>,
    /// The stages in which the operator was killed.
    pub killed_in: Vec<CutoverStage>,
}

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

fn other(message: impl Into<String>) -> Error {
    Error::Other(message.into())
}

/// Every session record of the topic `consumer` is assigned to, read so far.
fn read_all(consumer: &BaseConsumer, into: &mut Vec<SessionRecord>) -> Result<()> {
    while let Some(message) = consumer.poll(Duration::from_millis(200)) {
        let message = message.map_err(|e| other(format!("reading the production topic: {e}")))?;
        if let Some(payload) = message.payload() {
            into.push(
                serde_json::from_slice(payload)
                    .map_err(|e| other(format!("a production record is not a session: {e}")))?,
            );
        }
    }
    Ok(())
}

/// Deletes every operator Pod and waits until a new one is ready.
async fn kill_the_operator(pods: &Api<Pod>) -> Result<()> {
    let selector = ListParams::default().labels("app.kubernetes.io/name=sessionizer-operator");
    let list = pods
        .list(&selector)
        .await
        .map_err(Error::kube("listing the operator Pods"))?;
    let before: Vec<String> = list.items.iter().filter_map(ResourceExt::uid).collect();
    for pod in list.items {
        pods.delete(&pod.name_any(), &DeleteParams::default())
            .await
            .map_err(Error::kube("deleting an operator Pod"))?;
    }
    wait::until("a new operator Pod to be ready", STEP_TIMEOUT, || async {
        let now = pods
            .list(&selector)
            .await
            .map_err(Error::kube("listing the operator Pods"))?;
        let fresh = now
            .items
            .iter()
            .any(|p| is_running_and_ready(p) && !before.contains(&p.uid().unwrap_or_default()));
        Ok::<_, Error>(fresh.then_some(()))
    })
    .await
}

/// A namespace with the operator, the topics, the checkpoint Secret, the example jobs named
/// in `files` (checkpointing to the S3 server every `interval`) and the producer Deployment,
/// plus the oracle's final sessions of the producer's stream.
struct Prepared {
    client: kube::Client,
    namespace: String,
    source: String,
    events: usize,
    want: BTreeMap<String, SessionRecord>,
    consumer: BaseConsumer,
}

async fn prepare(
    env: &Env,
    prefix: &str,
    files: &[&str],
    interval: &str,
    progress: &impl Fn(&str),
) -> Result<Prepared> {
    let client = env.client().await?;
    crate::crds::install(&client).await?;
    let namespace = env.namespace(prefix).await?;
    progress(&format!(
        "helm install of the operator into namespace {namespace}"
    ));
    install::operator(env, &namespace, "sessionizer", &[]).await?;
    let kafka = env.kafka()?;
    let source = unique_name("pageviews");
    for (topic, partitions) in [
        (source.clone(), PARTITIONS),
        (format!("{source}-sessions"), PARTITIONS),
        (format!("{source}-quarantine"), 1),
        (format!("{source}-sessions-v2-dlq"), PARTITIONS),
        (format!("{source}-quarantine-v2"), 1),
    ] {
        kafka.create_topic(&topic, partitions).await?;
    }
    // Checkpoints in the S3 server: replaced Pods resume from them.
    let s3 = env.s3()?;
    let bucket = unique_name("story");
    s3.create_bucket(&bucket).await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "stringData": {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": "us-east-1",
        },
    }))
    .map_err(|e| other(format!("the checkpoint Secret: {e}")))?;
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(Error::kube("creating the checkpoint Secret"))?;

    let mut last_spec = None;
    for file in files {
        let text = install::example(
            file,
            &[
                ("KAFKA_BOOTSTRAP", &kafka.bootstrap),
                ("SOURCE_TOPIC", &source),
            ],
        )?;
        let mut job: serde_json::Value =
            serde_yaml::from_str(&text).map_err(|e| other(format!("examples/{file}: {e}")))?;
        job["spec"]["checkpoints"] = json!({
            "location": format!("s3://{bucket}/checkpoints"),
            "endpoint": s3.endpoint,
            "credentialsSecretRef": {"name": SECRET},
            "interval": interval,
        });
        last_spec = Some(job["spec"].clone());
        progress(&format!(
            "kubectl apply -f examples/{file} (checkpoints in s3://{bucket})"
        ));
        let manifest =
            serde_json::to_string(&job).map_err(|e| other(format!("examples/{file}: {e}")))?;
        env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
            .await?;
    }
    progress(&format!(
        "a producer Deployment: the load generator, {EVENTS} messy events at {RATE}/s"
    ));
    env.kubectl(
        &["apply", "-n", &namespace, "-f", "-"],
        Some(&producer(&kafka.bootstrap, &source)),
    )
    .await?;

    // What the stream must come to: the oracle over every event the producer sends (the
    // example jobs share their session settings).
    let config = WorkerConfig {
        job: String::from(NEW),
        namespace: namespace.clone(),
        effective_sink: SinkMode::Production,
        spec: serde_json::from_value(last_spec.unwrap_or_default())
            .map_err(|e| other(format!("the job's spec: {e}")))?,
    };
    let engine =
        EngineConfig::from_worker(&config).map_err(|e| other(format!("session settings: {e}")))?;
    let spec = LoadSpec {
        seed: SEED,
        events: EVENTS,
        users: USERS,
        partitions: PARTITIONS as u32,
        ..LoadSpec::default()
    };
    spec.check_fits(&engine).map_err(other)?;
    let events = loadgen::generate(&spec);
    let want = without_sentinels(
        oracle::sessionize(events.iter().map(|e| e.payload.as_slice()), &engine).sessions,
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", unique_name("story-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| other(format!("a Kafka reader: {e}")))?;
    Ok(Prepared {
        client,
        namespace,
        source,
        events: events.len(),
        want,
        consumer,
    })
}

impl Prepared {
    /// Waits until the SessionJob `name` is Ready.
    async fn wait_ready(&self, name: &str) -> Result<()> {
        let jobs: Api<SessionJob> = Api::namespaced(self.client.clone(), &self.namespace);
        wait::until(&format!("{name} to be Ready"), STEP_TIMEOUT, || async {
            let job = jobs.get(name).await.map_err(Error::kube("reading job"))?;
            let ready = job.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok::<_, Error>(ready.then_some(()))
        })
        .await
    }

    /// Waits until the producer has sent at least `share` percent of the stream.
    async fn wait_produced(&self, share: i64) -> Result<()> {
        let what = format!("{share}% of the stream to be produced");
        wait::until(&what, STEP_TIMEOUT, || {
            let produced: i64 = (0..PARTITIONS)
                .map(|p| {
                    self.consumer
                        .fetch_watermarks(&self.source, p, Duration::from_secs(5))
                        .map_or(0, |(_, high)| high)
                })
                .sum();
            let enough = produced >= EVENTS as i64 * share / 100;
            async move { Ok::<_, Error>(enough.then_some(())) }
        })
        .await
    }

    /// Reads the production topic until its final sessions equal the oracle's; returns how many
    /// records it read.
    async fn wait_for_oracle(&self) -> Result<usize> {
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition_offset(&format!("{}-sessions", self.source), p, Offset::Beginning)
                .map_err(|e| other(format!("assigning the production topic: {e}")))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|e| other(format!("assigning the production topic: {e}")))?;
        let mut records = Vec::new();
        wait::until(
            "the production topic's final sessions to equal the oracle's",
            STEP_TIMEOUT,
            || {
                let read = read_all(&self.consumer, &mut records);
                let got = without_sentinels(final_sessions(records.iter()));
                let verdict = read.map(|()| oracle::difference(&got, &self.want));
                async move {
                    match verdict? {
                        None => Ok(Some(())),
                        Some(difference) => Err(other(difference)),
                    }
                }
            },
        )
        .await?;
        Ok(records.len())
    }
}

/// How the cutover of [`cutover_story`] is exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twist {
    /// Nothing in the way: the cutover completes.
    None,
    /// The operator is killed once in every stage in turn; the cutover still completes.
    KillOperatorInEveryStage,
    /// Draining cannot finish within its timeout (1 s): the cutover rolls back, the old job
    /// keeps producing to production and the producers are restored.
    DrainingTimesOut,
}

/// Runs the story in a new namespace named after `prefix`, printing what happens with
/// `progress`; fails unless the cutover ends as `twist` expects and the production topic ends
/// with the oracle's final sessions.
pub async fn cutover_story(
    env: &Env,
    prefix: &str,
    twist: Twist,
    progress: impl Fn(&str),
) -> Result<StoryReport> {
    let prepared = prepare(
        env,
        prefix,
        &["sessionjob.yaml", "sessionjob-side-run.yaml"],
        "30s",
        &progress,
    )
    .await?;
    let (client, namespace) = (prepared.client.clone(), prepared.namespace.clone());
    for name in [OLD, NEW] {
        prepared.wait_ready(name).await?;
    }
    progress(&format!(
        "{OLD} runs on production; {NEW} side-runs on its dead-letter topic"
    ));
    // Cut over while the producer is mid-stream.
    prepared.wait_produced(33).await?;
    progress("kubectl apply -f examples/cutover.yaml, while the producer is mid-stream");
    let mut cutover: serde_json::Value =
        serde_yaml::from_str(&install::example("cutover.yaml", &[])?)
            .map_err(|e| other(format!("examples/cutover.yaml: {e}")))?;
    if twist == Twist::DrainingTimesOut {
        cutover["spec"]["timeouts"]["draining"] = "1s".into();
    }
    let text = serde_json::to_string(&cutover)
        .map_err(|e| other(format!("examples/cutover.yaml: {e}")))?;
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&text))
        .await?;
    let cutovers: Api<SessionJobCutover> = Api::namespaced(client.clone(), &namespace);
    let mut killed_in = Vec::new();
    if twist == Twist::KillOperatorInEveryStage {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        for stage in [
            CutoverStage::PausingProducers,
            CutoverStage::Draining,
            CutoverStage::StoppingJobs,
            CutoverStage::FlippingSink,
            CutoverStage::Resuming,
        ] {
            let what = format!("the cutover to reach {stage:?}");
            let reached = wait::until(&what, STEP_TIMEOUT, || async {
                let cutover = cutovers
                    .get(CUTOVER)
                    .await
                    .map_err(Error::kube("reading the cutover"))?;
                let now = cutover.status.as_ref().and_then(|s| s.stage);
                Ok::<_, Error>(now.filter(|now| *now >= stage))
            })
            .await?;
            if reached.is_terminal() {
                break;
            }
            progress(&format!("killing the operator in {reached:?}"));
            kill_the_operator(&pods).await?;
            killed_in.push(reached);
        }
    }
    let expected = if twist == Twist::DrainingTimesOut {
        CutoverStage::RolledBack
    } else {
        CutoverStage::Completed
    };
    let done = wait::until("the cutover to end", STEP_TIMEOUT, || async {
        let cutover = cutovers
            .get(CUTOVER)
            .await
            .map_err(Error::kube("reading the cutover"))?;
        let stage = cutover.status.as_ref().and_then(|s| s.stage);
        match stage {
            Some(stage) if stage == expected => Ok(Some(cutover)),
            Some(stage) if stage.is_terminal() => Err(other(format!(
                "the cutover ended in {stage:?}, not {expected:?}: {:?}",
                cutover.status
            ))),
            _ => Err(other(format!("status now: {:?}", cutover.status))),
        }
    });
    let done = done.await?;
    let pause = done.status.as_ref().and_then(|s| s.producer_pause_seconds);
    progress(&format!(
        "cutover {expected:?}; producers were paused {}",
        pause.map_or_else(|| String::from("(not measured)"), |p| format!("{p:.0} s"))
    ));
    let want_phase = if twist == Twist::DrainingTimesOut {
        SessionJobPhase::Running
    } else {
        SessionJobPhase::Retired
    };
    // The job's status follows the cutover's at its next reconcile.
    let jobs: Api<SessionJob> = Api::namespaced(client.clone(), &namespace);
    wait::until(
        &format!("{OLD} to be {want_phase:?}"),
        STEP_TIMEOUT,
        || async {
            let old = jobs
                .get(OLD)
                .await
                .map_err(Error::kube("reading the old job"))?;
            let phase = old.status.and_then(|s| s.phase);
            if phase == Some(want_phase) {
                Ok(Some(()))
            } else {
                Err(other(format!("{OLD} is {phase:?}")))
            }
        },
    )
    .await?;
    // The production topic: the old job's records before the flip, the new job's after (after a
    // rollback: the old job's only).
    progress("reading the production topic until its final sessions equal the oracle's");
    let production_records = prepared.wait_for_oracle().await?;
    Ok(StoryReport {
        namespace,
        events: prepared.events,
        production_records,
        sessions: prepared.want.len(),
        producer_pause_seconds: pause,
        killed_in,
    })
}

/// What [`killed_worker_story`] measured.
#[derive(Debug, Clone)]
pub struct KillReport {
    /// Records read from the production topic.
    pub production_records: usize,
    /// Final sessions (the oracle's, which the production topic matched).
    pub sessions: usize,
    /// How many times the worker was killed.
    pub kills: usize,
}

/// The process of `pod` in `namespace` running `binary`, found by its environment.
fn process_of(namespace: &str, pod: &str, binary: &str) -> Option<i32> {
    let wanted = [
        format!("POD_NAME={pod}").into_bytes(),
        format!("POD_NAMESPACE={namespace}").into_bytes(),
    ];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            if exe.file_name()?.to_str()? != binary {
                return None;
            }
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            wanted
                .iter()
                .all(|w| vars.contains(&w.as_slice()))
                .then_some(pid)
        })
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// A job's only worker is killed with SIGKILL at `kills` points of a stream the load generator
/// produces; each time its container restarts in the same Pod and restores from the newest
/// checkpoint in the S3 server. Fails unless the production topic ends with the oracle's final
/// sessions: nothing lost, nothing counted twice.
pub async fn killed_worker_story(
    env: &Env,
    prefix: &str,
    kills: usize,
    progress: impl Fn(&str),
) -> Result<KillReport> {
    let prepared = prepare(env, prefix, &["sessionjob.yaml"], "2s", &progress).await?;
    prepared.wait_ready(OLD).await?;
    let pod = format!("{OLD}-0");
    let pods: Api<Pod> = Api::namespaced(prepared.client.clone(), &prepared.namespace);
    for kill in 0..kills {
        // Spread over the stream: with 3 kills at 25, 50 and 75 %.
        let share = i64::try_from((kill + 1) * 100 / (kills + 1)).unwrap_or(50);
        prepared.wait_produced(share).await?;
        let before = restarts(
            &pods
                .get(&pod)
                .await
                .map_err(Error::kube("reading the worker Pod"))?,
        );
        let pid = process_of(&prepared.namespace, &pod, "sessionizer-worker")
            .ok_or_else(|| other(format!("no process of {pod}")))?;
        progress(&format!("kill -9 {pid} ({pod}) at {share}% of the stream"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| other(format!("killing {pid}: {e}")))?;
        wait::until(
            "the worker to restart and be ready",
            STEP_TIMEOUT,
            || async {
                let now = pods
                    .get(&pod)
                    .await
                    .map_err(Error::kube("reading the worker Pod"))?;
                Ok::<_, Error>(
                    (restarts(&now) > before && is_running_and_ready(&now)).then_some(()),
                )
            },
        )
        .await?;
    }
    progress("reading the production topic until its final sessions equal the oracle's");
    let production_records = prepared.wait_for_oracle().await?;
    Ok(KillReport {
        production_records,
        sessions: prepared.want.len(),
        kills,
    })
}
