//! The per-container lock: one byte of a single file, `<cniDir>/.locks`, locked with an
//! open-file-description lock (`F_OFD_SETLK`) at an offset taken from the container ID's
//! hash.
//!
//! A lock file per container cost an inode created at the first call and deleted at the
//! last, and a listing of the journal dir at every unlock to decide whether to delete it. On
//! an ext4 without a journal each creation also walks every inode freed in the last minute
//! (docs/performance.md). One file that is never deleted costs neither. An OFD lock belongs to
//! the open file description, not the process, so two calls in one daemon exclude each other
//! as two processes do, and closing the file (dropping the lock, or the process dying)
//! unlocks it.

use super::JournalError;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The shared lock file's name in the journal dir. It stays empty: locks never write.
pub const LOCK_FILE: &str = ".locks";

/// A container's lock; dropping it unlocks.
pub struct ContainerLock {
    /// `None` on a read-only state dir, where no lock file can be made: nothing can be
    /// written there either, so there is nothing to serialize but reads.
    _file: Option<File>,
    pub(super) container_id: String,
}

/// Takes `container_id`'s lock in `dir`, waiting at most `wait` (then code 11).
pub fn take(dir: &Path, container_id: &str, wait: Duration) -> Result<ContainerLock, JournalError> {
    let path = dir.join(LOCK_FILE);
    let io = |op, source| JournalError::Io {
        op,
        path: path.clone(),
        source,
    };
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A FIFO planted under the name must not hang the call, a symlink must not be followed.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {
            return Ok(ContainerLock {
                _file: None,
                container_id: container_id.to_string(),
            });
        }
        Err(e) => return Err(io("open lock", e)),
    };
    if !file.metadata().map_err(|e| io("stat lock", e))?.is_file() {
        return Err(io("open lock", std::io::Error::other("not a regular file")));
    }
    let byte = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: offset(container_id),
        l_len: 1,
        l_pid: 0,
    };
    let start = Instant::now();
    loop {
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&byte)) {
            Ok(_) => {
                return Ok(ContainerLock {
                    _file: Some(file),
                    container_id: container_id.to_string(),
                });
            }
            Err(Errno::EAGAIN | Errno::EACCES) => {
                if start.elapsed() >= wait {
                    return Err(JournalError::LockTimeout {
                        container_id: container_id.to_string(),
                        waited: wait,
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io("lock", std::io::Error::from(e))),
        }
    }
}

/// The container's byte: 62 bits of its ID's SHA-256, so the offset and the byte after it
/// fit an `off_t`. Two IDs that share a byte would only wait for each other.
fn offset(container_id: &str) -> i64 {
    let digest = Sha256::digest(container_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) >> 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_container_waits_another_does_not() {
        let t = tempfile::tempdir().unwrap();
        let held = take(t.path(), "c1", Duration::from_secs(1)).unwrap();
        let err = take(t.path(), "c1", Duration::from_millis(30))
            .err()
            .unwrap();
        assert_eq!(err.code(), 11);
        let other = take(t.path(), "c2", Duration::from_millis(30));
        assert!(other.is_ok(), "another container's lock is free");
        drop(held);
        assert!(take(t.path(), "c1", Duration::from_millis(30)).is_ok());
        let md = std::fs::metadata(t.path().join(LOCK_FILE)).unwrap();
        assert_eq!(md.len(), 0);
    }

    /// Re-runs this test binary as the other process: with `PLEXUS_LOCK_PROBE` set, this
    /// test only tries the lock and prints what it found.
    #[test]
    fn a_lock_excludes_another_process() {
        if let Some(dir) = std::env::var_os("PLEXUS_LOCK_PROBE") {
            let answer = match take(Path::new(&dir), "c1", Duration::from_millis(30)) {
                Ok(_) => "free".to_string(),
                Err(JournalError::LockTimeout { .. }) => "held".to_string(),
                Err(e) => format!("failed:{}", e.to_string().replace(' ', "_")),
            };
            println!("probe: {answer}");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let probe = || {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "journal::lock::tests::a_lock_excludes_another_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("PLEXUS_LOCK_PROBE", t.path())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            // libtest prints the test's name on the line the probe's answer goes to.
            text.split("probe: ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no probe answer in {text}"))
        };
        let held = take(t.path(), "c1", Duration::from_secs(1)).unwrap();
        assert_eq!(probe(), "held");
        drop(held);
        assert_eq!(probe(), "free");
    }

    #[test]
    fn a_lock_file_that_is_not_a_plain_file_is_refused_at_once() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(LOCK_FILE);
        let target = t.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let started = Instant::now();
        let err = take(t.path(), "c1", Duration::from_secs(5)).err().unwrap();
        assert_eq!(err.code(), 5, "{err}");
        assert!(!target.exists(), "the symlink was not followed");
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = take(t.path(), "c1", Duration::from_secs(5)).err().unwrap();
        assert_eq!(err.code(), 5, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "neither waited for the bound nor hung on the FIFO"
        );
    }

    #[test]
    fn offsets_fit_an_off_t() {
        for id in ["", "a", &"f".repeat(200)] {
            let o = offset(id);
            assert!(o >= 0 && o.checked_add(1).is_some());
        }
    }
}
