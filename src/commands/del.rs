//! DEL: replay the journal in reverse. Goes on past errors, succeeds when things are already
//! gone, works with the netns gone, the store unreachable or the NAD deleted, and can be
//! repeated. What could not be removed stays journaled for the next DEL.

use super::{journal, journaled_parts};
use crate::cache::{ContainerLock, Entry, Journal, Lookup, State};
use crate::conf::PlexusConf;
use crate::env::Invocation;
use crate::invoke::{self, Target};
use crate::store::NetworkStore;
use delegates::netns::NsId;
use delegates::owned::{Expected, Side};
use std::path::{Path, PathBuf};

pub(super) fn del(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<(), crate::Error> {
    let Some(ifname) = inv.ifname.as_ref() else {
        return Err(crate::env::EnvError::Missing("CNI_IFNAME", cni::Command::Del).into());
    };
    let journal = journal(conf)?;
    let lock = journal.lock(inv.container_id(), super::lock_wait(conf))?;
    let outcome = match journal.read(&lock, ifname.as_str())? {
        // The journal is written before any delegate runs, so no entry means nothing of
        // ours is on the node: DEL without ADD, or a repeated DEL.
        Lookup::Missing => Ok(()),
        Lookup::Found(mut entry) => teardown(inv, conf, &journal, &lock, &mut entry),
        Lookup::Corrupt(reason) => {
            let salvaged = journal.salvage(&lock, ifname.as_str());
            let moved = journal.quarantine(&lock, ifname.as_str())?;
            if let Some(mut entry) = salvaged {
                // What the journal recorded is undone from the record itself; a failure
                // writes the salvaged entry back for the next DEL.
                tracing::warn!(%reason, quarantined = %moved.display(), attachments = entry.attachments.len(), "journal entry unreadable as a whole; DELing the attachments it still names");
                teardown(inv, conf, &journal, &lock, &mut entry)
            } else {
                tracing::warn!(%reason, quarantined = %moved.display(), "journal entry unreadable; re-resolving networks to DEL them");
                corrupt_without_record(inv, conf, store, &journal, &lock);
                Ok(())
            }
        }
    };
    journal.release(lock);
    outcome
}

/// An entry with nothing readable left: the networks are planned again from the store.
fn corrupt_without_record(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    journal: &Journal,
    lock: &ContainerLock,
) {
    let opened;
    let store = match store {
        Some(s) => Some(s),
        None => {
            opened = super::open_store(conf).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "store unavailable for the re-resolve");
                None
            });
            opened.as_deref()
        }
    };
    rebuild_and_teardown(inv, conf, store, journal, lock);
}

