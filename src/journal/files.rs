//! The journal's files: one entry per attachment set, the per-container lock, and the
//! writes that keep a crash from leaving half an entry that a delegate's work depends on.
//!
//! Layout under `cniDir` (0700): `<containerID>-<hash(ifname)>.json` (0600) per attachment set
//! and `.locks` for the per-container locks (see `lock.rs`). File names come only from a
//! validated container ID and a hash, never from raw input; nothing follows symlinks.
//!
//! An entry is a sequence of records, one compact JSON [`Entry`] per line, the last whole one
//! in force. The first is written to a temp file, renamed into place, and then the file and the
//! directory are fsynced; later versions are appended. A crash mid-append leaves a torn last line,
//! which reads as if the append never happened. Entries written before records existed are
//! one pretty-printed JSON document, read the same way.

use super::JournalError;
use super::lock::{self, ContainerLock};
use super::record::{Entry, FORMAT, Record, now_secs};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Entries larger than this are corrupt by definition (a real one is a few KiB).
const MAX_ENTRY_BYTES: u64 = 4 << 20;
/// An entry that an append would grow past this is rewritten as its last version alone:
/// appends stay cheap and a pod hot-plugged for months stays far from [`MAX_ENTRY_BYTES`].
const COMPACT_AT: u64 = 256 << 10;
/// What follows the container ID in an entry's name: `-` and 16 hex digits of the ifname hash.
const HASH_SUFFIX_LEN: usize = 17;
/// A temp file is `<entry>.tmp.<pid>`.
const TMP_MARK: &str = ".tmp.";
/// The longest container ID whose every journal file name fits in NAME_MAX (255 bytes): the
/// longest name is a temp file, `<id>-<16 hex>.json.tmp.<pid>` with a pid of up to 10
/// digits; the quarantined copy (`.<unix seconds>`) and the lock (`.lock`) are shorter.
pub const MAX_CONTAINER_ID: usize = 255 - HASH_SUFFIX_LEN - ".json".len() - TMP_MARK.len() - 10;

