//! Resolving a conf's `type` to a binary on `CNI_PATH`.
//!
//! `type` comes from network configurations that tenants may write (NADs), so it is treated as
//! hostile: it must be a bare file name, and only directories that an unprivileged user cannot
//! plant files in are searched: a tenant who could name a path, or plant a binary, would run
//! code as root on the node.

use super::ExecError;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Any of these bits lets someone other than the owner replace what we are about to run.
const GROUP_OR_WORLD_WRITABLE: u32 = 0o022;
const ANY_EXEC: u32 = 0o111;

/// Splits `CNI_PATH` on `:`; empty entries (`a::b`, a trailing `:`) are dropped rather than
/// meaning the current directory, as they would for a shell's `PATH`. A directory listed
/// twice (a `binDir` that is also on the runtime's `CNI_PATH`) is kept once, where it first
/// appears.
pub fn split_path(cni_path: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in cni_path.split(':').filter(|entry| !entry.is_empty()) {
        let dir = PathBuf::from(entry);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Finds the binary for `plugin_type` in `dirs`, first match wins.
///
/// Directories that are relative, not owned by root, or writable by group or others are skipped
/// and named in the [`ExecError::NotFound`] message; so are candidates that are not regular
/// executable files, not owned by root, or themselves group/world writable. `forbidden` holds
/// the types that would run the caller itself again (recursion); a candidate that is the
/// running executable under any other name (an admin's `multus` link to plexus) is refused
/// too.
pub fn find_plugin(
    plugin_type: &str,
    dirs: &[PathBuf],
    forbidden: &[&str],
) -> Result<PathBuf, ExecError> {
    check_type(plugin_type)?;
    if forbidden.contains(&plugin_type) {
        return Err(ExecError::ForbiddenType {
            plugin_type: plugin_type.to_string(),
        });
    }
    let mut searched = Vec::new();
    let mut skipped = Vec::new();
    for dir in dirs {
        if let Err(reason) = trusted_dir(dir) {
            skipped.push(format!("{}: {reason}", dir.display()));
            continue;
        }
        searched.push(dir.clone());
        let candidate = dir.join(plugin_type);
        match runnable_file(&candidate) {
            Ok(true) if is_running_executable(&candidate) => {
                return Err(ExecError::RunsItself {
                    plugin_type: plugin_type.to_string(),
                    path: candidate,
                });
            }
            Ok(true) => return Ok(candidate),
            Ok(false) => {}
            Err(reason) => skipped.push(format!("{}: {reason}", candidate.display())),
        }
    }
    Err(ExecError::NotFound {
        plugin_type: plugin_type.to_string(),
        searched,
        skipped,
    })
}

fn check_type(plugin_type: &str) -> Result<(), ExecError> {
    crate::names::check_plugin_type(plugin_type).map_err(|reason| ExecError::BadType {
        plugin_type: plugin_type.to_string(),
        reason,
    })
}

fn trusted_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err("relative directory".to_string());
    }
    // Following a symlink for the directory itself is fine: what matters is who can write into
    // the directory we end up reading.
    let meta = fs::metadata(dir).map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_dir() {
        return Err("not a directory".to_string());
    }
    if meta.uid() != 0 {
        return Err(format!("owned by uid {}, not root", meta.uid()));
    }
    if meta.permissions().mode() & GROUP_OR_WORLD_WRITABLE != 0 {
        return Err(format!(
            "mode {:o} is writable by group or others",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// Whether `candidate` is the file this process runs from (same device and inode as
/// `/proc/self/exe`), whatever it is called or linked as.
fn is_running_executable(candidate: &Path) -> bool {
    static SELF: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let own = SELF.get_or_init(|| {
        fs::metadata("/proc/self/exe")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    });
    match (own, fs::metadata(candidate)) {
        (Some(own), Ok(m)) => *own == (m.dev(), m.ino()),
        _ => false,
    }
}

/// `Ok(false)` when nothing is there; `Err` when something is there that we refuse to run.
fn runnable_file(candidate: &Path) -> Result<bool, String> {
    let meta = match fs::metadata(candidate) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot stat: {e}")),
    };
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        Err("not a regular file".to_string())
    } else if mode & ANY_EXEC == 0 {
        Err(format!("mode {:o} has no exec bit", mode & 0o7777))
    } else if meta.uid() != 0 {
        Err(format!("owned by uid {}, not root", meta.uid()))
    } else if mode & GROUP_OR_WORLD_WRITABLE != 0 {
        Err(format!(
            "mode {:o} is writable by group or others",
            mode & 0o7777
        ))
    } else {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[test]
    fn split_path_drops_empty_entries() {
        assert_eq!(
            split_path("/opt/cni/bin::/usr/lib/cni:"),
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(split_path(":/a"), vec![PathBuf::from("/a")]);
        assert_eq!(
            split_path("/opt/cni/bin:/usr/lib/cni:/opt/cni/bin"),
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert!(split_path("").is_empty());
        assert!(split_path(":::").is_empty());
    }

    #[test]
    fn split_path_keeps_relative_entries_for_the_lookup_to_reject() {
        assert_eq!(
            split_path("bin:/usr/lib/cni"),
            vec![PathBuf::from("bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn the_running_executable_is_refused_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let alias = dir.path().join("multus");
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &alias).unwrap();
        assert!(is_running_executable(&alias));
        assert!(!is_running_executable(Path::new("/bin/sh")));
    }

    #[test]
    fn bare_names_pass_the_type_check() {
        for name in ["bridge", "host-local", "plexus_bridge", "a.b", "..a", "x.."] {
            assert!(check_type(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn path_like_types_fail_the_type_check_with_code_7() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "/bin/sh",
            "../../bin/sh",
            "a\\b",
            "a\0b",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{7f}b",
        ] {
            let err = check_type(name).expect_err(name);
            assert_eq!(err.code(), Code::InvalidConfig, "{name:?}");
            assert!(matches!(err, ExecError::BadType { .. }), "{name:?}");
        }
    }
}
