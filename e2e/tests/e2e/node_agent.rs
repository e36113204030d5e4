//! The node agent against the real control plane: each test creates Pods with kubectl in its own
//! namespace and checks what a kubelet would show — Pod status, events, the processes' view of
//! env and volumes, restarts, graceful deletion and service-account RBAC.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::Api;
use kube::api::ListParams;
use sessionizer_e2e::node_agent::{claim_dir, container_log_path};
use sessionizer_e2e::{Error, tools, wait};

use crate::support::env;

/// Pods start in well under a second here; the rest is a slow, shared 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(60);
const TESTAPP: &str = "sessionizer/e2e-testapp:dev";

async fn apply(namespace: &str, yaml: &str) {
    env()
        .kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml))
        .await
        .expect("kubectl apply");
}

async fn pods(namespace: &str) -> Api<Pod> {
    Api::namespaced(env().client().await.expect("admin client"), namespace)
}

/// Waits until the Pod `name` satisfies `check`, quoting its status when it never does.
async fn wait_pod(namespace: &str, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    let api = pods(namespace).await;
    wait::until(&format!("pod {name}: {what}"), TIMEOUT, || async {
        let pod = api.get(name).await.map_err(Error::kube("reading pod"))?;
        if check(&pod) {
            Ok(Some(pod))
        } else {
            Err(Error::Other(format!("status now: {:?}", pod.status)))
        }
    })
    .await
    .expect("pod condition")
}

