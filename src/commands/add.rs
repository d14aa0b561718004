//! ADD: resolve, plan, journal, invoke each attachment in order, roll back on any failure,
//! report.

use super::{AttachmentReport, Report, journal};
use crate::cache::{ContainerLock, Entry, Journal, Lookup, State};
use crate::conf::{PlexusConf, ResultMode};
use crate::env::Invocation;
use crate::invoke::{self, Target};
use crate::plan::Attachment;
use crate::status::{self, StatusInput};
use crate::store::{NetworkStore, PodEvent};
use cni::{CniResult, IfName, Version};
use std::time::Instant;

pub(super) fn add(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<Report, crate::Error> {
    let container_id = inv.container_id().to_string();
    let ifname = inv.ifname.clone().ok_or(crate::env::EnvError::Missing(
        "CNI_IFNAME",
        cni::Command::Add,
    ))?;
    // Before the journal dir or anything else is created: a node whose cluster network is
    // not up yet gets code 11 and no trace of the attempt.
    crate::autoconf::wait_for_conf(conf)?;
    let journal = journal(conf)?;
    let lock = journal.lock(&container_id, super::lock_wait(conf))?;
    let outcome = add_locked(inv, conf, store, &journal, &lock, &ifname);
    journal.release(lock);
    outcome
}

fn add_locked(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    journal: &Journal,
    lock: &ContainerLock,
    ifname: &IfName,
) -> Result<Report, crate::Error> {
    let container_id = inv.container_id();
    // Refused before anything else happens: rolling back a duplicate would DEL the live
    // attachment's delegates and free its IPs (host-local releases by container and ifname).
    if !matches!(journal.read(lock, ifname.as_str())?, Lookup::Missing) {
        return Err(crate::Error::Duplicate {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        });
    }

    let (resolved, attachments) = super::plan_attachments(inv, conf, store, ifname, true)?;
    // Another ADD for this container (another CNI_IFNAME) owns its interfaces and, in
    // host-local, the reservations keyed by (container, ifname): planning one of them again
    // would make this ADD's rollback or DEL remove them.
    let taken = super::sibling_ifnames(journal, lock, ifname.as_str())?;
    if let Some((name, other)) = attachments
        .iter()
        .find_map(|a| taken.get_key_value(a.ifname.as_str()))
    {
        return Err(crate::Error::IfnameTaken {
            container_id: container_id.to_string(),
            ifname: name.clone(),
            other: other.clone(),
        });
    }
    refuse_existing_interfaces(inv, conf, &attachments)?;
    let pod_ns = inv.pod.namespace.as_deref().unwrap_or("default");
    let pod_name = inv.pod.name.as_deref().unwrap_or_default();

    let mut entry = Entry::new(
        container_id,
        ifname.as_str(),
        inv.netns.as_deref(),
        &conf.cni_version_str,
    );
    entry.netns_id = inv
        .netns
        .as_deref()
        .and_then(|p| delegates::netns::NsId::of_path(p).ok());
    entry.pod = inv.pod.clone();
    entry.attachments = attachments.iter().map(super::journal_record).collect();
    let auxiliary = match attachments.first() {
        Some(cluster) => super::auxiliary_chain(conf, &cluster.conf)?.map(|list| (cluster, list)),
        None => None,
    };
    if let Some((cluster, list)) = &auxiliary {
        entry.attachments.push(crate::cache::JournaledAttachment {
            network: list.name.clone(),
            conf: list.to_value(),
            default_route: Vec::new(),
            device_id: None,
            auxiliary: true,
            ..super::journal_record(cluster)
        });
    }
    // The plan is on disk before the node is touched: a crash from here on is undone by DEL.
    journal.write(lock, &entry)?;
    tracing::debug!(attachments = attachments.len(), "plan journaled");

    let runner = super::runner(conf, inv);
    let mut results: Vec<CniResult> = Vec::with_capacity(attachments.len());
    let mut reports = Vec::with_capacity(attachments.len());
    let last = attachments.len().saturating_sub(1);
    for (i, att) in attachments.iter().enumerate() {
        let started = Instant::now();
        let t = Target {
            network: &att.network,
            container_id,
            netns: inv.netns.as_deref(),
            ifname: att.ifname.as_str(),
            cni_args: &att.cni_args,
            runner: &runner,
            owned: &[],
        };
        match invoke::add(&att.conf, &t) {
            Ok(added) => {
                let result = added.result;
                entry.attachments[i].state = State::Added;
                entry.attachments[i].links = added.links;
                entry.attachments[i].result = Some(result.to_value(Version::V1_1_0));
                // The last attachment's record goes out with the network-status below.
                if i < last
                    && let Err(e) = journal.write(lock, &entry)
                {
                    rollback(inv, conf, journal, lock, &mut entry, i + 1);
                    return Err(e.into());
                }
                tracing::debug!(network = %att.network, ifname = %att.ifname, micros = started.elapsed().as_micros() as u64, "attachment added");
                reports.push(report(att, &result, started));
                results.push(result);
            }
            Err(e) => {
                tracing::error!(network = %att.network, error = %e, "ADD failed, rolling back");
                if let (Some(store), Some(pod)) = (store, &resolved.pod) {
                    let event = PodEvent {
                        reason: "AttachFailed".into(),
                        message: format!("network {} on {}: {e}", att.network, att.ifname),
                        warning: true,
                    };
                    if let Err(err) = store.event(pod, &event) {
                        tracing::warn!(error = %err, "recording event failed");
                    }
                }
                entry.attachments[i].delegate_error = Some(e.to_string());
                // A chain that could not start left nothing; one that failed midway may have.
                let started = if e.nothing_ran() { i } else { i + 1 };
                rollback(inv, conf, journal, lock, &mut entry, started);
                return Err(e.into());
            }
        }
    }

    if let Err(e) = apply_default_routes(inv, conf, &attachments, &mut results) {
        // The auxiliary chain, if any, has not run yet.
        rollback(inv, conf, journal, lock, &mut entry, attachments.len());
        return Err(e);
    }
    for (record, result) in entry.attachments.iter_mut().zip(&results) {
        record.result = Some(result.to_value(Version::V1_1_0));
    }
    if let Some((cluster, list)) = &auxiliary {
        let i = entry.attachments.len() - 1;
        let t = Target {
            network: &list.name,
            container_id,
            netns: inv.netns.as_deref(),
            ifname: cluster.ifname.as_str(),
            cni_args: &cluster.cni_args,
            runner: &runner,
            owned: &[],
        };
        match invoke::add_after(list, &t, results.first()) {
            Ok(added) => {
                entry.attachments[i].state = State::Added;
                entry.attachments[i].links = added.links;
                entry.attachments[i].result = Some(added.result.to_value(Version::V1_1_0));
            }
            Err(e) => {
                tracing::error!(chain = %list.name, error = %e, "auxiliary chain failed, rolling back");
                entry.attachments[i].delegate_error = Some(e.to_string());
                let started = if e.nothing_ran() { i } else { i + 1 };
                rollback(inv, conf, journal, lock, &mut entry, started);
                return Err(e.into());
            }
        }
    }

    let device_infos: Vec<Option<serde_json::Value>> = attachments
        .iter()
        .map(|a| a.device_id.as_deref().and_then(status::pci_device_info))
        .collect();
    let inputs: Vec<StatusInput> = attachments
        .iter()
        .zip(&results)
        .zip(&device_infos)
        .map(|((a, r), info)| StatusInput {
            network: &a.network,
            is_default: a.is_default,
            result: r,
            default_route: &a.default_route,
            device_info: info.as_ref(),
        })
        .collect();
    let network_status = serde_json::to_value(status::network_status(&inputs)).ok();
    if let Some(ns) = &network_status {
        tracing::info!(pod = %format!("{pod_ns}/{pod_name}"), network_status = %ns, "attached");
    }
    entry.network_status = network_status.clone();
    if let Err(e) = journal.write(lock, &entry) {
        rollback(inv, conf, journal, lock, &mut entry, usize::MAX);
        return Err(e.into());
    }
    if let (Some(store), Some(pod), Some(ns)) = (store, &resolved.pod, &network_status) {
        // A pod whose status cannot be written would run with networks nobody can see:
        // all-or-nothing covers the status too (the store tolerates a pod that is gone).
        if let Err(e) = store.publish_status(&pod.namespace, &pod.name, &ns.to_string()) {
            tracing::error!(error = %e, "publishing network-status failed, rolling back");
            rollback(inv, conf, journal, lock, &mut entry, usize::MAX);
            return Err(e.into());
        }
        for r in &reports {
            let event = PodEvent {
                reason: "AddedInterface".into(),
                message: format!("Add {} [{}] from {}", r.ifname, r.ips.join(","), r.network),
                warning: false,
            };
            if let Err(e) = store.event(pod, &event) {
                tracing::warn!(error = %e, "recording event failed");
            }
        }
    }

    let result = match conf.result_mode {
        ResultMode::Cluster => results.first().cloned().unwrap_or_default(),
        ResultMode::Merged => status::merged_result(&results.iter().collect::<Vec<_>>()),
    };
    // 0.1.0/0.2.0 cannot carry a result without an address: refused, as libcni refuses it.
    let stdout = match result.try_to_value(conf.cni_version) {
        Ok(v) => v,
        Err(e) => {
            rollback(inv, conf, journal, lock, &mut entry, usize::MAX);
            return Err(crate::Error::Render(e));
        }
    };
    Ok(Report {
        stdout: Some(stdout),
        attachments: reports,
        network_status,
    })
}

/// SPEC.md ADD: an interface that already exists in the pod is an error, and it is the pod's
/// to keep. The built-ins find out themselves from the kernel's EEXIST; an exec'd plugin
/// might not fail cleanly, and the rollback DEL that follows would then remove the pod's
/// own interface by name. So before anything runs, the interfaces exec'd chains are to
/// create are looked up, all in one visit to the pod's netns (none when every chain starts
/// with a built-in).
fn refuse_existing_interfaces(
    inv: &Invocation,
    conf: &PlexusConf,
    attachments: &[Attachment],
) -> Result<(), crate::Error> {
    let exec_ifnames: Vec<&str> = attachments
        .iter()
        .filter(|a| {
            let first = a
                .conf
                .plugins
                .first()
                .and_then(|p| p.plugin_type().ok())
                .unwrap_or_default();
            !(conf.builtins.allows(first) && delegates::Kind::of(first).is_some())
        })
        .map(|a| a.ifname.as_str())
        .collect();
    let Some(netns) = inv.netns.as_deref() else {
        return Ok(());
    };
    if exec_ifnames.is_empty() {
        return Ok(());
    }
    let names = &exec_ifnames;
    let look = |e: delegates::DelegateError| crate::Error::PodNetns(Box::new(e));
    let found = delegates::netns::NetNs::open(netns)
        .map(|ns| ns.bounded(conf.timeout))
        .and_then(|ns| {
            ns.run(|h| async move {
                for name in names {
                    if delegates::link::by_name(&h, name).await?.is_some() {
                        return Ok(Some(name.to_string()));
                    }
                }
                Ok(None)
            })
        })
        .map_err(|e| look(e.into()))?
        .map_err(|e| {
            look(delegates::DelegateError::netlink(
                "look up the pod's interfaces",
                e,
            ))
        })?;
    match found {
        Some(ifname) => Err(crate::Error::InterfaceExists { ifname }),
        None => Ok(()),
    }
}

fn report(att: &Attachment, result: &CniResult, started: Instant) -> AttachmentReport {
    let sandbox = result
        .interfaces
        .iter()
        .position(|i| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()));
    AttachmentReport {
        network: att.network.clone(),
        ifname: att.ifname.to_string(),
        ips: result.ips.iter().map(|ip| ip.address.to_string()).collect(),
        mac: sandbox.and_then(|i| result.interfaces[i].mac.clone()),
        delegates: att
            .conf
            .plugins
            .iter()
            .map(|p| p.plugin_type().unwrap_or_default().to_string())
            .collect(),
        millis: started.elapsed().as_millis(),
    }
}

