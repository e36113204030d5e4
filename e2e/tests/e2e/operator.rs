//! The operator as a user meets it: `helm install` of the chart, `kubectl apply` of the example
//! SessionJob, and the operator — running as Pods under the chart's RBAC, through its own service
//! account — turning it into a StatefulSet of workers and reporting status.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use sessionizer_crds::SessionJob;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::{Env, Error, install, smoke, wait};

use crate::support::{POD_TIMEOUT, env, namespace_with_operator};

/// A namespace with the operator installed and the example job's source topic created.
struct Installed {
    env: &'static Env,
    client: kube::Client,
    namespace: String,
    job: String,
}

/// Installs the chart into a fresh namespace and applies `examples/sessionjob.yaml` there.
async fn install_and_apply_example() -> Installed {
    let env = env();
    let (client, namespace) = namespace_with_operator("op", &[]).await;

    let kafka = env.kafka().unwrap();
    let source = unique_name("pageviews");
    kafka.create_topic(&source, 4).await.unwrap();
    let manifest = install::example(
        "sessionjob.yaml",
        &[
            ("KAFKA_BOOTSTRAP", &kafka.bootstrap),
            ("SOURCE_TOPIC", &source),
        ],
    )
    .unwrap();
    let job: SessionJob = serde_yaml::from_str(&manifest).unwrap();
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    Installed {
        env,
        client,
        namespace,
        job: job.name_any(),
    }
}

impl Installed {
    fn jobs(&self) -> Api<SessionJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn worker_selector(&self) -> String {
        format!("app.kubernetes.io/instance={}", self.job)
    }

    /// Waits until the job reports Ready for its current generation, and returns it.
    async fn wait_ready(&self) -> SessionJob {
        let jobs = self.jobs();
        wait::until(
            "the SessionJob to be Ready at its generation",
            POD_TIMEOUT,
            || async {
                let job = jobs
                    .get(&self.job)
                    .await
                    .map_err(Error::kube("reading job"))?;
                let status = job.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let current = status.observed_generation == job.metadata.generation;
                if ready && current {
                    Ok(Some(job))
                } else {
                    Err(Error::Other(format!("status now: {status:?}")))
                }
            },
        )
        .await
        .unwrap()
    }

    async fn statefulset(&self) -> StatefulSet {
        self.api::<StatefulSet>().get(&self.job).await.unwrap()
    }

    async fn worker_pod_uids(&self) -> BTreeMap<String, String> {
        let pods = self.api::<Pod>();
        let list = pods
            .list(&ListParams::default().labels(&self.worker_selector()))
            .await
            .unwrap();
        list.items
            .iter()
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect()
    }

