//! The *validate* step: turns an admitted `SessionJob` into a [`ValidatedJob`] the builders can
//! trust, or says precisely why it cannot run.
//!
//! The API server already enforces the schema and its CEL rules; what is checked here is what the
//! schema cannot express or what an object stored before a rule existed may still carry: duration
//! and size strings that do not parse, a DeadLetter sink without a topic, a name too long for the
//! children's names. Pure: no client, no clock. It must never "fix" a spec: an invalid job waits
//! for its owner to change it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use sessionizer_crds::session_job::{
    HistoryBackend, SessionJob, SessionJobSpec, SessionSettings, SinkMode, SpecError,
};

use crate::names;

/// Why a SessionJob cannot be run as it is. Each variant is a spec problem the owner must fix;
/// the operator reports it in status and waits for a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The object has no namespace or uid (never the case for objects from the API server).
    #[error("the SessionJob has no {0}")]
    MissingMetadata(&'static str),
    /// The name does not leave room for the names of the worker objects.
    #[error(
        "metadata.name {name:?} cannot name the worker objects: it must be a DNS label (lowercase letters, digits and '-', starting with a letter) of at most {max} characters",
        max = names::MAX_JOB_NAME_LEN
    )]
    UnusableName {
        /// The job's name.
        name: String,
    },
    /// `spec.parallelism` below one (possible only for objects stored before the rule existed).
    #[error("spec.parallelism is {0}; it must be at least 1")]
    Parallelism(i32),
    /// A duration or size field does not parse.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The effective sink mode has no topic.
    #[error("the sink mode {mode} has no topic: set spec.sink.deadLetterTopic")]
    SinkTopic {
        /// The effective sink mode.
        mode: &'static str,
    },
    /// `spec.checkpoints.location` is not a supported URL.
    #[error("spec.checkpoints.location {0:?} is not a file://, s3://, gs:// or az:// URL")]
    CheckpointLocation(String),
    /// The Aerospike backend without its connection settings.
    #[error("spec.history.aerospike is required when spec.history.backend is Aerospike")]
    AerospikeMissing,
}

impl Error {
    /// The `reason` of the Degraded condition and of the Event reporting this error.
    pub fn reason(&self) -> &'static str {
        "InvalidSpec"
    }
}

/// A SessionJob that passed validation, with everything the builders need resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedJob {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The controller owner reference every child carries.
    pub owner: OwnerReference,
    /// The spec as admitted (never modified).
    pub spec: SessionJobSpec,
    /// Session settings, parsed.
    pub session: SessionSettings,
    /// The sink the workers write to now: `status.effectiveSink.mode`, or
    /// `spec.sink.initialMode` before the first status was written.
    pub effective_sink: SinkMode,
    /// The topic of [`Self::effective_sink`].
    pub sink_topic: String,
    /// The Kafka consumer group of the workers.
    pub consumer_group: String,
    /// The operator holds the job stopped (zero replicas): a cutover stopped it with a final
    /// checkpoint, or it was retired. Set from the cutovers, never from the spec.
    pub held: bool,
}

/// Validates `job`; see the module documentation for what is checked.
pub fn validate(job: &SessionJob) -> Result<ValidatedJob, Error> {
    let name = job.name_any();
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let owner = job
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    if !usable_name(&name) {
        return Err(Error::UnusableName { name });
    }
    let spec = &job.spec;
    if spec.parallelism < 1 {
        return Err(Error::Parallelism(spec.parallelism));
    }
    let session = spec.session_settings()?;
    spec.history_ttl()?;
    spec.checkpoint_interval()?;
    spec.checkpoint_max_age()?;
    spec.warmup()?;
    if spec.checkpoints.scheme().is_none() {
        return Err(Error::CheckpointLocation(spec.checkpoints.location.clone()));
    }
    if spec.history.backend == HistoryBackend::Aerospike && spec.history.aerospike.is_none() {
        return Err(Error::AerospikeMissing);
    }
    let effective_sink = effective_sink_mode(job);
    let sink_topic = spec
        .sink
        .topic_for(effective_sink)
        .ok_or(Error::SinkTopic {
            mode: effective_sink.as_str(),
        })?
        .to_string();
    Ok(ValidatedJob {
        consumer_group: job.consumer_group(),
        name,
        namespace,
        owner,
        spec: spec.clone(),
        session,
        effective_sink,
        sink_topic,
        held: false,
    })
}

