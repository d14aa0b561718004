//! The readiness gate: with `readinessindicatorfile` set, ADD and GC wait (bounded) for the
//! cluster network to say it is ready by creating that file, and fail with code 11 ("try
//! again later") if it never does. STATUS does not wait: it answers 50 at once
//! (flow/status.rs). DEL never waits: it works from the journal.
//!
//! The CNI spec (§6.1.2) asks a runtime's plugins to block operations until the default
//! network is ready when its conf was written early; Multus polls the same file for 45 s.

use crate::conf::PlexusConf;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// First and longest pause between two looks at the file: quick when the file is about to
/// appear (a node coming up), at most one stat a second over a long wait.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error(
        "cluster network not ready: readiness indicator file {} did not appear within {}s",
        path.display(), waited.as_secs_f64()
    )]
    Timeout { path: PathBuf, waited: Duration },
}

impl ReadinessError {
    /// Always "try again later": the runtime retries the sandbox.
    pub fn code(&self) -> cni::Code {
        cni::Code::TryAgainLater
    }
}

/// Returns once `path` exists, or `Timeout` after `timeout` (a zero timeout looks once).
pub fn wait_for_readiness(path: &Path, timeout: Duration) -> Result<(), ReadinessError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = FIRST_POLL;
    loop {
        // An error (EACCES on a parent, say) reads as "not there yet", like a missing file.
        if path.try_exists().unwrap_or(false) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadinessError::Timeout {
                path: path.to_path_buf(),
                waited: now - start,
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// The gate as ADD and GC call it: a no-op without `readinessindicatorfile`.
pub fn wait_for_conf(conf: &PlexusConf) -> Result<(), ReadinessError> {
    match &conf.readiness_indicator_file {
        Some(path) => wait_for_readiness(path, conf.readiness_timeout),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_returns_at_once() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ready");
        std::fs::write(&f, "").unwrap();
        let t = Instant::now();
        wait_for_readiness(&f, Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn a_missing_file_times_out_within_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("never");
        let t = Instant::now();
        let e = wait_for_readiness(&f, Duration::from_millis(700)).unwrap_err();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!(took < Duration::from_millis(1200), "{took:?}");
        assert_eq!(e.code(), 11);
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
    }

    #[test]
    fn a_file_created_during_the_wait_ends_it() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("later");
        let g = f.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(g, "").unwrap();
        });
        let t = Instant::now();
        wait_for_readiness(&f, Duration::from_secs(10)).unwrap();
        let took = t.elapsed();
        writer.join().unwrap();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        // Polls are at most 1 s apart, and only 700 ms apart this early in the backoff.
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[test]
    fn zero_timeout_looks_once() {
        let d = tempfile::tempdir().unwrap();
        let t = Instant::now();
        assert!(wait_for_readiness(&d.path().join("x"), Duration::ZERO).is_err());
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
