//! Hot-plug: a running pod's networks annotation changed, so the attachments of its journal
//! entry are brought in line with it. The pod's secondary networks are resolved and planned
//! by the same code as an ADD and compared with what the entry holds, by network and
//! interface; the cluster network and `defaultNetworks` are never touched.
//!
//! Everything that can be checked is checked before the node is touched (resolve, plan,
//! every new chain's `prepare`, interfaces already in the netns): an annotation that fails
//! any of them changes nothing. Removed networks are DELed from their journaled records, as
//! DEL does (ownership checks apply), and leave the entry only once their DEL succeeded.
//! Added networks are journaled as planned before they run, in the same entry, so a crash
//! is undone by the runtime's DEL of the pod, and an attachment that fails is DELed again
//! at once. The entry stays one (container, `CNI_IFNAME`) entry: the runtime's DEL and GC
//! see hot-plugged attachments as any others.

use super::Error;
use crate::conf::PlexusConf;
use crate::invoke::{self, Chain, Container, Runner, Target, pod};
use crate::journal::{Entry, Journal, Lookup, Record, State, undo};
use crate::plan::{Attachment, PlanError, PlanRequest, PodIdentity, ResolvedNetwork};
use crate::report::{self, StatusInput};
use crate::resolve::{self, Purpose, ResolveError};
use crate::store::{NetworkStore, Pod, PodEvent};
use cni::IfName;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one hot-plug came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hotplugged {
    /// `network on ifname` of each attachment added.
    pub added: Vec<String>,
    /// `network on ifname` of each attachment removed.
    pub removed: Vec<String>,
    /// Attachments that failed (added or removed); each also got a Warning event.
    pub failed: Vec<String>,
}

/// Why an entry was left alone without anything being wrong with the annotation.
#[derive(Debug, PartialEq, Eq)]
pub enum Skipped {
    /// No entry (yet, or any more), or one of no Kubernetes pod.
    NoEntry,
    /// An ADD or DEL of the container did not finish: the runtime's DEL owns the entry.
    Unfinished,
    /// The pod is gone from the API or is another pod (UID) now.
    PodGone,
    /// The netns the entry names is gone or is another namespace now.
    NetnsGone,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Changed(Hotplugged),
    Skipped(Skipped),
}

/// Brings the attachments of the entry (container, `ifname`) in line with its pod's networks
/// annotation as `store` has it. `Err`: the annotation (or what it names) cannot be
/// attached, and nothing was changed; the caller tells the pod.
pub fn hotplug(
    conf: &PlexusConf,
    cni_path: &str,
    store: &dyn NetworkStore,
    container_id: &str,
    ifname: &str,
) -> Result<Outcome, Error> {
    let journal = Journal::open(&conf.cni_dir)?;
    let lock = journal.lock(container_id, Duration::from_secs(30).min(conf.timeout))?;
    let Lookup::Found(mut entry) = journal.read(&lock, ifname)? else {
        return Ok(Outcome::Skipped(Skipped::NoEntry));
    };
    if entry.pod.name.is_none() {
        return Ok(Outcome::Skipped(Skipped::NoEntry));
    }
    if entry.tombstone || entry.attachments.iter().any(|a| a.state == State::Planned) {
        return Ok(Outcome::Skipped(Skipped::Unfinished));
    }
    let resolved = match resolve::resolve(conf, Some(store), &entry.pod, Purpose::Attach) {
        Err(ResolveError::PodNotFound(_) | ResolveError::UidMismatch { .. }) => {
            return Ok(Outcome::Skipped(Skipped::PodGone));
        }
        r => r?,
    };
    let Some(pod) = resolved.pod.clone() else {
        return Ok(Outcome::Skipped(Skipped::PodGone));
    };
    let Some(netns) = undo::pod_netns(None, &entry) else {
        return Ok(Outcome::Skipped(Skipped::NetnsGone));
    };

    let (to_remove, to_add) = diff(&entry, &resolved);
    if to_add.is_empty() && to_remove.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let taken = journal.taken(&lock, ifname)?.into_keys();
    let networks = name_new(&entry, taken, &resolved.secondaries, &to_add, &to_remove)?;
    let added = plan(&entry, &resolved.cluster, &networks)?;

    let runner = Runner::new(conf, cni_path);
    let mut chains = Vec::with_capacity(added.len());
    for a in &added {
        let t = Target::new(&runner, &a.network, new_container(container_id, &netns, a));
        chains.push(Chain::prepare(&a.conf, &t)?);
    }
    pod::refuse_existing_interfaces(&runner, Some(&netns), &added)?;

    let ctx = Hotplug {
        journal: &journal,
        lock: &lock,
        runner: &runner,
        netns: &netns,
        store,
        pod: &pod,
    };
    // From here on the node may change: what fails is reported in the outcome, never as a
    // refusal of the annotation.
    let mut done = Hotplugged::default();
    let applied = ctx
        .remove(&mut entry, &to_remove, &mut done)
        .and_then(|()| ctx.add(&mut entry, &added, &chains, &mut done))
        .and_then(|()| ctx.publish(&mut entry, &done));
    if let Err(e) = applied {
        tracing::error!(error = %e, "hot-plug incomplete; the journal keeps what the pod's DEL must undo");
        ctx.event("HotplugFailed", format!("hot-plug incomplete: {e}"), true);
        done.failed.push(e.to_string());
    }
    Ok(Outcome::Changed(done))
}

