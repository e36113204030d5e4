//! Cutovers on the real local environment: the operator installed by helm, two SessionJobs (the
//! examples `sessionjob.yaml` and `sessionjob-side-run.yaml`) running real workers, a producer
//! Deployment (the e2e test app standing in for the load generator), and the
//! `examples/cutover.yaml` SessionJobCutover — driven and followed with `kubectl-sessionizer`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use sessionizer_crds::cutover::CutoverStage;
use sessionizer_crds::session_job::{SessionJobPhase, SinkMode};
use sessionizer_crds::{SessionJob, SessionJobCutover};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::smoke::{TESTAPP_PORT, is_running_and_ready};
use sessionizer_e2e::{Env, Error, install, tools, wait};

use crate::support::{POD_TIMEOUT, env, namespace_with_operator};

/// How long a whole cutover may take here.
const CUTOVER_TIMEOUT: Duration = Duration::from_secs(240);
/// Replicas of the producer before the cutover (restored exactly afterwards).
const PRODUCER_REPLICAS: i32 = 2;
const OLD: &str = "pageviews";
const NEW: &str = "pageviews-v2";
const PRODUCER: &str = "pageview-collector";
const CUTOVER: &str = "pageviews-v2-cutover";

/// A namespace with the operator, both jobs Ready and the producer running.
struct Setup {
    env: &'static Env,
    client: kube::Client,
    namespace: String,
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        let env = env();
        let (client, namespace) = namespace_with_operator(prefix, &[]).await;
        let kafka = env.kafka().unwrap();
        let source = unique_name("pageviews");
        kafka.create_topic(&source, 2).await.unwrap();
        let setup = Self {
            env,
            client,
            namespace,
        };
        for file in ["sessionjob.yaml", "sessionjob-side-run.yaml"] {
            let manifest = install::example(
                file,
                &[
                    ("KAFKA_BOOTSTRAP", &kafka.bootstrap),
                    ("SOURCE_TOPIC", &source),
                ],
            )
            .unwrap();
            setup.apply(&manifest).await;
        }
        setup.apply(&producer_deployment()).await;
        for job in [OLD, NEW] {
            setup.wait_job("Ready", job, ready).await;
        }
        setup.wait_producer(PRODUCER_REPLICAS).await;
        setup
    }

    async fn apply(&self, manifest: &str) {
        self.env
            .kubectl(&["apply", "-n", &self.namespace, "-f", "-"], Some(manifest))
            .await
            .unwrap();
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn wait_job(
        &self,
        what: &str,
        name: &str,
        check: impl Fn(&SessionJob) -> bool,
    ) -> SessionJob {
        let jobs = self.api::<SessionJob>();
        wait::until(
            &format!("SessionJob {name}: {what}"),
            POD_TIMEOUT,
            || async {
                let job = jobs.get(name).await.map_err(Error::kube("reading job"))?;
                if check(&job) {
                    Ok(Some(job))
                } else {
                    Err(Error::Other(format!("status now: {:?}", job.status)))
                }
            },
        )
        .await
        .unwrap()
    }

    /// Waits until the producer has exactly `replicas` wanted and that many ready Pods.
    async fn wait_producer(&self, replicas: i32) {
        let deployments = self.api::<Deployment>();
        let pods = self.api::<Pod>();
        wait::until(
            &format!("the producer at {replicas} ready replicas"),
            POD_TIMEOUT,
            || async {
                let deployment = deployments
                    .get(PRODUCER)
                    .await
                    .map_err(Error::kube("reading producer"))?;
                let wanted = deployment.spec.and_then(|s| s.replicas);
                let list = pods
                    .list(&ListParams::default().labels(&format!("app={PRODUCER}")))
                    .await
                    .map_err(Error::kube("listing producer pods"))?;
                let ready = list
                    .items
                    .iter()
                    .filter(|p| is_running_and_ready(p))
                    .count();
                let done = wanted == Some(replicas)
                    && ready == usize::try_from(replicas).unwrap_or(0)
                    && list.items.len() == ready;
                Ok::<_, Error>(done.then_some(()))
            },
        )
        .await
        .unwrap();
    }

    /// Applies `examples/cutover.yaml` with `draining` as the Draining timeout.
    async fn start_cutover(&self, draining: &str) {
        let text = install::example("cutover.yaml", &[]).unwrap();
        let mut cutover: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        cutover["spec"]["timeouts"]["draining"] = draining.into();
        self.apply(&serde_json::to_string(&cutover).unwrap()).await;
    }

    async fn wait_stage(
        &self,
        what: &str,
        check: impl Fn(CutoverStage) -> bool,
    ) -> SessionJobCutover {
        let cutovers = self.api::<SessionJobCutover>();
        wait::until(
            &format!("the cutover to reach {what}"),
            CUTOVER_TIMEOUT,
            || async {
                let cutover = cutovers
                    .get(CUTOVER)
                    .await
                    .map_err(Error::kube("reading cutover"))?;
                let stage = cutover.status.as_ref().and_then(|s| s.stage);
                match stage {
                    Some(stage) if check(stage) => Ok(Some(cutover)),
                    _ => Err(Error::Other(format!("status now: {:?}", cutover.status))),
                }
            },
        )
        .await
        .unwrap()
    }

    /// Runs `kubectl-sessionizer` with the administrator's kubeconfig.
    async fn plugin(&self, args: &[&str]) -> (bool, String) {
        let binary = tools::workspace_binary("kubectl-sessionizer").unwrap();
        let output = tokio::process::Command::new(binary)
            .args(["-n", &self.namespace])
            .args(args)
            .env("KUBECONFIG", self.env.kubeconfig().unwrap())
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    async fn operator_pods(&self) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/name=sessionizer-operator"))
            .await
            .unwrap()
            .items
    }
}

