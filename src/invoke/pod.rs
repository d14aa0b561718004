//! Pod-wide kernel effects that no single delegate owns: looking for the interfaces exec'd
//! chains are about to create, moving the pod's default routes to the interface it chose,
//! and removing the pod's links together.

use super::NsId;
use super::{InvokeError, OwnedLink, Runner};
use crate::plan::Attachment;
use cni::CniResult;
use delegates::netns::NetNs;
use delegates::owned::{Expected, Side};
use delegates::{DelegateError, Kind};
use std::net::IpAddr;
use std::path::Path;

fn netns_error(e: DelegateError) -> InvokeError {
    InvokeError::PodNetns(Box::new(e))
}

/// The CNI spec: on ADD, an interface that already exists in the pod is an error, and it is the pod's
/// to keep. The built-ins find out themselves from the kernel's EEXIST; an exec'd plugin
/// might not fail cleanly, and the rollback DEL that follows would then remove the pod's
/// own interface by name. So before anything runs, the interfaces exec'd chains are to
/// create are looked up, all in one visit to the pod's netns (none when every chain starts
/// with a built-in).
pub fn refuse_existing_interfaces(
    runner: &Runner,
    netns: Option<&Path>,
    attachments: &[Attachment],
) -> Result<(), InvokeError> {
    let names: Vec<&str> = attachments
        .iter()
        .filter(|a| {
            let first = a.conf.plugins.first().and_then(|p| p.plugin_type().ok());
            runner.builtin(first.unwrap_or_default()).is_none()
        })
        .map(|a| a.ifname.as_str())
        .collect();
    let Some(netns) = netns else {
        return Ok(());
    };
    if names.is_empty() {
        return Ok(());
    }
    let names = &names;
    let found = NetNs::open(netns)
        .map(|ns| ns.bounded(runner.timeout))
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
        .map_err(|e| netns_error(e.into()))?
        .map_err(|e| netns_error(DelegateError::netlink("look up the pod's interfaces", e)))?;
    match found {
        Some(ifname) => Err(InvokeError::InterfaceExists { ifname }),
        None => Ok(()),
    }
}

