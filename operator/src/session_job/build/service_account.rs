//! The workers' ServiceAccount: an identity with no permissions. Workers never call the
//! Kubernetes API, so the token is not even mounted; this builder must never grant anything.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{ValidatedJob, metadata};
use crate::names;

/// `<job>-worker`, with `automountServiceAccountToken: false` and no RBAC bindings.
pub fn service_account(job: &ValidatedJob) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(job, names::service_account(&job.name)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_job::fixtures;

    #[test]
    fn workers_get_an_account_without_a_token() {
        let account = service_account(&fixtures::valid_minimal());
        assert_eq!(account.metadata.name.as_deref(), Some("pageviews-worker"));
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(account.secrets, None);
    }
}
