//! One container run as a local process: choosing the program (the image's binary, or the
//! command when it names a program on this machine), starting it through
//! [`crate::process::spawn`] (own process group, parent-death signal) inside its mount namespace,
//! and reporting its exit. Also runs exec probes the same way.
//!
//! A waiter thread per run waits for the process without reaping it first, kills what is left of
//! its process group (a container's processes end with it, as with a cgroup), then reaps it; so a
//! process-group id is never signalled after it could have been reused.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};

use super::config::ImageRegistry;
use super::env::{self, EnvList};
use super::mounts::MountPlan;
use super::volumes::Mount;
use crate::process::{open_log, signal_group, spawn};
use crate::{Error, Result};

/// Everything needed to start one container run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `namespace/pod/container`, for messages.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub working_dir: PathBuf,
    /// Bind mounts, parents first.
    pub mounts: Vec<Mount>,
    /// Where stdout and stderr are appended.
    pub log: PathBuf,
}

/// A container process that ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The container's name.
    pub container: String,
    /// The run it belongs to.
    pub run: u64,
    /// The exit code (128 + signal number when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// When it ended.
    pub finished_at: Time,
}

impl Exit {
    fn new(container: String, run: u64, status: ExitStatus) -> Self {
        let signal = status.signal();
        let exit_code = status.code().or(signal.map(|s| 128 + s)).unwrap_or(128);
        Self {
            container,
            run,
            exit_code,
            signal,
            finished_at: Time(Timestamp::now()),
        }
    }
}

/// A started container process.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its process id, also its process-group id.
    pub pid: u32,
    exited: Arc<AtomicBool>,
}

impl Process {
    /// Sends `signal` to the process group unless the process has already been reaped.
    pub fn signal(&self, signal: Signal) {
        if !self.exited.load(Ordering::Acquire) {
            signal_group(self.pid, signal);
        }
    }
}

/// The program and arguments for `container`. The image must be known. When `command[0]` is an
/// absolute path or found on `path_env`, it replaces the image's binary; otherwise `command[0]`
/// is taken to name the image's binary and the rest of `command` comes before `args`.
/// `$(VAR)` references are expanded from `env`.
pub fn entrypoint(
    images: &ImageRegistry,
    container: &Container,
    env: &EnvList,
    path_env: &str,
) -> Result<(PathBuf, Vec<String>)> {
    let image = container.image.as_deref().unwrap_or_default();
    let binary = images.resolve(image)?.to_owned();
    let expand = |s: &String| env::expand(s, &|name| env.get(name).map(str::to_owned));
    let command: Vec<String> = container.command.iter().flatten().map(expand).collect();
    let args = container.args.iter().flatten().map(expand);
    if let Some(first) = command.first()
        && let Some(program) = find_program(first, path_env)
    {
        return Ok((program, command[1..].iter().cloned().chain(args).collect()));
    }
    let rest = command.iter().skip(1).cloned();
    Ok((binary, rest.chain(args).collect()))
}

/// An absolute path to an existing file, or `name` found in one of `path_env`'s directories.
pub fn find_program(name: &str, path_env: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    if path.is_absolute() {
        return path.is_file().then(|| path.to_owned());
    }
    if name.contains('/') {
        return None;
    }
    path_env
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

fn command(launch: &Launch) -> Result<Command> {
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    MountPlan::new(&launch.mounts, &launch.working_dir)?.install(&mut command);
    Ok(command)
}

/// Starts `launch` as run `run` of `container`; its exit is sent on `exits`.
pub fn start(
    launch: &Launch,
    container: &str,
    run: u64,
    exits: mpsc::UnboundedSender<Exit>,
) -> Result<Process> {
    let out = open_log(&launch.log)?;
    let err = out
        .try_clone()
        .map_err(Error::io("duplicating", &launch.log))?;
    let mut command = command(launch)?;
    command.stdout(out).stderr(err);
    let mut child = spawn(command).map_err(|source| Error::Spawn {
        name: launch.name.clone(),
        source,
    })?;
    let pid = child.id();
    let exited = Arc::new(AtomicBool::new(false));
    let flag = exited.clone();
    let container = container.to_owned();
    let waiter = move || {
        if let Ok(raw) = i32::try_from(pid) {
            // Wait without reaping: the zombie keeps the process-group id ours while we clean up.
            let _ = waitid(
                Id::Pid(Pid::from_raw(raw)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            );
        }
        signal_group(pid, Signal::SIGKILL);
        let status = child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(128 << 8));
        flag.store(true, Ordering::Release);
        let _ = exits.send(Exit::new(container, run, status));
    };
    std::thread::Builder::new()
        .name(format!("container-wait-{pid}"))
        .spawn(waiter)
        .map_err(|source| Error::Spawn {
            name: format!("waiter for {}", launch.name),
            source,
        })?;
    Ok(Process { pid, exited })
}

/// What an exec probe needs to run "inside" a container.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// The container's launch (environment, mounts, working directory).
    pub launch: Launch,
}