fn ready(job: &SessionJob) -> bool {
    let status = job.status.clone().unwrap_or_default();
    status.observed_generation == job.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn producer_deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {PRODUCER}
spec:
  replicas: {PRODUCER_REPLICAS}
  selector:
    matchLabels:
      app: {PRODUCER}
  template:
    metadata:
      labels:
        app: {PRODUCER}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: sessionizer/e2e-testapp
        env:
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        - name: PORT
          value: "{TESTAPP_PORT}"
        readinessProbe:
          httpGet:
            path: /readyz
            port: {TESTAPP_PORT}
          periodSeconds: 1
"#
    )
}

/// What every finished cutover must leave: the producer back at exactly its replicas, recorded
/// once with the replicas it had, and the pause measured.
async fn assert_producers_restored(setup: &Setup, cutover: &SessionJobCutover) {
    let status = cutover.status.clone().unwrap();
    assert_eq!(status.producers.len(), 1, "{status:?}");
    assert_eq!(status.producers[0].name, PRODUCER);
    assert_eq!(
        status.producers[0].original_replicas, PRODUCER_REPLICAS,
        "recorded before pausing, never re-read as 0"
    );
    assert!(status.producer_pause_seconds.is_some(), "{status:?}");
    setup.wait_producer(PRODUCER_REPLICAS).await;
}