/// The entry's records the annotation no longer asks for, and the annotation's secondaries
/// (indices into `resolved.secondaries`) the entry does not hold yet. Only attachments that
/// hot-plug manages take part: not the cluster network, `defaultNetworks` or the auxiliary
/// chain, and only attachments that were added.
fn diff(entry: &Entry, resolved: &resolve::Resolved) -> (Vec<usize>, Vec<usize>) {
    let defaults: BTreeSet<&str> = resolved.defaults.iter().map(|d| d.key.as_str()).collect();
    let managed: Vec<usize> = (0..entry.attachments.len())
        .filter(|&i| {
            let r = &entry.attachments[i];
            !r.is_default
                && !r.auxiliary
                && r.state == State::Added
                && !defaults.contains(r.network.as_str())
        })
        .collect();
    let (keep, to_add) = compare(
        entry,
        &managed,
        &resolved.secondaries,
        resolved.defaults.len(),
    );
    let to_remove = managed
        .iter()
        .copied()
        .filter(|i| !keep.contains(i))
        .collect();
    (to_remove, to_add)
}

/// The networks to add, each with the interface it will get: the one its selection names,
/// unless that is in use, or the first free `net<N>`. In use, once the removals are done:
/// this entry's names, the container's other entries' (`taken`), and every name the
/// annotation asks for explicitly. A new network may not move the pod's default route.
fn name_new(
    entry: &Entry,
    taken: impl Iterator<Item = String>,
    secondaries: &[ResolvedNetwork],
    to_add: &[usize],
    to_remove: &[usize],
) -> Result<Vec<ResolvedNetwork>, Error> {
    let mut used: BTreeSet<String> = taken.collect();
    used.insert(entry.ifname.clone());
    for (i, r) in entry.attachments.iter().enumerate() {
        if r.state != State::Removed && !to_remove.contains(&i) {
            used.insert(r.ifname.clone());
        }
    }
    let mut networks = Vec::with_capacity(to_add.len());
    for &n in to_add {
        let mut net = secondaries[n].clone();
        let key = net.key.clone();
        let Some(sel) = net.selection.as_mut() else {
            continue;
        };
        if !sel.default_route.is_empty() {
            return Err(invalid(
                &key,
                "default-route",
                "cannot be added to a running pod",
            ));
        }
        let name = match &sel.interface {
            Some(asked) if used.contains(asked.as_str()) => {
                return Err(invalid(
                    &key,
                    "interface",
                    &format!("{asked} is in use in the running pod"),
                ));
            }
            Some(asked) => asked.clone(),
            None => fresh(&used, secondaries).ok_or_else(|| {
                invalid(&key, "interface", "no free net<N> name left for the pod")
            })?,
        };
        used.insert(name.to_string());
        sel.interface = Some(name);
        networks.push(net);
    }
    Ok(networks)
}

