//! DEL: replay the journal in reverse. Goes on past errors, succeeds when things are already
//! gone, works with the netns gone, the store unreachable or the NAD deleted, and can be
//! repeated. What could not be removed stays journaled for the next DEL.

use super::{LOCK_WAIT, journal, journaled_parts};
use crate::cache::{ContainerLock, Entry, Journal, Lookup, State};
use crate::conf::PlexusConf;
use crate::env::Invocation;
use crate::invoke::{self, Target};
use crate::store::NetworkStore;
use std::path::PathBuf;

pub(super) fn del(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<(), crate::Error> {
    let Some(ifname) = inv.ifname.as_ref() else {
        return Err(crate::env::EnvError::Missing("CNI_IFNAME", "DEL").into());
    };
    let journal = journal(conf)?;
    let lock = journal.lock(inv.container_id(), LOCK_WAIT)?;
    let outcome = match journal.read(&lock, ifname.as_str())? {
        // The journal is written before any delegate runs, so no entry means nothing of
        // ours is on the node: DEL without ADD, or a repeated DEL.
        Lookup::Missing => Ok(()),
        Lookup::Found(mut entry) => teardown(inv, conf, &journal, &lock, &mut entry),
        Lookup::Corrupt(reason) => {
            let moved = journal.quarantine(&lock, ifname.as_str())?;
            tracing::warn!(%reason, quarantined = %moved.display(), "journal entry unreadable; re-resolving networks to DEL them");
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
            rebuild_and_teardown(inv, conf, store, &journal, &lock);
            Ok(())
        }
    };
    journal.release(lock);
    outcome
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
    let netns: Option<PathBuf> = inv
        .netns
        .clone()
        .or_else(|| entry.netns.as_ref().map(PathBuf::from));
    if let Some(ns) = netns.as_deref() {
        let started = std::time::Instant::now();
        remove_links_together(ns, entry);
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
            tracing::error!(network = %a.network, "journaled conf unreadable; skipping");
            continue;
        };
        let t = Target {
            network: &a.network,
            container_id: &entry.container_id,
            netns: netns.as_deref(),
            ifname: &a.ifname,
            cni_args: &a.cni_args,
            runner: &runner,
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
    let give_up = entry.failed_dels >= conf.del_attempts
        && now.saturating_sub(first) >= conf.del_give_up_after.as_secs();
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
    let attachments = match plan {
        Ok((_, a)) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-resolve networks; nothing more to DEL");
            return;
        }
    };
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
fn remove_links_together(netns: &std::path::Path, entry: &Entry) {
    let ifnames: Vec<&str> = entry
        .attachments
        .iter()
        .filter(|a| a.state != State::Removed)
        .filter(|a| {
            a.conf
                .get("plugins")
                .and_then(|p| p.get(0))
                .and_then(|p| p.get("type"))
                .and_then(|t| t.as_str())
                .is_some_and(|t| BATCHABLE.contains(&t))
        })
        .map(|a| a.ifname.as_str())
        .collect();
    if ifnames.len() < 2 {
        return;
    }
    if let Err(e) = delegates::remove_links_batched(netns, &ifnames) {
        tracing::warn!(error = %e, "batched link removal failed; delegates remove their own links");
    }
}
