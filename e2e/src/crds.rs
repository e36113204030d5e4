//! Installing Sessionizer's CustomResourceDefinitions into the local cluster, straight from the
//! types in `sessionizer-crds` (the same YAML the generator writes for the chart).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::{Error, Result, wait};

/// Field manager of everything the e2e harness applies.
pub const FIELD_MANAGER: &str = "sessionizer-e2e";

/// Applies every Sessionizer CRD (server-side apply, idempotent) and waits until each is
/// Established.
pub async fn install(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definitions = sessionizer_crds::crdgen::crds()
        .map_err(|e| Error::Other(format!("generating the CRDs: {e}")))?;
    for crd in definitions {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(Error::kube(format!("applying CRD {name}")))?;
        let what = format!("CRD {name} to be Established");
        wait::until(&what, Duration::from_secs(60), || async {
            let current = crds
                .get(&name)
                .await
                .map_err(Error::kube(format!("reading CRD {name}")))?;
            let established = current.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            Ok::<_, Error>(established.then_some(()))
        })
        .await?;
    }
    Ok(())
}
