//! The host-local data directory, byte-compatible with the reference plugin's disk backend
//! (plugins/ipam/host-local/backend/disk) so both can allocate from one pool:
//!
//! - `<dataDir>/<network>/` holds one file per reserved address, named by the address in
//!   its canonical text form, containing `<containerID>\r\n<ifname>`;
//! - `last_reserved_ip.<range set index>` holds the address last handed out from that set;
//! - `lock` is the mutex: an exclusive `flock(2)`. std's `File::lock` is `flock` on Linux
//!   (checked against `flock -n` and /proc/locks), the same call as Go's go-filemutex, so
//!   the two implementations exclude each other.
//!
//! One addition the reference never reads: a released reservation file is kept as a spare
//! (`.spare.<slot>`, blanked, at most [`SPARE_SLOTS`] per network) and the next reservation
//! renames it onto its address instead of creating a file. On an ext4 without a journal every
//! file creation searches past each inode freed in the last 30 s or more, 0.1–0.3 ms on a
//! busy node; a rename allocates nothing. The reference skips the spares (their names are no
//! address, their content no owner) and may delete them (its DEL of a matching owner, its GC),
//! which only means the next reservation creates a file.

use super::IpamError;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const LAST_IP_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";
const SPARE_PREFIX: &str = ".spare.";
/// A node's churn on one network rarely releases more than this many addresses before it
/// reserves again; beyond it, released files are removed as the reference does.
pub const SPARE_SLOTS: usize = 8;

pub(crate) struct Store {
    dir: PathBuf,
    lock: File,
}

/// Holding this is holding the flock; every read or write of the pool goes through it.
pub(crate) struct Locked<'a> {
    store: &'a Store,
}

/// Files of the data dir with their content.
type Files = Vec<(PathBuf, String)>;

fn io_err<'p>(step: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> IpamError + 'p {
    move |source| IpamError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens the network's directory, creating it (ADD).
    pub(crate) fn create(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        let dir = data_dir.join(network);
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err("create ipam data directory", &dir))?;
        Store::open_dir(dir)
    }

    /// Opens the network's directory when it exists (DEL, CHECK): nothing was ever reserved
    /// otherwise, and DEL must not leave an empty directory behind.
    pub(crate) fn open(data_dir: &Path, network: &str) -> Result<Option<Store>, IpamError> {
        let dir = data_dir.join(network);
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Store::open_dir(dir).map(Some),
            Ok(_) => Err(IpamError::Io {
                step: "open ipam data directory",
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                path: dir,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("open ipam data directory", &dir)(e)),
        }
    }

    fn open_dir(dir: PathBuf) -> Result<Store, IpamError> {
        let path = dir.join("lock");
        // 0750 is what go-filemutex creates the lock file with.
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&path)
            .map_err(io_err("open ipam lock file", &path))?;
        Ok(Store { dir, lock })
    }

    /// Takes the pool's lock, waiting at most `timeout` for whoever holds it (another ADD,
    /// the reference binary, or someone holding it forever): then code 11.
    pub(crate) fn lock(&self, timeout: std::time::Duration) -> Result<Locked<'_>, IpamError> {
        let path = self.dir.join("lock");
        if !cni::file::lock_within(&self.lock, timeout)
            .map_err(io_err("lock ipam lock file", &path))?
        {
            return Err(IpamError::LockTimeout {
                path,
                waited: timeout,
            });
        }
        Ok(Locked { store: self })
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Closing the fd would release it too; unlocking here lets one Store lock again.
        let _ = self.store.lock.unlock();
    }
}

