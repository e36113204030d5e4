//! `spec.podTemplate`: the few pod settings users may override on the worker pods. The operator
//! owns the rest of the pod template (containers, probes, volumes, the selector labels).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext, Toleration};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Label and annotation keys with this prefix belong to the operator.
pub const RESERVED_PREFIX: &str = "sessionizer.dev/";

/// Overrides merged into the worker pods' template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra labels on the worker pods (at most 64). Keys with the `sessionizer.dev/` prefix are
    /// reserved for the operator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('sessionizer.dev/'))")
        .message("podTemplate.labels must not use the reserved prefix sessionizer.dev/"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the worker pods (at most 64). Keys with the `sessionizer.dev/`
    /// prefix are reserved for the operator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('sessionizer.dev/'))")
        .message("podTemplate.annotations must not use the reserved prefix sessionizer.dev/"))]
    pub annotations: BTreeMap<String, String>,
    /// Node labels a node must have to run a worker pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod-level security context of the worker pods. Unset: the operator's default
    /// (non-root, `RuntimeDefault` seccomp profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Security context of the worker container. Unset: the operator's default (no privilege
    /// escalation, all capabilities dropped, read-only root filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}
