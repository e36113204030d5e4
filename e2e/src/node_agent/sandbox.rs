//! A Pod's "sandbox" on this node: its directory, its service-account credentials and its
//! volumes, set up before the first container starts and kept current while the Pod runs
//! (tokens refreshed before expiry, configMap/secret/downwardAPI/projected contents re-synced
//! atomically). It never starts processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;

use super::atomic_writer;
use super::env::PodNet;
use super::token::{self, IssuedToken};
use super::volumes::{self, TokenSpec, VolumeDir, VolumeKind};
use super::{Agent, claim_dir, pod_dir};
use crate::{Error, Result};

/// The per-Pod state on disk.
#[derive(Debug)]
pub struct Sandbox {
    /// `<state>/pods/<namespace>/<pod>`.
    pub dir: PathBuf,
    /// Each volume's directory, by volume name.
    pub volume_dirs: BTreeMap<String, VolumeDir>,
    /// `<pod dir>/serviceaccount` when the Pod automounts its token.
    pub service_account_dir: Option<PathBuf>,
    /// `<pod dir>/kubeconfig` when the Pod automounts its token.
    pub kubeconfig: Option<PathBuf>,
    tokens: BTreeMap<TokenSpec, IssuedToken>,
}

impl Sandbox {
    /// Creates the Pod's directory. Volumes left by an earlier Pod of the same name are removed
    /// (an emptyDir starts empty), logs are kept.
    pub fn create(state_dir: &Path, pod: &Pod) -> Result<Self> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let dir = pod_dir(state_dir, namespace, name);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        let uid_file = dir.join(".uid");
        let previous = std::fs::read_to_string(&uid_file).unwrap_or_default();
        if previous != uid {
            let volumes = dir.join("volumes");
            if volumes.exists() {
                std::fs::remove_dir_all(&volumes).map_err(Error::io("removing", &volumes))?;
            }
            std::fs::write(&uid_file, uid).map_err(Error::io("writing", &uid_file))?;
        }
        Ok(Self {
            dir,
            volume_dirs: BTreeMap::new(),
            service_account_dir: None,
            kubeconfig: None,
            tokens: BTreeMap::new(),
        })
    }

    /// Whether the Pod mounts its service-account token (pod-level opt-out only).
    pub fn automount(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.automount_service_account_token)
            != Some(false)
    }

    /// When a token must next be refreshed.
    pub fn next_refresh(&self) -> Option<Instant> {
        self.tokens.values().map(IssuedToken::refresh_at).min()
    }

    /// Brings tokens, credentials and volumes up to date. Fails only while something a container
    /// needs has never been set up; a later failure keeps the last good contents (as the kubelet
    /// does) and is logged.
    pub async fn sync(&mut self, agent: &Agent, pod: &Pod, net: PodNet<'_>) -> Result<()> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let service_account = spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned());

        let automount = Self::automount(pod);
        let default_spec = TokenSpec {
            audience: None,
            expiration_seconds: agent.config.token_expiration_seconds,
        };
        let mut wanted = volumes::token_specs(pod);
        if automount {
            wanted.push(default_spec.clone());
        }
        for token_spec in wanted {
            let due = self
                .tokens
                .get(&token_spec)
                .is_none_or(IssuedToken::needs_refresh);
            if !due {
                continue;
            }
            match token::request(
                &agent.client,
                namespace,
                &service_account,
                name,
                uid,
                &token_spec,
            )
            .await
            {
                Ok(issued) => {
                    tracing::debug!(namespace, pod = name, audience = ?token_spec.audience, "service-account token issued");
                    self.tokens.insert(token_spec, issued);
                }
                Err(error) if self.tokens.contains_key(&token_spec) => {
                    tracing::warn!(namespace, pod = name, %error, "refreshing a service-account token failed");
                }
                Err(error) => {
                    return Err(Error::ContainerConfig(format!(
                        "MountVolume.SetUp failed: cannot issue a token for service account {service_account}: {error}"
                    )));
                }
            }
        }
        if automount && let Some(issued) = self.tokens.get(&default_spec) {
            let sa_dir = self.dir.join("serviceaccount");
            token::write_service_account(
                &sa_dir,
                &issued.token,
                &agent.api_server.ca_pem,
                namespace,
            )?;
            let kubeconfig = token::write_kubeconfig(
                &self.dir.join("kubeconfig"),
                &agent.api_server.url,
                &sa_dir,
                namespace,
                &service_account,
            )?;
            self.service_account_dir = Some(sa_dir);
            self.kubeconfig = Some(kubeconfig);
        }

        let tokens = &self.tokens;
        let lookup = |spec: &TokenSpec| tokens.get(spec).map(|t| t.token.clone());
        let mut first_error = None;
        for volume in spec.volumes.iter().flatten() {
            let result =
                volumes::desired(volume, pod, net, &agent.sources, &lookup).and_then(|kind| {
                    self.materialize(&agent.config.state_dir, namespace, &volume.name, &kind)
                });
            match result {
                Ok(dir) => {
                    self.volume_dirs.insert(volume.name.clone(), dir);
                }
                Err(error) if self.volume_dirs.contains_key(&volume.name) => {
                    tracing::warn!(namespace, pod = name, volume = volume.name, %error, "volume not updated");
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn materialize(
        &self,
        state_dir: &Path,
        namespace: &str,
        volume: &str,
        kind: &VolumeKind,
    ) -> Result<VolumeDir> {
        let read_only = kind.always_read_only();
        let path = match kind {
            VolumeKind::Files(files) => {
                let dir = self.dir.join("volumes").join(volume);
                let changed =
                    atomic_writer::write(&dir, files).map_err(Error::io("writing volume", &dir))?;
                if changed {
                    tracing::debug!(volume, dir = %dir.display(), "volume contents updated");
                }
                dir
            }
            VolumeKind::EmptyDir => {
                let dir = self.dir.join("volumes").join(volume);
                std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
                dir
            }
            VolumeKind::HostPath { path, kind } => {
                match kind.as_str() {
                    "DirectoryOrCreate" => {
                        std::fs::create_dir_all(path).map_err(Error::io("creating", path))?;
                    }
                    "FileOrCreate" if !path.exists() => {
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(Error::io("creating", parent))?;
                        }
                        std::fs::write(path, b"").map_err(Error::io("creating", path))?;
                    }
                    _ if !path.exists() => {
                        return Err(Error::ContainerConfig(format!(
                            "MountVolume.SetUp failed for volume \"{volume}\": hostPath {} does not exist",
                            path.display()
                        )));
                    }
                    _ => {}
                }
                path.clone()
            }
            VolumeKind::Claim { claim, .. } => {
                let dir = claim_dir(state_dir, namespace, claim);
                std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
                dir
            }
        };
        Ok(VolumeDir { path, read_only })
    }

    /// Removes what dies with the Pod (emptyDirs, file volumes); logs, credentials and claims
    /// stay. Does nothing once a newer Pod of the same name has claimed the directory.
    pub fn cleanup(&self, uid: &str) {
        let owner = std::fs::read_to_string(self.dir.join(".uid")).unwrap_or_default();
        if owner != uid {
            return;
        }
        let volumes = self.dir.join("volumes");
        if let Err(error) = std::fs::remove_dir_all(&volumes)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %volumes.display(), "removing pod volumes failed");
        }
    }
}