/// The sink mode the workers must use: the one in status once the operator recorded it (only a
/// cutover changes it), else the spec's initial mode.
pub fn effective_sink_mode(job: &SessionJob) -> SinkMode {
    job.status
        .as_ref()
        .and_then(|status| status.effective_sink.as_ref())
        .map_or(job.spec.sink.initial_mode, |sink| sink.mode)
}

/// A DNS-1035 label short enough for `<name>-worker` plus a revision hash: the Service name must
/// be a DNS-1035 label and the StatefulSet's revision label at most 63 characters.
fn usable_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= names::MAX_JOB_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use sessionizer_crds::session_job::{EffectiveSink, SessionJobStatus};

    use super::*;
    use crate::session_job::fixtures;

    #[test]
    fn minimal_job_is_valid_with_its_defaults() {
        let job = validate(&fixtures::minimal()).unwrap();
        assert_eq!(job.name, "pageviews");
        assert_eq!(job.namespace, "analytics");
        assert_eq!(job.effective_sink, SinkMode::Production);
        assert_eq!(job.sink_topic, "sessions");
        assert_eq!(job.consumer_group, "pageviews");
        assert_eq!(job.owner.controller, Some(true));
        assert_eq!(job.owner.kind, "SessionJob");
    }

    #[test]
    fn full_job_starts_in_its_initial_dead_letter_mode() {
        let job = validate(&fixtures::full()).unwrap();
        assert_eq!(job.effective_sink, SinkMode::DeadLetter);
        assert_eq!(job.sink_topic, "sessions-v2-dlq");
        assert_eq!(job.consumer_group, "sessionizer.pageviews-v2");
    }

    #[test]
    fn status_sink_wins_over_the_initial_mode() {
        let mut job = fixtures::full();
        job.status = Some(SessionJobStatus {
            effective_sink: Some(EffectiveSink {
                mode: SinkMode::Production,
                topic: "sessions".into(),
                since: None,
            }),
            ..Default::default()
        });
        let job = validate(&job).unwrap();
        assert_eq!(job.effective_sink, SinkMode::Production);
        assert_eq!(job.sink_topic, "sessions");
    }

    #[test]
    fn unparseable_duration_from_an_older_schema_is_reported_by_field() {
        let mut job = fixtures::minimal();
        job.spec.session.gap = "7d".into();
        let error = validate(&job).unwrap_err();
        assert!(matches!(error, Error::Spec(_)), "{error:?}");
        assert!(error.to_string().contains("spec.session.gap"), "{error}");
    }

    #[test]
    fn dead_letter_without_topic_is_invalid() {
        let mut job = fixtures::minimal();
        job.spec.sink.initial_mode = SinkMode::DeadLetter;
        assert_eq!(
            validate(&job).unwrap_err(),
            Error::SinkTopic { mode: "DeadLetter" }
        );
    }

    #[test]
    fn names_that_cannot_name_a_service_are_invalid() {
        for name in [
            "page.views",
            "9lives",
            &"a".repeat(names::MAX_JOB_NAME_LEN + 1),
        ] {
            let mut job = fixtures::minimal();
            job.metadata.name = Some(name.into());
            assert!(
                matches!(validate(&job), Err(Error::UnusableName { .. })),
                "{name}"
            );
        }
        let mut job = fixtures::minimal();
        job.metadata.name = Some("a".repeat(names::MAX_JOB_NAME_LEN));
        assert!(validate(&job).is_ok());
    }

    #[test]
    fn unsupported_checkpoint_location_is_invalid() {
        let mut job = fixtures::minimal();
        job.spec.checkpoints.location = "ftp://example/checkpoints".into();
        assert!(matches!(validate(&job), Err(Error::CheckpointLocation(_))));
    }

    #[test]
    fn zero_parallelism_from_an_older_schema_is_invalid() {
        let mut job = fixtures::minimal();
        job.spec.parallelism = 0;
        assert_eq!(validate(&job).unwrap_err(), Error::Parallelism(0));
    }
}