/// Runs `argv` with the container's environment and mounts; success is exit code 0. Kills the
/// command's process group when it outlives `timeout`.
pub async fn exec(
    context: Arc<ExecContext>,
    argv: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    let path_env = context
        .launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let Some(first) = argv.first() else {
        return Err("exec probe has no command".into());
    };
    let program = find_program(first, &path_env)
        .ok_or_else(|| format!("exec: {first:?}: executable file not found in $PATH"))?;
    let mut launch = context.launch.clone();
    launch.program = program;
    launch.args = argv[1..].to_vec();
    let mut command = command(&launch).map_err(|e| e.to_string())?;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = spawn(command).map_err(|e| format!("exec {first}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = oneshot::channel();
    let waiter = move || {
        let _ = tx.send(child.wait_with_output());
    };
    std::thread::Builder::new()
        .name(format!("exec-wait-{pid}"))
        .spawn(waiter)
        .map_err(|e| format!("exec {first}: {e}"))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(output))) => {
            signal_group(pid, Signal::SIGKILL);
            if output.status.success() {
                Ok(())
            } else {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                Err(format!(
                    "command {argv:?} exited with {}: {}",
                    output.status.code().unwrap_or(-1),
                    text.trim()
                ))
            }
        }
        Ok(Ok(Err(error))) => Err(format!("exec {first}: {error}")),
        Ok(Err(_)) => Err(format!("exec {first}: waiter vanished")),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            Err(format!("command {argv:?} timed out after {timeout:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_agent::config::ImageMapping;

    fn images() -> ImageRegistry {
        ImageRegistry::new(&[ImageMapping {
            name: "testapp".into(),
            path: "/opt/bin/e2e-testapp".into(),
        }])
    }

    fn container(yaml: &str) -> Container {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn image_binary_is_the_entrypoint_and_args_follow() {
        let mut env = EnvList::default();
        env.set("PORT", "9090");
        let (program, args) = entrypoint(
            &images(),
            &container("name: c\nimage: testapp:dev\nargs: [--port, $(PORT)]"),
            &env,
            "/usr/bin:/bin",
        )
        .unwrap();
        assert_eq!(program, Path::new("/opt/bin/e2e-testapp"));
        assert_eq!(args, ["--port", "9090"]);
    }

    #[test]
    fn command_on_path_replaces_the_entrypoint() {
        let env = EnvList::default();
        let (program, args) = entrypoint(
            &images(),
            &container("name: c\nimage: testapp\ncommand: [sh, -c]\nargs: ['echo hi']"),
            &env,
            "/usr/bin:/bin",
        )
        .unwrap();
        assert!(program.ends_with("sh"), "{}", program.display());
        assert_eq!(args, ["-c", "echo hi"]);
        let (program, args) = entrypoint(
            &images(),
            &container("name: c\nimage: testapp\ncommand: [/usr/local/bin/not-here, serve]"),
            &env,
            "/usr/bin:/bin",
        )
        .unwrap();
        assert_eq!(program, Path::new("/opt/bin/e2e-testapp"));
        assert_eq!(args, ["serve"]);
    }

    #[test]
    fn unknown_image_is_an_error_even_with_a_command() {
        let error = entrypoint(
            &images(),
            &container("name: c\nimage: busybox\ncommand: [sh]"),
            &EnvList::default(),
            "/usr/bin:/bin",
        )
        .unwrap_err();
        assert!(matches!(error, Error::UnknownImage { .. }), "{error}");
    }
}
