//! DEL: undo what the journal recorded for (container, `CNI_IFNAME`). Works with the netns
//! gone, the store unreachable or the NAD deleted, and can be repeated; no entry means
//! nothing of ours is on the node.

use super::{Error, Request, Services};
use crate::invoke::Runner;
use crate::journal::undo::{self, Undo, Undone};
use crate::journal::{ContainerLock, Entry, Journal, Lookup, Record};
use crate::resolve::{self, Purpose};
use crate::store::NetworkStore;

pub(super) fn del(req: &Request, services: &Services) -> Result<(), Error> {
    let ifname = req.ifname()?.as_str();
    let journal = Journal::open(&req.conf.cni_dir)?;
    let lock = journal.lock(req.container_id(), req.lock_wait())?;
    let runner = Runner::new(&req.conf, &req.env.cni_path);
    let how = Undo {
        runner: &runner,
        netns: req.env.netns.as_deref(),
        policy: req.conf.del_policy,
    };
    match journal.read(&lock, ifname)? {
        // The journal is written before any delegate runs, so no entry means nothing of
        // ours is on the node: DEL without ADD, or a repeated DEL.
        Lookup::Missing => {
            // An ADD killed while writing its plan left only a temp file: no delegate ran.
            journal.sweep_temps(&lock, ifname);
            Ok(())
        }
        Lookup::Found(mut entry) => answer(undo::entry(&journal, &lock, &mut entry, &how)?),
        Lookup::Corrupt(reason) => {
            let salvaged = journal.salvage(&lock, ifname);
            let moved = journal.quarantine(&lock, ifname)?;
            if let Some(mut entry) = salvaged {
                // What the journal recorded is undone from the record itself; a failure
                // writes the salvaged entry back for the next DEL.
                tracing::warn!(%reason, quarantined = %moved.display(), attachments = entry.attachments.len(), "journal entry unreadable as a whole; DELing the attachments it still names");
                answer(undo::entry(&journal, &lock, &mut entry, &how)?)
            } else {
                tracing::warn!(%reason, quarantined = %moved.display(), "journal entry unreadable; re-resolving networks to DEL them");
                rebuild_and_undo(req, services, &journal, &lock, &how);
                Ok(())
            }
        }
    }
}

/// A DEL that keeps failing answers success once its entry is a tombstone: GC keeps
/// retrying it, and a pod with a broken delegate can still be deleted.
fn answer(undone: Undone) -> Result<(), Error> {
    match undone {
        Undone::All => Ok(()),
        Undone::Partly {
            error,
            tombstone: true,
        } => {
            tracing::error!(error = %error, "DEL keeps failing; answering success and leaving a tombstone for GC");
            Ok(())
        }
        Undone::Partly { error, .. } => Err(error.into()),
    }
}

/// Last resort for an entry with nothing readable left: plan the pod's networks again from
/// the conf and the store and DEL them all. Failures are logged, not returned: the entry is
/// quarantined, and a DEL that can never succeed would keep the pod from ever being deleted.
fn rebuild_and_undo(
    req: &Request,
    services: &Services,
    journal: &Journal,
    lock: &ContainerLock,
    how: &Undo,
) {
    let opened;
    let store: Option<&dyn NetworkStore> = match services.store {
        Some(s) => Some(s),
        None => {
            opened = crate::store::open(&req.conf).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "store unavailable for the re-resolve");
                None
            });
            opened.as_deref()
        }
    };
    let planned = resolve::resolve(&req.conf, store, &req.pod, Purpose::Lookup)
        .map_err(Error::from)
        .and_then(|resolved| super::plan(req, &resolved));
    let mut attachments = match planned {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-resolve networks; nothing more to DEL");
            return;
        }
    };
    let ifname = req
        .env
        .ifname
        .as_ref()
        .map(|i| i.as_str())
        .unwrap_or_default();
    // An interface another ADD of this container holds is that ADD's to remove.
    match journal.taken(lock, ifname) {
        Ok(taken) => attachments.retain(|a| !taken.contains_key(a.ifname.as_str())),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the container's other entries; nothing more to DEL");
            return;
        }
    }
    let mut entry = Entry::new(
        req.container_id(),
        ifname,
        req.env.netns.as_deref(),
        &req.conf.cni_version_str,
    );
    entry.attachments = attachments
        .iter()
        .map(|a| Record::planned(a, false))
        .collect();
    match undo::entry(journal, lock, &mut entry, how) {
        Ok(Undone::All) => {}
        Ok(Undone::Partly { error, .. }) => {
            tracing::warn!(error = %error, "DEL of re-resolved networks incomplete");
        }
        Err(e) => tracing::warn!(error = %e, "DEL of re-resolved networks incomplete"),
    }
}