/// Which managed records the desired secondaries keep (indices into the entry), and which
/// desired secondaries are new (indices into `desired`). A selection that names its
/// interface keeps only the record of its network on that interface; one that does not
/// keeps any record of its network, the one on the name a fresh ADD would give first.
fn compare(
    entry: &Entry,
    managed: &[usize],
    desired: &[ResolvedNetwork],
    defaults: usize,
) -> (Vec<usize>, Vec<usize>) {
    let mut keep = Vec::new();
    let mut to_add = Vec::new();
    let free = |i: &usize, keep: &Vec<usize>| !keep.contains(i);
    // Explicit interfaces first, so an implicit selection of the same network cannot take
    // the record an explicit one names.
    let mut pending = Vec::new();
    for (n, net) in desired.iter().enumerate() {
        let asked = net.selection.as_ref().and_then(|s| s.interface.as_ref());
        match asked {
            Some(asked) => {
                let found = managed.iter().copied().find(|i| {
                    let r = &entry.attachments[*i];
                    free(i, &keep) && r.network == net.key && r.ifname == asked.as_str()
                });
                match found {
                    Some(i) => keep.push(i),
                    None => to_add.push(n),
                }
            }
            None => pending.push(n),
        }
    }
    for n in pending {
        let net = &desired[n];
        let by_name = format!("net{}", defaults + n + 1);
        let mut candidates = managed
            .iter()
            .copied()
            .filter(|i| free(i, &keep) && entry.attachments[*i].network == net.key);
        let first = candidates.next();
        let named = managed.iter().copied().find(|i| {
            free(i, &keep)
                && entry.attachments[*i].network == net.key
                && entry.attachments[*i].ifname == by_name
        });
        match named.or(first) {
            Some(i) => keep.push(i),
            None => to_add.push(n),
        }
    }
    to_add.sort_unstable();
    (keep, to_add)
}

/// The first `net<N>` not in use and not one a selection of the pod asks for by name.
fn fresh(used: &BTreeSet<String>, desired: &[ResolvedNetwork]) -> Option<IfName> {
    (1..=crate::plan::MAX_ATTACHMENTS * 2)
        .map(|k| format!("net{k}"))
        .find(|name| {
            !used.contains(name)
                && !desired.iter().any(|d| {
                    d.selection
                        .as_ref()
                        .and_then(|s| s.interface.as_ref())
                        .is_some_and(|i| i.as_str() == name)
                })
        })
        .and_then(|name| IfName::parse(&name).ok())
}

fn invalid(network: &str, field: &str, reason: &str) -> Error {
    Error::Plan(PlanError::Invalid {
        network: network.to_string(),
        field: field.into(),
        reason: reason.into(),
    })
}

/// The new attachments, planned as an ADD plans them for this pod (its `CNI_ARGS` name the
/// pod and the infra container the entry recorded), each on the interface chosen for it.
fn plan(
    entry: &Entry,
    cluster: &ResolvedNetwork,
    networks: &[ResolvedNetwork],
) -> Result<Vec<Attachment>, Error> {
    let runtime_ifname = IfName::parse(&entry.ifname).map_err(|e| {
        Error::Plan(PlanError::Invalid {
            network: cluster.key.clone(),
            field: "interface".into(),
            reason: e.to_string(),
        })
    })?;
    let pod = entry.pod.name.as_deref().map(|name| PodIdentity {
        namespace: entry.pod.namespace(),
        name,
        uid: entry.pod.uid.as_deref(),
        infra_container_id: entry
            .pod
            .infra_container_id
            .as_deref()
            .unwrap_or(&entry.container_id),
    });
    let mut planned = crate::plan::plan(&PlanRequest {
        cluster,
        defaults: &[],
        secondaries: networks,
        runtime_ifname: &runtime_ifname,
        runtime_config: &Map::new(),
        pod,
    })?;
    // The cluster network comes first in every plan; it is not touched.
    planned.remove(0);
    Ok(planned)
}

fn new_container<'a>(id: &'a str, netns: &'a Path, a: &'a Attachment) -> Container<'a> {
    Container {
        id,
        netns: Some(netns),
        ifname: a.ifname.as_str(),
        cni_args: &a.cni_args,
        owned: &[],
    }
}

/// What one hot-plug works with.
struct Hotplug<'a> {
    journal: &'a Journal,
    lock: &'a crate::journal::ContainerLock,
    runner: &'a Runner<'a>,
    netns: &'a PathBuf,
    store: &'a dyn NetworkStore,
    pod: &'a Pod,
}