fn container(pod: &Pod) -> ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first().cloned())
        .unwrap_or_default()
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn ready(pod: &Pod) -> bool {
    condition(pod, "Ready").as_deref() == Some("True")
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

async fn http(ip: &str, path: &str) -> Result<String, String> {
    let response = reqwest::get(format!("http://{ip}:8080{path}"))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

async fn file(ip: &str, path: &str) -> Result<String, String> {
    http(ip, &format!("/file?path={path}")).await
}

fn log(namespace: &str, pod: &str, container: &str) -> String {
    let path = container_log_path(&env().node_state_dir(), namespace, pod, container);
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn gone(namespace: &str, name: &str) {
    let api = pods(namespace).await;
    wait::until(&format!("pod {name} to be gone"), TIMEOUT, || async {
        let pod = api
            .get_opt(name)
            .await
            .map_err(Error::kube("reading pod"))?;
        Ok::<_, Error>(pod.is_none().then_some(()))
    })
    .await
    .expect("pod deletion");
}

#[tokio::test]
async fn a_pod_runs_with_its_own_address_env_and_volumes() {
    let namespace = env().namespace("agent-run").await.unwrap();
    apply(
        &namespace,
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{ name: settings }}
data: {{ LEVEL: debug, app.conf: "gap=30m" }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: creds }}
stringData: {{ password: hunter2 }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: web, labels: {{ app: web }}, annotations: {{ team: streams }} }}
spec:
  containers:
    - name: app
      image: {TESTAPP}
      ports: [{{ name: http, containerPort: 8080 }}]
      resources: {{ limits: {{ memory: 64Mi }} }}
      envFrom:
        - configMapRef: {{ name: settings }}
        - secretRef: {{ name: creds }}
          prefix: SECRET_
      env:
        - {{ name: POD_IP, valueFrom: {{ fieldRef: {{ fieldPath: status.podIP }} }} }}
        - {{ name: POD_NAME, valueFrom: {{ fieldRef: {{ fieldPath: metadata.name }} }} }}
        - {{ name: TEAM, valueFrom: {{ fieldRef: {{ fieldPath: "metadata.annotations['team']" }} }} }}
        - {{ name: MEMORY, valueFrom: {{ resourceFieldRef: {{ resource: limits.memory, divisor: 1Mi }} }} }}
        - {{ name: URL, value: "http://$(POD_IP):8080" }}
      readinessProbe: {{ httpGet: {{ path: /readyz, port: http }}, periodSeconds: 1 }}
      livenessProbe: {{ tcpSocket: {{ port: 8080 }}, periodSeconds: 2 }}
      volumeMounts:
        - {{ name: settings, mountPath: /etc/sessionizer-e2e/settings }}
        - {{ name: settings, mountPath: /etc/sessionizer-e2e/app.conf, subPath: app.conf }}
        - {{ name: info, mountPath: /etc/sessionizer-e2e/info }}
  volumes:
    - {{ name: settings, configMap: {{ name: settings }} }}
    - name: info
      downwardAPI: {{ items: [{{ path: labels, fieldRef: {{ fieldPath: metadata.labels }} }}] }}
"#
        ),
    )
    .await;
    let pod = wait_pod(&namespace, "web", "Running and Ready", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && ready(p)
    })
    .await;
    let ip = pod_ip(&pod);
    assert!(ip.starts_with("127."), "pod IP {ip} is a loopback address");
    assert_ne!(ip, "127.0.0.1", "each pod has its own address");
    let status = pod.status.clone().unwrap();
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.pod_ips.unwrap()[0].ip, ip);
    for type_ in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&pod, type_).as_deref(), Some("True"), "{type_}");
    }
    let app = container(&pod);
    assert!(
        app.ready && app.started == Some(true) && app.restart_count == 0,
        "{app:?}"
    );

    let env_json: serde_json::Value =
        serde_json::from_str(&http(&ip, "/env").await.unwrap()).unwrap();
    assert_eq!(env_json["LEVEL"], "debug");
    assert_eq!(env_json["SECRET_password"], "hunter2");
    assert_eq!(env_json["POD_IP"], ip.as_str());
    assert_eq!(env_json["POD_NAME"], "web");
    assert_eq!(env_json["TEAM"], "streams");
    assert_eq!(env_json["MEMORY"], "64");
    assert_eq!(env_json["URL"], format!("http://{ip}:8080"));
    assert_eq!(env_json["HOSTNAME"], "web");
    assert!(
        env_json["KUBECONFIG"]
            .as_str()
            .unwrap()
            .ends_with("/web/kubeconfig")
    );

    let file = |path: &'static str| file(&ip, path);
    assert_eq!(
        file("/etc/sessionizer-e2e/settings/LEVEL").await.unwrap(),
        "debug"
    );
    assert_eq!(
        file("/etc/sessionizer-e2e/app.conf").await.unwrap(),
        "gap=30m"
    );
    assert_eq!(
        file("/etc/sessionizer-e2e/info/labels").await.unwrap(),
        "app=\"web\"\n"
    );
    let namespace_file = file("/var/run/secrets/kubernetes.io/serviceaccount/namespace").await;
    assert_eq!(namespace_file.unwrap(), namespace);
    assert!(
        !std::path::Path::new("/etc/sessionizer-e2e/settings/LEVEL").exists(),
        "volumes are mounted in the pod's own mount namespace only"
    );
    assert!(log(&namespace, "web", "app").contains(&format!("listening on {ip}:8080")));

    // A ConfigMap change reaches the running container without a restart.
    env()
        .kubectl(
            &[
                "-n",
                &namespace,
                "patch",
                "configmap",
                "settings",
                "--type=merge",
                "-p",
                r#"{"data":{"LEVEL":"trace"}}"#,
            ],
            None,
        )
        .await
        .unwrap();
    wait::until(
        "the new ConfigMap value inside the pod",
        TIMEOUT,
        || async {
            let level = file("/etc/sessionizer-e2e/settings/LEVEL").await?;
            Ok::<_, String>((level == "trace").then_some(()))
        },
    )
    .await
    .unwrap();
    let pod = pods(&namespace).await.get("web").await.unwrap();
    assert_eq!(container(&pod).restart_count, 0);
}

