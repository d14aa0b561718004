//! `logOptions` (Multus's lumberjack keys): `maxSize` (MB, default 100), `maxBackups` (0 keeps
//! all), `maxAge` (days, 0 keeps all), `compress` (gzip the backups). The binary is one-shot,
//! so rotation happens when a call opens the log: if the file has grown past `maxSize`, it is
//! renamed to `<file>.<unix-millis>` and a new one started. Several plexus processes may open
//! the log at once; the one that holds the file's lock rotates, the others append.

use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq)]
pub struct LogOptions {
    pub max_size_bytes: u64,
    pub max_backups: usize,
    pub max_age: Option<Duration>,
    pub compress: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_size_bytes: 100 << 20,
            max_backups: 0,
            max_age: None,
            compress: false,
        }
    }
}

impl LogOptions {
    /// Reads the `logOptions` object; the error names the offending key.
    pub fn from_value(v: &Value) -> Result<LogOptions, String> {
        let Value::Object(m) = v else {
            return Err("must be an object".into());
        };
        let mut o = LogOptions::default();
        let count = |k: &str| -> Result<Option<u64>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("{k} must be a whole number")),
            }
        };
        if let Some(mb) = count("maxSize")? {
            if mb == 0 {
                return Err("maxSize must be at least 1 (megabyte)".into());
            }
            o.max_size_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(n) = count("maxBackups")? {
            o.max_backups =
                usize::try_from(n).map_err(|_| "maxBackups is too large".to_string())?;
        }
        if let Some(days) = count("maxAge")? {
            o.max_age = (days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400)));
        }
        match m.get("compress") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => o.compress = *b,
            Some(_) => return Err("compress must be true or false".into()),
        }
        Ok(o)
    }
}

/// Rotates `path` if it is over the size limit, then prunes old backups. Best effort: a
/// failure is returned for the caller to report, and logging goes on.
pub fn rotate(path: &Path, opts: &LogOptions) -> std::io::Result<()> {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer. Only a regular file is
    // rotated; opening the log refuses anything else.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let md = file.metadata()?;
    if !md.is_file() || md.len() < opts.max_size_bytes {
        return Ok(());
    }
    // Whoever holds the lock rotates; the others find a fresh file next time.
    if file.try_lock().is_err() {
        return Ok(());
    }
    // Another process may have rotated between our open and lock.
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
        _ => return Ok(()),
    }
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let backup = PathBuf::from(format!("{}.{millis}", path.display()));
    std::fs::rename(path, &backup)?;
    drop(file);
    if opts.compress {
        compress(&backup)?;
    }
    prune(path, opts)
}

fn compress(backup: &Path) -> std::io::Result<()> {
    let gz = PathBuf::from(format!("{}.gz", backup.display()));
    let mut input = Vec::new();
    File::open(backup)?.read_to_end(&mut input)?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&gz)?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    enc.write_all(&input)?;
    enc.finish()?.sync_all()?;
    std::fs::remove_file(backup)
}

/// The backups of `path`, oldest first: `<name>.<millis>` and `<name>.<millis>.gz`.
pub fn backups(path: &Path) -> Vec<(u128, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut out: Vec<(u128, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().to_string();
            let stamp = file.strip_prefix(&prefix)?;
            let stamp = stamp.strip_suffix(".gz").unwrap_or(stamp);
            stamp.parse::<u128>().ok().map(|t| (t, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn prune(path: &Path, opts: &LogOptions) -> std::io::Result<()> {
    let mut list = backups(path);
    if let Some(age) = opts.max_age {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let cutoff = now.saturating_sub(age.as_millis());
        for (_, p) in list.iter().filter(|(t, _)| *t < cutoff) {
            std::fs::remove_file(p)?;
        }
        list.retain(|(t, _)| *t >= cutoff);
    }
    if opts.max_backups > 0 && list.len() > opts.max_backups {
        let excess = list.len() - opts.max_backups;
        for (_, p) in list.iter().take(excess) {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_read_and_checked() {
        let o = LogOptions::from_value(
            &json!({"maxSize": 2, "maxBackups": 3, "maxAge": 1, "compress": true}),
        )
        .unwrap();
        assert_eq!(o.max_size_bytes, 2 << 20);
        assert_eq!(o.max_backups, 3);
        assert_eq!(o.max_age, Some(Duration::from_secs(86_400)));
        assert!(o.compress);
        for bad in [
            json!("x"),
            json!({"maxSize": 0}),
            json!({"maxSize": -1}),
            json!({"compress": "yes"}),
        ] {
            assert!(LogOptions::from_value(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_full_log_is_rotated_and_old_backups_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        let opts = LogOptions {
            max_size_bytes: 1000,
            max_backups: 2,
            max_age: None,
            compress: false,
        };
        for round in 0..4 {
            std::fs::write(&log, vec![b'a' + round; 1500]).unwrap();
            rotate(&log, &opts).unwrap();
            assert!(!log.exists(), "round {round}: the full log moved aside");
            std::thread::sleep(Duration::from_millis(5));
        }
        let kept = backups(&log);
        assert_eq!(kept.len(), 2, "{kept:?}");
        // The newest two rounds survive.
        assert_eq!(std::fs::read(&kept[1].1).unwrap()[0], b'd');
        assert_eq!(std::fs::read(&kept[0].1).unwrap()[0], b'c');
        // A small log stays where it is.
        std::fs::write(&log, b"short").unwrap();
        rotate(&log, &opts).unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"short");
    }

    #[test]
    fn compressed_backups_hold_the_old_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        let opts = LogOptions {
            max_size_bytes: 10,
            max_backups: 0,
            max_age: None,
            compress: true,
        };
        std::fs::write(&log, b"line one\nline two\n").unwrap();
        rotate(&log, &opts).unwrap();
        let kept = backups(&log);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].1.to_string_lossy().ends_with(".gz"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&kept[0].1).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "line one\nline two\n");
    }

    #[test]
    fn max_age_removes_old_backups() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        let old = dir.path().join("plexus.log.1000");
        std::fs::write(&old, b"from 1970").unwrap();
        let opts = LogOptions {
            max_size_bytes: 1,
            max_backups: 0,
            max_age: Some(Duration::from_secs(86_400)),
            compress: false,
        };
        std::fs::write(&log, b"now").unwrap();
        rotate(&log, &opts).unwrap();
        assert!(!old.exists());
        assert_eq!(backups(&log).len(), 1);
    }
}
