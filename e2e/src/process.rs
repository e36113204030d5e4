//! Child processes that can never outlive the process that started them.
//!
//! Every server of the environment (and every Pod process the node agent runs) is started here:
//! in its own process group, with its output appended to a log file, and with the kernel's
//! parent-death signal set to SIGKILL. The spawn happens on one long-lived thread, because Linux
//! delivers the parent-death signal when the *thread* that forked the child exits — a test's
//! runtime thread would take the shared environment down with it. So whether the owner returns,
//! panics, is interrupted with Ctrl-C or is killed outright, nothing is left running.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Error, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The channel to the spawner thread, started on first use and alive until the process exits.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawned = std::thread::Builder::new()
            .name("process-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // The requester may have given up; nothing to do then but let Drop reap.
                    let _ = reply.send(spawn_guarded(&mut command));
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the process-spawner thread");
        }
        tx
    })
}

/// Forks `command` in a new process group with the parent-death signal armed.
#[allow(unsafe_code)]
fn spawn_guarded(command: &mut Command) -> std::io::Result<Child> {
    let parent = std::process::id();
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe functions
    // (prctl, getppid); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died between fork and prctl: then nobody would signal us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Starts `command` through the spawner thread (see the module docs).
pub fn spawn(command: Command) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .send((command, tx))
        .map_err(|_| std::io::Error::other("process-spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("process-spawner thread is gone"))?
}

/// Opens (creating it and its directory) a log file in append mode.
pub fn open_log(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io("opening", path))
}

/// A running server process owned by the environment; stopping or dropping it ends its whole
/// process group.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = open_log(log)?;
        let err = out.try_clone().map_err(Error::io("duplicating", log))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        tracing::debug!(name, ?command, log = %log.display(), "starting process");
        let child = spawn(command).map_err(|source| Error::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            pid: child.id(),
            child: Mutex::new(child),
            log: log.to_owned(),
        })
    }

    /// The process's name in the environment.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        // A panic while holding the lock leaves a usable Child behind; take it anyway.
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file its output goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with [`Error::Exited`] if the process has already exited.
    pub fn ensure_running(&self) -> Result<()> {
        let status = self.child().try_wait();
        match status {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status)),
            Err(error) => Err(Error::Other(format!("checking {}: {error}", self.name))),
        }
    }

    fn exited(&self, status: ExitStatus) -> Error {
        Error::Exited {
            name: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
        }
    }

    /// Sends SIGTERM to the process group, waits up to `grace` for the process to exit, then
    /// sends SIGKILL. Returns how it exited.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child();
        if let Ok(Some(status)) = child.try_wait() {
            signal_group(self.pid, Signal::SIGKILL);
            return Some(status);
        }
        signal_group(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut delay = Duration::from_millis(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                // Leftover members of the group get no second chance.
                signal_group(self.pid, Signal::SIGKILL);
                return Some(status);
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
        signal_group(self.pid, Signal::SIGKILL);
        child.wait().ok()
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Sends `signal` to the process group led by `pid`, ignoring groups that are already gone.
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_the_process_and_its_children() {
        let dir = std::env::temp_dir().join(format!("process-test-{}", std::process::id()));
        let log = dir.join("sh.log");
        let mut command = Command::new("sh");
        // A child that ignores nothing and a grandchild in the same group.
        command.args(["-c", "sleep 300 & echo started; wait"]);
        let process = ManagedProcess::start("sh", command, &log).unwrap();
        process.ensure_running().unwrap();
        let pid = process.pid();
        let status = process.stop(Duration::from_secs(5));
        assert!(status.is_some());
        // The killed grandchild lingers as a zombie until init reaps it: wait for the group to
        // vanish rather than look once.
        crate::wait::until(
            "the process group to be gone",
            Duration::from_secs(10),
            || async {
                let gone = killpg(Pid::from_raw(pid as i32), None).is_err();
                Ok::<_, crate::Error>(gone.then_some(()))
            },
        )
        .await
        .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn exited_process_is_reported_with_its_log() {
        let dir = std::env::temp_dir().join(format!("process-exit-{}", std::process::id()));
        let log = dir.join("false.log");
        let process = ManagedProcess::start("false", Command::new("false"), &log).unwrap();
        let _ = process.child().wait();
        let message = process.ensure_running().unwrap_err().to_string();
        assert!(message.contains("false.log"), "{message}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
