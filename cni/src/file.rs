//! Files a network configuration names (a `resolvConf`, a conf folder's files, a lock), read
//! and locked within bounds. Configurations can come from tenants, so a path may name a FIFO
//! that never delivers, a device that never ends, or a lock someone holds forever: none of
//! them may hold a CNI call longer than its timeout.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{} is not a regular file", .0.display())]
    NotRegular(std::path::PathBuf),
    #[error("{} is larger than {limit} bytes", .path.display())]
    TooLarge {
        path: std::path::PathBuf,
        limit: u64,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads a regular file of at most `limit` bytes. Anything else is refused before a byte is
/// read: the type is checked before opening (so no device is opened), the open cannot block
/// (`O_NONBLOCK`: a FIFO without a writer would wait forever), and the opened file is checked
/// again, so a swap between the two checks gains nothing. Symlinks are followed: a
/// `/etc/resolv.conf` is often one.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let before = std::fs::metadata(path).map_err(io)?;
    if !before.is_file() {
        return Err(FileError::NotRegular(path.to_path_buf()));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let md = file.metadata().map_err(io)?;
    if !md.is_file() || md.dev() != before.dev() || md.ino() != before.ino() {
        return Err(FileError::NotRegular(path.to_path_buf()));
    }
    if md.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    file.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}

/// Takes an exclusive `flock` on `file`, waiting at most `timeout`; `Ok(false)` when it is
/// still held by someone else then. Polled, because a blocking `flock` cannot be given up
/// on; the wait starts short, so an uncontended or briefly held lock costs nothing.
pub fn lock_within(file: &File, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("resolv.conf");
        std::fs::write(&f, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(read_regular(&f, 64).unwrap(), b"nameserver 10.0.0.1\n");
        assert!(matches!(
            read_regular(&f, 4),
            Err(FileError::TooLarge { .. })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_regular(&link, 64).is_ok(), "symlinks are followed");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = Instant::now();
        assert!(matches!(
            read_regular(&fifo, 64),
            Err(FileError::NotRegular(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        for p in ["/dev/zero", "/dev/null", "/"] {
            assert!(
                matches!(
                    read_regular(Path::new(p), 64),
                    Err(FileError::NotRegular(_))
                ),
                "{p}"
            );
        }
        assert!(matches!(
            read_regular(&dir.path().join("missing"), 64),
            Err(FileError::Io { .. })
        ));
    }

    #[test]
    fn a_held_lock_is_given_up_on_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = File::create(&path).unwrap();
        held.lock().unwrap();
        let other = File::open(&path).unwrap();
        let started = Instant::now();
        assert!(!lock_within(&other, Duration::from_millis(100)).unwrap());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(1));
        held.unlock().unwrap();
        assert!(lock_within(&other, Duration::from_millis(100)).unwrap());
    }
}