#[tokio::test]
async fn an_unknown_image_is_reported_as_err_image_pull_with_the_known_images() {
    let namespace = env().namespace("agent-image").await.unwrap();
    apply(
        &namespace,
        "apiVersion: v1\nkind: Pod\nmetadata: { name: nginx }\nspec: { containers: [{ name: web, image: 'nginx:1.27' }] }\n",
    )
    .await;
    let pod = wait_pod(&namespace, "nginx", "ErrImagePull", |p| {
        let waiting = container(p).state.and_then(|s| s.waiting);
        waiting.and_then(|w| w.reason).as_deref() == Some("ErrImagePull")
    })
    .await;
    let message = container(&pod)
        .state
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap();
    assert!(message.contains("nginx:1.27"), "{message}");
    assert!(
        message.contains("sessionizer/e2e-testapp"),
        "lists the known images: {message}"
    );
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    let events: Api<Event> = Api::namespaced(env().client().await.unwrap(), &namespace);
    wait::until("a Warning event about the image", TIMEOUT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("events"))?;
        let found = list.items.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("nginx:1.27")
        });
        Ok::<_, Error>(found.then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn crashing_containers_restart_with_back_off_and_keep_their_log() {
    let namespace = env().namespace("agent-crash").await.unwrap();
    apply(
        &namespace,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{ name: crash }}
spec:
  containers:
    - name: app
      image: {TESTAPP}
      env:
        - {{ name: POD_IP, valueFrom: {{ fieldRef: {{ fieldPath: status.podIP }} }} }}
        - {{ name: EXIT_AFTER_MS, value: "100" }}
        - {{ name: EXIT_CODE, value: "3" }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: once }}
spec:
  restartPolicy: Never
  containers: [{{ name: app, image: {TESTAPP}, command: [/bin/sh, -c, "echo bye; exit 4"] }}]
---
apiVersion: v1
kind: Pod
metadata: {{ name: retry }}
spec:
  restartPolicy: OnFailure
  volumes: [{{ name: scratch, emptyDir: {{}} }}]
  containers:
    - name: app
      image: {TESTAPP}
      command: [/bin/sh, -c, "test -f /scratch/again && exit 0; touch /scratch/again; exit 1"]
      volumeMounts: [{{ name: scratch, mountPath: /scratch }}]
"#
        ),
    )
    .await;
    let crash = wait_pod(&namespace, "crash", "restarted twice", |p| {
        container(p).restart_count >= 2
    })
    .await;
    let status = container(&crash);
    let last = status.last_state.and_then(|s| s.terminated).unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(
        crash.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    wait_pod(&namespace, "crash", "waiting in CrashLoopBackOff", |p| {
        container(p)
            .state
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .as_deref()
            == Some("CrashLoopBackOff")
    })
    .await;
    let starts = log(&namespace, "crash", "app")
        .matches("e2e-testapp listening")
        .count();
    assert!(
        starts >= 3,
        "the log is appended across restarts ({starts} starts)"
    );

    let once = wait_pod(&namespace, "once", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let terminated = container(&once).state.and_then(|s| s.terminated).unwrap();
    assert_eq!(terminated.exit_code, 4);
    assert_eq!(container(&once).restart_count, 0);
    assert_eq!(log(&namespace, "once", "app"), "bye\n");

    let retry = wait_pod(&namespace, "retry", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    assert_eq!(
        container(&retry).restart_count,
        1,
        "restarted once, then succeeded"
    );
}

#[tokio::test]
async fn liveness_failures_restart_the_container() {
    let namespace = env().namespace("agent-live").await.unwrap();
    apply(
        &namespace,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{ name: sick }}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: {TESTAPP}
      env: [{{ name: POD_IP, valueFrom: {{ fieldRef: {{ fieldPath: status.podIP }} }} }}]
      livenessProbe: {{ httpGet: {{ path: /missing, port: 8080 }}, periodSeconds: 1, failureThreshold: 2 }}
      readinessProbe: {{ exec: {{ command: [/bin/sh, -c, "test -n \"$POD_IP\""] }}, periodSeconds: 1 }}
"#
        ),
    )
    .await;
    wait_pod(&namespace, "sick", "ready through its exec probe", ready).await;
    let pod = wait_pod(&namespace, "sick", "restarted by its liveness probe", |p| {
        container(p).restart_count >= 1
    })
    .await;
    let last = container(&pod)
        .last_state
        .and_then(|s| s.terminated)
        .unwrap();
    assert!(last.finished_at.is_some(), "{last:?}");
    let events: Api<Event> = Api::namespaced(env().client().await.unwrap(), &namespace);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unhealthy")
                && e.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("Liveness probe failed")),
        "an Unhealthy event names the liveness probe"
    );
}

#[tokio::test]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let namespace = env().namespace("agent-delete").await.unwrap();
    apply(
        &namespace,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{ name: polite }}
spec:
  containers:
    - name: app
      image: {TESTAPP}
      env:
        - {{ name: POD_IP, valueFrom: {{ fieldRef: {{ fieldPath: status.podIP }} }} }}
        - {{ name: EXIT_CODE_ON_TERM, value: "0" }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: stubborn }}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: app
      image: {TESTAPP}
      command: [/bin/sh, -c, "trap 'echo ignoring TERM' TERM; echo started; while true; do sleep 0.1; done"]