fn key(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

impl Locked<'_> {
    /// Reserves `ip` for (id, ifname): `false` when someone holds it already.
    pub(crate) fn reserve(
        &self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: usize,
    ) -> Result<bool, IpamError> {
        let path = self.store.dir.join(ip.to_string());
        let key = key(id, ifname);
        let reserved = match self.reuse_spare(&path, key.as_bytes())? {
            Some(reserved) => reserved,
            None => create_reservation(&path, key.as_bytes())?,
        };
        if !reserved {
            return Ok(false);
        }
        cni::fault::point("host-local-after-reserve");
        let last = self.store.dir.join(format!("{LAST_IP_PREFIX}{range_set}"));
        write_file(&last, ip.to_string().as_bytes())
            .map_err(io_err("write last reserved ip file", &last))?;
        Ok(true)
    }

    fn spare(&self, slot: usize) -> PathBuf {
        self.store.dir.join(format!("{SPARE_PREFIX}{slot}"))
    }

    /// Claims `path` with a spare: the owner is written into the spare first, then the spare
    /// is renamed onto the address without replacing, so a crash leaves either a spare or a
    /// whole reservation, never an empty one. `None`: no spare, or a file system that cannot
    /// rename without replacing; the caller creates the file.
    fn reuse_spare(&self, path: &Path, key: &[u8]) -> Result<Option<bool>, IpamError> {
        use std::os::unix::fs::{FileExt, PermissionsExt};
        for slot in 0..SPARE_SLOTS {
            let spare = self.spare(slot);
            // Anything odd in a slot (a link, a directory, an unreadable file) only means
            // this slot is not used; the data dir is root's alone.
            // O_NONBLOCK: opening a FIFO planted in a slot must not wait with the lock held.
            let Ok(f) = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&spare)
            else {
                continue;
            };
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            match fs::symlink_metadata(path) {
                Ok(_) => return Ok(Some(false)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("look up reservation file", path)(e)),
            }
            // A spare once created by the reference (0644) becomes a reservation like ours.
            if meta.permissions().mode() & 0o7777 != 0o600
                && f.set_permissions(fs::Permissions::from_mode(0o600))
                    .is_err()
            {
                continue;
            }
            if let Err(e) = f
                .write_all_at(key, 0)
                .and_then(|()| f.set_len(key.len() as u64))
            {
                blank(&spare, key.len().max(meta.len() as usize));
                return Err(io_err("write reservation file", &spare)(e));
            }
            cni::fault::point("host-local-spare-before-claim");
            match rename_noreplace(&spare, path) {
                Ok(()) => return Ok(Some(true)),
                // Deleted meanwhile (the reference's GC may): the next slot, or a new file.
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => {
                    // Unclaimed, the spare must not keep this owner: the reference's CHECK
                    // matches any file's content.
                    blank(&spare, key.len());
                    return match e {
                        nix::errno::Errno::EEXIST => Ok(Some(false)),
                        e if no_noreplace(e) => Ok(None),
                        e => Err(io_err("reserve with spare file", path)(e.into())),
                    };
                }
            }
        }
        Ok(None)
    }

    /// Takes a released reservation out of the pool: renamed to a free spare slot and
    /// blanked, or removed when every slot is taken. `false` when someone else removed it.
    fn retire(&self, path: &Path, len: usize) -> Result<bool, IpamError> {
        for slot in 0..SPARE_SLOTS {
            let spare = self.spare(slot);
            match rename_noreplace(path, &spare) {
                Ok(()) => {
                    blank(&spare, len);
                    return Ok(true);
                }
                Err(nix::errno::Errno::EEXIST) => {}
                Err(nix::errno::Errno::ENOENT) => return Ok(false),
                Err(e) if no_noreplace(e) => break,
                Err(e) => return Err(io_err("remove reservation file", path)(e.into())),
            }
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove reservation file", path)(e)),
        }
    }

    /// The address last handed out from `range_set`; a missing or unreadable file only costs
    /// round-robin order, as in the reference.
    pub(crate) fn last_reserved_ip(&self, range_set: usize) -> Option<IpAddr> {
        let path = self.store.dir.join(format!("{LAST_IP_PREFIX}{range_set}"));
        let text = fs::read_to_string(path).ok()?;
        text.trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    }

    /// Every reservation (path, content) in the directory; files that vanish or are not
    /// text are skipped, as the reference's `filepath.Walk` callbacks do. Only files named
    /// by an address are read: the lock and `last_reserved_ip.N` hold no owner.
    fn entries(&self) -> Result<Files, IpamError> {
        self.scan(false).map(|(reservations, _)| reservations)
    }

    /// [`Locked::entries`], and with `spares` also the spares that are not blank: the
    /// owner a crash or a failed blank left in one (see [`Locked::retire`]).
    fn scan(&self, spares: bool) -> Result<(Files, Files), IpamError> {
        let dir = &self.store.dir;
        let rd = fs::read_dir(dir).map_err(io_err("list ipam data directory", dir))?;
        let (mut held, mut stale) = (Vec::new(), Vec::new());
        for entry in rd {
            let entry = entry.map_err(io_err("list ipam data directory", dir))?;
            let path = entry.path();
            let spare = spares && is_spare(&path);
            if !(spare || is_address(&path))
                || !entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            if !spare {
                held.push((path, text));
            } else if !text.trim().is_empty() {
                stale.push((path, text));
            }
        }
        Ok((held, stale))
    }

    /// Addresses held by (id, ifname), including files from before ifname was recorded.
    pub(crate) fn get_by_id(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let (full, old) = (key(id, ifname), id.trim());
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(_, text)| text.trim() == full || text.trim() == old)
            .filter_map(|(path, _)| {
                let name = path.file_name()?.to_str()?;
                name.parse::<IpAddr>().ok()
            })
            .collect())
    }

    pub(crate) fn find_by_id(&self, id: &str, ifname: &str) -> Result<bool, IpamError> {
        Ok(!self.get_by_id(id, ifname)?.is_empty())
    }

    /// Removes every file holding (id, ifname), or, if none, every file holding just `id`
    /// (the pre-ifname format). A file removed by someone else meanwhile is not an error.
    pub(crate) fn release_by_id(&self, id: &str, ifname: &str) -> Result<(), IpamError> {
        let (entries, stale) = self.scan(true)?;
        let full = key(id, ifname);
        if !self.remove_matching(&entries, &full)? {
            self.remove_matching(&entries, id.trim())?;
        }
        // A spare still naming this owner would let the reference's CHECK find a released
        // container; the reference's own release deletes such files.
        for (spare, text) in &stale {
            if text.trim() == full || text.trim() == id.trim() {
                blank(spare, text.len());
            }
        }
        // A reservation without an owner is what a writer killed between creating the file
        // and writing its key leaves. Every reservation is written under this lock, so none
        // is half-way now; left alone, the address would be lost for good.
        let orphans: Files = entries
            .into_iter()
            .filter(|(_, text)| text.trim().is_empty())
            .collect();
        self.remove_matching(&orphans, "")?;
        Ok(())
    }

    fn remove_matching(&self, entries: &Files, want: &str) -> Result<bool, IpamError> {
        let mut found = false;
        for (path, text) in entries {
            if text.trim() == want && self.retire(path, text.len())? {
                found = true;
            }
        }
        Ok(found)
    }
}