/// DELs every attachment that was started, last first, and rewrites or removes the entry.
pub(super) fn teardown(
    inv: &Invocation,
    conf: &PlexusConf,
    journal: &Journal,
    lock: &ContainerLock,
    entry: &mut Entry,
) -> Result<(), crate::Error> {
    let runner = super::runner(conf, inv);
    let netns = pod_netns(inv, entry);
    if let Some(ns) = netns.as_deref() {
        let started = std::time::Instant::now();
        remove_links_together(ns, entry, conf);
        tracing::debug!(
            micros = started.elapsed().as_micros() as u64,
            "pod links removed together"
        );
    }
    let mut errors = Vec::new();
    for i in (0..entry.attachments.len()).rev() {
        let a = &entry.attachments[i];
        if a.state == State::Removed {
            continue;
        }
        let (Some(list), prev) = journaled_parts(a) else {
            // Without its conf no delegate can run, but the links it recorded can still go.
            tracing::error!(network = %a.network, "journaled conf unreadable; removing only the links it recorded");
            let tag = delegates::owned::tag(&entry.container_id, &a.ifname);
            if let Err(e) =
                delegates::owned::remove_recorded(netns.as_deref(), &a.links, &tag, conf.timeout)
            {
                tracing::error!(network = %a.network, error = %e, "removing recorded links failed");
            }
            continue;
        };
        let t = Target {
            network: &a.network,
            container_id: &entry.container_id,
            netns: netns.as_deref(),
            ifname: &a.ifname,
            cni_args: &a.cni_args,
            runner: &runner,
            owned: &a.links,
        };
        // A planned attachment may or may not have been started when an ADD was killed; one
        // whose plugin cannot even be found never ran.
        let started = std::time::Instant::now();
        let outcome = invoke::del(&list, &t, prev.as_ref());
        tracing::debug!(network = %a.network, micros = started.elapsed().as_micros() as u64, "attachment deleted");
        match outcome {
            Ok(()) => entry.attachments[i].state = State::Removed,
            Err(e) if a.state == State::Planned && e.nothing_ran() => {
                entry.attachments[i].state = State::Removed;
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        tolerate_read_only(journal.remove(lock, &entry.ifname))?;
        return Ok(());
    }
    let now = crate::cache::now_secs();
    entry.failed_dels = entry.failed_dels.saturating_add(1);
    let first = *entry.first_failed_del.get_or_insert(now);
    // A delegate whose DEL never succeeds would keep the pod from ever being deleted (Multus
    // #948). After enough failures over enough time, DEL answers success and the entry stays
    // as a tombstone: GC keeps retrying it, and nothing is forgotten.
    let give_up = entry.failed_dels >= conf.del_policy.attempts
        && now.saturating_sub(first) >= conf.del_policy.give_up_after.as_secs();
    entry.tombstone |= give_up;
    tolerate_read_only(journal.write(lock, entry))?;
    let error = crate::Error::Teardown {
        container_id: entry.container_id.clone(),
        errors,
    };
    if entry.tombstone && inv.command == crate::env::Command::Del {
        tracing::error!(error = %error, failed_dels = entry.failed_dels, "DEL keeps failing; answering success and leaving a tombstone for GC");
        return Ok(());
    }
    Err(error)
}

/// Last resort for an unreadable entry: plan the pod's networks again from the conf and the
/// store and DEL them all. Failures are logged, not returned: the entry is quarantined, and
/// a DEL that can never succeed would keep the pod from ever being deleted.
fn rebuild_and_teardown(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    journal: &Journal,
    lock: &ContainerLock,
) {
    let Some(ifname) = inv.ifname.as_ref() else {
        return;
    };
    let plan = super::plan_attachments(inv, conf, store, ifname, false);
    let mut attachments = match plan {
        Ok((_, a)) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-resolve networks; nothing more to DEL");
            return;
        }
    };
    // An interface another ADD of this container holds is that ADD's to remove.
    match super::sibling_ifnames(journal, lock, ifname.as_str()) {
        Ok(taken) => attachments.retain(|a| !taken.contains_key(a.ifname.as_str())),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the container's other entries; nothing more to DEL");
            return;
        }
    }
    let mut entry = Entry::new(
        inv.container_id(),
        ifname.as_str(),
        inv.netns.as_deref(),
        &conf.cni_version_str,
    );
    entry.attachments = attachments.iter().map(super::journal_record).collect();
    if let Err(e) = teardown(inv, conf, journal, lock, &mut entry) {
        tracing::warn!(error = %e, "DEL of re-resolved networks incomplete");
    }
}

/// On a read-only state dir DEL still undoes what it can (reliability-matrix N5); the entry
/// stays, and a later DEL repeats the (idempotent) delegate DELs.
fn tolerate_read_only(r: Result<(), crate::cache::CacheError>) -> Result<(), crate::Error> {
    match r {
        Err(e) if e.is_read_only() => {
            tracing::warn!(error = %e, "journal is read-only; DEL goes on without updating it");
            Ok(())
        }
        other => other.map_err(Into::into),
    }
}

