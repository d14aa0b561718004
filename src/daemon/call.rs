//! The only place the daemon enters the flow: one [`flow::run`] call per CNI call, with the
//! daemon's cached store, the same call the one-shot binary makes. Each call runs on a thread
//! of its own.

use super::metrics::Metrics;
use super::protocol;
use super::store::DaemonStore;
use crate::flow::{self, Answer, Request, Services};
use cni::Command;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

/// A call as the shim forwarded it: the runtime's environment and stdin, parsed as the
/// one-shot binary parses them, then run.
pub fn answer(wire: &protocol::Request, daemon: &DaemonStore, metrics: &Metrics) -> Answer {
    let get = |k: &str| wire.env.get(k).cloned();
    let req = match Request::parse(get, &mut wire.stdin.as_slice()) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    req.log();
    run(&req, daemon, metrics)
}

/// Runs a parsed request, counting it in the metrics.
pub fn run(req: &Request, daemon: &DaemonStore, metrics: &Metrics) -> Answer {
    let store = daemon.for_uid(req.pod.uid.clone());
    let gc_candidates = (req.command() == Command::Gc).then(|| collectable(&req.conf));
    let started = Instant::now();
    let outcome = flow::run(
        req,
        &Services {
            store: Some(&store),
        },
    );
    metrics.observe_call(req.command(), &outcome, started.elapsed());
    if let Some(before) = gc_candidates {
        let after = collectable(&req.conf);
        metrics.gc_reclaimed(before.difference(&after).count());
    }
    flow::answer(req, outcome)
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
    let Ok(journal) = crate::journal::Journal::open(&conf.cni_dir) else {
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