impl Hotplug<'_> {
    /// DELs the removed attachments, last first; each leaves the entry once its DEL
    /// succeeded, and one that fails stays for the runtime's DEL.
    fn remove(
        &self,
        entry: &mut Entry,
        to_remove: &[usize],
        done: &mut Hotplugged,
    ) -> Result<(), Error> {
        if to_remove.is_empty() {
            return Ok(());
        }
        let mut gone = Vec::new();
        for &i in to_remove.iter().rev() {
            let r = &entry.attachments[i];
            let what = format!("{} on {}", r.network, r.ifname);
            match self.del(entry, r) {
                Ok(()) => {
                    gone.push(i);
                    done.removed.push(what);
                }
                Err(e) => {
                    tracing::error!(network = %r.network, error = %e, "hot-unplug failed; the attachment stays for the pod's DEL");
                    self.event("DetachFailed", format!("network {what}: {e}"), true);
                    done.failed.push(what);
                }
            }
        }
        let mut i = 0;
        entry.attachments.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
        self.journal.update(self.lock, entry)?;
        Ok(())
    }

    /// DEL of one journaled attachment, from its record.
    fn del(&self, entry: &Entry, r: &Record) -> Result<(), String> {
        let (Some(list), prev) = r.parts() else {
            // Without its conf no delegate can run; the runtime's DEL removes its links.
            return Err("journaled conf unreadable".into());
        };
        let t = Target::new(
            self.runner,
            &r.network,
            r.container(&entry.container_id, Some(self.netns)),
        );
        invoke::del(&list, &t, prev.as_ref()).map_err(|e| e.to_string())
    }

    /// Journals the new attachments as planned, then runs each; one that fails is DELed at
    /// once and leaves the entry when that DEL succeeded.
    fn add(
        &self,
        entry: &mut Entry,
        added: &[Attachment],
        chains: &[Chain],
        done: &mut Hotplugged,
    ) -> Result<(), Error> {
        if added.is_empty() {
            return Ok(());
        }
        let first = entry.attachments.len();
        entry
            .attachments
            .extend(added.iter().map(|a| Record::planned(a, false)));
        self.journal.write(self.lock, entry)?;
        let mut failed = Vec::new();
        for (k, (a, chain)) in added.iter().zip(chains).enumerate() {
            let i = first + k;
            let what = format!("{} on {}", a.network, a.ifname);
            let t = Target::new(
                self.runner,
                &a.network,
                new_container(&entry.container_id, self.netns, a),
            );
            match chain.add(&t, None) {
                Ok(result) => {
                    let record = &mut entry.attachments[i];
                    record.state = State::Added;
                    record.links = result.links;
                    record.result = Some(result.result.to_value(cni::Version::V1_1_0));
                    done.added.push(what);
                }
                Err(e) => {
                    tracing::error!(network = %a.network, error = %e, "hot-plug failed; undoing the attachment");
                    self.event("AttachFailed", format!("network {what}: {e}"), true);
                    done.failed.push(what);
                    entry.attachments[i].delegate_error = Some(e.to_string());
                    let undone = e.nothing_ran()
                        || {
                            let r = entry.attachments[i].clone();
                            self.del(entry, &r)
                            .inspect_err(|e| tracing::error!(network = %a.network, error = %e, "undoing the failed hot-plug failed; left for the pod's DEL"))
                            .is_ok()
                        };
                    if undone {
                        failed.push(i);
                    }
                }
            }
        }
        let mut i = 0;
        entry.attachments.retain(|_| {
            i += 1;
            !failed.contains(&(i - 1))
        });
        Ok(())
    }

    /// The network-status of every attachment the entry now holds, journaled and onto the
    /// pod, and an event per change.
    fn publish(&self, entry: &mut Entry, done: &Hotplugged) -> Result<(), Error> {
        entry.network_status = status(entry);
        self.journal.update(self.lock, entry)?;
        if let Some(ns) = &entry.network_status
            && let Err(e) =
                self.store
                    .publish_status(&self.pod.namespace, &self.pod.name, &ns.to_string())
        {
            // The attachments are in place and journaled; the next change publishes again.
            tracing::error!(error = %e, "publishing the hot-plugged network-status failed");
            self.event(
                "HotplugFailed",
                format!("network-status not updated: {e}"),
                true,
            );
        }
        for what in &done.added {
            self.event("AddedInterface", format!("Add {what} (hot-plug)"), false);
        }
        for what in &done.removed {
            self.event(
                "RemovedInterface",
                format!("Remove {what} (hot-plug)"),
                false,
            );
        }
        Ok(())
    }

    fn event(&self, reason: &str, message: String, warning: bool) {
        let event = PodEvent {
            reason: reason.into(),
            message,
            warning,
        };
        if let Err(e) = self.store.event(self.pod, &event) {
            tracing::warn!(error = %e, "recording event failed");
        }
    }
}