    /// Reconciliations the operator replicas of this namespace have counted, from their
    /// `/metrics`.
    async fn reconciliations(&self) -> u64 {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/name=sessionizer-operator"))
            .await
            .unwrap();
        let mut total = 0;
        for pod in pods.items.iter().filter(|p| smoke::is_running_and_ready(p)) {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let Ok(response) = reqwest::get(format!("http://{ip}:8080/metrics")).await else {
                continue;
            };
            let text = response.text().await.unwrap_or_default();
            total += text
                .lines()
                .filter(|l| l.starts_with("sessionizer_operator_reconciliations_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum::<u64>();
        }
        total
    }

    /// `kind/name` of every object of kind `K` whose owner has `uid`.
    async fn owned_by<K>(&self, uid: &str) -> Result<Vec<String>, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let list = self
            .api::<K>()
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("listing children"))?;
        Ok(list
            .items
            .iter()
            .filter(|o| {
                o.meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
            })
            .map(|o| format!("{}/{}", K::kind(&Default::default()), o.name_any()))
            .collect())
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        let patch = json!({ "spec": spec });
        self.jobs()
            .patch(&self.job, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

fn owned_by_job(meta: &kube::api::ObjectMeta, job: &SessionJob) -> bool {
    meta.owner_references.iter().flatten().any(|r| {
        r.kind == "SessionJob"
            && r.uid == job.uid().unwrap_or_default()
            && r.controller == Some(true)
    })
}

#[tokio::test]
async fn helm_install_then_kubectl_apply_runs_the_example_job() {
    let it = install_and_apply_example().await;
    let job = it.wait_ready().await;

    let sts = it.statefulset().await;
    assert!(
        owned_by_job(&sts.metadata, &job),
        "StatefulSet owned by the job"
    );
    let svc = it.api::<Service>().get(&it.job).await.unwrap();
    assert!(
        owned_by_job(&svc.metadata, &job),
        "Service owned by the job"
    );
    let pdb = it.api::<PodDisruptionBudget>().get(&it.job).await.unwrap();
    assert!(owned_by_job(&pdb.metadata, &job), "PDB owned by the job");
    let config_maps = it
        .api::<ConfigMap>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        config_maps
            .items
            .iter()
            .any(|cm| owned_by_job(&cm.metadata, &job)),
        "a ConfigMap owned by the job"
    );
    let accounts = it
        .api::<ServiceAccount>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        accounts
            .items
            .iter()
            .any(|sa| owned_by_job(&sa.metadata, &job)),
        "a worker ServiceAccount owned by the job"
    );

    let parallelism = job.spec.parallelism;
    let pods = smoke::wait_ready_pods(
        &it.api::<Pod>(),
        &it.worker_selector(),
        usize::try_from(parallelism).unwrap(),
        POD_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(pods.len(), usize::try_from(parallelism).unwrap());

    let status = job.status.unwrap();
    assert_eq!(status.ready_replicas, Some(parallelism));
    let balanced = status
        .conditions
        .iter()
        .find(|c| c.type_ == "BalancedAssignment")
        .expect("BalancedAssignment condition");
    assert_eq!(balanced.status, "True", "{balanced:?}");
}

#[tokio::test]
async fn rescale_rolls_once_and_reapplying_changes_nothing() {
    let it = install_and_apply_example().await;
    it.wait_ready().await;

    // Scale out: key groups are re-divided, so every worker stops with a final checkpoint, then
    // restarts with its new range (restored from it) and one more joins.
    let before = it.worker_pod_uids().await;
    it.patch_spec(json!({ "parallelism": 2 })).await;
    it.wait_ready().await;
    smoke::wait_ready_pods(&it.api::<Pod>(), &it.worker_selector(), 2, POD_TIMEOUT)
        .await
        .unwrap();
    let scaled = it.worker_pod_uids().await;
    assert_eq!(scaled.len(), 2);
    // The running worker was stopped with a final checkpoint before the new count started.
    let events = it.api::<Event>();
    let job = it.job.clone();
    wait::until("a WorkersStoppedForRescale event", POD_TIMEOUT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("listing events"))?;
        let stopped = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("WorkersStoppedForRescale")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(job.as_str())
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("1 → 2") && n.contains("chk-"))
        });
        Ok::<_, Error>(stopped.then_some(()))
    })
    .await
    .unwrap();
    for (pod, uid) in &before {
        assert_ne!(
            scaled.get(pod),
            Some(uid),
            "{pod} restarted to take its new key groups"
        );
    }

    // A worker setting changes the configuration: every Pod is replaced exactly once.
    let generation = it.statefulset().await.metadata.generation;
    it.patch_spec(json!({ "session": { "gap": "20m" } })).await;
    let sts_api = it.api::<StatefulSet>();
    let name = it.job.clone();
    wait::until("the rolling update to finish", POD_TIMEOUT, || async {
        let sts = sts_api
            .get(&name)
            .await
            .map_err(Error::kube("reading sts"))?;
        let status = sts.status.unwrap_or_default();
        let done = sts.metadata.generation > generation
            && status.observed_generation == sts.metadata.generation
            && status.update_revision.is_some()
            && status.update_revision == status.current_revision
            && status.updated_replicas == Some(2)
            && status.ready_replicas == Some(2);
        Ok::<_, Error>(done.then_some(()))
    })
    .await
    .unwrap();
    let rolled = it.worker_pod_uids().await;
    assert_eq!(rolled.len(), 2);
    for (pod, uid) in &rolled {
        assert_ne!(scaled.get(pod), Some(uid), "{pod} was replaced by the roll");
    }
    let after_roll = it.statefulset().await.metadata.generation;
    assert_eq!(
        after_roll,
        generation.map(|g| g + 1),
        "one template change, one roll"
    );

    // Re-applying the same spec (with an annotation, so the operator reconciles it) changes
    // nothing.
    it.wait_ready().await;
    let reconciles = it.reconciliations().await;
    let current = it.jobs().get(&it.job).await.unwrap();
    let manifest = serde_yaml::to_string(&json!({
        "apiVersion": "sessionizer.dev/v1alpha1",
        "kind": "SessionJob",
        "metadata": { "name": it.job, "annotations": { "e2e/nudge": "1" } },
        "spec": current.spec,
    }))
    .unwrap();
    it.env
        .kubectl(&["apply", "-n", &it.namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    wait::until(
        "the operator to reconcile the re-applied job",
        POD_TIMEOUT,
        || async {
            let now = it.reconciliations().await;
            Ok::<_, Error>((now > reconciles).then_some(()))
        },
    )
    .await
    .unwrap();
    it.wait_ready().await;
    assert_eq!(it.statefulset().await.metadata.generation, after_roll);
    assert_eq!(it.worker_pod_uids().await, rolled);
}

#[tokio::test]
async fn deleting_the_job_removes_every_child() {
    let it = install_and_apply_example().await;
    let job = it.wait_ready().await;
    it.env
        .kubectl(
            &[
                "delete",
                "sessionjob",
                "-n",
                &it.namespace,
                &it.job,
                "--wait=true",
            ],
            None,
        )
        .await
        .unwrap();
    let uid = job.uid().unwrap_or_default();
    wait::until("every child of the job to be gone", POD_TIMEOUT, || async {
        let mut left = BTreeSet::new();
        left.extend(it.owned_by::<StatefulSet>(&uid).await?);
        left.extend(it.owned_by::<ConfigMap>(&uid).await?);
        left.extend(it.owned_by::<Service>(&uid).await?);
        left.extend(it.owned_by::<ServiceAccount>(&uid).await?);
        left.extend(it.owned_by::<PodDisruptionBudget>(&uid).await?);
        let pods = it
            .api::<Pod>()
            .list(&ListParams::default().labels(&it.worker_selector()))
            .await
            .map_err(Error::kube("pods"))?;
        for pod in pods {
            left.insert(format!("pod/{}", pod.name_any()));
        }
        if left.is_empty() {
            Ok(Some(()))
        } else {
            Err(Error::Other(format!("left: {left:?}")))
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_standby_operator_takes_over_when_the_leader_is_killed() {
    let it = install_and_apply_example().await;
    it.wait_ready().await;

    let leases: Api<Lease> = it.api();
    let lease = leases.get("sessionizer-operator").await.unwrap();
    let leader = lease
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader holds the lease");
    // Kill the leader's process outright (no graceful lease release), as a crash would.
    it.env
        .kubectl(
            &[
                "delete",
                "pod",
                "-n",
                &it.namespace,
                &leader,
                "--grace-period=0",
                "--force",
            ],
            None,
        )
        .await
        .unwrap();

    // The job is still reconciled: a change made now is carried out by the new leader.
    it.patch_spec(json!({ "parallelism": 2 })).await;
    let job = it.wait_ready().await;
    assert_eq!(job.status.and_then(|s| s.ready_replicas), Some(2));
    let lease = leases.get("sessionizer-operator").await.unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(holder, leader, "another replica leads now");
}
