//! The operator's side of the worker HTTP contract: find a job's worker Pods, read their
//! `/status`, and ask them to stop with a final checkpoint (`POST /control/stop`).
//!
//! Parsing is lenient (every field defaults) so the operator works with workers older or newer
//! than itself. This module never decides anything: the cutover and side-run logic interpret
//! what it returns. It must never call a worker outside the job's own Pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use sessionizer_worker::config::HTTP_PORT;

use crate::names::labels;

/// How long one HTTP call to a worker may take. Stopping includes writing a checkpoint.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `POST /control/stop` may take (it answers once the final checkpoint is stored).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a worker could not be read or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the job's Pods failed.
    #[error("listing the worker Pods of {job}: {source}")]
    ListPods {
        /// The job.
        job: String,
        /// The API error.
        source: kube::Error,
    },
    /// A Pod has no IP yet.
    #[error("worker Pod {0} has no IP yet")]
    NoPodIp(String),
    /// The HTTP call failed.
    #[error("calling {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// The worker answered with an error.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The answer's body (the worker's `error`).
        body: String,
    },
}

/// One worker Pod of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPod {
    /// The Pod's name.
    pub name: String,
    /// Its IP.
    pub ip: Option<String>,
    /// Whether it is being deleted.
    pub terminating: bool,
}

/// The part of a worker's `/status` the operator reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerReport {
    /// `Starting`, `Running`, `Stopping` or `Stopped` (empty for workers before the field).
    pub phase: String,
    /// Records produced but not acknowledged yet.
    pub in_flight: i64,
    /// Totals since the worker started.
    pub counters: Counters,
    /// The streaming state.
    pub stream: Option<StreamReport>,
}

/// Counters of a worker since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Counters {
    /// Records consumed.
    pub records: i64,
    /// Malformed records (quarantined).
    pub malformed: i64,
    /// Sessions closed and emitted.
    pub sessions_closed: i64,
    /// Late updates emitted.
    pub late_updates: i64,
}

/// `stream` of `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamReport {
    /// Partition count of the sources.
    pub partitions: u32,
    /// Whether the engine runs.
    pub running: bool,
    /// Key groups this worker owns.
    pub key_groups: Vec<KeyGroupReport>,
}

/// One key group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyGroupReport {
    /// The key group.
    pub key_group: u32,
    /// Its source partitions.
    pub partitions: Vec<PartitionReport>,
}

/// One source partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PartitionReport {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to consume.
    pub position: Option<i64>,
    /// Log-end offset.
    pub log_end_offset: Option<i64>,
}

/// The worker Pods of `job` in `namespace`.
pub async fn pods(client: &Client, namespace: &str, job: &str) -> Result<Vec<WorkerPod>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={},{}={job}",
        labels::NAME,
        labels::WORKER_APP,
        labels::INSTANCE
    );
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListPods {
            job: job.to_owned(),
            source,
        })?;
    let mut pods: Vec<WorkerPod> = list
        .items
        .iter()
        .map(|pod| WorkerPod {
            name: pod.name_any(),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

fn url(pod: &WorkerPod, path: &str) -> Result<String, Error> {
    let ip = pod
        .ip
        .as_ref()
        .ok_or_else(|| Error::NoPodIp(pod.name.clone()))?;
    Ok(format!("http://{ip}:{HTTP_PORT}{path}"))
}

/// `GET /status` of one worker.
pub async fn status(http: &reqwest::Client, pod: &WorkerPod) -> Result<WorkerReport, Error> {
    let url = url(pod, "/status")?;
    let response = http
        .get(&url)
        .timeout(STATUS_TIMEOUT)
        .send()
        .await
        .map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
    let code = response.status();
    if !code.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(Error::Refused {
            url,
            status: code.as_u16(),
            body,
        });
    }
    response
        .json()
        .await
        .map_err(|source| Error::Http { url, source })
}

/// `POST /control/stop` with `checkpoint_id`: returns once the worker stored its final
/// checkpoint. Idempotent on the worker's side.
pub async fn stop(
    http: &reqwest::Client,
    pod: &WorkerPod,
    checkpoint_id: &str,
) -> Result<(), Error> {
    let url = url(pod, "/control/stop")?;
    let response = http
        .post(&url)
        .timeout(STOP_TIMEOUT)
        .json(&serde_json::json!({ "checkpointId": checkpoint_id }))
        .send()
        .await
        .map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
    let code = response.status();
    if code.is_success() {
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        Err(Error::Refused {
            url,
            status: code.as_u16(),
            body,
        })
    }
}

/// Sums the counters of a job's workers.
pub fn totals(reports: &[WorkerReport]) -> Counters {
    reports.iter().fold(Counters::default(), |mut sum, r| {
        sum.records += r.counters.records;
        sum.malformed += r.counters.malformed;
        sum.sessions_closed += r.counters.sessions_closed;
        sum.late_updates += r.counters.late_updates;
        sum
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_todays_worker_parses_without_the_new_fields() {
        let body = r#"{"job":"a","namespace":"n","podName":"a-0","ordinal":0,"replicas":1,
            "effectiveSink":"Production","version":"0.1.0","ready":true,"uptimeSeconds":3,
            "stream":{"partitions":2,"firstKeyGroup":0,"endKeyGroup":2,"running":true,
              "keyGroups":[{"keyGroup":0,"openSessions":1,"partitions":[
                {"topic":"t","partition":0,"position":5,"logEndOffset":5,"lag":0}]}],
              "history":{"ok":true}}}"#;
        let report: WorkerReport = serde_json::from_str(body).unwrap();
        assert_eq!(report.phase, "");
        assert_eq!(report.in_flight, 0);
        let stream = report.stream.unwrap();
        assert_eq!(stream.key_groups[0].partitions[0].position, Some(5));
    }

    #[test]
    fn status_with_the_cutover_fields_parses() {
        let body = r#"{"phase":"Stopped","inFlight":3,"counters":{"records":10,"malformed":1,
            "sessionsClosed":4,"lateUpdates":2,"duplicates":9},"lastCheckpoint":null}"#;
        let report: WorkerReport = serde_json::from_str(body).unwrap();
        assert_eq!(report.phase, "Stopped");
        assert_eq!(report.in_flight, 3);
        assert_eq!(report.counters.sessions_closed, 4);
        let totals = totals(&[report.clone(), report]);
        assert_eq!(totals.records, 20);
        assert_eq!(totals.late_updates, 4);
    }
}