/// The network-status of the entry's attachments, as ADD writes it.
fn status(entry: &Entry) -> Option<Value> {
    let parts: Vec<(&Record, cni::CniResult, Option<Value>)> = entry
        .attachments
        .iter()
        .filter(|r| r.state == State::Added && !r.auxiliary)
        .filter_map(|r| {
            let result = r.parts().1?;
            let info = r.device_id.as_deref().and_then(report::pci_device_info);
            Some((r, result, info))
        })
        .collect();
    let inputs: Vec<StatusInput> = parts
        .iter()
        .map(|(r, result, info)| StatusInput {
            network: &r.network,
            is_default: r.is_default,
            result,
            default_route: &r.default_route,
            device_info: info.as_ref(),
        })
        .collect();
    serde_json::to_value(report::network_status(&inputs)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn desired(annotation: &str) -> Vec<ResolvedNetwork> {
        crate::selection::parse_networks(annotation, "default")
            .unwrap()
            .into_iter()
            .map(|s| ResolvedNetwork {
                key: format!("{}/{}", s.namespace, s.name),
                config: Map::new(),
                selection: Some(s),
                device_id: None,
            })
            .collect()
    }

    /// An entry whose attachments are (network, ifname), the cluster network first.
    fn entry(attachments: &[(&str, &str)]) -> (Entry, Vec<usize>) {
        let mut e = Entry::new("c", "eth0", None, "1.1.0");
        for (i, (network, ifname)) in attachments.iter().enumerate() {
            e.attachments.push(Record {
                network: network.to_string(),
                ifname: ifname.to_string(),
                is_default: i == 0,
                conf: Value::Null,
                cni_args: String::new(),
                state: State::Added,
                result: None,
                default_route: Vec::new(),
                device_id: None,
                delegate_error: None,
                auxiliary: false,
                links: Vec::new(),
            });
        }
        (e, (1..attachments.len()).collect())
    }

    #[test]
    fn added_and_removed_networks_are_told_apart_by_network_and_interface() {
        let (e, managed) = entry(&[
            ("cluster", "eth0"),
            ("default/a", "net1"),
            ("default/b", "net2"),
        ]);
        // b stays (on net2 though a fresh ADD would name it net1), a goes, c is new.
        assert_eq!(
            compare(&e, &managed, &desired("b,c"), 0),
            (vec![2], vec![1])
        );
        // Unchanged.
        assert_eq!(
            compare(&e, &managed, &desired("a,b"), 0),
            (vec![1, 2], vec![])
        );
        // The same network twice keeps both of its attachments, once more adds one.
        let (e2, m2) = entry(&[
            ("cluster", "eth0"),
            ("default/a", "net1"),
            ("default/a", "net2"),
        ]);
        assert_eq!(
            compare(&e2, &m2, &desired("a,a,a"), 0),
            (vec![1, 2], vec![2])
        );
        // A named interface matches only an attachment on it.
        assert_eq!(
            compare(&e, &managed, &desired("a@x,b@net2"), 0),
            (vec![2], vec![0])
        );
    }

    #[test]
    fn a_fresh_name_is_free_in_the_container_and_not_asked_for_by_name() {
        let used: BTreeSet<String> = ["eth0", "net1", "net3"].map(String::from).into();
        assert_eq!(fresh(&used, &desired("a")).unwrap().as_str(), "net2");
        assert_eq!(fresh(&used, &desired("a@net2,b")).unwrap().as_str(), "net4");
    }
}
