//! What each of a Pod's volumes holds and where each container sees it.
//!
//! Pure: [`desired`] turns a volume (configMap, secret, downwardAPI, projected, emptyDir,
//! hostPath, persistentVolumeClaim) into either a set of files for the atomic writer or a
//! directory to bind-mount, and [`container_mounts`] turns a container's `volumeMounts` into bind
//! mounts (with `subPath`, `subPathExpr` and `readOnly`). Writing and mounting happen elsewhere.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::env::{self, EnvList, PodNet};
use super::sources::Sources;
use crate::{Error, Result};

/// Where containers find their service-account credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The default file mode of configMap, secret, downwardAPI and projected volumes.
const DEFAULT_MODE: u32 = 0o644;

/// Files of a volume: relative path → (content, mode).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileSet {
    /// The files, by path relative to the volume's root.
    pub files: BTreeMap<String, (Vec<u8>, u32)>,
}

impl FileSet {
    fn add(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<()> {
        check_relative(path)?;
        self.files.insert(path.to_owned(), (data, mode));
        Ok(())
    }
}

/// A service-account token a projected volume asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenSpec {
    /// The audience (`None`: the API server's own).
    pub audience: Option<String>,
    /// Requested lifetime in seconds.
    pub expiration_seconds: i64,
}

/// What a volume is on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// Files the agent writes and keeps current (configMap, secret, downwardAPI, projected).
    Files(FileSet),
    /// An empty directory that lives as long as the Pod.
    EmptyDir,
    /// A directory of the machine.
    HostPath {
        /// The path on the machine.
        path: PathBuf,
        /// The hostPath type (`DirectoryOrCreate`, `FileOrCreate`, …).
        kind: String,
    },
    /// A claim's directory under the state directory, kept across Pod restarts.
    Claim {
        /// The claim's name.
        claim: String,
        /// Whether the volume says `readOnly`.
        read_only: bool,
    },
}

impl VolumeKind {
    /// Whether containers always see this volume read-only (as with the kubelet).
    pub fn always_read_only(&self) -> bool {
        match self {
            VolumeKind::Files(_) => true,
            VolumeKind::Claim { read_only, .. } => *read_only,
            VolumeKind::EmptyDir | VolumeKind::HostPath { .. } => false,
        }
    }
}

/// The service-account tokens the Pod's projected volumes need.
pub fn token_specs(pod: &Pod) -> Vec<TokenSpec> {
    let mut specs: Vec<TokenSpec> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| TokenSpec {
            audience: t.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: t.expiration_seconds.unwrap_or(3600),
        })
        .collect();
    specs.sort();
    specs.dedup();
    specs
}

