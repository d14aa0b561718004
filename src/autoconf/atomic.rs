//! Replacing a file so that every reader sees either the old content or the new one, never a
//! half-written file, and so that a binary being executed is never opened for writing.
//!
//! The runtime reads the CNI conf dir at any moment and execs `plexus` from the bin dir at any
//! moment; Multus's "text file busy" after a reboot (#1221) and its empty conf (#1155) both
//! came from writing in place.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether [`replace`] changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file was created or its content replaced.
    Replaced,
    /// The file already had this content and mode; it was left alone (mtime kept).
    Unchanged,
}

/// Puts `content` at `path` with `mode`: a temp file in the same directory (rename is only
/// atomic within one filesystem), fsync, rename over the target, fsync the directory so the
/// rename survives a crash. Leaves the target untouched when it already holds `content` with
/// `mode`, so watchers of the conf dir see no event and mtimes mean something.
pub fn replace(path: &Path, content: &[u8], mode: u32) -> io::Result<Written> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o7777 == mode
        && meta.len() == content.len() as u64
        && std::fs::read(path).is_ok_and(|old| old == content)
    {
        return Ok(Written::Unchanged);
    }
    let dir = parent(path)?;
    let tmp = temp_path(path)?;
    let outcome = write_temp(&tmp, content, mode).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()?;
    Ok(Written::Replaced)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        )),
    }
}

/// `.<name>.tmp-<pid>` beside the target. The leading dot and the suffix keep it out of
/// libcni's `.conf`/`.conflist`/`.json` scan, so a runtime never loads a half-written conf.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(parent(path)?.join(tmp))
}

fn write_temp(tmp: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    // A temp file left by a crashed run with the same pid is ours to replace.
    let _ = std::fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    f.write_all(content)?;
    // The umask may have narrowed the mode given to open.
    f.set_permissions(Permissions::from_mode(mode))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("00-x.conflist");
        std::fs::write(&p, "old").unwrap();
        assert_eq!(replace(&p, b"new", 0o600).unwrap(), Written::Replaced);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["00-x.conflist"]);
    }

    #[test]
    fn same_content_and_mode_is_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        assert_eq!(replace(&p, b"a", 0o644).unwrap(), Written::Replaced);
        let ino = std::fs::metadata(&p).unwrap().ino();
        assert_eq!(replace(&p, b"a", 0o644).unwrap(), Written::Unchanged);
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        // A different mode alone is a change.
        assert_eq!(replace(&p, b"a", 0o600).unwrap(), Written::Replaced);
        assert_ne!(std::fs::metadata(&p).unwrap().ino(), ino);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp file is written.
        let p = d.path().join("target");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("keep"), "x").unwrap();
        assert!(replace(&p, b"new", 0o600).is_err());
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["target"]);
        assert!(p.join("keep").exists());
    }
}
