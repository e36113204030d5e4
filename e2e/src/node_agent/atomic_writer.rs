//! Writes a volume's files so a running container never sees a half-updated set, the way the
//! kubelet's AtomicWriter does: the files go to a fresh hidden directory, the `..data` symlink is
//! swapped to it with one rename, and each visible name is a symlink through `..data`. Because
//! containers bind-mount the volume's directory (not `..data`), a later swap is visible inside
//! running containers without a restart.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use super::volumes::FileSet;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Makes `dir` hold exactly `files`. Returns whether anything changed.
pub fn write(dir: &Path, files: &FileSet) -> io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    if current(dir)?.as_ref() == Some(files) {
        return Ok(false);
    }
    let previous = std::fs::read_link(dir.join(DATA)).ok();
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let staging = dir.join(&stamp);
    std::fs::create_dir(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
    for (path, (data, mode)) in &files.files {
        let file = staging.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, data)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;

    let visible: BTreeSet<&str> = files
        .files
        .keys()
        .filter_map(|p| p.split('/').next())
        .collect();
    for name in &visible {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    if let Some(previous) = previous
        && previous != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("..") || visible.contains(name) {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}

/// The files `dir/..data` holds now, or `None` if it was never written.
fn current(dir: &Path) -> io::Result<Option<FileSet>> {
    let data = dir.join(DATA);
    if std::fs::symlink_metadata(&data).is_err() {
        return Ok(None);
    }
    let mut set = FileSet::default();
    collect(&data, "", &mut set)?;
    Ok(Some(set))
}

fn collect(dir: &Path, prefix: &str, set: &mut FileSet) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect(&entry.path(), &path, set)?;
        } else {
            let data = std::fs::read(entry.path())?;
            set.files
                .insert(path, (data, meta.permissions().mode() & 0o777));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str)]) -> FileSet {
        let mut set = FileSet::default();
        for (path, data) in entries {
            set.files
                .insert((*path).to_owned(), (data.as_bytes().to_vec(), 0o644));
        }
        set
    }

    #[test]
    fn swaps_contents_atomically_and_removes_stale_names() {
        let dir = std::env::temp_dir().join(format!("atomic-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(write(&dir, &set(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert!(
            !write(&dir, &set(&[("a", "1"), ("sub/b", "2")])).unwrap(),
            "no change"
        );

        assert!(write(&dir, &set(&[("a", "changed"), ("c", "3")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "changed");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "3");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "stale link removed"
        );
        let hidden: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        assert_eq!(hidden.len(), 1, "old generation removed: {hidden:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
