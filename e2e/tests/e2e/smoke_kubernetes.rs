//! The control plane and the node agent are real: a StatefulSet applied with kubectl is turned
//! into Pods by kube-controller-manager, run as local processes by the node agent, scaled,
//! deleted and garbage-collected; Pods see their configuration and report their lifecycle.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use sessionizer_e2e::env::unique_name;
use sessionizer_e2e::smoke::{self, TESTAPP_IMAGE, TESTAPP_PORT};
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

fn bare_pod(name: &str, image: &str, restart_policy: &str, extra_env: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {name}
  annotations:
    team: streaming
spec:
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    env:
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
{extra_env}"#
    )
}

async fn get_json(url: &str) -> Result<serde_json::Value, Error> {
    let response = reqwest::get(url)
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    response
        .json()
        .await
        .map_err(|e| Error::Other(e.to_string()))
}

#[tokio::test]
async fn a_pod_sees_env_from_configmaps_secrets_and_the_downward_api() {
    let env = env();
    let namespace = env.namespace("envfrom").await.unwrap();
    let name = unique_name("envs");
    let extra = r#"    - name: TEAM
      valueFrom:
        fieldRef:
          fieldPath: metadata.annotations['team']
    - name: MY_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: FROM_SECRET_KEY
      valueFrom:
        secretKeyRef:
          name: creds
          key: password
    envFrom:
    - configMapRef:
        name: settings
    - secretRef:
        name: creds
      prefix: SECRET_
    readinessProbe:
      exec:
        command: ["/bin/sh", "-c", "test -n \"$GREETING\""]
      periodSeconds: 1
"#;
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  GREETING: hello
  LEVEL: debug
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: s3cr3t
---
{}"#,
        bare_pod(&name, TESTAPP_IMAGE, "Never", extra)
    );
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client().await.unwrap(), &namespace);
    let ready = smoke::wait_ready_pods(&pods, &format!("app={name}"), 1, POD_TIMEOUT)
        .await
        .unwrap();
    let ip = pod_ip(&ready[0]);
    let vars = get_json(&format!("http://{ip}:{TESTAPP_PORT}/env"))
        .await
        .unwrap();
    let var = |key: &str| vars.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    assert_eq!(var("GREETING").as_deref(), Some("hello"));
    assert_eq!(var("LEVEL").as_deref(), Some("debug"));
    assert_eq!(var("SECRET_password").as_deref(), Some("s3cr3t"));
    assert_eq!(var("FROM_SECRET_KEY").as_deref(), Some("s3cr3t"));
    assert_eq!(var("TEAM").as_deref(), Some("streaming"));
    assert_eq!(var("MY_NAMESPACE").as_deref(), Some(namespace.as_str()));
    assert_eq!(var("POD_NAME").as_deref(), Some(name.as_str()));
    assert_eq!(var("POD_IP").as_deref(), Some(ip.as_str()));
    assert!(
        var("KUBECONFIG").is_some(),
        "the Pod gets a service-account kubeconfig"
    );

    // Its output goes to a log file the tests can read.
    let log = env.pod_log(&namespace, &name, "app");
    wait::until(
        "the pod's log file to have content",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok::<_, Error>((!text.is_empty()).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unknown_image_fails_the_pod_with_a_clear_reason() {
    let env = env();
    let namespace = env.namespace("badimage").await.unwrap();
    let name = unique_name("ghost");
    let manifest = bare_pod(&name, "example.com/no-such-image:1.0", "Always", "");
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client().await.unwrap(), &namespace);
    let (reason, message) =
        wait::until("the pod to report its image error", POD_TIMEOUT, || async {
            let pod = pods.get(&name).await.map_err(Error::kube("reading pod"))?;
            let waiting = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next())
                .and_then(|c| c.state)
                .and_then(|s| s.waiting);
            Ok::<_, Error>(
                waiting.map(|w| (w.reason.unwrap_or_default(), w.message.unwrap_or_default())),
            )
        })
        .await
        .unwrap();
    assert_eq!(reason, "ErrImagePull");
    assert!(
        message.contains("example.com/no-such-image:1.0"),
        "{message}"
    );
}

#[tokio::test]
async fn a_crashing_container_is_restarted_with_its_exit_code_reported() {
    let env = env();
    let namespace = env.namespace("restart").await.unwrap();
    let name = unique_name("crash");
    let extra = r#"    - name: EXIT_AFTER_MS
      value: "200"
    - name: EXIT_CODE
      value: "3"
"#;
    let manifest = bare_pod(&name, TESTAPP_IMAGE, "Always", extra);
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client().await.unwrap(), &namespace);
    let exit_code = wait::until("two restarts", POD_TIMEOUT, || async {
        let pod = pods.get(&name).await.map_err(Error::kube("reading pod"))?;
        let status = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next());
        Ok::<_, Error>(status.and_then(|s| {
            let exit = s.last_state?.terminated?.exit_code;
            (s.restart_count >= 2).then_some(exit)
        }))
    })
    .await
    .unwrap();
    assert_eq!(exit_code, 3);
}

#[tokio::test]
async fn deleting_a_pod_that_ignores_sigterm_kills_it_after_the_grace_period() {
    let env = env();
    let namespace = env.namespace("grace").await.unwrap();
    let name = unique_name("stubborn");
    let extra = r#"    - name: IGNORE_SIGTERM
      value: "1"
    readinessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
"#;
    let manifest = bare_pod(&name, TESTAPP_IMAGE, "Always", extra);
    env.kubectl(&["apply", "-n", &namespace, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client().await.unwrap(), &namespace);
    smoke::wait_ready_pods(&pods, &format!("app={name}"), 1, POD_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(processes_with_env(&format!("POD_NAME={name}")).len(), 1);

    let started = std::time::Instant::now();
    env.kubectl(
        &["delete", "pod", "-n", &namespace, &name, "--wait=true"],
        None,
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(processes_with_env(&format!("POD_NAME={name}")).is_empty());
    // terminationGracePeriodSeconds is 2: SIGTERM was ignored, so SIGKILL ended it, after the
    // grace period and not long after.
    assert!(took >= Duration::from_secs(2), "deleted after {took:?}");
    let log = std::fs::read_to_string(env.pod_log(&namespace, &name, "app")).unwrap_or_default();
    assert!(
        log.to_lowercase().contains("sigterm"),
        "the app logged the SIGTERM: {log}"
    );
}
