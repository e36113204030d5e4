//! The headless Service of a job's workers: a stable DNS name per worker
//! (`<job>-<ordinal>.<job>.<namespace>.svc`) for the operator to reach each worker's HTTP API. It
//! load-balances nothing and must never get a cluster IP.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sessionizer_worker::config::HTTP_PORT;

use super::{ValidatedJob, metadata, selector_labels};
use crate::names;

/// `<job>`, headless, port `http` 8080.
pub fn service(job: &ValidatedJob) -> Service {
    Service {
        metadata: metadata(job, names::service(&job.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(job)),
            // The operator talks to workers that are not ready yet (restoring, draining).
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some(names::pod::HTTP_PORT_NAME.to_owned()),
                port: i32::from(HTTP_PORT),
                target_port: Some(IntOrString::String(names::pod::HTTP_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_job::fixtures;

    #[test]
    fn service_is_headless_on_the_http_port() {
        let service = service(&fixtures::valid_minimal());
        assert_eq!(service.metadata.name.as_deref(), Some("pageviews"));
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let selector = spec.selector.unwrap();
        assert_eq!(selector["app.kubernetes.io/name"], "sessionizer-worker");
        assert_eq!(selector["app.kubernetes.io/instance"], "pageviews");
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].port, 8080);
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String("http".into()))
        );
    }
}