#[tokio::test]
async fn a_draining_timeout_rolls_back_the_jobs_and_restores_the_producers_exactly() {
    let setup = Setup::new("cutover-rb").await;
    setup.start_cutover("1s").await;
    let (ok, watched) = setup
        .plugin(&["cutover", "watch", CUTOVER, "--timeout-seconds", "240"])
        .await;
    assert!(!ok, "watch exits non-zero unless Completed:\n{watched}");
    for stage in ["PausingProducers", "Draining", "RollingBack", "RolledBack"] {
        assert!(watched.contains(stage), "{stage} missing from:\n{watched}");
    }
    assert!(watched.contains("Draining timed out"), "{watched}");

    let cutover = setup
        .wait_stage("RolledBack", |s| s == CutoverStage::RolledBack)
        .await;
    let status = cutover.status.clone().unwrap();
    assert_eq!(status.failed_stage, Some(CutoverStage::Draining));
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "Draining")
    );
    assert!(status.final_checkpoints.is_empty(), "no job was stopped");
    assert!(!status.sink_flipped);
    assert_producers_restored(&setup, &cutover).await;

    // The old job runs on as before; the new one side-runs again on its dead-letter topic.
    let old = setup
        .wait_job("Running on production", OLD, |j| {
            let s = j.status.clone().unwrap_or_default();
            ready(j)
                && s.phase == Some(SessionJobPhase::Running)
                && s.effective_sink.map(|e| e.mode) == Some(SinkMode::Production)
        })
        .await;
    assert_eq!(old.status.unwrap().phase, Some(SessionJobPhase::Running));
    setup
        .wait_job("SideRunning on dead letter", NEW, |j| {
            let s = j.status.clone().unwrap_or_default();
            s.phase == Some(SessionJobPhase::SideRunning)
                && s.effective_sink.map(|e| e.mode) == Some(SinkMode::DeadLetter)
        })
        .await;
    let (ok, table) = setup.plugin(&["get"]).await;
    assert!(ok, "{table}");
    assert!(
        table.lines().any(|l| l.starts_with(NEW)
            && l.contains("SideRunning")
            && l.contains("replaces pageviews")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with(&format!("{OLD} "))
            && l.contains("Running")
            && l.contains("Production")),
        "{table}"
    );

    // Approving a cutover that is not stopped for a human is refused.
    let (ok, refused) = setup.plugin(&["cutover", "approve", CUTOVER]).await;
    assert!(!ok && refused.contains("nothing to approve"), "{refused}");
}

#[tokio::test]
async fn the_operator_killed_while_draining_resumes_the_cutover_from_its_status() {
    operator_killed_during(CutoverStage::Draining, "cutover-kill-drain").await;
}

#[tokio::test]
async fn the_operator_killed_while_stopping_the_jobs_resumes_the_cutover() {
    operator_killed_during(CutoverStage::StoppingJobs, "cutover-kill-stop").await;
}

#[tokio::test]
async fn the_operator_killed_while_resuming_finishes_the_cutover() {
    operator_killed_during(CutoverStage::Resuming, "cutover-kill-resume").await;
}

