//! The host-local data directory, byte-compatible with the reference plugin's disk backend
//! (plugins/ipam/host-local/backend/disk) so both can allocate from one pool:
//!
//! - `<dataDir>/<network>/` holds one file per reserved address, named by the address in
//!   its canonical text form, containing `<containerID>\r\n<ifname>`;
//! - `last_reserved_ip.<range set index>` holds the address last handed out from that set;
//! - `lock` is the mutex: an exclusive `flock(2)`. std's `File::lock` is `flock` on Linux
//!   (checked against `flock -n` and /proc/locks), the same call as Go's go-filemutex, so
//!   the two implementations exclude each other.

use super::IpamError;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const LAST_IP_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";

pub(crate) struct Store {
    dir: PathBuf,
    lock: File,
}

/// Holding this is holding the flock; every read or write of the pool goes through it.
pub(crate) struct Locked<'a> {
    store: &'a Store,
}

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
    /// Creates the reservation file for `ip`; `false` when someone holds it already.
    pub(crate) fn reserve(
        &self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: usize,
    ) -> Result<bool, IpamError> {
        let path = self.store.dir.join(ip.to_string());
        let mut f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("create reservation file", &path)(e)),
        };
        cni::fault::point("host-local-before-key");
        if let Err(e) = f.write_all(key(id, ifname).as_bytes()) {
            drop(f);
            let _ = fs::remove_file(&path);
            return Err(io_err("write reservation file", &path)(e));
        }
        cni::fault::point("host-local-after-reserve");
        let last = self.store.dir.join(format!("{LAST_IP_PREFIX}{range_set}"));
        write_file(&last, ip.to_string().as_bytes())
            .map_err(io_err("write last reserved ip file", &last))?;
        Ok(true)
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
    fn entries(&self) -> Result<Vec<(PathBuf, String)>, IpamError> {
        let dir = &self.store.dir;
        let rd = fs::read_dir(dir).map_err(io_err("list ipam data directory", dir))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("list ipam data directory", dir))?;
            if is_address(&entry.path())
                && entry.file_type().map(|t| t.is_file()).unwrap_or(false)
                && let Ok(text) = fs::read_to_string(entry.path())
            {
                out.push((entry.path(), text));
            }
        }
        Ok(out)
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
        let entries = self.entries()?;
        let full = key(id, ifname);
        if !remove_matching(&entries, &full)? {
            remove_matching(&entries, id.trim())?;
        }
        // A reservation without an owner is what a writer killed between creating the file
        // and writing its key leaves. Every reservation is written under this lock, so none
        // is half-way now; left alone, the address would be lost for good.
        let orphans: Vec<(PathBuf, String)> = entries
            .into_iter()
            .filter(|(_, text)| text.trim().is_empty())
            .collect();
        remove_matching(&orphans, "")?;
        Ok(())
    }
}

fn is_address(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.parse::<IpAddr>().is_ok())
}

fn remove_matching(entries: &[(PathBuf, String)], want: &str) -> Result<bool, IpamError> {
    let mut found = false;
    for (path, text) in entries {
        if text.trim() != want {
            continue;
        }
        match fs::remove_file(path) {
            Ok(()) => found = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove reservation file", path)(e)),
        }
    }
    Ok(found)
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
