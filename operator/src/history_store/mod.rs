//! The Aerospike high-water-mark monitor (DESIGN §6): for each SessionJob on the Aerospike
//! backend, every `highWaterMark.pollInterval` the SessionJob reconcile asks every node for the
//! namespace's statistics ([`probe`]), reads both naming schemes ([`stats`]), decides each node's
//! level and takes the worst node ([`level`]), and keeps a short history of (time, used %) per job
//! to project when the eviction mark will be reached. [`publish`] turns the resulting [`Report`]
//! into `status.historyStore` and the `HistoryStoreCapacity` condition, [`gauges`] into
//! Prometheus gauges; the level-change
//! Events come from the reconcile's status comparison.
//!
//! Between polls the last report is reused, so reconciles triggered by other changes neither
//! probe again nor change the status. An unreachable cluster is its own level, never "healthy".
//! This module never writes to Aerospike and never stores a password.

pub mod gauges;
pub mod level;
pub mod probe;
pub mod publish;
pub mod stats;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};
use sessionizer_crds::session_job::{AerospikeSpec, HistoryBackend, HistoryStoreLevel, SessionJob};

use level::Assessment;
use probe::Target;

/// How long growth samples are kept for the projection.
pub const SAMPLE_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many samples per node.
pub const MAX_SAMPLES: usize = 240;
/// Poll interval used when the spec's cannot be parsed (validation normally rejects that).
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(30);

/// The outcome of one probe of a job's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The worst node's assessment; `None` when no node could be read.
    pub worst: Option<Assessment>,
    /// Why the cluster (or some nodes) could not be read.
    pub problems: Vec<String>,
    /// Nodes that answered.
    pub nodes_answered: usize,
    /// When the probe ran (whole seconds).
    pub probed_at: Time,
    /// Seconds from `probed_at` until the worst node reaches its eviction mark.
    pub seconds_to_eviction_mark: Option<f64>,
}

impl Report {
    /// The level the job's status reports.
    pub fn level(&self) -> HistoryStoreLevel {
        self.worst
            .as_ref()
            .map_or(HistoryStoreLevel::Unreachable, |w| w.level)
    }
}

struct JobState {
    target: Target,
    warn_margin: i32,
    probed: Instant,
    report: Report,
    /// (unix seconds, used %) per node.
    samples: BTreeMap<String, VecDeque<(f64, f64)>>,
}

/// Per-job monitor state, shared by reconciles through the Context.
#[derive(Default)]
pub struct Monitor {
    jobs: Mutex<HashMap<(String, String), JobState>>,
}

impl Monitor {
    /// The current report for `job` and how long until the next probe is due; `None` when the
    /// job does not use Aerospike. Probes when the last probe is older than the poll interval or
    /// the connection settings changed; otherwise returns the last report.
    pub async fn observe(
        &self,
        client: &Client,
        job: &SessionJob,
        namespace: &str,
        now: &Time,
    ) -> Option<(Report, Duration)> {
        let key = (
            namespace.to_owned(),
            job.metadata.name.clone().unwrap_or_default(),
        );
        let spec = match (&job.spec.history.backend, &job.spec.history.aerospike) {
            (HistoryBackend::Aerospike, Some(spec)) => spec,
            _ => {
                self.forget(&key);
                return None;
            }
        };
        let interval = spec
            .high_water_mark
            .poll_interval
            .to_duration()
            .unwrap_or(FALLBACK_INTERVAL)
            .max(Duration::from_millis(200));
        let warn_margin = spec.high_water_mark.warn_margin;
        let target = match target(client, namespace, spec).await {
            Ok(target) => target,
            Err(problem) => {
                let report = self.record_failure(&key, None, warn_margin, problem, now);
                return Some((report, interval));
            }
        };
        if let Some(state) = self.lock().get(&key)
            && state.target == target
            && state.warn_margin == warn_margin
            && state.probed.elapsed() < interval
        {
            return Some((state.report.clone(), interval - state.probed.elapsed()));
        }
        let report = match probe::probe(&target).await {
            Err(error) => {
                self.record_failure(&key, Some(target), warn_margin, error.to_string(), now)
            }
            Ok(answers) => self.record(&key, target, warn_margin, answers, now),
        };
        Some((report, interval))
    }