/// What reading an entry found.
#[derive(Debug)]
pub enum Lookup {
    Missing,
    Found(Box<Entry>),
    /// Present but unreadable as an entry: truncated, garbage, wrong schema or oversized.
    Corrupt(String),
}

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating 0700 if needed) the journal dir and refuses one that another user
    /// could tamper with: a symlink, not a directory, not owned by us, or group/world
    /// writable.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io("create", dir))?;
            }
            Err(e) => return Err(io("stat", dir)(e)),
            Ok(_) => {}
        }
        let md = std::fs::symlink_metadata(dir).map_err(io("stat", dir))?;
        let unsafe_dir = |reason: &str| JournalError::UnsafeDir {
            dir: dir.to_path_buf(),
            reason: reason.to_string(),
        };
        if md.file_type().is_symlink() {
            return Err(unsafe_dir("is a symlink"));
        }
        if !md.is_dir() {
            return Err(unsafe_dir("is not a directory"));
        }
        if md.uid() != nix::unistd::geteuid().as_raw() {
            return Err(unsafe_dir("is not owned by the user plexus runs as"));
        }
        if md.permissions().mode() & 0o022 != 0 {
            return Err(unsafe_dir("is group- or world-writable"));
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entry_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        let digest = Sha256::digest(ifname.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{container_id}-{hex}.json"))
    }

    /// Takes the container's lock, waiting at most `wait` (then code 11).
    pub fn lock(&self, container_id: &str, wait: Duration) -> Result<ContainerLock, JournalError> {
        lock::take(&self.dir, container_id, wait)
    }

    pub fn read(&self, lock: &ContainerLock, ifname: &str) -> Result<Lookup, JournalError> {
        let path = self.entry_path(&lock.container_id, ifname);
        self.read_path(&path)
    }

    pub fn read_path(&self, path: &Path) -> Result<Lookup, JournalError> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Missing),
            // ELOOP: a symlink planted where an entry should be. Never follow it.
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Ok(Lookup::Corrupt("entry is a symlink".into()));
            }
            Err(e) => return Err(io("open", path)(e)),
        };
        let md = file.metadata().map_err(io("stat", path))?;
        if !md.is_file() {
            return Ok(Lookup::Corrupt("entry is not a regular file".into()));
        }
        if md.len() > MAX_ENTRY_BYTES {
            return Ok(Lookup::Corrupt(format!("entry is {} bytes", md.len())));
        }
        let mut buf = Vec::with_capacity(md.len() as usize);
        file.take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io("read", path))?;
        Ok(parse(&buf))
    }

    /// Records `entry` so that it survives a power cut once this returns: the plan before any
    /// delegate runs, the attachments a hot-plug is about to make. A new entry goes to a temp
    /// file (O_EXCL, 0600), is renamed into place, and the file and the directory are
    /// fsynced; a later version is appended and fsynced.
    pub fn write(&self, lock: &ContainerLock, entry: &Entry) -> Result<(), JournalError> {
        self.put(lock, entry, true)
    }

    /// Records a later version of `entry` without waiting for the disk: results, removals,
    /// network-status. A crash of the process loses nothing (the kernel has the data); a
    /// power cut may leave the previous version, whose attachments DEL undoes all the same
    /// (a `Planned` one by name, tag and container ID, as its delegate's own DEL would).
    pub fn update(&self, lock: &ContainerLock, entry: &Entry) -> Result<(), JournalError> {
        self.put(lock, entry, false)
    }

    fn put(&self, lock: &ContainerLock, entry: &Entry, durable: bool) -> Result<(), JournalError> {
        let path = self.entry_path(&lock.container_id, &entry.ifname);
        let mut bytes = b"\n".to_vec();
        serde_json::to_writer(&mut bytes, entry).map_err(|e| JournalError::Io {
            op: "encode",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        // Only a missing entry is a new one: any other failure to stat it must not send an
        // existing entry down the path that removes it again when its fsync fails.
        let existing = match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_file() => Some(md.len()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("stat", &path)(e)),
        };
        match existing {
            Some(len) if len + (bytes.len() as u64) <= COMPACT_AT => {
                self.append(&path, &bytes, durable)
            }
            Some(_) => self.replace(&path, &bytes[1..], false, durable),
            None => self.replace(&path, &bytes[1..], true, true),
        }
    }

    /// One record at the end of the entry. The record starts with a newline so that it is a
    /// line of its own whatever the file ended with (a pretty-printed entry of an earlier
    /// version, or a line torn by a crash).
    fn append(&self, path: &Path, bytes: &[u8], durable: bool) -> Result<(), JournalError> {
        let mut f = OpenOptions::new()
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(io("open", path))?;
        if !f.metadata().map_err(io("stat", path))?.is_file() {
            return Err(io("open", path)(std::io::Error::other(
                "entry is not a regular file",
            )));
        }
        f.write_all(bytes).map_err(io("append", path))?;
        if durable {
            f.sync_data().map_err(io("fsync", path))?;
        }
        Ok(())
    }

    /// The whole entry replaced by one record, through a temp file renamed into place.
    ///
    /// A new entry (the plan, before any delegate runs) is renamed first and then fsynced,
    /// file and directory: once both return the plan is on disk whatever the order, and on a
    /// journaled file system the file's fsync then commits the creation and the rename
    /// together, so the directory's finds nothing left to do (one journal commit, not two:
    /// 0.76 against 1.37 ms on ext4 here). The price is the window before they return: a power
    /// cut there may leave the entry's name on a torn plan, which DEL reads as corrupt and
    /// handles the careful way (quarantine, then DEL of every network the pod resolves to),
    /// while nothing had run. A kill of the process leaves a whole file or only the temp one.
    ///
    /// A rewrite (an entry grown past [`COMPACT_AT`]) is fsynced before its rename, so a
    /// crash leaves either version whole; when the caller needs it on disk (a hot-plug's plan)
    /// the directory is fsynced after the rename too, otherwise a lost rename leaves the
    /// previous version, as a lost update does.
    fn replace(
        &self,
        path: &Path,
        bytes: &[u8],
        creating: bool,
        durable: bool,
    ) -> Result<(), JournalError> {
        let tmp = tmp_path(path);
        let _ = std::fs::remove_file(&tmp);
        let mut renamed = false;
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(bytes).map_err(io("write", &tmp))?;
            if !creating {
                f.sync_all().map_err(io("fsync", &tmp))?;
            }
            cni::fault::point("journal-before-rename");
            std::fs::rename(&tmp, path).map_err(io("rename", path))?;
            renamed = true;
            if creating {
                f.sync_all().map_err(io("fsync", path))?;
            }
            if durable {
                self.sync_dir()?;
            }
            Ok(())
        })();
        if result.is_err() {
            // A new entry that failed to reach the disk goes: the caller fails the ADD
            // before any delegate runs. A rewrite that fails after its rename is in place
            // whole (fsynced before it), so only its temp file is ever removed.
            let _ = std::fs::remove_file(if renamed && creating { path } else { &tmp });
        }
        result
    }

    /// What can still be read of an entry that does not parse as a whole: every attachment
    /// record that parses on its own, with the entry's netns, from the last version that has
    /// any. `None` when nothing does (or the file is not a plain, small file).
    pub fn salvage(&self, lock: &ContainerLock, ifname: &str) -> Option<Entry> {
        let path = self.entry_path(&lock.container_id, ifname);
        versions_at(&path)?
            .iter()
            .rev()
            .find_map(|v| salvage_version(v, &lock.container_id, ifname))
    }

    /// The container's other entries (ADDs with another `CNI_IFNAME`), readable ones only.
    pub fn siblings(&self, lock: &ContainerLock, ifname: &str) -> Result<Vec<Entry>, JournalError> {
        let own = self.entry_path(&lock.container_id, ifname);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let e = e.map_err(io("list", &self.dir))?;
            let name = e.file_name();
            let path = e.path();
            if entry_container(&name.to_string_lossy()) != Some(lock.container_id.as_str())
                || path == own
            {
                continue;
            }
            if let Lookup::Found(entry) = self.read_path(&path)? {
                out.push(*entry);
            }
        }
        Ok(out)
    }

    /// The interfaces the container's other entries (ADDs with another `CNI_IFNAME`) hold,
    /// each with that entry's `CNI_IFNAME`.
    pub fn taken(
        &self,
        lock: &ContainerLock,
        ifname: &str,
    ) -> Result<BTreeMap<String, String>, JournalError> {
        let mut taken = BTreeMap::new();
        for e in self.siblings(lock, ifname)? {
            taken.insert(e.ifname.clone(), e.ifname.clone());
            for a in &e.attachments {
                taken.insert(a.ifname.clone(), e.ifname.clone());
            }
        }
        Ok(taken)
    }

    /// An ADD on an interface that already has an entry is refused before anything else
    /// happens: rolling back a duplicate would DEL the live attachment's delegates and free
    /// its IPs (host-local releases by container and ifname).
    pub fn refuse_duplicate(&self, lock: &ContainerLock, ifname: &str) -> Result<(), JournalError> {
        match self.read(lock, ifname)? {
            Lookup::Missing => Ok(()),
            _ => Err(JournalError::Duplicate {
                container_id: lock.container_id.clone(),
                ifname: ifname.to_string(),
            }),
        }
    }

    /// Another ADD for this container (another `CNI_IFNAME`) owns its interfaces and, in
    /// host-local, the reservations keyed by (container, ifname): planning one of them again
    /// would make this ADD's rollback or DEL remove them.
    pub fn refuse_taken<'i>(
        &self,
        lock: &ContainerLock,
        ifname: &str,
        planned: impl IntoIterator<Item = &'i str>,
    ) -> Result<(), JournalError> {
        let taken = self.taken(lock, ifname)?;
        match planned.into_iter().find_map(|i| taken.get_key_value(i)) {
            Some((name, other)) => Err(JournalError::IfnameTaken {
                container_id: lock.container_id.clone(),
                ifname: name.clone(),
                other: other.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Moves a corrupt entry aside so the next ADD is not blocked forever by it and a human
    /// can still read what was there.
    pub fn quarantine(&self, lock: &ContainerLock, ifname: &str) -> Result<PathBuf, JournalError> {
        self.quarantine_path(&self.entry_path(&lock.container_id, ifname))
    }

    /// Whether any version of the entry at `path` still names an attachment that parses on
    /// its own (what [`Journal::salvage`] would give DEL).
    pub fn names_attachments(&self, lock: &ContainerLock, path: &Path) -> bool {
        versions_at(path).is_some_and(|versions| {
            versions
                .iter()
                .any(|v| salvage_version(v, &lock.container_id, "").is_some())
        })
    }

    /// [`Journal::quarantine`] for an entry known by its path (GC lists entries by file):
    /// only one of the locked container's own entries.
    pub fn quarantine_entry(
        &self,
        lock: &ContainerLock,
        path: &Path,
    ) -> Result<PathBuf, JournalError> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        let own = path.parent() == Some(self.dir.as_path())
            && name.as_deref().and_then(entry_container) == Some(lock.container_id.as_str());
        if !own {
            return Err(io("quarantine", path)(std::io::Error::other(
                "not an entry of the locked container",
            )));
        }
        self.quarantine_path(path)
    }

    fn quarantine_path(&self, path: &Path) -> Result<PathBuf, JournalError> {
        let qdir = self.dir.join("quarantine");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&qdir)
            .map_err(io("create", &qdir))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let dest = qdir.join(format!("{name}.{}", now_secs()));
        std::fs::rename(path, &dest).map_err(io("quarantine", path))?;
        self.sync_dir()?;
        Ok(dest)
    }

    pub fn remove(&self, lock: &ContainerLock, ifname: &str) -> Result<(), JournalError> {
        let path = self.entry_path(&lock.container_id, ifname);
        self.sweep_temps(lock, ifname);
        // Versions before `.locks` kept a `<containerID>.lock` while the container had
        // entries; an upgraded node's DEL removes the one its container was left with.
        let _ = std::fs::remove_file(self.dir.join(format!("{}.lock", lock.container_id)));
        // No directory fsync: an entry that reappears after a crash is DELed again, and DEL
        // is idempotent.
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Removes the temp files a crashed write of this entry left (a process killed between
    /// writing and renaming). Whoever writes an entry holds its container's lock, as the
    /// caller does, so none of them is still being written. Best effort: a temp file is never
    /// read, it only must not outlive the entry.
    pub fn sweep_temps(&self, lock: &ContainerLock, ifname: &str) {
        let path = self.entry_path(&lock.container_id, ifname);
        let Some(prefix) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| format!("{n}{TMP_MARK}"))
        else {
            return;
        };
        let Ok(list) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in list.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && is_temp_file(name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Unlocks; dropping the lock does the same.
    pub fn release(&self, lock: ContainerLock) {
        drop(lock);
    }

    /// Every entry in the journal, for GC: (container ID, path). Leftover temp files of a
    /// crashed write older than `stale` are removed on the way; a temp file whose writer
    /// (the pid that ends its name) still runs is in use, however old, so a GC with no grace
    /// period never pulls it from under an ADD between its write and its rename.
    pub fn entries(&self, stale: Duration) -> Result<Vec<(String, PathBuf)>, JournalError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let e = e.map_err(io("list", &self.dir))?;
            let name = e.file_name().to_string_lossy().to_string();
            if is_temp_file(&name) {
                let old = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= stale);
                let writer_runs = name
                    .rsplit('.')
                    .next()
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if old && !writer_runs {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            if let Some(cid) = entry_container(&name) {
                out.push((cid.to_string(), e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn sync_dir(&self) -> Result<(), JournalError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!("{TMP_MARK}{}", std::process::id()));
    PathBuf::from(s)
}

/// An entry's bytes as DEL reads them: the last version that parses whole, if any.
pub fn parse(buf: &[u8]) -> Lookup {
    let (records, first_error) = records::<Entry>(buf);
    match (records.into_iter().next_back(), first_error) {
        (Some(e), _) if e.format == FORMAT => Lookup::Found(Box::new(e)),
        (Some(e), _) => Lookup::Corrupt(format!("unknown format {}", e.format)),
        (None, Some(e)) => Lookup::Corrupt(e.to_string()),
        (None, None) => Lookup::Corrupt("entry is empty".into()),
    }
}

/// Every record of an entry that parses as a `T`, in order, and the first error met. A
/// record that does not parse (a line torn by a crash, garbage) is skipped up to the next
/// line, so what was appended after it still counts.
fn records<T: serde::de::DeserializeOwned>(buf: &[u8]) -> (Vec<T>, Option<serde_json::Error>) {
    let mut out = Vec::new();
    let mut first_error = None;
    let mut pos = 0;
    while pos < buf.len() {
        let mut stream = serde_json::Deserializer::from_slice(&buf[pos..]).into_iter::<T>();
        match stream.next() {
            None => break,
            Some(Ok(record)) => {
                out.push(record);
                pos += stream.byte_offset();
            }
            Some(Err(e)) => {
                first_error.get_or_insert(e);
                match buf[pos..].iter().position(|b| *b == b'\n') {
                    Some(nl) => pos += nl + 1,
                    None => break,
                }
            }
        }
    }
    (out, first_error)
}

/// Every version of the entry at `path` that parses as JSON, whatever its schema; `None` when
/// the file cannot be read or is not a plain file.
fn versions_at(path: &Path) -> Option<Vec<Value>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut buf).ok()?;
    Some(records::<Value>(&buf).0)
}

fn salvage_version(v: &Value, container_id: &str, ifname: &str) -> Option<Entry> {
    let attachments: Vec<Record> = v
        .get("attachments")?
        .as_array()?
        .iter()
        .filter_map(|a| serde_json::from_value(a.clone()).ok())
        .collect();
    if attachments.is_empty() {
        return None;
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut entry = Entry::new(
        container_id,
        ifname,
        None,
        &text("cniVersion").unwrap_or_default(),
    );
    entry.netns = text("netns");
    entry.netns_id = v
        .get("netnsId")
        .and_then(|n| serde_json::from_value(n.clone()).ok());
    entry.attachments = attachments;
    Some(entry)
}

/// The container ID of an entry's file name (`<id>-<16 hex>.json`), exactly: IDs may contain
/// `-` and `.`, so nothing is matched by prefix or substring.
fn entry_container(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".json")?;
    let (cid, hash) = stem.rsplit_once('-')?;
    (hash.len() == HASH_SUFFIX_LEN - 1 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(cid)
}

/// Whether a file name is a temp file [`Journal::write`] makes: an entry name, then `.tmp.`
/// and a pid. A container ID such as `x.json.tmp.1` must not make its entry look like one.
fn is_temp_file(name: &str) -> bool {
    name.rsplit_once(TMP_MARK).is_some_and(|(entry, pid)| {
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && entry_container(entry).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::State;

    fn journal() -> (tempfile::TempDir, Journal) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state");
        let j = Journal::open(&dir).unwrap();
        (t, j)
    }

    #[test]
    fn creates_private_dir_and_files() {
        let (_t, j) = journal();
        let md = std::fs::metadata(j.dir()).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o700);
        let lock = j.lock("c1", Duration::from_secs(1)).unwrap();
        let e = Entry::new("c1", "eth0", None, "1.1.0");
        j.write(&lock, &e).unwrap();
        let p = j.entry_path("c1", "eth0");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        match j.read(&lock, "eth0").unwrap() {
            Lookup::Found(got) => assert_eq!(*got, e),
            other => panic!("{other:?}"),
        }
        j.remove(&lock, "eth0").unwrap();
        j.release(lock);
        let left: Vec<_> = std::fs::read_dir(j.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(lock::LOCK_FILE)]);
    }

    fn found(j: &Journal, lock: &ContainerLock) -> Entry {
        match j.read(lock, "eth0").unwrap() {
            Lookup::Found(got) => *got,
            other => panic!("{other:?}"),
        }
    }

    fn version(n: u64) -> Entry {
        let mut e = Entry::new("c5", "eth0", None, "1.1.0");
        e.created = n;
        e
    }

    #[test]
    fn the_last_whole_version_is_in_force_and_a_torn_one_is_not() {
        let (_t, j) = journal();
        let lock = j.lock("c5", Duration::from_secs(1)).unwrap();
        let p = j.entry_path("c5", "eth0");
        j.write(&lock, &version(1)).unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        j.update(&lock, &version(2)).unwrap();
        j.write(&lock, &version(3)).unwrap();
        assert_eq!(found(&j, &lock), version(3));
        assert_eq!(
            std::fs::metadata(&p).unwrap().ino(),
            ino,
            "appended in place"
        );
        // A crash mid-append: the torn version does not count...
        let whole = std::fs::read(&p).unwrap();
        let mut torn = serde_json::to_vec(&version(4)).unwrap();
        torn.truncate(torn.len() / 2);
        std::fs::write(&p, [&whole[..], b"\n", &torn[..]].concat()).unwrap();
        assert_eq!(found(&j, &lock), version(3));
        // ...nor hides a version appended after it.
        j.update(&lock, &version(5)).unwrap();
        assert_eq!(found(&j, &lock), version(5));
        // Zeros where a version's blocks never reached the disk, the same.
        let whole = std::fs::read(&p).unwrap();
        std::fs::write(&p, [&whole[..], &[0u8; 300][..]].concat()).unwrap();
        assert_eq!(found(&j, &lock), version(5));
    }

    #[test]
    fn an_entry_of_the_earlier_single_document_format_takes_appends() {
        let (_t, j) = journal();
        let lock = j.lock("c5", Duration::from_secs(1)).unwrap();
        let p = j.entry_path("c5", "eth0");
        std::fs::write(&p, serde_json::to_vec_pretty(&version(1)).unwrap()).unwrap();
        assert_eq!(found(&j, &lock), version(1));
        j.update(&lock, &version(2)).unwrap();
        assert_eq!(found(&j, &lock), version(2));
    }

    #[test]
    fn an_entry_grown_past_the_bound_is_rewritten_as_its_last_version() {
        let (_t, j) = journal();
        let lock = j.lock("c5", Duration::from_secs(1)).unwrap();
        let p = j.entry_path("c5", "eth0");
        let mut big = version(0);
        big.network_status = Some(Value::String("x".repeat(60 << 10)));
        j.write(&lock, &big).unwrap();
        for n in 1..=5 {
            big.created = n;
            j.update(&lock, &big).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() <= COMPACT_AT);
            assert_eq!(found(&j, &lock), big);
        }
        let text = std::fs::read(&p).unwrap();
        assert!(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                < 5,
            "compacted"
        );
    }

    #[test]
    fn a_lock_file_of_an_earlier_version_goes_with_its_containers_entry() {
        let (_t, j) = journal();
        let lock = j.lock("c", Duration::from_secs(1)).unwrap();
        j.write(&lock, &Entry::new("c", "eth0", None, "1.1.0"))
            .unwrap();
        let legacy = j.dir().join("c.lock");
        let other = j.dir().join("c-x.lock");
        std::fs::write(&legacy, "").unwrap();
        std::fs::write(&other, "").unwrap();
        j.remove(&lock, "eth0").unwrap();
        assert!(!legacy.exists());
        assert!(other.exists(), "another container's lock file stays");
    }

    #[test]
    fn quarantine_by_path_takes_only_the_locked_containers_entries() {
        let (_t, j) = journal();
        let lock = j.lock("c6", Duration::from_secs(1)).unwrap();
        let other = j.entry_path("c6-x", "eth0");
        std::fs::write(&other, "torn").unwrap();
        assert!(j.quarantine_entry(&lock, &other).is_err());
        assert!(other.exists(), "another container's entry stays");
        let outside = j.dir().parent().unwrap().join("c6-0123456789abcdef.json");
        std::fs::write(&outside, "torn").unwrap();
        assert!(j.quarantine_entry(&lock, &outside).is_err());
        assert!(outside.exists(), "a file outside the journal stays");
        let own = j.entry_path("c6", "eth0");
        std::fs::write(&own, "torn").unwrap();
        let moved = j.quarantine_entry(&lock, &own).unwrap();
        assert!(!own.exists() && moved.exists());
    }

    #[test]
    fn refuses_unsafe_dirs() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Journal::open(&open).is_err());
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        assert!(Journal::open(&link).is_err());
    }

    #[test]
    fn garbage_and_symlinks_read_as_corrupt() {
        let (t, j) = journal();
        let lock = j.lock("c2", Duration::from_secs(1)).unwrap();
        let p = j.entry_path("c2", "eth0");
        for bytes in [&b""[..], b"{\"format\":", b"[]", b"{\"format\":1}"] {
            std::fs::write(&p, bytes).unwrap();
            assert!(matches!(j.read(&lock, "eth0").unwrap(), Lookup::Corrupt(_)));
        }
        std::fs::remove_file(&p).unwrap();
        let canary = t.path().join("canary");
        std::fs::write(&canary, "keep").unwrap();
        std::os::unix::fs::symlink(&canary, &p).unwrap();
        assert!(matches!(j.read(&lock, "eth0").unwrap(), Lookup::Corrupt(_)));
        // A write replaces the link itself, never the canary behind it.
        j.write(&lock, &Entry::new("c2", "eth0", None, "1.1.0"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "keep");
    }

    #[test]
    fn salvage_keeps_the_attachments_that_still_parse() {
        let (_t, j) = journal();
        let lock = j.lock("c4", Duration::from_secs(1)).unwrap();
        let p = j.entry_path("c4", "eth0");
        std::fs::write(
            &p,
            r#"{"format": 99, "netns": "/run/netns/x", "attachments": [
                {"network": "a", "ifname": "eth0", "isDefault": true, "conf": {}, "cniArgs": "", "state": "added"},
                {"network": "b", "ifname": 7}
            ]}"#,
        )
        .unwrap();
        assert!(matches!(j.read(&lock, "eth0").unwrap(), Lookup::Corrupt(_)));
        let e = j.salvage(&lock, "eth0").unwrap();
        assert_eq!(e.container_id, "c4");
        assert_eq!(e.netns.as_deref(), Some("/run/netns/x"));
        assert_eq!(e.attachments.len(), 1);
        assert_eq!(e.attachments[0].network, "a");
        // The last version with attachments that parse is the one salvaged.
        let mut two = std::fs::read(&p).unwrap();
        two.extend_from_slice(br#"
{"format": 99, "netns": "/run/netns/y", "attachments": [{"network": "c", "ifname": "net1", "isDefault": false, "conf": {}, "cniArgs": "", "state": "added"}]}
{"format": 99, "attachments": "torn"#);
        std::fs::write(&p, two).unwrap();
        let e = j.salvage(&lock, "eth0").unwrap();
        assert_eq!(e.netns.as_deref(), Some("/run/netns/y"));
        assert_eq!(e.attachments[0].network, "c");
        std::fs::write(&p, b"{\"format\":").unwrap();
        assert!(j.salvage(&lock, "eth0").is_none());
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JSON value that is not `null`: an optional field holding `null` is written as
    /// `null` and read as absent, which is the same thing to DEL.
    fn some_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::strategy::Strategy;
        any_json().prop_filter("null reads as absent", |v| !v.is_null())
    }

    fn any_link() -> impl proptest::strategy::Strategy<Value = delegates::OwnedLink> {
        use delegates::owned::Side;
        use proptest::prelude::*;
        (
            prop_oneof![Just(Side::Pod), Just(Side::Node)],
            "[a-z0-9]{1,15}",
            any::<u32>(),
            (any::<u64>(), any::<u64>()),
            proptest::option::of("([0-9a-f]{2}:){5}[0-9a-f]{2}"),
        )
            .prop_map(
                |(side, name, ifindex, (dev, ino), mac)| delegates::OwnedLink {
                    side,
                    name,
                    ifindex,
                    netns: delegates::netns::NsId { dev, ino },
                    mac,
                },
            )
    }

    fn any_attachment() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        (
            (
                "\\PC{0,16}",
                "[a-z0-9]{1,15}",
                any::<bool>(),
                any_json(),
                "\\PC{0,24}",
            ),
            prop_oneof![
                Just(State::Planned),
                Just(State::Added),
                Just(State::Removed)
            ],
            proptest::option::of(some_json()),
            proptest::collection::vec(any::<std::net::IpAddr>(), 0..3),
            proptest::option::of("\\PC{0,12}"),
            proptest::option::of("\\PC{0,24}"),
            any::<bool>(),
            proptest::collection::vec(any_link(), 0..3),
        )
            .prop_map(
                |(
                    (network, ifname, is_default, conf, cni_args),
                    state,
                    result,
                    gw,
                    dev,
                    err,
                    aux,
                    links,
                )| {
                    Record {
                        network,
                        ifname,
                        is_default,
                        conf,
                        cni_args,
                        state,
                        result,
                        default_route: gw,
                        device_id: dev,
                        delegate_error: err,
                        auxiliary: aux,
                        links,
                    }
                },
            )
    }

    fn any_entry() -> impl proptest::strategy::Strategy<Value = Entry> {
        use proptest::prelude::*;
        (
            (
                "[a-z0-9]{1,15}",
                proptest::option::of("\\PC{0,20}"),
                any::<u64>(),
            ),
            proptest::collection::vec(any_attachment(), 0..4),
            proptest::option::of(some_json()),
            (
                any::<u32>(),
                proptest::option::of(any::<u64>()),
                any::<bool>(),
            ),
            (
                proptest::option::of("[a-z0-9-]{1,12}"),
                proptest::option::of("[a-z0-9-]{1,12}"),
            ),
            proptest::option::of((any::<u64>(), any::<u64>())),
        )
            .prop_map(
                |((ifname, netns, created), attachments, status, dels, pod, ns_id)| {
                    let mut e = Entry::new("c-prop", &ifname, None, "1.1.0");
                    e.netns = netns;
                    e.netns_id = ns_id.map(|(dev, ino)| delegates::netns::NsId { dev, ino });
                    e.created = created;
                    e.attachments = attachments;
                    e.network_status = status;
                    (e.failed_dels, e.first_failed_del, e.tombstone) = dels;
                    (e.pod.namespace, e.pod.name) = pod;
                    e
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Reading is the inverse of writing: whatever the journal writes, DEL reads back
        /// exactly, through the real files (temp file, rename, the size and format checks).
        #[test]
        fn entries_read_back_as_written(entry in any_entry()) {
            let (_t, j) = journal();
            let lock = j.lock("c-prop", Duration::from_secs(1)).unwrap();
            j.write(&lock, &entry).unwrap();
            match j.read(&lock, &entry.ifname).unwrap() {
                Lookup::Found(got) => proptest::prop_assert_eq!(*got, entry),
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }

    /// Found by `entries_read_back_as_written`: serde_json's default float parsing may land
    /// one unit in the last place off, so a delegate conf with a float came back changed.
    #[test]
    fn a_float_in_a_journaled_conf_reads_back_exactly() {
        let (_t, j) = journal();
        let lock = j.lock("c-float", Duration::from_secs(1)).unwrap();
        let mut e = Entry::new("c-float", "eth0", None, "1.1.0");
        e.network_status = Some(serde_json::json!([{"": -0.00047963150391640893_f64}]));
        j.write(&lock, &e).unwrap();
        match j.read(&lock, "eth0").unwrap() {
            Lookup::Found(got) => assert_eq!(*got, e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_lists_and_sweeps_stale_tmp() {
        let (_t, j) = journal();
        let lock = j.lock("abc-def", Duration::from_secs(1)).unwrap();
        j.write(&lock, &Entry::new("abc-def", "eth0", None, "1.1.0"))
            .unwrap();
        // A crashed writer's temp file goes; a running writer's (this process) stays.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let crashed = j
            .dir()
            .join(format!("zzz-0000000000000000.json.tmp.{dead_pid}"));
        std::fs::write(&crashed, "partial").unwrap();
        let writing = tmp_path(&j.entry_path("yyy", "eth0"));
        std::fs::write(&writing, "partial").unwrap();
        let list = j.entries(Duration::ZERO).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, "abc-def");
        assert!(!crashed.exists());
        assert!(writing.exists());
    }

    #[test]
    fn sweep_temps_takes_only_the_entrys_own_temp_files() {
        let (_t, j) = journal();
        let lock = j.lock("abc", Duration::from_secs(1)).unwrap();
        let own = tmp_path(&j.entry_path("abc", "eth0"));
        let other_if = tmp_path(&j.entry_path("abc", "net1"));
        let other_ctr = tmp_path(&j.entry_path("abc-x", "eth0"));
        for f in [&own, &other_if, &other_ctr] {
            std::fs::write(f, "partial").unwrap();
        }
        j.remove(&lock, "eth0").unwrap();
        assert!(!own.exists());
        assert!(other_if.exists());
        assert!(other_ctr.exists());
    }

    #[test]
    fn entry_names_and_temp_files_match_exactly() {
        assert_eq!(entry_container("c-0123456789abcdef.json"), Some("c"));
        assert_eq!(
            entry_container("c-x-0123456789abcdef.json"),
            Some("c-x"),
            "the last dash splits"
        );
        assert_eq!(entry_container("c-0123456789abcde.json"), None);
        assert_eq!(entry_container("c.lock"), None);
        assert!(is_temp_file("c-0123456789abcdef.json.tmp.4242"));
        // A container ID may contain ".json.tmp": its entry is not a temp file.
        assert!(!is_temp_file("x.json.tmp.1-0123456789abcdef.json"));
        assert!(!is_temp_file("c-0123456789abcdef.json.tmp."));
        assert!(!is_temp_file("c-0123456789abcdef.json.tmp.12x"));
    }

    #[test]
    fn the_longest_container_id_fits_every_file_name() {
        let (_t, j) = journal();
        let id = "a".repeat(MAX_CONTAINER_ID);
        let lock = j.lock(&id, Duration::from_secs(1)).unwrap();
        let entry = j.entry_path(&id, "eth0");
        let longest = format!(
            "{}{TMP_MARK}{}",
            entry.file_name().unwrap().to_string_lossy(),
            u32::MAX
        );
        assert_eq!(longest.len(), 255);
        j.write(&lock, &Entry::new(&id, "eth0", None, "1.1.0"))
            .unwrap();
        std::fs::write(j.dir().join(&longest), "x").unwrap();
        j.quarantine(&lock, "eth0").unwrap();
    }

    #[test]
    fn gc_keeps_an_entry_whose_container_id_looks_like_a_temp_file() {
        let (_t, j) = journal();
        let lock = j.lock("x.json.tmp.1", Duration::from_secs(1)).unwrap();
        j.write(&lock, &Entry::new("x.json.tmp.1", "eth0", None, "1.1.0"))
            .unwrap();
        let list = j.entries(Duration::ZERO).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, "x.json.tmp.1");
    }
}
