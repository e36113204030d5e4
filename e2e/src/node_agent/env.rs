//! A container's environment as the kubelet builds it: `envFrom` (ConfigMaps and Secrets, with
//! prefixes and `optional`), then `env` with `$(VAR)` expansion, `configMapKeyRef`,
//! `secretKeyRef` and the downward API (`fieldRef`, `resourceFieldRef`).
//!
//! Everything here is pure: the ConfigMaps and Secrets come in through [`Sources`], the Pod's
//! addresses through [`PodNet`]. A missing non-optional reference is an
//! [`Error::ContainerConfig`] whose message matches the kubelet's, because it ends up as the
//! container's waiting message (`CreateContainerConfigError`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

use super::node::{ALLOCATABLE_CPU, ALLOCATABLE_EPHEMERAL_STORAGE, ALLOCATABLE_MEMORY};
use super::quantity;
use super::sources::Sources;
use crate::{Error, Result};

/// The addresses the downward API reports.
#[derive(Debug, Clone, Copy)]
pub struct PodNet<'a> {
    /// status.podIP.
    pub pod_ip: &'a str,
    /// status.hostIP.
    pub host_ip: &'a str,
}

/// An ordered environment where a later definition of a name replaces the earlier value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvList {
    vars: Vec<(String, String)>,
    index: BTreeMap<String, usize>,
}

