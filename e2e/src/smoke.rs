//! The checks that prove each part of the environment is real: a StatefulSet of a small test
//! binary run by the node agent, a Kafka produce/consume round trip and an S3 write/read round
//! trip. The smoke tests assert on them and the demo prints them, so both exercise the same code.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka::{Kafka, kafka_err};
use crate::s3::S3Server;
use crate::{Error, Result, wait};

/// The image name the node agent maps to the `e2e-testapp` binary.
pub const TESTAPP_IMAGE: &str = "sessionizer/e2e-testapp:dev";

/// The port the test application listens on, at its Pod IP.
pub const TESTAPP_PORT: u16 = 8080;

/// A StatefulSet (and its headless Service) running `replicas` copies of the test application,
/// with HTTP readiness and liveness probes and its Pod IP from the downward API.
pub fn testapp_statefulset(name: &str, replicas: i32) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  clusterIP: None
  selector:
    app: {name}
  ports:
  - name: http
    port: {TESTAPP_PORT}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}
  replicas: {replicas}
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
        env:
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: PORT
          value: "{TESTAPP_PORT}"
        readinessProbe:
          httpGet:
            path: /readyz
            port: {TESTAPP_PORT}
          periodSeconds: 1
        livenessProbe:
          httpGet:
            path: /healthz
            port: {TESTAPP_PORT}
          periodSeconds: 2
"#
    )
}

/// Whether a Pod is Running with its Ready condition True.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Waits until exactly `count` Pods match `selector` in `namespace`, all Running and Ready, and
/// returns them sorted by name.
pub async fn wait_ready_pods(
    pods: &Api<Pod>,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Pod>> {
    let params = ListParams::default().labels(selector);
    let what = format!("{count} Running and Ready pods matching {selector}");
    wait::until(&what, timeout, || async {
        let list = pods
            .list(&params)
            .await
            .map_err(Error::kube("listing pods"))?;
        let mut ready: Vec<Pod> = list.items.into_iter().collect();
        let summary = pod_summary(&ready);
        ready.retain(is_running_and_ready);
        if ready.len() == count && summary.len() == count {
            ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            Ok(Some(ready))
        } else {
            Err(Error::Other(format!("pods now: {summary:?}")))
        }
    })
    .await
}

/// Name → phase (and readiness) of each Pod, for progress and failure messages.
pub fn pod_summary(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Unknown".into());
            let ready = if is_running_and_ready(pod) {
                "/Ready"
            } else {
                ""
            };
            (name, format!("{phase}{ready}"))
        })
        .collect()
}

/// Produces `payload` to partition 0 of `topic` and consumes it back from the beginning of the
/// partition, returning what was read.
pub async fn kafka_roundtrip(kafka: &Kafka, topic: &str, payload: &str) -> Result<String> {
    kafka.create_topic(topic, 1).await?;
    let producer: FutureProducer = kafka
        .client_config()
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(kafka_err("creating a producer"))?;
    producer
        .send(
            FutureRecord::to(topic)
                .key("smoke")
                .payload(payload)
                .partition(0),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| kafka_err("producing")(e))?;

    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka_err("creating a consumer"))?;
    consumer
        .subscribe(&[topic])
        .map_err(kafka_err("subscribing"))?;
    let mut stream = consumer.stream();
    let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .map_err(|_| Error::Other(format!("no message arrived on {topic} within 60s")))?
        .ok_or_else(|| Error::Other(format!("the consumer of {topic} stopped")))?
        .map_err(kafka_err("consuming"))?;
    let body = message
        .payload_view::<str>()
        .transpose()
        .map_err(|e| Error::Other(format!("payload is not UTF-8: {e}")))?
        .unwrap_or_default()
        .to_owned();
    Ok(body)
}

/// Creates `bucket`, writes `body` at `key` through `object_store` and reads it back.
pub async fn s3_roundtrip(s3: &S3Server, bucket: &str, key: &str, body: &[u8]) -> Result<Vec<u8>> {
    s3.create_bucket(bucket).await?;
    let store = s3.object_store(bucket)?;
    let path = ObjectPath::from(key);
    store
        .put(&path, body.to_vec().into())
        .await
        .map_err(|e| Error::S3(format!("put {bucket}/{key}: {e}")))?;
    let read = store
        .get(&path)
        .await
        .map_err(|e| Error::S3(format!("get {bucket}/{key}: {e}")))?
        .bytes()
        .await
        .map_err(|e| Error::S3(format!("reading {bucket}/{key}: {e}")))?;
    Ok(read.to_vec())
}
