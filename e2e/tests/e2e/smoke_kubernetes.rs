//! The control plane and the node agent are real: a StatefulSet applied with kubectl is turned
//! into Pods by kube-controller-manager, run as local processes by the node agent, scaled,
//! deleted and garbage-collected with its processes. (The node agent's own behaviour — env,
//! volumes, probes, restarts, graceful deletion — is checked in `node_agent.rs`.)

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::smoke::{self, TESTAPP_PORT};
use sessionizer_e2e::{Error, wait};

use crate::support::{POD_TIMEOUT, env, processes_with_env};

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_statefulset_runs_scales_and_is_garbage_collected_with_its_processes() {
    let env = env();
    let namespace = env.namespace("sts").await.unwrap();
    let name = unique_name("web");
    let manifest = smoke::testapp_statefulset(&name, 2);
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client().await.unwrap(), &namespace);
    let selector = format!("app={name}");

    let ready = smoke::wait_ready_pods(&pods, &selector, 2, POD_TIMEOUT)
        .await
        .unwrap();
    let ips: Vec<String> = ready.iter().map(pod_ip).collect();
    assert!(ips.iter().all(|ip| ip.starts_with("127.")), "{ips:?}");
    assert_ne!(ips[0], ips[1], "each Pod has its own address");
    // Each Pod's process serves on its own Pod IP.
    let http = reqwest::Client::new();
    for ip in &ips {
        let url = format!("http://{ip}:{TESTAPP_PORT}/healthz");
        let response = http.get(&url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
    }

    env.kubectl(
        &[
            "scale",
            "-n",
            &namespace,
            &format!("statefulset/{name}"),
            "--replicas=3",
        ],
        None,
    )
    .await
    .unwrap();
    let ready = smoke::wait_ready_pods(&pods, &selector, 3, POD_TIMEOUT)
        .await
        .unwrap();
    let names: Vec<String> = ready
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, [0, 1, 2].map(|i| format!("{name}-{i}")));
    for pod in &names {
        assert_eq!(
            processes_with_env(&format!("POD_NAME={pod}")).len(),
            1,
            "one process runs {pod}"
        );
    }

    env.kubectl(
        &["delete", "-n", &namespace, &format!("statefulset/{name}")],
        None,
    )
    .await
    .unwrap();
    wait::until(
        "the garbage collector to remove the Pods",
        POD_TIMEOUT,
        || async {
            let left = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::kube("listing pods"))?;
            Ok::<_, Error>(left.items.is_empty().then_some(()))
        },
    )
    .await
    .unwrap();
    for pod in &names {
        let left = processes_with_env(&format!("POD_NAME={pod}"));
        assert!(
            left.is_empty(),
            "processes of {pod} still running: {left:?}"
        );
    }
}