/// What `volume` should be now. `tokens` returns the current token for a [`TokenSpec`].
pub fn desired(
    volume: &Volume,
    pod: &Pod,
    net: PodNet<'_>,
    sources: &dyn Sources,
    tokens: &dyn Fn(&TokenSpec) -> Option<String>,
) -> Result<VolumeKind> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let fail = |message: String| {
        Error::ContainerConfig(format!(
            "MountVolume.SetUp failed for volume \"{}\": {message}",
            volume.name
        ))
    };
    if let Some(source) = &volume.config_map {
        let mode = mode_or_default(source.default_mode);
        let mut files = FileSet::default();
        let config_map = sources.config_map(namespace, &source.name);
        add_config_map(
            &mut files,
            config_map.as_deref(),
            &source.name,
            source.items.as_deref(),
            source.optional,
            mode,
        )
        .map_err(fail)?;
        return Ok(VolumeKind::Files(files));
    }
    if let Some(source) = &volume.secret {
        let mode = mode_or_default(source.default_mode);
        let name = source.secret_name.clone().unwrap_or_default();
        let mut files = FileSet::default();
        let secret = sources.secret(namespace, &name);
        add_secret(
            &mut files,
            secret.as_deref(),
            &name,
            source.items.as_deref(),
            source.optional,
            mode,
        )
        .map_err(fail)?;
        return Ok(VolumeKind::Files(files));
    }
    if let Some(source) = &volume.downward_api {
        let mode = mode_or_default(source.default_mode);
        let mut files = FileSet::default();
        add_downward(&mut files, pod, net, source.items.as_deref(), mode)?;
        return Ok(VolumeKind::Files(files));
    }
    if let Some(projected) = &volume.projected {
        let mode = mode_or_default(projected.default_mode);
        let mut files = FileSet::default();
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let config_map = sources.config_map(namespace, &cm.name);
                add_config_map(
                    &mut files,
                    config_map.as_deref(),
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional,
                    mode,
                )
                .map_err(fail)?;
            } else if let Some(s) = &source.secret {
                let secret = sources.secret(namespace, &s.name);
                add_secret(
                    &mut files,
                    secret.as_deref(),
                    &s.name,
                    s.items.as_deref(),
                    s.optional,
                    mode,
                )
                .map_err(fail)?;
            } else if let Some(d) = &source.downward_api {
                add_downward(&mut files, pod, net, d.items.as_deref(), mode)?;
            } else if let Some(t) = &source.service_account_token {
                let spec = TokenSpec {
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                };
                let token = tokens(&spec)
                    .ok_or_else(|| fail("the service-account token is not issued yet".into()))?;
                files.add(&t.path, token.into_bytes(), mode)?;
            } else {
                return Err(fail(
                    "projected source not supported by the node agent".into(),
                ));
            }
        }
        return Ok(VolumeKind::Files(files));
    }
    if volume.empty_dir.is_some() {
        return Ok(VolumeKind::EmptyDir);
    }
    if let Some(host) = &volume.host_path {
        return Ok(VolumeKind::HostPath {
            path: PathBuf::from(&host.path),
            kind: host.type_.clone().unwrap_or_default(),
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        return Ok(VolumeKind::Claim {
            claim: claim.claim_name.clone(),
            read_only: claim.read_only == Some(true),
        });
    }
    Err(fail("volume type not supported by the node agent".into()))
}

fn mode_or_default(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_MODE, |m| m & 0o777)
}

fn add_config_map(
    files: &mut FileSet,
    config_map: Option<&ConfigMap>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> std::result::Result<(), String> {
    let Some(config_map) = config_map else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(format!("configmap \"{name}\" not found"))
        };
    };
    let mut data: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (key, value) in config_map.data.iter().flatten() {
        data.insert(key, value.clone().into_bytes());
    }
    for (key, value) in config_map.binary_data.iter().flatten() {
        data.insert(key, value.0.clone());
    }
    add_keys(files, &data, items, optional, mode, "configmap")
}

fn add_secret(
    files: &mut FileSet,
    secret: Option<&Secret>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> std::result::Result<(), String> {
    let Some(secret) = secret else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(format!("secret \"{name}\" not found"))
        };
    };
    let data: BTreeMap<&str, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.clone()))
        .collect();
    add_keys(files, &data, items, optional, mode, "secret")
}

fn add_keys(
    files: &mut FileSet,
    data: &BTreeMap<&str, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
    kind: &str,
) -> std::result::Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(item.key.as_str()) {
                    Some(value) => {
                        let mode = item.mode.map_or(mode, |m| mode_or_default(Some(m)));
                        files
                            .add(&item.path, value.clone(), mode)
                            .map_err(|e| e.to_string())?;
                    }
                    None if optional == Some(true) => {}
                    None => {
                        return Err(format!(
                            "{kind} references non-existent config key: {}",
                            item.key
                        ));
                    }
                }
            }
        }
        _ => {
            for (key, value) in data {
                files
                    .add(key, value.clone(), mode)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

fn add_downward(
    files: &mut FileSet,
    pod: &Pod,
    net: PodNet<'_>,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: u32,
) -> Result<()> {
    for item in items.into_iter().flatten() {
        let value = if let Some(field) = &item.field_ref {
            env::field_value(pod, &field.field_path, net, true)?
        } else if let Some(resource) = &item.resource_field_ref {
            env::resource_value(pod, None, resource)?
        } else {
            return Err(Error::ContainerConfig(format!(
                "downwardAPI item {} has neither fieldRef nor resourceFieldRef",
                item.path
            )));
        };
        let mode = item.mode.map_or(mode, |m| mode_or_default(Some(m)));
        files.add(&item.path, value.into_bytes(), mode)?;
    }
    Ok(())
}

/// A path inside a volume must stay inside it.
fn check_relative(path: &str) -> Result<()> {
    let ok = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::ContainerConfig(format!(
            "path {path:?} must be relative and may not contain '..'"
        )))
    }
}

