//! One forwarded CNI call, run on its own thread: the same steps as the one-shot binary's
//! (`cli::prepare`, `commands::run`, `cli::finish`), with the daemon's cached store. This is
//! the only place the daemon enters the flow.

use super::metrics::Metrics;
use super::protocol::Request;
use super::store::DaemonStore;
use crate::env::{Command, Invocation};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

pub fn answer(req: &Request, daemon: &DaemonStore, metrics: &Metrics) -> (u8, Option<String>) {
    let inv = match Invocation::from_env(|k| req.env.get(k).cloned()) {
        Ok(i) => i,
        Err(e) => return crate::cli::env_error(e),
    };
    let conf = match crate::cli::prepare(&inv, &req.stdin) {
        Ok(c) => c,
        Err(out) => return out,
    };
    crate::cli::log_invoked(&inv, &conf);
    let store = daemon.for_call(&inv);
    let gc_candidates = (inv.command == Command::Gc).then(|| collectable(&conf));
    let started = Instant::now();
    let outcome = crate::commands::run(&inv, &conf, Some(&store));
    metrics.observe_call(&inv, &outcome, started.elapsed());
    if let Some(before) = gc_candidates {
        let after = collectable(&conf);
        metrics.gc_reclaimed(before.difference(&after).count());
    }
    crate::cli::finish(&inv, &conf, outcome)
}

/// Journal entries of containers the runtime did not list as valid: what a GC may remove.
fn collectable(conf: &crate::conf::PlexusConf) -> BTreeSet<PathBuf> {
    let valid: BTreeSet<&str> = conf
        .raw
        .get(cni::netconf::VALID_ATTACHMENTS)
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("containerID").and_then(|c| c.as_str()))
        .collect();
    let Ok(journal) = crate::cache::Journal::open(&conf.cni_dir) else {
        return BTreeSet::new();
    };
    journal
        .entries(std::time::Duration::MAX)
        .unwrap_or_default()
        .into_iter()
        .filter(|(cid, _)| !valid.contains(cid.as_str()))
        .map(|(_, path)| path)
        .collect()
}
