//! Test fixtures: the SessionJob examples of `crds/tests/fixtures` (the same files the API
//! server tests use) plus the operator's own under `operator/tests/fixtures`, given the metadata
//! the API server would add (uid, generation). Compiled into unit tests only.

use k8s_openapi::api::apps::v1::StatefulSet;
use sessionizer_crds::session_job::SessionJob;

use super::validate::{ValidatedJob, validate};

/// The uid every fixture job gets.
pub const UID: &str = "5f0c4c7e-3b1a-4d7e-9a51-7c2f0e9b1d22";

fn job(yaml: &str) -> SessionJob {
    let mut job: SessionJob = serde_yaml::from_str(yaml).expect("fixture is a SessionJob");
    job.metadata.uid.get_or_insert_with(|| UID.to_owned());
    job.metadata.generation.get_or_insert(1);
    job
}

/// `crds/tests/fixtures/sessionjob-minimal.yaml`: `pageviews`, defaults everywhere.
pub fn minimal() -> SessionJob {
    job(include_str!(
        "../../../crds/tests/fixtures/sessionjob-minimal.yaml"
    ))
}

/// `crds/tests/fixtures/sessionjob-full.yaml`: `pageviews-v2`, every field set.
pub fn full() -> SessionJob {
    job(include_str!(
        "../../../crds/tests/fixtures/sessionjob-full.yaml"
    ))
}

/// `operator/tests/fixtures/sessionjob-running.yaml`: a running job with status.
pub fn running() -> SessionJob {
    job(include_str!("../../tests/fixtures/sessionjob-running.yaml"))
}

/// [`minimal`], validated.
pub fn valid_minimal() -> ValidatedJob {
    validate(&minimal()).expect("minimal fixture is valid")
}

/// [`full`], validated.
pub fn valid_full() -> ValidatedJob {
    validate(&full()).expect("full fixture is valid")
}

/// The StatefulSet of [`full`] with all 4 workers ready.
pub fn statefulset_ready() -> StatefulSet {
    serde_yaml::from_str(include_str!("../../tests/fixtures/statefulset-ready.yaml"))
        .expect("fixture is a StatefulSet")
}

/// The StatefulSet of [`full`] halfway through a rollout.
pub fn statefulset_rolling() -> StatefulSet {
    serde_yaml::from_str(include_str!(
        "../../tests/fixtures/statefulset-rolling.yaml"
    ))
    .expect("fixture is a StatefulSet")
}
