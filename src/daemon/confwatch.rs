//! The conf for the shim, kept in step with the CNI conf dir: written at start, then written
//! again whenever something changes in the folder (inotify, no polling) — the primary CNI
//! rewrote its conf or appeared late, someone deleted or edited ours. Each round is
//! `generate-config`, which rewrites nothing that is already right, so the daemon's own write
//! wakes the watch once more and then settles.
//!
//! Never removes the conf, on exit or ever: without it the runtime falls back to the primary
//! CNI and starts pods without their networks.

use super::Health;
use crate::autoconf::GenerateOptions;
use crate::autoconf::atomic::Written;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Changes in a burst (a tool writing several files, a temp file then its rename) are taken
/// together.
const SETTLE: Duration = Duration::from_millis(100);

pub fn run(opts: GenerateOptions, health: &Health) {
    let mut opts = opts;
    let watch = std::fs::create_dir_all(&opts.conf_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| watch(&opts.conf_dir).map_err(|e| e.to_string()));
    let inotify = match watch {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::error!(dir = %opts.conf_dir.display(), error = %e, "cannot watch the CNI conf dir; the conf is written once");
            None
        }
    };
    loop {
        if health.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        match crate::autoconf::generate(&opts) {
            Ok(g) => {
                if g.written == Written::Replaced {
                    tracing::info!(conf = %g.output.display(), primary = %g.primary, "conf written");
                }
                health.conf_written.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "conf not written; the previous one, if any, stays")
            }
        }
        // Only the first round waits for a primary; later ones are woken by its arrival.
        opts.primary_timeout = Duration::ZERO;
        let Some(inotify) = &inotify else { return };
        if let Err(e) = inotify.read_events() {
            tracing::error!(error = %e, "watch of the CNI conf dir failed; the conf is no longer kept in step");
            return;
        }
        std::thread::sleep(SETTLE);
    }
}

fn watch(dir: &std::path::Path) -> nix::Result<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_ONLYDIR,
    )?;
    Ok(inotify)
}
