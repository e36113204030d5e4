//! Checkpoint retention as a user meets it: the operator (installed by its chart, running as
//! Pods under the chart's RBAC) keeps the newest `retain` complete checkpoints of a SessionJob
//! in the real S3 server, removes incomplete leftovers after the grace period, never removes the
//! newest checkpoint even when it is older than `maxAge`, reports the newest in status, and on
//! deletion removes the job's checkpoints only when asked to.
//!
//! The checkpoints are written here exactly as a worker writes them, through the worker crate's
//! `CheckpointStore` (same layout, format and manifests). The jobs run the test app instead of
//! the worker, so no worker adds checkpoints of its own while the test counts them. The chart
//! is installed with a 3 s grace period for incomplete checkpoints (S3 modification times
//! cannot be backdated).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sessionizer_crds::SessionJob;
use sessionizer_crds::session_job::{CheckpointsSpec, HistoryBackend};
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::s3::REGION;
use sessionizer_e2e::{Env, Error, install, wait};
use sessionizer_worker::checkpoint::{
    CheckpointStore, KeyGroupCheckpoint, LocalDir, Manifest, ManifestScope, StoreCredentials, id_at,
};

use crate::support::{env, namespace_with_operator};

/// Retention passes run every checkpoint interval (10 s here); allow several.
const TIMEOUT: Duration = Duration::from_secs(120);
const SECRET: &str = "checkpoint-store";

struct Setup {
    env: &'static Env,
    client: kube::Client,
    namespace: String,
    bucket: String,
    credentials: StoreCredentials,
}

async fn setup() -> Setup {
    let env = env();
    let (client, namespace) =
        namespace_with_operator("chk", &["checkpoints.incompleteGrace=3s"]).await;
    let s3 = env.s3().unwrap();
    let bucket = unique_name("checkpoints");
    s3.create_bucket(&bucket).await.unwrap();
    let pairs = [
        ("AWS_ACCESS_KEY_ID", s3.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key.clone()),
        ("AWS_REGION", REGION.to_owned()),
    ];
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "stringData": pairs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let credentials =
        StoreCredentials::from_pairs(pairs.map(|(key, value)| (key.to_owned(), value)));
    Setup {
        env,
        client,
        namespace,
        bucket,
        credentials,
    }
}

impl Setup {
    fn jobs(&self) -> Api<SessionJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn checkpoints_spec(&self, max_age: &str) -> serde_json::Value {
        json!({
            "location": format!("s3://{}/sessionizer", self.bucket),
            "endpoint": self.env.s3().unwrap().endpoint,
            "credentialsSecretRef": {"name": SECRET},
            "interval": "10s",
            "retain": 3,
            "maxAge": max_age,
        })
    }

    /// Applies the example job as `name`, with these checkpoints and the test app as image.
    async fn apply_job(&self, name: &str, max_age: &str) -> CheckpointStore {
        let kafka = self.env.kafka().unwrap();
        let manifest = install::example(
            "sessionjob.yaml",
            &[
                ("KAFKA_BOOTSTRAP", &kafka.bootstrap),
                ("SOURCE_TOPIC", &unique_name("pageviews")),
            ],
        )
        .unwrap();
        let mut job: serde_json::Value = serde_yaml::from_str(&manifest).unwrap();
        job["metadata"]["name"] = json!(name);
        job["spec"]["image"] = json!("sessionizer/e2e-testapp:dev");
        job["spec"]["parallelism"] = json!(1);
        job["spec"]["checkpoints"] = self.checkpoints_spec(max_age);
        let job: SessionJob = serde_json::from_value(job).unwrap();
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .unwrap();
        let spec: CheckpointsSpec = serde_json::from_value(self.checkpoints_spec(max_age)).unwrap();
        CheckpointStore::open(
            &spec,
            &self.namespace,
            name,
            &self.credentials,
            LocalDir::Create,
        )
        .unwrap()
    }

    /// Waits until the job `name` no longer exists.
    async fn wait_gone(&self, name: &str) {
        let jobs = self.jobs();
        wait::until("the SessionJob to be gone", TIMEOUT, || async {
            let job = jobs
                .get_opt(name)
                .await
                .map_err(Error::kube("reading job"))?;
            Ok::<_, Error>(job.is_none().then_some(()))
        })
        .await
        .unwrap();
    }
}

/// Writes checkpoint `id` of the one key group of a parallelism-1 job: the file, then (if
/// `complete`) the manifest.
async fn write(store: &CheckpointStore, job: &str, namespace: &str, id: &str, complete: bool) {
    let started = Timestamp::now();
    let checkpoint = KeyGroupCheckpoint {
        offsets: [("pageviews".to_owned(), 42)].into(),
        ..KeyGroupCheckpoint::default()
    };
    let entry = store.write_key_group(id, &checkpoint).await.unwrap();
    if complete {
        let scope = ManifestScope {
            namespace: namespace.to_owned(),
            job: job.to_owned(),
            partitions: 1,
            first_key_group: 0,
            end_key_group: 1,
            history_backend: HistoryBackend::Embedded,
        };
        let manifest = Manifest::new(&scope, id, started, Timestamp::now(), vec![entry], false);
        store.write_manifest(&manifest).await.unwrap();
    }
}

