//! The job's ConfigMap: the worker configuration (`WorkerConfig`, the operator-worker contract)
//! as one YAML file, and the hash of it that rolls the Pods when it changes.
//!
//! Settings the workers reload live (`history.ttl`) reach them through the ConfigMap alone: they
//! are left out of the hash ([`pod_config_hash`]), so changing them never restarts a worker.
//!
//! The effective sink comes from the validated job (status first, then the spec's initial mode),
//! never from the spec alone, so a cutover can flip it without touching the spec.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::ConfigMap;
use sessionizer_crds::session_job::DEFAULT_TTL;
use sessionizer_worker::config::{CONFIG_FILE_NAME, WorkerConfig};
use sha2::{Digest, Sha256};

use super::{Error, ValidatedJob, metadata};
use crate::names;

/// The configuration the job's workers run with.
pub fn worker_config(job: &ValidatedJob) -> WorkerConfig {
    WorkerConfig {
        job: job.name.clone(),
        namespace: job.namespace.clone(),
        effective_sink: job.effective_sink,
        spec: job.spec.clone(),
    }
}

/// The ConfigMap holding [`worker_config`] under `CONFIG_FILE_NAME`.
pub fn config_map(job: &ValidatedJob) -> Result<ConfigMap, Error> {
    let yaml = worker_config(job).to_yaml().map_err(Error::WorkerConfig)?;
    Ok(ConfigMap {
        metadata: metadata(job, names::config_map(&job.name)),
        data: Some(BTreeMap::from([(CONFIG_FILE_NAME.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}

/// The value of the `sessionizer.dev/config-hash` pod template annotation of `job`: the
/// [`config_hash`] of its ConfigMap with every live-reloadable setting at a fixed value.
///
/// This is the one place that decides which configuration changes restart the workers; a setting
/// the worker can reload live is left out here ([`without_live_settings`]), not anywhere else.
pub fn pod_config_hash(job: &ValidatedJob) -> Result<String, Error> {
    Ok(config_hash(&config_map(&without_live_settings(job))?))
}

/// `job` with the settings workers apply without a restart pinned to a constant: `history.ttl`
/// (new writes carry the new TTL as soon as the worker reloads its configuration file).
fn without_live_settings(job: &ValidatedJob) -> ValidatedJob {
    let mut pinned = job.clone();
    pinned.spec.history.ttl = DEFAULT_TTL.into();
    pinned
}

/// Hex sha256 over the ConfigMap's data (keys in order, each key and value followed by a NUL
/// byte).
pub fn config_hash(config_map: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use sessionizer_crds::session_job::SinkMode;

    use super::*;
    use crate::session_job::fixtures;

    #[test]
    fn config_map_holds_the_worker_configuration() {
        let job = fixtures::valid_full();
        let config_map = config_map(&job).unwrap();
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some("pageviews-v2-config")
        );
        let data = config_map.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["worker.yaml"]);
        let config: WorkerConfig = serde_yaml::from_str(&data["worker.yaml"]).unwrap();
        assert_eq!(config.job, "pageviews-v2");
        assert_eq!(config.namespace, "analytics");
        assert_eq!(config.effective_sink, SinkMode::DeadLetter);
        assert_eq!(config.spec, fixtures::full().spec);
    }

    #[test]
    fn config_map_never_contains_secret_values() {
        let data = config_map(&fixtures::valid_full()).unwrap().data.unwrap();
        let yaml = &data["worker.yaml"];
        // Only the Secret references are in the configuration.
        assert!(yaml.contains("sessionizer-kafka-user"));
        assert!(!yaml.to_lowercase().contains("password:"), "{yaml}");
    }

    #[test]
    fn hash_is_stable_and_changes_with_the_configuration() {
        let job = fixtures::valid_minimal();
        let hash = config_hash(&config_map(&job).unwrap());
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, config_hash(&config_map(&job).unwrap()), "stable");

        let mut changed = job.clone();
        changed.spec.session.gap = "45m".into();
        assert_ne!(hash, config_hash(&config_map(&changed).unwrap()), "gap");

        let mut flipped = job.clone();
        flipped.effective_sink = SinkMode::DeadLetter;
        assert_ne!(hash, config_hash(&config_map(&flipped).unwrap()), "sink");
    }

    #[test]
    fn ttl_change_updates_the_config_map_but_not_the_statefulset() {
        let job = fixtures::valid_full();
        let mut retuned = job.clone();
        retuned.spec.history.ttl = "72h".into();
        let before = crate::session_job::build::children(&job).unwrap();
        let after = crate::session_job::build::children(&retuned).unwrap();
        assert_ne!(
            before.config_map, after.config_map,
            "the new TTL reaches the workers"
        );
        let yaml = &after.config_map.data.as_ref().unwrap()["worker.yaml"];
        assert!(yaml.contains("ttl: 72h"), "{yaml}");
        assert_eq!(
            before.statefulset, after.statefulset,
            "no rollout for a TTL change"
        );
        assert_eq!(
            serde_json::to_string(&before.statefulset).unwrap(),
            serde_json::to_string(&after.statefulset).unwrap()
        );
    }

    #[test]
    fn pod_hash_still_follows_every_other_setting() {
        let job = fixtures::valid_full();
        let hash = pod_config_hash(&job).unwrap();
        let mut gap = job.clone();
        gap.spec.session.gap = "50m".into();
        assert_ne!(hash, pod_config_hash(&gap).unwrap(), "gap");
        let mut ttl_and_gap = gap.clone();
        ttl_and_gap.spec.history.ttl = "24h".into();
        assert_eq!(
            pod_config_hash(&gap).unwrap(),
            pod_config_hash(&ttl_and_gap).unwrap()
        );
    }

    #[test]
    fn hash_separates_keys_from_values() {
        let with = |key: &str, value: &str| ConfigMap {
            data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..ConfigMap::default()
        };
        assert_ne!(config_hash(&with("ab", "c")), config_hash(&with("a", "bc")));
    }
}