"#
        ),
    )
    .await;
    wait_pod(&namespace, "polite", "Ready", ready).await;
    wait_pod(&namespace, "stubborn", "Ready", ready).await;

    env()
        .kubectl(
            &["-n", &namespace, "delete", "pod", "polite", "--wait=false"],
            None,
        )
        .await
        .unwrap();
    gone(&namespace, "polite").await;
    assert!(log(&namespace, "polite", "app").contains("SIGTERM, exiting with 0"));

    let started = std::time::Instant::now();
    env()
        .kubectl(
            &[
                "-n",
                &namespace,
                "delete",
                "pod",
                "stubborn",
                "--wait=false",
            ],
            None,
        )
        .await
        .unwrap();
    gone(&namespace, "stubborn").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "the grace period was honoured ({took:?})"
    );
    assert!(
        log(&namespace, "stubborn", "app").contains("ignoring TERM"),
        "SIGTERM came first"
    );
}

#[tokio::test]
async fn a_pod_kubeconfig_carries_its_service_account_and_rbac_applies() {
    let namespace = env().namespace("agent-rbac").await.unwrap();
    let kubectl = tools::kubectl().unwrap();
    let kubectl = kubectl.display();
    apply(
        &namespace,
        &format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{ name: reader }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: read-configmaps }}
rules: [{{ apiGroups: [""], resources: [configmaps], verbs: [get, list] }}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: reader }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps }}
subjects: [{{ kind: ServiceAccount, name: reader }}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{ name: visible }}
data: {{ k: v }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: client }}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
    - name: app
      image: {TESTAPP}
      command:
        - /bin/sh
        - -c
        - |
          {kubectl} auth whoami -o jsonpath='{{.status.userInfo.username}}{{"\n"}}'
          {kubectl} get configmap visible -o jsonpath='{{.data.k}}{{"\n"}}'
          {kubectl} get pods 2>&1 | grep -q Forbidden && echo pods-forbidden
          exit 0
"#
        ),
    )
    .await;
    wait_pod(&namespace, "client", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let output = log(&namespace, "client", "app");
    assert!(
        output.contains(&format!("system:serviceaccount:{namespace}:reader")),
        "{output}"
    );
    assert!(
        output.contains("\nv\n"),
        "the Role grants configmaps: {output}"
    );
    assert!(
        output.contains("pods-forbidden"),
        "and nothing else: {output}"
    );
}

#[tokio::test]
async fn statefulset_claims_keep_their_data_across_pod_replacement() {
    let namespace = env().namespace("agent-sts").await.unwrap();
    apply(
        &namespace,
        &format!(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{ name: store }}
spec:
  serviceName: store
  replicas: 1
  selector: {{ matchLabels: {{ app: store }} }}
  template:
    metadata: {{ labels: {{ app: store }} }}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: {TESTAPP}
          command: [/bin/sh, -c, "echo $HOSTNAME >> /data/boots; exec sleep 3600"]
          volumeMounts: [{{ name: data, mountPath: /data }}]
  volumeClaimTemplates:
    - metadata: {{ name: data }}
      spec: {{ accessModes: [ReadWriteOnce], resources: {{ requests: {{ storage: 1Gi }} }} }}
"#
        ),
    )
    .await;
    let first = wait_pod(&namespace, "store-0", "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let boots = claim_dir(&env().node_state_dir(), &namespace, "data-store-0").join("boots");
    wait::until("the first boot to be recorded", TIMEOUT, || async {
        Ok::<_, Error>(
            std::fs::read_to_string(&boots)
                .is_ok_and(|b| b == "store-0\n")
                .then_some(()),
        )
    })
    .await
    .unwrap();
    env()
        .kubectl(&["-n", &namespace, "delete", "pod", "store-0"], None)
        .await
        .unwrap();
    let first_uid = first.metadata.uid.clone();
    wait_pod(&namespace, "store-0", "replaced and Running", |p| {
        p.metadata.uid != first_uid
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    wait::until(
        "the second boot to see the first one's data",
        TIMEOUT,
        || async {
            Ok::<_, Error>(
                std::fs::read_to_string(&boots)
                    .is_ok_and(|b| b == "store-0\nstore-0\n")
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
}