async fn ids(store: &CheckpointStore) -> Result<Vec<String>, Error> {
    let listings = store
        .list()
        .await
        .map_err(|e| Error::Other(format!("listing checkpoints: {e}")))?;
    Ok(listings.into_iter().map(|l| l.id).collect())
}

/// Waits until exactly `expected` checkpoint ids remain.
async fn wait_for_ids(store: &CheckpointStore, expected: &[String], what: &str) {
    wait::until(what, TIMEOUT, || async {
        let now = ids(store).await?;
        if now == expected {
            Ok(Some(()))
        } else {
            Err(Error::Other(format!("checkpoints now: {now:?}")))
        }
    })
    .await
    .unwrap();
}

/// Waits until the job's status shows `latest` as its newest checkpoint, `retained` kept.
async fn wait_for_status(setup: &Setup, job: &str, latest: &str, retained: i32) -> SessionJob {
    let jobs = setup.jobs();
    wait::until(
        "status.checkpoints to show the newest checkpoint",
        TIMEOUT,
        || async {
            let found = jobs.get(job).await.map_err(Error::kube("reading job"))?;
            let status = found.status.clone().unwrap_or_default();
            let checkpoints = status.checkpoints.clone().unwrap_or_default();
            if checkpoints.latest_id.as_deref() == Some(latest)
                && checkpoints.retained_count == Some(retained)
            {
                Ok(Some(found))
            } else {
                Err(Error::Other(format!(
                    "status.checkpoints now: {checkpoints:?}"
                )))
            }
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn retention_keeps_the_newest_three_and_removes_leftovers() {
    let setup = setup().await;
    let (job, ns) = ("retained", setup.namespace.clone());
    let store = setup.apply_job(job, "1h").await;

    // Ten complete checkpoints, ten seconds apart, ending now; an unfinished leftover older
    // than all of them.
    let now_ms = Timestamp::now().as_millisecond();
    let leftover = id_at(now_ms - 600_000);
    write(&store, job, &ns, &leftover, false).await;
    let complete: Vec<String> = (0..10).map(|i| id_at(now_ms - (9 - i) * 10_000)).collect();
    for id in &complete {
        write(&store, job, &ns, id, true).await;
    }

    let newest_three = complete[7..].to_vec();
    wait_for_ids(
        &store,
        &newest_three,
        "only the three newest complete checkpoints to remain",
    )
    .await;
    let found = wait_for_status(&setup, job, &complete[9], 3).await;
    let checkpoints = found.status.unwrap().checkpoints.unwrap();
    assert!(checkpoints.latest_bytes.unwrap_or(0) > 0, "{checkpoints:?}");
    assert!(checkpoints.latest_time.is_some(), "{checkpoints:?}");
    assert_eq!(
        found.metadata.finalizers.unwrap_or_default(),
        ["sessionizer.dev/checkpoints"]
    );

    // One Event summarizes each pass that deleted something.
    let events: Api<Event> = Api::namespaced(setup.client.clone(), &ns);
    wait::until("a CheckpointsDeleted event", TIMEOUT, || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(Error::kube("listing events"))?;
        let deleted = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("CheckpointsDeleted")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(job)
        });
        Ok::<_, Error>(deleted.then_some(()))
    })
    .await
    .unwrap();

    // deleteOnJobDeletion: true → deleting the job deletes its checkpoints, then the job goes.
    let patch = json!({"spec": {"checkpoints": {"deleteOnJobDeletion": true}}});
    setup
        .jobs()
        .patch(job, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    setup
        .jobs()
        .delete(job, &DeleteParams::default())
        .await
        .unwrap();
    setup.wait_gone(job).await;
    assert!(
        ids(&store).await.unwrap().is_empty(),
        "every checkpoint deleted"
    );
}

#[tokio::test]
async fn the_newest_checkpoint_outlives_max_age_and_a_deleted_job() {
    let setup = setup().await;
    let (job, ns) = ("aged", setup.namespace.clone());
    let store = setup.apply_job(job, "30s").await;

    // Two complete checkpoints, both hours older than maxAge.
    let now_ms = Timestamp::now().as_millisecond();
    let (older, newest) = (id_at(now_ms - 7_200_000), id_at(now_ms - 3_600_000));
    write(&store, job, &ns, &older, true).await;
    write(&store, job, &ns, &newest, true).await;
    wait_for_ids(
        &store,
        std::slice::from_ref(&newest),
        "the older checkpoint to go by maxAge",
    )
    .await;
    wait_for_status(&setup, job, &newest, 1).await;

    // Default deleteOnJobDeletion: the job goes, its checkpoints stay.
    setup
        .jobs()
        .delete(job, &DeleteParams::default())
        .await
        .unwrap();
    setup.wait_gone(job).await;
    assert_eq!(ids(&store).await.unwrap(), [newest]);
    let remaining = store.list().await.unwrap();
    assert!(remaining[0].is_complete());
}
