//! Undoing an entry: the journal replayed in reverse. Shared by an aborted ADD, DEL and GC.
//! Goes on past errors, succeeds when things are already gone, works with the netns gone or
//! the NAD deleted; what could not be removed stays journaled for the next DEL.

use super::{ContainerLock, Entry, Journal, JournalError, State, now_secs};
use crate::conf::DelPolicy;
use crate::invoke::NsId;
use crate::invoke::pod::{self, PodLink};
use crate::invoke::{self, Runner, Target};
use cni::CniResult;
use delegates::Kind;
use std::path::{Path, PathBuf};

/// How an entry is undone.
pub struct Undo<'a> {
    pub runner: &'a Runner<'a>,
    /// The netns the caller named (`CNI_NETNS`), if any.
    pub netns: Option<&'a Path>,
    pub policy: DelPolicy,
}

/// What undoing an entry came to.
#[derive(Debug)]
pub enum Undone {
    /// Every attachment is gone, and so is the entry.
    All,
    /// Some DELs failed; the entry stays with what is left. `tombstone`: it has failed
    /// often and long enough that a runtime's DEL may answer success and leave it to GC.
    Partly {
        error: JournalError,
        tombstone: bool,
    },
}

/// DELs every attachment that was not removed yet, last first, and removes or rewrites the
/// entry.
pub fn entry(
    journal: &Journal,
    lock: &ContainerLock,
    entry: &mut Entry,
    how: &Undo,
) -> Result<Undone, JournalError> {
    let netns = pod_netns(how.netns, entry);
    // Closed when this returns, after the links and the delegates' DELs.
    let _masq_sockets = remove_masquerade_first(how, entry);
    if let Some(ns) = netns.as_deref() {
        let links = pod_links(entry);
        pod::remove_links_together(how.runner, ns, entry.netns_id, &entry.container_id, &links);
        cni::fault::point("del-after-links-removed");
    }
    let mut errors = Vec::new();
    for i in (0..entry.attachments.len()).rev() {
        let a = &entry.attachments[i];
        if a.state == State::Removed {
            continue;
        }
        let (Some(list), prev) = a.parts() else {
            // Without its conf no delegate can run, but the links it recorded can still go.
            tracing::error!(network = %a.network, "journaled conf unreadable; removing only the links it recorded");
            let gone = pod::remove_recorded(
                netns.as_deref(),
                &entry.container_id,
                &a.ifname,
                &a.links,
                how.runner.timeout,
            );
            if let Err(e) = gone {
                tracing::error!(network = %a.network, error = %e, "removing recorded links failed");
            }
            continue;
        };
        let t = Target::new(
            how.runner,
            &a.network,
            a.container(&entry.container_id, netns.as_deref()),
        );
        let started = std::time::Instant::now();
        let outcome = invoke::del(&list, &t, prev.as_ref());
        tracing::debug!(network = %a.network, micros = started.elapsed().as_micros() as u64, "attachment deleted");
        cni::fault::point("del-between-attachments");
        match outcome {
            Ok(()) => entry.attachments[i].state = State::Removed,
            // A planned attachment may or may not have been started when an ADD was
            // killed; one whose plugin cannot even be found never ran.
            Err(e) if a.state == State::Planned && e.nothing_ran() => {
                entry.attachments[i].state = State::Removed;
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        cni::fault::point("del-before-journal-remove");
        tolerate_read_only(journal.remove(lock, &entry.ifname))?;
        return Ok(Undone::All);
    }
    let tombstone = count_failure(entry, how.policy);
    tolerate_read_only(journal.update(lock, entry))?;
    Ok(Undone::Partly {
        error: JournalError::Left {
            container_id: entry.container_id.clone(),
            errors,
        },
        tombstone,
    })
}

/// The built-in bridge's `ipMasq` rules go before any link, and the sockets that removed them
/// are closed after the links. Such a close waits for the kernel to release the rules (an
/// RCU grace period) while holding the node's nf_tables commit mutex, which the removal of the
/// pod's veth needs too; the link removal waits for grace periods of its own, during which the
/// release completes, so the close at the end costs nothing. Any other order adds a grace
/// period to every masquerading pod's DEL. Best effort: the bridge's DEL removes what is left.
fn remove_masquerade_first(how: &Undo, entry: &Entry) -> Vec<delegates::nftables::Nft> {
    let mut sockets = Vec::new();
    for a in entry.attachments.iter().rev() {
        if a.state == State::Removed
            || how.runner.builtin(a.first_plugin().unwrap_or_default()) != Some(Kind::Bridge)
        {
            continue;
        }
        let Some(conf) = a.parts().0.and_then(|list| list.plugin_conf(0)) else {
            continue;
        };
        let removed = delegates::bridge::remove_masquerade(
            &conf,
            &entry.container_id,
            &a.ifname,
            how.runner.timeout,
        );
        match removed {
            Ok(socket) => sockets.extend(socket),
            Err(e) => {
                tracing::warn!(network = %a.network, error = %e, "masquerade rules left to the bridge's DEL")
            }
        }
    }
    cni::fault::point("del-after-masquerade-removed");
    sockets
}

/// Counts a failed DEL. A delegate whose DEL never succeeds would keep the pod from ever
/// being deleted: after enough failures over enough time the entry becomes a
/// tombstone, which GC keeps retrying, so nothing is forgotten.
fn count_failure(entry: &mut Entry, policy: DelPolicy) -> bool {
    let now = now_secs();
    entry.failed_dels = entry.failed_dels.saturating_add(1);
    let first = *entry.first_failed_del.get_or_insert(now);
    entry.tombstone |= entry.failed_dels >= policy.attempts
        && now.saturating_sub(first) >= policy.give_up_after.as_secs();
    entry.tombstone
}

/// The pod's interfaces as the entry recorded them, for removing them together.
fn pod_links(entry: &Entry) -> Vec<PodLink<'_>> {
    entry
        .attachments
        .iter()
        .filter(|a| a.state != State::Removed)
        .filter_map(|a| {
            let mac = a
                .result
                .as_ref()
                .and_then(|r| CniResult::parse(r, cni::Version::V1_1_0).ok())
                .and_then(|r| {
                    r.interfaces
                        .into_iter()
                        .find(|i| i.name == a.ifname && i.sandbox.is_some())
                })
                .and_then(|i| i.mac);
            Some(PodLink {
                ifname: &a.ifname,
                plugin: a.first_plugin()?,
                ipam: a.first_plugin_ipam(),
                links: &a.links,
                mac,
            })
        })
        .collect()
}

/// On a read-only state dir DEL still undoes what it can; the entry stays, and a later DEL
/// repeats the (idempotent) delegate DELs.
fn tolerate_read_only(r: Result<(), JournalError>) -> Result<(), JournalError> {
    match r {
        Err(e) if e.is_read_only() => {
            tracing::warn!(error = %e, "journal is read-only; DEL goes on without updating it");
            Ok(())
        }
        other => other,
    }
}

/// The pod's netns for this DEL: `CNI_NETNS`, else the path ADD used, but only while it
/// still names the namespace ADD journaled (device and inode). A path that names another
/// namespace now (a wrong `CNI_NETNS`, another pod's, the node's, a reused `/proc/<pid>`
/// path) is not this pod's: nothing in it is touched, and the delegates get no netns, as
/// for a pod whose netns is gone (they still release their addresses).
pub fn pod_netns(given: Option<&Path>, entry: &Entry) -> Option<PathBuf> {
    let given = given.map(Path::to_path_buf);
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