/// A volume's directory on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    /// The directory (or file, for hostPath files) to bind-mount.
    pub path: PathBuf,
    /// Whether every mount of it is read-only.
    pub read_only: bool,
}

/// One bind mount in a container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: PathBuf,
    /// Whether it is mounted read-only.
    pub read_only: bool,
    /// Whether `source` is a subPath that the kubelet would create when missing.
    pub sub_path: bool,
}

/// The bind mounts for `container`, parents before children.
pub fn container_mounts(
    container: &Container,
    volumes: &BTreeMap<String, VolumeDir>,
    env: &EnvList,
) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes.get(&mount.name).ok_or_else(|| {
            Error::ContainerConfig(format!(
                "volumeMount {} refers to volume {:?}, which the Pod does not define",
                mount.mount_path, mount.name
            ))
        })?;
        let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(sub), _) if !sub.is_empty() => Some(sub.clone()),
            (_, Some(expr)) if !expr.is_empty() => {
                Some(env::expand(expr, &|name| env.get(name).map(str::to_owned)))
            }
            _ => None,
        };
        let source = match &sub_path {
            Some(sub) => {
                check_relative(sub)?;
                volume.path.join(sub)
            }
            None => volume.path.clone(),
        };
        if !mount.mount_path.starts_with('/') {
            return Err(Error::ContainerConfig(format!(
                "mountPath {:?} must be absolute",
                mount.mount_path
            )));
        }
        mounts.push(Mount {
            source,
            target: PathBuf::from(&mount.mount_path),
            read_only: volume.read_only || mount.read_only == Some(true),
            sub_path: sub_path.is_some(),
        });
    }
    mounts.sort_by_key(|m| m.target.components().count());
    Ok(mounts)
}