/// Undoes the first `started` journaled attachments (every one that was started, including
/// the one that failed: a chain may have done part of its work) the way DEL does, in reverse;
/// the rest never ran. The entry is removed only when every DEL succeeded; otherwise it
/// stays so the runtime's DEL retries what is left.
fn rollback(
    inv: &Invocation,
    conf: &PlexusConf,
    journal: &Journal,
    lock: &ContainerLock,
    entry: &mut Entry,
    started: usize,
) {
    for a in entry.attachments.iter_mut().skip(started) {
        a.state = State::Removed;
    }
    if let Err(e) = super::del::teardown(inv, conf, journal, lock, entry) {
        tracing::error!(error = %e, "rollback left attachments for the next DEL");
    }
}

/// The selections' `default-route`: the pod's default route for that family goes via the
/// given gateway on that attachment's interface, and every other attachment's result loses
/// its default route of that family, so results and the netns agree (Multus rewrites its
/// cache the same way).
fn apply_default_routes(
    inv: &Invocation,
    conf: &PlexusConf,
    attachments: &[Attachment],
    results: &mut [CniResult],
) -> Result<(), crate::Error> {
    let wanted: Vec<(usize, std::net::IpAddr)> = attachments
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.default_route.iter().map(move |gw| (i, *gw)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    if let Some(netns) = inv.netns.as_deref() {
        let routes: Vec<delegates::route::DefaultRoute> = wanted
            .iter()
            .map(|(i, gw)| delegates::route::DefaultRoute {
                gateway: *gw,
                ifname: attachments[*i].ifname.to_string(),
            })
            .collect();
        delegates::route::replace_default_routes(netns, &routes, conf.timeout)
            .map_err(|e| crate::Error::DefaultRoute(Box::new(e)))?;
    }
    for (i, gw) in &wanted {
        let v4 = gw.is_ipv4();
        for r in results.iter_mut() {
            r.routes
                .retain(|rt| !(rt.dst.prefix_len() == 0 && rt.dst.addr().is_ipv4() == v4));
        }
        let any: std::net::IpAddr = if v4 {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        if let (Some(r), Ok(dst)) = (results.get_mut(*i), ipnet::IpNet::new(any, 0)) {
            r.routes.push(cni::result::Route {
                dst,
                gw: Some(*gw),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            });
        }
    }
    Ok(())
}