/// The selections' `default-route`: the pod's default route for that family goes via the
/// given gateway on that attachment's interface, and every other attachment's result loses
/// its default route of that family, so results and the netns agree (Multus rewrites its
/// cache the same way).
pub fn apply_default_routes(
    runner: &Runner,
    netns: Option<&Path>,
    attachments: &[Attachment],
    results: &mut [CniResult],
) -> Result<(), InvokeError> {
    let wanted: Vec<(usize, IpAddr)> = attachments
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.default_route.iter().map(move |gw| (i, *gw)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    if let Some(netns) = netns {
        let routes: Vec<delegates::route::DefaultRoute> = wanted
            .iter()
            .map(|(i, gw)| delegates::route::DefaultRoute {
                gateway: *gw,
                ifname: attachments[*i].ifname.to_string(),
            })
            .collect();
        delegates::route::replace_default_routes(netns, &routes, runner.timeout)
            .map_err(|e| InvokeError::DefaultRoute(Box::new(e)))?;
    }
    for (i, gw) in &wanted {
        let v4 = gw.is_ipv4();
        for r in results.iter_mut() {
            r.routes
                .retain(|rt| !(rt.dst.prefix_len() == 0 && rt.dst.addr().is_ipv4() == v4));
        }
        let any: IpAddr = if v4 {
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

/// Plugin types whose pod interface is a virtual link the kernel can delete, and whose DEL
/// still does the rest of its work when that link is gone: each built-in kind says so of
/// itself (whether it runs in-process or as the reference binary of the same name), and the
/// reference `ptp` makes a veth pair. Their IPAM must not need the link either: host-local,
/// static and whereabouts release from their own stores, but dhcp's DEL sends a DHCPRELEASE
/// from the pod's interface (without it the server keeps the lease until it expires), and an
/// IPAM Plexus does not know may do the same.
pub fn removable_together(plugin_type: &str, ipam_type: Option<&str>) -> bool {
    let link = Kind::of(plugin_type).is_some_and(Kind::virtual_link) || plugin_type == "ptp";
    let ipam = matches!(
        ipam_type,
        None | Some("host-local" | "static" | "whereabouts")
    );
    link && ipam
}

/// One of the pod's interfaces as its journal recorded it.
pub struct PodLink<'a> {
    pub ifname: &'a str,
    /// The type of the chain's first plugin, which made the interface.
    pub plugin: &'a str,
    /// That plugin's IPAM type, if it has IPAM.
    pub ipam: Option<&'a str>,
    /// The links the attachment's built-ins created.
    pub links: &'a [OwnedLink],
    /// The MAC the attachment's cached result reports for the interface.
    pub mac: Option<String>,
}

/// Removing a link costs ~20–25 ms of kernel time (the unregister waits for RCU grace
/// periods), but a set of links removed in one request costs about the same as one. So the
/// pod's virtual links go first, together; each delegate's DEL then finds its link gone and
/// releases the rest. Best effort: on any failure the delegates remove their own links.
///
/// A link joins only when it is still the one its ADD made: the journaled link of a
/// built-in (index, name, MAC, tag), or, for an exec'd plugin, the interface of that name
/// with the MAC its cached result reports. One that cannot be recognised is left to its
/// delegate's DEL.
pub fn remove_links_together(
    runner: &Runner,
    netns: &Path,
    netns_id: Option<NsId>,
    container_id: &str,
    links: &[PodLink],
) {
    struct Known<'a> {
        name: &'a str,
        tag: Option<String>,
        journaled: Option<&'a OwnedLink>,
        mac: Option<&'a str>,
    }
    let known: Vec<Known> = links
        .iter()
        .filter(|l| removable_together(l.plugin, l.ipam))
        .filter_map(|l| {
            let journaled = l
                .links
                .iter()
                .find(|o| o.side == Side::Pod && o.name == l.ifname);
            (journaled.is_some() || l.mac.is_some()).then(|| Known {
                name: l.ifname,
                tag: runner
                    .builtin(l.plugin)
                    .map(|_| delegates::owned::tag(container_id, l.ifname)),
                journaled,
                mac: l.mac.as_deref(),
            })
        })
        .collect();
    if known.len() < 2 {
        return;
    }
    let expected: Vec<Expected> = known
        .iter()
        .map(|k| Expected {
            name: k.name,
            tag: k.tag.as_deref(),
            journaled: k.journaled,
            mac: k.mac,
        })
        .collect();
    let started = std::time::Instant::now();
    match delegates::remove_links_batched(netns, netns_id, &expected, runner.timeout) {
        Ok(()) => tracing::debug!(
            micros = started.elapsed().as_micros() as u64,
            "pod links removed together"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "batched link removal failed; delegates remove their own links")
        }
    }
}

/// The links a built-in DEL could not reach through its conf (an unreadable journaled conf):
/// removed by their journaled identity and tag alone.
pub fn remove_recorded(
    netns: Option<&Path>,
    container_id: &str,
    ifname: &str,
    links: &[OwnedLink],
    timeout: std::time::Duration,
) -> Result<(), DelegateError> {
    let tag = delegates::owned::tag(container_id, ifname);
    delegates::owned::remove_recorded(netns, links, &tag, timeout)
}

#[cfg(test)]
mod tests {
    use super::removable_together;

    #[test]
    fn a_link_whose_ipam_needs_it_at_del_is_not_removed_with_the_others() {
        for ipam in [
            None,
            Some("host-local"),
            Some("static"),
            Some("whereabouts"),
        ] {
            assert!(removable_together("macvlan", ipam), "{ipam:?}");
            assert!(removable_together("ptp", ipam), "{ipam:?}");
        }
        for ipam in [Some("dhcp"), Some("someone-elses-ipam")] {
            assert!(!removable_together("bridge", ipam), "{ipam:?}");
        }
        assert!(!removable_together("tuning", None), "not a link maker");
    }
}