/// Whether `container` mounts something at the service-account path already (the API server's
/// ServiceAccount admission adds a projected `kube-api-access-…` volume there).
pub fn mounts_service_account(container: &Container) -> bool {
    container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_agent::sources::FixedSources;

    const NET: PodNet<'static> = PodNet {
        pod_ip: "127.1.0.9",
        host_ip: "127.0.0.1",
    };

    fn fixtures() -> (Pod, FixedSources) {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: { name: worker-1, namespace: jobs, labels: { app: s } }
spec:
  containers:
    - name: main
      resources: { limits: { memory: 64Mi } }
      volumeMounts:
        - { name: config, mountPath: /etc/sessionizer }
        - { name: data, mountPath: /data }
        - { name: scratch, mountPath: /data/scratch/one, subPathExpr: "$(POD_NAME)" }
        - { name: config, mountPath: /etc/app.conf, subPath: app.conf }
        - { name: data, mountPath: /ro, readOnly: true }
  volumes:
    - name: config
      configMap:
        name: app
        items: [{ key: app.conf, path: app.conf }, { key: extra, path: nested/extra, mode: 384 }]
    - name: creds
      secret: { secretName: creds, defaultMode: 256 }
    - name: info
      downwardAPI:
        items:
          - { path: labels, fieldRef: { fieldPath: metadata.labels } }
          - { path: mem, resourceFieldRef: { containerName: main, resource: limits.memory, divisor: 1Mi } }
    - name: access
      projected:
        sources:
          - serviceAccountToken: { path: token, audience: vault, expirationSeconds: 600 }
          - configMap: { name: app, items: [{ key: extra, path: ca.crt }] }
          - downwardAPI: { items: [{ path: namespace, fieldRef: { fieldPath: metadata.namespace } }] }
    - { name: scratch, emptyDir: {} }
    - { name: data, persistentVolumeClaim: { claimName: data-worker-1 } }
    - { name: missing, configMap: { name: nope } }
    - { name: maybe, configMap: { name: nope, optional: true } }
"#,
        )
        .unwrap();
        let sources = FixedSources {
            config_maps: vec![
                serde_yaml::from_str(
                    "metadata: { name: app, namespace: jobs }\ndata: { app.conf: 'gap=30m', extra: x }",
                )
                .unwrap(),
            ],
            secrets: vec![
                serde_yaml::from_str("metadata: { name: creds, namespace: jobs }\ndata: { user: YWRtaW4= }")
                    .unwrap(),
            ],
        };
        (pod, sources)
    }

    fn volume<'a>(pod: &'a Pod, name: &str) -> &'a Volume {
        pod.spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .unwrap()
    }

    fn files(kind: VolumeKind) -> BTreeMap<String, (String, u32)> {
        let VolumeKind::Files(set) = kind else {
            panic!("not files: {kind:?}")
        };
        set.files
            .into_iter()
            .map(|(k, (v, m))| (k, (String::from_utf8(v).unwrap(), m)))
            .collect()
    }

    #[test]
    fn config_map_secret_and_downward_volumes_hold_the_right_files() {
        let (pod, sources) = fixtures();
        let no_tokens = |_: &TokenSpec| None;
        let config =
            files(desired(volume(&pod, "config"), &pod, NET, &sources, &no_tokens).unwrap());
        assert_eq!(config["app.conf"], ("gap=30m".to_owned(), 0o644));
        assert_eq!(config["nested/extra"], ("x".to_owned(), 0o600));
        let creds = files(desired(volume(&pod, "creds"), &pod, NET, &sources, &no_tokens).unwrap());
        assert_eq!(creds["user"], ("admin".to_owned(), 0o400));
        let info = files(desired(volume(&pod, "info"), &pod, NET, &sources, &no_tokens).unwrap());
        assert_eq!(info["labels"].0, "app=\"s\"\n");
        assert_eq!(info["mem"].0, "64");
    }

    #[test]
    fn projected_volume_combines_token_config_and_downward_sources() {
        let (pod, sources) = fixtures();
        assert_eq!(
            token_specs(&pod),
            vec![TokenSpec {
                audience: Some("vault".into()),
                expiration_seconds: 600
            }]
        );
        let tokens = |spec: &TokenSpec| {
            (spec.audience.as_deref() == Some("vault")).then(|| "jwt".to_owned())
        };
        let access = files(desired(volume(&pod, "access"), &pod, NET, &sources, &tokens).unwrap());
        assert_eq!(access["token"].0, "jwt");
        assert_eq!(access["ca.crt"].0, "x");
        assert_eq!(access["namespace"].0, "jobs");
        let error = desired(volume(&pod, "access"), &pod, NET, &sources, &|_| None).unwrap_err();
        assert!(error.to_string().contains("not issued yet"), "{error}");
    }

    #[test]
    fn missing_config_map_fails_unless_optional() {
        let (pod, sources) = fixtures();
        let error = desired(volume(&pod, "missing"), &pod, NET, &sources, &|_| None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "MountVolume.SetUp failed for volume \"missing\": configmap \"nope\" not found"
        );
        let maybe = files(desired(volume(&pod, "maybe"), &pod, NET, &sources, &|_| None).unwrap());
        assert!(maybe.is_empty());
    }

    #[test]
    fn mounts_resolve_sub_paths_read_only_and_order() {
        let (pod, sources) = fixtures();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mut dirs = BTreeMap::new();
        for v in pod.spec.as_ref().unwrap().volumes.iter().flatten() {
            let Ok(kind) = desired(v, &pod, NET, &sources, &|_| Some("t".into())) else {
                continue;
            };
            dirs.insert(
                v.name.clone(),
                VolumeDir {
                    path: PathBuf::from("/state").join(&v.name),
                    read_only: kind.always_read_only(),
                },
            );
        }
        let mut env = EnvList::default();
        env.set("POD_NAME", "worker-1");
        let mounts = container_mounts(container, &dirs, &env).unwrap();
        let by_target = |t: &str| mounts.iter().find(|m| m.target == Path::new(t)).unwrap();
        assert!(by_target("/etc/sessionizer").read_only);
        assert!(!by_target("/data").read_only);
        assert!(by_target("/ro").read_only);
        assert_eq!(
            by_target("/etc/app.conf").source,
            Path::new("/state/config/app.conf")
        );
        assert_eq!(
            by_target("/data/scratch/one").source,
            Path::new("/state/scratch/worker-1")
        );
        let data = mounts
            .iter()
            .position(|m| m.target == Path::new("/data"))
            .unwrap();
        let nested = mounts
            .iter()
            .position(|m| m.target == Path::new("/data/scratch/one"))
            .unwrap();
        assert!(data < nested, "parents are mounted first");
    }

    #[test]
    fn paths_may_not_escape_the_volume() {
        assert!(check_relative("a/b").is_ok());
        assert!(check_relative("../etc/passwd").is_err());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("").is_err());
    }
}