/// Creates the reservation file exclusively, the reference's way; `false` when it exists.
fn create_reservation(path: &Path, key: &[u8]) -> Result<bool, IpamError> {
    let mut f = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io_err("create reservation file", path)(e)),
    };
    cni::fault::point("host-local-before-key");
    if let Err(e) = f.write_all(key) {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(io_err("write reservation file", path)(e));
    }
    Ok(true)
}

fn rename_noreplace(from: &Path, to: &Path) -> Result<(), nix::errno::Errno> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
}

/// The errors of a file system without `RENAME_NOREPLACE` (or a kernel before 3.15).
fn no_noreplace(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(e, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

/// Overwrites a spare's stale owner with blanks, in place (no block freed or allocated). A
/// failure leaves an owner nobody reads but the reference's CHECK, so it is only logged.
fn blank(spare: &Path, len: usize) {
    use std::os::unix::fs::FileExt;
    let done = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(spare)
        .and_then(|f| f.write_all_at(&vec![b' '; len], 0));
    if let Err(e) = done {
        tracing::debug!(spare = %spare.display(), error = %e, "could not blank a spare reservation file");
    }
}

fn is_spare(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(SPARE_PREFIX))
}

fn is_address(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.parse::<IpAddr>().is_ok())
}

/// Overwrites the file in place and then cuts it to length, rather than truncating it first:
/// ext4 takes a truncation to zero followed by a write for a program replacing the file and
/// starts writing the data out when it is closed (its `auto_da_alloc` guard), 0.1–0.24 ms
/// per attachment here against 0.03 ms for the overwrite. A write torn by a crash leaves an
/// unreadable or different address, which only moves where the next allocation starts
/// looking, as a missing file does.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    f.write_all_at(bytes, 0)?;
    f.set_len(bytes.len() as u64)
}