/// Kills every operator Pod as soon as the cutover is in `stage` (or later) and checks the new
/// leader finishes it from what the status recorded.
async fn operator_killed_during(stage: CutoverStage, prefix: &str) {
    let setup = Setup::new(prefix).await;
    let before: Vec<String> = setup
        .operator_pods()
        .await
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    setup.start_cutover("60s").await;
    // The new leader must not re-read the producers' replicas (now 0) as the ones to restore,
    // nor choose a second checkpoint id.
    let at = setup.wait_stage(stage.as_str(), |s| s >= stage).await;
    eprintln!(
        "killing the operator in {:?}",
        at.status.and_then(|s| s.stage)
    );
    let pods = setup.api::<Pod>();
    for pod in setup.operator_pods().await {
        pods.delete(&pod.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait::until("a new operator Pod to be ready", POD_TIMEOUT, || async {
        let now = setup.operator_pods().await;
        let fresh = now
            .iter()
            .any(|p| is_running_and_ready(p) && !before.contains(&p.uid().unwrap_or_default()));
        Ok::<_, Error>(fresh.then_some(()))
    })
    .await
    .unwrap();

    let cutover = setup
        .wait_stage("a final stage", CutoverStage::is_terminal)
        .await;
    let status = cutover.status.clone().unwrap();
    let ended = status.stage.unwrap();
    eprintln!("the cutover ended in {ended:?}: {status:?}");
    let pausing = status
        .stages
        .iter()
        .filter(|t| t.stage == CutoverStage::PausingProducers)
        .count();
    assert_eq!(pausing, 1, "{status:?}");
    assert_producers_restored(&setup, &cutover).await;
    assert_eq!(ended, CutoverStage::Completed, "{status:?}");
    // Both jobs stopped with the one checkpoint id chosen when StoppingJobs began.
    let id = status.checkpoint_id.clone().unwrap();
    assert_eq!(
        status.final_checkpoints.values().collect::<Vec<_>>(),
        [&id, &id],
        "{status:?}"
    );
    assert!(status.sink_flipped);
    setup
        .wait_job("Retired", OLD, |j| {
            j.status.as_ref().and_then(|s| s.phase) == Some(SessionJobPhase::Retired)
        })
        .await;
    let old_workers = setup
        .api::<k8s_openapi::api::apps::v1::StatefulSet>()
        .get(OLD)
        .await
        .unwrap();
    assert_eq!(
        old_workers.spec.unwrap().replicas,
        Some(0),
        "a retired job stays stopped"
    );
    let new = setup.wait_job("Ready on production", NEW, ready).await;
    assert_eq!(
        new.status.unwrap().effective_sink.unwrap().mode,
        SinkMode::Production
    );
    assert_eq!(
        new.spec.sink.initial_mode,
        SinkMode::DeadLetter,
        "the spec is never rewritten"
    );
    let pause = status.producer_pause_seconds.unwrap();
    eprintln!("producers paused {pause} s (operator killed during {stage:?})");
}

#[tokio::test]
async fn a_full_history_store_blocks_the_cutover_and_warns_on_the_side_run() {
    let setup = Setup::new("cutover-hwm").await;
    let side_running = setup
        .wait_job("SideRunning with its warm-up started", NEW, |j| {
            let s = j.status.clone().unwrap_or_default();
            s.phase == Some(SessionJobPhase::SideRunning)
                && s.side_run.is_some_and(|r| r.warmup_start_time.is_some())
        })
        .await;
    assert_eq!(
        side_running.status.unwrap().effective_sink.unwrap().mode,
        SinkMode::DeadLetter
    );

    // The history-store monitor's verdict, as it would write it.
    let set_level = |level: &'static str| {
        let jobs = setup.api::<SessionJob>();
        async move {
            let patch = serde_json::json!({
                "status": { "historyStore": { "level": level } }
            });
            jobs.patch_status(
                OLD,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
        }
    };
    set_level("Breached").await;
    setup.start_cutover("1s").await;
    let cutovers = setup.api::<SessionJobCutover>();
    let blocked = wait::until("the cutover to refuse to start", POD_TIMEOUT, || async {
        let cutover = cutovers
            .get(CUTOVER)
            .await
            .map_err(Error::kube("reading cutover"))?;
        let status = cutover.status.clone().unwrap_or_default();
        let attention = status.conditions.iter().any(|c| {
            c.type_ == "NeedsAttention" && c.status == "True" && c.reason == "HistoryStoreFull"
        });
        if attention && status.stage == Some(CutoverStage::Pending) {
            Ok(Some(status))
        } else {
            Err(Error::Other(format!("status now: {status:?}")))
        }
    })
    .await
    .unwrap();
    assert!(
        blocked.message.unwrap_or_default().contains("Breached"),
        "the message says why"
    );
    setup
        .wait_job("ReadyForCutover False with a warning", NEW, |j| {
            j.status.iter().flat_map(|s| &s.conditions).any(|c| {
                c.type_ == "ReadyForCutover"
                    && c.status == "False"
                    && c.reason == "HistoryStoreFull"
            })
        })
        .await;
    let producers = setup.api::<Deployment>().get(PRODUCER).await.unwrap();
    assert_eq!(
        producers.spec.unwrap().replicas,
        Some(PRODUCER_REPLICAS),
        "nothing was paused"
    );

    // Room again: the cutover starts (and, with its 1 s drain timeout, rolls back).
    set_level("Healthy").await;
    let cutover = setup
        .wait_stage("RolledBack", |s| s == CutoverStage::RolledBack)
        .await;
    assert_producers_restored(&setup, &cutover).await;
}
