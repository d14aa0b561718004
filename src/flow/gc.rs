//! GC: undo every journaled attachment set the runtime no longer lists (once older than the
//! grace period, so an ADD in flight is never collected), then forward GC to the delegates
//! that speak 1.1.0 with what remains valid for their network.

use super::{Error, Request};
use crate::conf::{ConfError, PlexusConf};
use crate::invoke::{self, Container, InvokeError, Runner, Target};
use crate::journal::undo::{self, Undo, Undone};
use crate::journal::{Journal, JournalError, Lookup, now_secs};
use crate::resolve::{self, Purpose};
use crate::store::NetworkStore;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// What GC could not do; it goes on past each.
#[derive(Debug, thiserror::Error)]
pub enum GcFailure {
    #[error(transparent)]
    Undo(#[from] JournalError),
    #[error(transparent)]
    Forward(#[from] InvokeError),
}

/// Per network: its conflist and the attachments still valid on it.
type Live = BTreeMap<String, (Value, Vec<(String, String)>)>;

pub(super) fn gc(req: &Request, store: Option<&dyn NetworkStore>) -> Result<(), Error> {
    let conf = &req.conf;
    let valid = valid_attachments(conf)?;
    crate::autoconf::wait_for_conf(conf)?;
    let journal = Journal::open(&conf.cni_dir)?;
    let runner = Runner::new(conf, &req.env.cni_path);
    let mut failures = Vec::new();
    let mut live = collect(&journal, &runner, conf, &valid, &mut failures)?;
    // The cluster network gets GC even when no pod uses it on this node right now.
    if let Ok(r) = resolve::resolve(conf, store, &req.pod, Purpose::Lookup) {
        live.entry(r.cluster.key.clone())
            .or_insert_with(|| (Value::Object(r.cluster.config.clone()), Vec::new()));
    }
    for (network, (conf_value, attachments)) in &live {
        let Value::Object(m) = conf_value else {
            continue;
        };
        let Ok(list) = cni::netconf::NetConfList::from_map(m.clone()) else {
            continue;
        };
        let t = Target::new(&runner, network, Container::NONE);
        if let Err(e) = invoke::gc(&list, &t, attachments) {
            failures.push(e.into());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Gc(failures))
    }
}

/// Undoes the entries the runtime no longer lists; returns what stays, by network.
fn collect(
    journal: &Journal,
    runner: &Runner,
    conf: &PlexusConf,
    valid: &HashSet<(String, String)>,
    failures: &mut Vec<GcFailure>,
) -> Result<Live, Error> {
    let now = now_secs();
    let mut live = Live::new();
    for (cid, path) in journal.entries(conf.gc_grace)? {
        // An operation in progress holds the lock: leave its container alone this round.
        let Ok(lock) = journal.lock(&cid, Duration::from_millis(100)) else {
            continue;
        };
        let mut entry = match journal.read_path(&path) {
            Ok(Lookup::Found(entry)) => entry,
            Ok(Lookup::Corrupt(reason)) => {
                set_aside(journal, &lock, &cid, &path, &reason, valid, conf.gc_grace);
                continue;
            }
            _ => continue,
        };
        let is_valid = valid.contains(&(entry.container_id.clone(), entry.ifname.clone()));
        let young = now.saturating_sub(entry.created) < conf.gc_grace.as_secs();
        if is_valid || young {
            for a in &entry.attachments {
                live.entry(a.network.clone())
                    .or_insert_with(|| (a.conf.clone(), Vec::new()))
                    .1
                    .push((entry.container_id.clone(), a.ifname.clone()));
            }
            continue;
        }
        let netns = entry.netns.clone().map(std::path::PathBuf::from);
        let how = Undo {
            runner,
            netns: netns.as_deref(),
            policy: conf.del_policy,
        };
        match undo::entry(journal, &lock, &mut entry, &how) {
            Ok(Undone::All) => {}
            Ok(Undone::Partly { error, .. }) | Err(error) => failures.push(error.into()),
        }
        cni::fault::point("gc-between-entries");
    }
    Ok(live)
}

/// An entry that does not read as a whole and names no attachment (what a power cut between
/// a plan's rename and its `fsync` can leave) is quarantined once the runtime no longer lists
/// it and it is older than the grace period: no delegate ran for it, and a runtime that
/// forgot the container will never DEL it. One that still names attachments stays for DEL,
/// which can undo them from the salvaged record.
fn set_aside(
    journal: &Journal,
    lock: &crate::journal::ContainerLock,
    container_id: &str,
    path: &std::path::Path,
    reason: &str,
    valid: &HashSet<(String, String)>,
    grace: Duration,
) {
    let listed = valid
        .iter()
        .any(|(cid, ifname)| cid == container_id && journal.entry_path(cid, ifname) == path);
    let old = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= grace);
    if listed || !old || journal.names_attachments(lock, path) {
        return;
    }
    match journal.quarantine_entry(lock, path) {
        Ok(moved) => {
            tracing::warn!(%reason, quarantined = %moved.display(), "GC: journal entry unreadable and naming no attachment; set aside")
        }
        Err(e) => tracing::warn!(error = %e, "GC: could not set an unreadable journal entry aside"),
    }
}

/// `cni.dev/valid-attachments` (the 1.1.0 tag's `cni.dev/attachments` too), strictly read:
/// a malformed list must not be taken as "nothing is valid" and delete every pod's networks.
/// A missing or malformed list is invalid config (code 7), not a delegate failure.
fn valid_attachments(conf: &PlexusConf) -> Result<HashSet<(String, String)>, ConfError> {
    let invalid = |reason: String| ConfError::Invalid {
        key: cni::netconf::VALID_ATTACHMENTS,
        reason,
    };
    let raw = conf
        .raw
        .get(cni::netconf::VALID_ATTACHMENTS)
        .or_else(|| conf.raw.get(cni::netconf::ATTACHMENTS))
        .ok_or_else(|| invalid("is missing".into()))?;
    let Value::Array(list) = raw else {
        return Err(invalid("must be a list".into()));
    };
    let mut out = HashSet::new();
    for (i, item) in list.iter().enumerate() {
        let cid = item.get("containerID").and_then(Value::as_str);
        let ifname = item.get("ifname").and_then(Value::as_str);
        match (cid, ifname) {
            (Some(c), Some(n)) => {
                out.insert((c.to_string(), n.to_string()));
            }
            _ => return Err(invalid(format!("item {i} needs containerID and ifname"))),
        }
    }
    Ok(out)
}
