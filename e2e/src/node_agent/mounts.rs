//! A container's private view of the file system: before its program starts, the child process
//! enters a new mount namespace, makes every mount private (so nothing leaks back to the machine)
//! and bind-mounts the Pod's volumes at their mount paths. The mounts vanish with the process.
//!
//! The setup runs between fork and exec, so it must only call async-signal-safe functions on
//! memory prepared beforehand: every path is a `CString` built by [`MountPlan::new`]. The hook is
//! registered on the `Command` before [`crate::process::spawn`] adds its own (process group,
//! parent-death signal), and runs first.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::volumes::Mount;
use crate::{Error, Result};

/// Bind mounts and working directory, prepared for use after fork.
#[derive(Debug)]
pub struct MountPlan {
    mounts: Vec<(CString, CString, bool)>,
    working_dir: CString,
}

impl MountPlan {
    /// Prepares `mounts` (in order) and the directory the program starts in.
    pub fn new(mounts: &[Mount], working_dir: &Path) -> Result<Self> {
        let c = |path: &Path| {
            CString::new(path.as_os_str().as_bytes()).map_err(|_| {
                Error::ContainerConfig(format!("path {} contains a NUL byte", path.display()))
            })
        };
        let mounts = mounts
            .iter()
            .map(|m| Ok((c(&m.source)?, c(&m.target)?, m.read_only)))
            .collect::<Result<_>>()?;
        Ok(Self {
            mounts,
            working_dir: c(working_dir)?,
        })
    }

    /// Arranges for `command`'s child to set up the namespace, the mounts and the working
    /// directory before it runs the program. (The working directory is entered after mounting,
    /// so a working directory inside a volume is the mounted one.)
    #[allow(unsafe_code)]
    pub fn install(self, command: &mut Command) {
        // SAFETY: the closure runs between fork and exec. It only calls unshare, mount and chdir
        // (async-signal-safe system calls) on CStrings allocated before the fork, and builds
        // errors with `io::Error::last_os_error`, which does not allocate.
        unsafe {
            command.pre_exec(move || self.apply());
        }
    }

    #[allow(unsafe_code)]
    fn apply(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // SAFETY: plain system calls on valid NUL-terminated strings that outlive the calls.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &self.mounts {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        c"none".as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::chdir(self.working_dir.as_ptr()))?;
        }
        Ok(())
    }
}

/// Makes sure every mount's source and target exist before the fork: a missing subPath is
/// created as a directory (as the kubelet does), a missing target as a directory, or as an empty
/// file when the source is a file.
pub fn prepare(mounts: &[Mount]) -> Result<()> {
    for mount in mounts {
        if !mount.source.exists() {
            if mount.sub_path {
                std::fs::create_dir_all(&mount.source)
                    .map_err(Error::io("creating subPath", &mount.source))?;
            } else {
                return Err(Error::ContainerConfig(format!(
                    "volume source {} does not exist",
                    mount.source.display()
                )));
            }
        }
        if mount.source.is_dir() {
            if !mount.target.is_dir() {
                std::fs::create_dir_all(&mount.target)
                    .map_err(Error::io("creating mountPath", &mount.target))?;
            }
        } else if !mount.target.exists() {
            if let Some(parent) = mount.target.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("creating mountPath", parent))?;
            }
            std::fs::write(&mount.target, b"")
                .map_err(Error::io("creating mountPath", &mount.target))?;
        }
    }
    Ok(())
}
