//! CHECK, GC and STATUS: the verbs that look at what is there rather than change a pod.

use super::{journal, journaled_parts};
use crate::cache::{Lookup, State};
use crate::conf::PlexusConf;
use crate::env::Invocation;
use crate::invoke::{self, Target};
use crate::store::NetworkStore;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// CHECK runs every delegate's CHECK with its cached result; a delegate that finds its
/// interface, address or route gone fails it.
pub(super) fn check(inv: &Invocation, conf: &PlexusConf) -> Result<(), crate::Error> {
    let Some(ifname) = inv.ifname.as_ref() else {
        return Err(crate::env::EnvError::Missing("CNI_IFNAME", cni::Command::Check).into());
    };
    let journal = journal(conf)?;
    let lock = journal.lock(inv.container_id(), super::lock_wait(conf))?;
    let lookup = journal.read(&lock, ifname.as_str());
    journal.release(lock);
    let entry = match lookup? {
        Lookup::Found(e) => e,
        Lookup::Missing | Lookup::Corrupt(_) => {
            return Err(crate::Error::UnknownContainer {
                container_id: inv.container_id().to_string(),
                ifname: ifname.to_string(),
            });
        }
    };
    let runner = super::runner(conf, inv);
    for a in &entry.attachments {
        if a.state != State::Added {
            return Err(crate::Error::UnknownContainer {
                container_id: inv.container_id().to_string(),
                ifname: a.ifname.clone(),
            });
        }
        let (Some(list), Some(prev)) = journaled_parts(a) else {
            continue;
        };
        let t = Target {
            network: &a.network,
            container_id: inv.container_id(),
            netns: inv.netns.as_deref(),
            ifname: &a.ifname,
            cni_args: &a.cni_args,
            runner: &runner,
            owned: &a.links,
        };
        if !invoke::check(&list, &t, &prev)? {
            tracing::info!(network = %a.network, "CHECK skipped: delegate predates 0.4.0 or disableCheck");
        }
    }
    Ok(())
}

/// `cni.dev/valid-attachments` (the 1.1.0 tag's `cni.dev/attachments` too), strictly read:
/// a malformed list must not be taken as "nothing is valid" and delete every pod's networks.
/// A missing or malformed list is invalid config (code 7), not a delegate failure.
fn valid_attachments(conf: &PlexusConf) -> Result<HashSet<(String, String)>, crate::Error> {
    let invalid = |reason: String| crate::conf::ConfError::Invalid {
        key: cni::netconf::VALID_ATTACHMENTS,
        reason,
    };
    let raw = conf
        .raw
        .get(cni::netconf::VALID_ATTACHMENTS)
        .or_else(|| conf.raw.get(cni::netconf::ATTACHMENTS))
        .ok_or_else(|| invalid("is missing".into()))?;
    let Value::Array(list) = raw else {
        return Err(invalid("must be a list".into()).into());
    };
    let mut out = HashSet::new();
    for (i, item) in list.iter().enumerate() {
        let cid = item.get("containerID").and_then(Value::as_str);
        let ifname = item.get("ifname").and_then(Value::as_str);
        match (cid, ifname) {
            (Some(c), Some(n)) => {
                out.insert((c.to_string(), n.to_string()));
            }
            _ => {
                return Err(invalid(format!("item {i} needs containerID and ifname")).into());
            }
        }
    }
    Ok(out)
}

/// GC: DEL every journaled attachment set the runtime no longer lists (once older than the
/// grace period, so an ADD in flight is never collected), then forward GC to the delegates
/// that speak 1.1.0 with what remains valid for their network.
pub(super) fn gc(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<(), crate::Error> {
    let valid = valid_attachments(conf)?;
    crate::autoconf::wait_for_conf(conf)?;
    let journal = journal(conf)?;
    let now = crate::cache::now_secs();
    let mut failures = Vec::new();
    // network key -> (conflist, attachments still valid on it)
    let mut live: BTreeMap<String, (Value, Vec<(String, String)>)> = BTreeMap::new();
    for (cid, path) in journal.entries(conf.gc_grace)? {
        // An operation in progress holds the lock: leave its container alone this round.
        let Ok(lock) = journal.lock(&cid, Duration::from_millis(100)) else {
            continue;
        };
        let entry = match journal.read_path(&path) {
            Ok(Lookup::Found(e)) => e,
            _ => {
                journal.release(lock);
                continue;
            }
        };
        let mut entry = *entry;
        let is_valid = valid.contains(&(entry.container_id.clone(), entry.ifname.clone()));
        let young = now.saturating_sub(entry.created) < conf.gc_grace.as_secs();
        if is_valid || young {
            for a in &entry.attachments {
                live.entry(a.network.clone())
                    .or_insert_with(|| (a.conf.clone(), Vec::new()))
                    .1
                    .push((entry.container_id.clone(), a.ifname.clone()));
            }
        } else {
            let del_inv = Invocation {
                container_id: Some(entry.container_id.clone()),
                netns: entry.netns.as_ref().map(PathBuf::from),
                ..inv.clone()
            };
            if let Err(e) = super::del::teardown(&del_inv, conf, &journal, &lock, &mut entry) {
                failures.push(e.to_string());
            }
        }
        journal.release(lock);
    }

    // The cluster network gets GC even when no pod uses it on this node right now.
    if let Ok(r) = super::resolve(conf, store, &inv.pod, false) {
        live.entry(r.cluster.key.clone())
            .or_insert_with(|| (Value::Object(r.cluster.config.clone()), Vec::new()));
    }
    let runner = super::runner(conf, inv);
    for (network, (conf_value, attachments)) in &live {
        let Value::Object(m) = conf_value else {
            continue;
        };
        let Ok(list) = cni::netconf::NetConfList::from_map(m.clone()) else {
            continue;
        };
        let t = Target {
            network,
            container_id: "",
            netns: None,
            ifname: "",
            cni_args: "",
            runner: &runner,
            owned: &[],
        };
        if let Err(e) = invoke::gc(&list, &t, attachments) {
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::Gc(failures.join("; ")))
    }
}

/// STATUS: ready when the journal can be written, the readiness file (if any) exists, the
/// store answers, and the cluster network's delegates that speak 1.1.0 say they are ready.
pub(super) fn status(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<(), crate::Error> {
    let not_ready = |what: String| crate::Error::NotReady(what);
    let journal = journal(conf).map_err(|e| not_ready(e.to_string()))?;
    let probe = journal
        .dir()
        .join(format!(".status.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            not_ready(format!(
                "journal dir {} is not writable: {e}",
                journal.dir().display()
            ))
        })?;
    if let Some(f) = &conf.readiness_indicator_file
        && !f.exists()
    {
        return Err(not_ready(format!(
            "readiness indicator file {} does not exist",
            f.display()
        )));
    }
    if let Some(s) = store {
        s.ready()
            .map_err(|e| not_ready(format!("{} store: {e}", s.kind())))?;
    }
    let r = super::resolve(conf, store, &inv.pod, false)
        .map_err(|e| not_ready(format!("cluster network: {e}")))?;
    let list = cni::netconf::NetConfList::from_map(r.cluster.config.clone())
        .map_err(|e| not_ready(format!("cluster network {}: {e}", r.cluster.key)))?;
    let runner = super::runner(conf, inv);
    let t = Target {
        network: &r.cluster.key,
        container_id: "",
        netns: None,
        ifname: "",
        cni_args: "",
        runner: &runner,
        owned: &[],
    };
    invoke::status(&list, &t).map_err(|e| not_ready(e.to_string()))
}