    /// Forgets a job (it was deleted or no longer uses Aerospike).
    pub fn forget(&self, key: &(String, String)) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), JobState>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_failure(
        &self,
        key: &(String, String),
        target: Option<Target>,
        warn_margin: i32,
        problem: String,
        now: &Time,
    ) -> Report {
        tracing::warn!(problem = %problem, "the history store capacity could not be measured");
        let report = Report {
            worst: None,
            problems: vec![problem],
            nodes_answered: 0,
            probed_at: now.clone(),
            seconds_to_eviction_mark: None,
        };
        let mut jobs = self.lock();
        let samples = jobs.remove(key).map(|s| s.samples).unwrap_or_default();
        if let Some(target) = target {
            jobs.insert(
                key.clone(),
                JobState {
                    target,
                    warn_margin,
                    probed: Instant::now(),
                    report: report.clone(),
                    samples,
                },
            );
        }
        report
    }

    fn record(
        &self,
        key: &(String, String),
        target: Target,
        warn_margin: i32,
        answers: Vec<probe::NodeAnswer>,
        now: &Time,
    ) -> Report {
        let unix = now.0.as_second() as f64;
        let mut jobs = self.lock();
        let mut samples = jobs.remove(key).map(|s| s.samples).unwrap_or_default();
        let mut assessments = Vec::new();
        let mut problems = Vec::new();
        for answer in answers {
            match answer.figures {
                Ok(figures) => {
                    let assessment = level::assess(&figures, f64::from(warn_margin));
                    let history = samples.entry(answer.node).or_default();
                    history.push_back((unix, assessment.used_percent));
                    while history.len() > MAX_SAMPLES
                        || history
                            .front()
                            .is_some_and(|(t, _)| unix - t > SAMPLE_WINDOW.as_secs_f64())
                    {
                        history.pop_front();
                    }
                    assessments.push(assessment);
                }
                Err(problem) => problems.push(problem),
            }
        }
        samples.retain(|node, _| assessments.iter().any(|a| &a.node == node));
        let nodes_answered = assessments.len();
        let worst = level::worst(assessments);
        let seconds_to_eviction_mark = worst.as_ref().and_then(|w| {
            let mark = w.eviction_mark.percent()?;
            let history: Vec<_> = samples.get(&w.node)?.iter().copied().collect();
            level::seconds_to_mark(&history, mark)
        });
        let report = Report {
            worst,
            problems,
            nodes_answered,
            probed_at: now.clone(),
            seconds_to_eviction_mark,
        };
        jobs.insert(
            key.clone(),
            JobState {
                target,
                warn_margin,
                probed: Instant::now(),
                report: report.clone(),
                samples,
            },
        );
        report
    }
}

/// The probe target of `spec`, with the credentials from its Secret.
async fn target(client: &Client, namespace: &str, spec: &AerospikeSpec) -> Result<Target, String> {
    if spec.tls.is_some() {
        return Err(probe::Error::TlsUnsupported.to_string());
    }
    let credentials = match &spec.credentials_secret_ref {
        None => None,
        Some(reference) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let name = reference.name.as_str();
            let secret = secrets.get(name).await.map_err(|error| {
                format!(
                    "reading Secret {name}: {}",
                    crate::session_job::apply::describe(&error)
                )
            })?;
            let data = secret.data.unwrap_or_default();
            Some((
                key_text(&data, name, &reference.username_key)?,
                key_text(&data, name, &reference.password_key)?,
            ))
        }
    };
    Ok(Target {
        hosts: spec
            .hosts
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(","),
        namespace: spec.namespace.clone(),
        timeout: spec.timeout.to_duration().unwrap_or(Duration::from_secs(1)),
        credentials,
    })
}

fn key_text(
    data: &BTreeMap<String, ByteString>,
    secret: &str,
    key: &str,
) -> Result<String, String> {
    let bytes = data
        .get(key)
        .ok_or_else(|| format!("Secret {secret} has no key {key}"))?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| format!("key {key} of Secret {secret} is not UTF-8 text"))
}