/// The pod's netns for this DEL: `CNI_NETNS`, else the path ADD used, but only while it
/// still names the namespace ADD journaled (device and inode). A path that names another
/// namespace now (a wrong `CNI_NETNS`, another pod's, the node's, a reused `/proc/<pid>`
/// path) is not this pod's: nothing in it is touched, and the delegates get no netns, as
/// for a pod whose netns is gone (they still release their addresses).
fn pod_netns(inv: &Invocation, entry: &Entry) -> Option<PathBuf> {
    let given = inv.netns.clone();
    let recorded = entry.netns.as_ref().map(PathBuf::from);
    let Some(want) = entry.netns_id else {
        // An entry from before namespaces were journaled.
        return given.or(recorded);
    };
    for path in given.into_iter().chain(recorded) {
        match NsId::of_path(&path) {
            Ok(id) if id == want => return Some(path),
            Ok(_) => {
                tracing::warn!(netns = %path.display(), "not the namespace ADD used; nothing in it is touched");
            }
            Err(_) => {}
        }
    }
    None
}

/// Plugin types whose pod interface is a virtual link the kernel can delete, and whose DEL
/// still does the rest of its work (IPAM release, host-side cleanup) when that link is gone.
/// A physical device (host-device, SR-IOV) must be handed back by its plugin instead.
const BATCHABLE: &[&str] = &[
    "bridge",
    "macvlan",
    "ipvlan",
    "vxlan",
    "ptp",
    "plexus-bridge",
    "plexus-macvlan",
    "plexus-ipvlan",
    "plexus-vxlan",
];

/// Removing a link costs ~20–25 ms of kernel time (RCU grace periods), but a set of links
/// removed in one request costs about the same as one (shared/reference/performance.md). So
/// the pod's virtual links go first, together; each delegate's DEL then finds its link gone
/// and releases the rest. Best effort: on any failure the delegates remove their own links.
///
/// A link joins only when it is still the one its ADD made: the journaled link of a
/// built-in (index, name, MAC, tag), or, for an exec'd plugin, the interface of that name
/// with the MAC its cached result reports. One that cannot be recognised is left to its
/// delegate's DEL.
fn remove_links_together(netns: &Path, entry: &Entry, conf: &PlexusConf) {
    struct Known {
        name: String,
        tag: Option<String>,
        journaled: Option<delegates::OwnedLink>,
        mac: Option<String>,
    }
    let mut known = Vec::new();
    for a in entry
        .attachments
        .iter()
        .filter(|a| a.state != State::Removed)
    {
        let Some(plugin) = a
            .conf
            .get("plugins")
            .and_then(|p| p.get(0))
            .and_then(|p| p.get("type"))
            .and_then(|t| t.as_str())
            .filter(|t| BATCHABLE.contains(t))
        else {
            continue;
        };
        let built_in = conf.builtins.allows(plugin) && delegates::Kind::of(plugin).is_some();
        let journaled = a
            .links
            .iter()
            .find(|l| l.side == Side::Pod && l.name == a.ifname)
            .cloned();
        let mac = a
            .result
            .as_ref()
            .and_then(|r| cni::CniResult::parse(r, cni::Version::V1_1_0).ok())
            .and_then(|r| {
                r.interfaces
                    .into_iter()
                    .find(|i| i.name == a.ifname && i.sandbox.is_some())
            })
            .and_then(|i| i.mac);
        if journaled.is_none() && mac.is_none() {
            continue;
        }
        known.push(Known {
            name: a.ifname.clone(),
            tag: built_in.then(|| delegates::owned::tag(&entry.container_id, &a.ifname)),
            journaled,
            mac,
        });
    }
    if known.len() < 2 {
        return;
    }
    let expected: Vec<Expected> = known
        .iter()
        .map(|k| Expected {
            name: &k.name,
            tag: k.tag.as_deref(),
            journaled: k.journaled.as_ref(),
            mac: k.mac.as_deref(),
        })
        .collect();
    if let Err(e) = delegates::remove_links_batched(netns, entry.netns_id, &expected, conf.timeout)
    {
        tracing::warn!(error = %e, "batched link removal failed; delegates remove their own links");
    }
}