impl EnvList {
    /// Sets `name` to `value`, keeping its first position.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    /// The variables in definition order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// The environment of `container` in `pod` (only what the Pod defines; the runner adds the
/// variables every container gets).
pub fn resolve(
    pod: &Pod,
    container: &Container,
    net: PodNet<'_>,
    sources: &dyn Sources,
) -> Result<EnvList> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = EnvList::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(reference) = &from.config_map_ref {
            match sources.config_map(namespace, &reference.name) {
                Some(config_map) => {
                    for (key, value) in config_map.data.iter().flatten() {
                        set_from(&mut env, prefix, key, value.clone());
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(not_found("configmap", &reference.name)),
            }
        }
        if let Some(reference) = &from.secret_ref {
            match sources.secret(namespace, &reference.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        set_from(&mut env, prefix, key, bytes_to_string(&value.0));
                    }
                    for (key, value) in secret.string_data.iter().flatten() {
                        set_from(&mut env, prefix, key, value.clone());
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(not_found("secret", &reference.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => expand(value, &|name| env.get(name).map(str::to_owned)),
            (None, Some(source)) => {
                if let Some(field) = &source.field_ref {
                    field_value(pod, &field.field_path, net, false)?
                } else if let Some(resource) = &source.resource_field_ref {
                    resource_value(pod, Some(container), resource)?
                } else if let Some(key_ref) = &source.config_map_key_ref {
                    let optional = key_ref.optional == Some(true);
                    let Some(config_map) = sources.config_map(namespace, &key_ref.name) else {
                        if optional {
                            continue;
                        }
                        return Err(not_found("configmap", &key_ref.name));
                    };
                    let data = config_map.data.as_ref().and_then(|d| d.get(&key_ref.key));
                    match data {
                        Some(value) => value.clone(),
                        None if optional => continue,
                        None => {
                            return Err(missing_key(
                                &key_ref.key,
                                "ConfigMap",
                                namespace,
                                &key_ref.name,
                            ));
                        }
                    }
                } else if let Some(key_ref) = &source.secret_key_ref {
                    let optional = key_ref.optional == Some(true);
                    let Some(secret) = sources.secret(namespace, &key_ref.name) else {
                        if optional {
                            continue;
                        }
                        return Err(not_found("secret", &key_ref.name));
                    };
                    let data = secret.data.as_ref().and_then(|d| d.get(&key_ref.key));
                    match data {
                        Some(value) => bytes_to_string(&value.0),
                        None if optional => continue,
                        None => {
                            return Err(missing_key(
                                &key_ref.key,
                                "Secret",
                                namespace,
                                &key_ref.name,
                            ));
                        }
                    }
                } else {
                    return Err(Error::ContainerConfig(format!(
                        "env {}: valueFrom has no source the node agent supports",
                        var.name
                    )));
                }
            }
            (None, None) => String::new(),
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

fn set_from(env: &mut EnvList, prefix: &str, key: &str, value: String) {
    let name = format!("{prefix}{key}");
    // The kubelet skips keys that cannot be variable names (and reports them in an event).
    if name.is_empty() || name.contains('=') {
        tracing::debug!(
            name,
            "skipping envFrom key that is not a valid variable name"
        );
        return;
    }
    env.set(name, value);
}

fn bytes_to_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn not_found(kind: &str, name: &str) -> Error {
    Error::ContainerConfig(format!("{kind} \"{name}\" not found"))
}

fn missing_key(key: &str, kind: &str, namespace: &str, name: &str) -> Error {
    Error::ContainerConfig(format!(
        "couldn't find key {key} in {kind} {namespace}/{name}"
    ))
}

/// Expands `$(VAR)` references the way Kubernetes does: defined variables are replaced,
/// undefined ones are left as written, and `$$` stands for a literal `$`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
            continue;
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API `fieldRef`. `whole_maps` allows `metadata.labels` and
/// `metadata.annotations` without a key (volumes only), rendered like the kubelet does.
pub fn field_value(pod: &Pod, path: &str, net: PodNet<'_>, whole_maps: bool) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        "status.podIP" | "status.podIPs" => net.pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => net.host_ip.to_owned(),
        "metadata.labels" if whole_maps => format_map(meta.labels.as_ref()),
        "metadata.annotations" if whole_maps => format_map(meta.annotations.as_ref()),
        _ => {
            if let Some(key) = subscript(path, "metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = subscript(path, "metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(Error::ContainerConfig(format!(
                    "unsupported fieldPath: {path}"
                )));
            }
        }
    };
    Ok(value)
}

/// `metadata.labels['app']` → `app`.
fn subscript<'a>(path: &'a str, map: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(map)?;
    let inner = rest.strip_prefix("['")?.strip_suffix("']")?;
    Some(inner)
}

/// `key="value"` lines, sorted by key, values quoted like Go's `%q`.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (key, value) in map.into_iter().flatten() {
        out.push_str(key);
        out.push('=');
        out.push_str(&go_quote(value));
        out.push('\n');
    }
    out
}

fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a downward-API `resourceFieldRef`, rounded up to whole `divisor`s. Unset limits
/// are the node's allocatable amount, unset requests fall back to the limit, then to zero.
pub fn resource_value(
    pod: &Pod,
    default_container: Option<&Container>,
    selector: &ResourceFieldSelector,
) -> Result<String> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .ok_or_else(|| {
                Error::ContainerConfig(format!("resourceFieldRef: no container named {name}"))
            })?,
        None => default_container.ok_or_else(|| {
            Error::ContainerConfig("resourceFieldRef needs a containerName here".to_owned())
        })?,
    };
    let unsupported = || {
        Error::ContainerConfig(format!(
            "unsupported container resource: {}",
            selector.resource
        ))
    };
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(unsupported)?;
    let allocatable = match resource {
        "cpu" => ALLOCATABLE_CPU,
        "memory" => ALLOCATABLE_MEMORY,
        "ephemeral-storage" => ALLOCATABLE_EPHEMERAL_STORAGE,
        _ => return Err(unsupported()),
    };
    let resources = container.resources.as_ref();
    let limit = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(resource))
        .and_then(|q| quantity::parse(&q.0));
    let request = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|l| l.get(resource))
        .and_then(|q| quantity::parse(&q.0));
    let value = match kind {
        "limits" => limit
            .or_else(|| quantity::parse(allocatable))
            .unwrap_or(0.0),
        "requests" => request.or(limit).unwrap_or(0.0),
        _ => return Err(unsupported()),
    };
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| quantity::parse(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Rounding a ratio of binary floats can leave 1.0000000000000002; trim that before ceil.
    let ratio = value / divisor;
    let rounded = (ratio - 1e-9).ceil().max(0.0);
    Ok(format!("{rounded:.0}"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    use super::*;
    use crate::node_agent::sources::FixedSources;

    const NET: PodNet<'static> = PodNet {
        pod_ip: "127.1.0.7",
        host_ip: "127.0.0.1",
    };

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn sources() -> FixedSources {
        let config_map: ConfigMap = serde_yaml::from_str(
            r#"
metadata: { name: app-config, namespace: jobs }
data: { LEVEL: debug, MODE: fast, "bad=key": x }
"#,
        )
        .unwrap();
        let secret: Secret = serde_yaml::from_str(
            r#"
metadata: { name: creds, namespace: jobs }
data: { password: aHVudGVyMg== }
"#,
        )
        .unwrap();
        FixedSources {
            config_maps: vec![config_map],
            secrets: vec![secret],
        }
    }

    const POD: &str = r#"
metadata:
  name: worker-0
  namespace: jobs
  uid: 1234-abcd
  labels: { app: sessionizer, "apps.kubernetes.io/pod-index": "0" }
  annotations: { note: "say \"hi\"" }
spec:
  nodeName: local-node
  serviceAccountName: worker
  containers:
    - name: main
      image: worker
      resources:
        limits: { memory: 1Gi }
        requests: { cpu: 250m }
      envFrom:
        - configMapRef: { name: app-config }
        - secretRef: { name: creds }
          prefix: SECRET_
        - configMapRef: { name: absent, optional: true }
      env:
        - { name: MODE, value: slow }
        - { name: POD_NAME, valueFrom: { fieldRef: { fieldPath: metadata.name } } }
        - { name: POD_NAMESPACE, valueFrom: { fieldRef: { fieldPath: metadata.namespace } } }
        - { name: POD_UID, valueFrom: { fieldRef: { fieldPath: metadata.uid } } }
        - { name: POD_IP, valueFrom: { fieldRef: { fieldPath: status.podIP } } }
        - { name: HOST_IP, valueFrom: { fieldRef: { fieldPath: status.hostIP } } }
        - { name: NODE, valueFrom: { fieldRef: { fieldPath: spec.nodeName } } }
        - { name: SA, valueFrom: { fieldRef: { fieldPath: spec.serviceAccountName } } }
        - name: INDEX
          valueFrom: { fieldRef: { fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']" } }
        - { name: NOTE, valueFrom: { fieldRef: { fieldPath: "metadata.annotations['note']" } } }
        - { name: URL, value: "http://$(POD_IP):8080/$(MISSING)/$$(POD_IP)" }
        - { name: LEVEL_COPY, valueFrom: { configMapKeyRef: { name: app-config, key: LEVEL } } }
        - name: PASSWORD
          valueFrom: { secretKeyRef: { name: creds, key: password } }
        - name: OPTIONAL_KEY
          valueFrom: { configMapKeyRef: { name: app-config, key: nope, optional: true } }
        - name: MEMORY_MI
          valueFrom: { resourceFieldRef: { resource: limits.memory, divisor: 1Mi } }
        - name: CPU_LIMIT
          valueFrom: { resourceFieldRef: { resource: limits.cpu } }
        - name: CPU_REQUEST_MILLI
          valueFrom: { resourceFieldRef: { resource: requests.cpu, divisor: 1m } }
        - name: CPU_REQUEST
          valueFrom: { resourceFieldRef: { resource: requests.cpu } }
"#;

    #[test]
    fn resolves_env_from_env_and_the_downward_api() {
        let pod = pod(POD);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env = resolve(&pod, container, NET, &sources()).unwrap();
        let get = |name: &str| env.get(name).map(str::to_owned);
        assert_eq!(get("LEVEL").as_deref(), Some("debug"));
        assert_eq!(
            get("MODE").as_deref(),
            Some("slow"),
            "env overrides envFrom"
        );
        assert_eq!(get("bad=key"), None);
        assert_eq!(get("SECRET_password").as_deref(), Some("hunter2"));
        assert_eq!(get("POD_NAME").as_deref(), Some("worker-0"));
        assert_eq!(get("POD_NAMESPACE").as_deref(), Some("jobs"));
        assert_eq!(get("POD_UID").as_deref(), Some("1234-abcd"));
        assert_eq!(get("POD_IP").as_deref(), Some("127.1.0.7"));
        assert_eq!(get("HOST_IP").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("NODE").as_deref(), Some("local-node"));
        assert_eq!(get("SA").as_deref(), Some("worker"));
        assert_eq!(get("INDEX").as_deref(), Some("0"));
        assert_eq!(get("NOTE").as_deref(), Some("say \"hi\""));
        assert_eq!(
            get("URL").as_deref(),
            Some("http://127.1.0.7:8080/$(MISSING)/$(POD_IP)")
        );
        assert_eq!(get("LEVEL_COPY").as_deref(), Some("debug"));
        assert_eq!(get("PASSWORD").as_deref(), Some("hunter2"));
        assert_eq!(get("OPTIONAL_KEY"), None);
        assert_eq!(get("MEMORY_MI").as_deref(), Some("1024"));
        assert_eq!(
            get("CPU_LIMIT").as_deref(),
            Some("64"),
            "unset limit is allocatable"
        );
        assert_eq!(get("CPU_REQUEST_MILLI").as_deref(), Some("250"));
        assert_eq!(get("CPU_REQUEST").as_deref(), Some("1"), "rounded up");
    }

    #[test]
    fn missing_references_fail_like_the_kubelet() {
        let cases = [
            (
                "envFrom: [{ configMapRef: { name: nope } }]",
                "configmap \"nope\" not found",
            ),
            (
                "envFrom: [{ secretRef: { name: nope } }]",
                "secret \"nope\" not found",
            ),
            (
                "env: [{ name: X, valueFrom: { configMapKeyRef: { name: app-config, key: nope } } }]",
                "couldn't find key nope in ConfigMap jobs/app-config",
            ),
            (
                "env: [{ name: X, valueFrom: { secretKeyRef: { name: creds, key: nope } } }]",
                "couldn't find key nope in Secret jobs/creds",
            ),
            (
                "env: [{ name: X, valueFrom: { fieldRef: { fieldPath: spec.foo } } }]",
                "unsupported fieldPath: spec.foo",
            ),
        ];
        for (fragment, expected) in cases {
            let yaml = format!(
                "metadata: {{ name: p, namespace: jobs }}\nspec:\n  containers:\n    - name: c\n      {fragment}\n"
            );
            let pod = pod(&yaml);
            let container = &pod.spec.as_ref().unwrap().containers[0];
            let error = resolve(&pod, container, NET, &sources()).unwrap_err();
            assert_eq!(error.to_string(), expected, "{fragment}");
        }
    }

    #[test]
    fn whole_label_maps_render_sorted_and_quoted() {
        let pod = pod(POD);
        let labels = field_value(&pod, "metadata.labels", NET, true).unwrap();
        assert_eq!(
            labels,
            "app=\"sessionizer\"\napps.kubernetes.io/pod-index=\"0\"\n"
        );
        let annotations = field_value(&pod, "metadata.annotations", NET, true).unwrap();
        assert_eq!(annotations, "note=\"say \\\"hi\\\"\"\n");
        assert!(field_value(&pod, "metadata.labels", NET, false).is_err());
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let lookup = |name: &str| (name == "A").then(|| "1".to_owned());
        assert_eq!(expand("$(A)-$(B)", &lookup), "1-$(B)");
        assert_eq!(expand("$$(A) $ $x $(A", &lookup), "$(A) $ $x $(A");
        assert_eq!(expand("plain", &lookup), "plain");
    }
}
