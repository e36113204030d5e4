//! The PodDisruptionBudget of a job's workers: voluntary disruptions (node drains) take at most
//! one worker at a time, so a drain never stops the whole job. It must never block the
//! operator's own scaling (PDBs do not apply to StatefulSet scale-down).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ValidatedJob, metadata, selector_labels};
use crate::names;

/// `<job>` with `maxUnavailable: 1` over the job's worker Pods.
pub fn pdb(job: &ValidatedJob) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(job, names::pdb(&job.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            // A worker that is not ready serves nothing: let drains evict it instead of blocking.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(job)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_job::fixtures;

    #[test]
    fn at_most_one_worker_is_disrupted() {
        let pdb = pdb(&fixtures::valid_full());
        assert_eq!(pdb.metadata.name.as_deref(), Some("pageviews-v2"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        let labels = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["app.kubernetes.io/instance"], "pageviews-v2");
    }
}
