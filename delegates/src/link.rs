//! Link, address and route operations shared by the delegates, on an rtnetlink handle.
//!
//! Links are looked up by name or index, never by dumping: a dump can be interrupted
//! (`NLM_F_DUMP_INTR`) while other pods' links come and go.

use crate::error::{DelegateError, errno};
use crate::netns::{NetNs, NsId};
use crate::owned::{self, Expected, Found};
use cni::CniResult;
use futures::TryStreamExt;
use ipnet::IpNet;
use nix::libc::{EEXIST, ENODEV, ENOENT, ESRCH};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteMetric, RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(ENODEV | ENOENT | ESRCH))
}

/// A link query without the link's counters, which nothing here reads: they are a fifth of
/// the answer (1.5 KiB → 1.2 KiB for a macvlan), and every attachment makes a lookup.
fn get(h: &Handle) -> rtnetlink::LinkGetRequest {
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::link::LinkExtentMask;
    h.link()
        .get()
        .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
}

pub async fn by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match get(h).match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn by_index(h: &Handle, index: u32) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match get(h).match_index(index).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks a link up by name and fails naming the step when it is missing.
pub async fn require(h: &Handle, name: &str, step: &str) -> Result<LinkMessage, DelegateError> {
    by_name(h, name)
        .await
        .map_err(|e| DelegateError::netlink(format!("{step}: look up {name}"), e))?
        .ok_or_else(|| DelegateError::Failed {
            step: step.to_string(),
            reason: format!("link {name} not found"),
        })
}

pub fn mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => Some(
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    })
}

pub fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(c) => Some(*c),
        _ => None,
    })
}

pub fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

pub fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2))
        .collect::<Option<_>>()?;
    (bytes.len() == 6).then_some(bytes)
}

/// Deletes a link; a link already gone is success (DEL is idempotent).
pub async fn delete(h: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    match h.link().del(index).execute().await {
        Err(e) if !is_gone(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Sets a link up and, in the same request, tags it as this attachment's (`IFLA_IFALIAS`).
pub async fn set_up(h: &Handle, index: u32, name: &str, tag: &str) -> Result<(), DelegateError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().alias(tag).build())
        .execute()
        .await
        .map_err(|e| DelegateError::netlink(format!("set link {name} up"), e))
}

/// Tags a link this attachment just created, so DEL can tell it from a namesake.
pub async fn set_tag(h: &Handle, index: u32, name: &str, tag: &str) -> Result<(), DelegateError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).alias(tag).build())
        .execute()
        .await
        .map_err(|e| DelegateError::netlink(format!("tag link {name}"), e))
}

/// Adds an address. IPv6 addresses skip duplicate address detection: the address came from
/// IPAM, and a tentative address would make the pod's first packets fail.
pub async fn add_address(h: &Handle, index: u32, addr: IpNet) -> Result<(), rtnetlink::Error> {
    let mut req = h.address().add(index, addr.addr(), addr.prefix_len());
    if addr.addr().is_ipv6() {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Err(e) if errno(&e) != Some(EEXIST) => Err(e),
        _ => Ok(()),
    }
}

/// The addresses (with prefix) on a link.
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<IpNet>, rtnetlink::Error> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => IpNet::new(*ip, m.header.prefix_len).ok(),
                _ => None,
            })
        })
        .collect())
}

pub fn route_message(
    index: u32,
    dst: IpNet,
    gw: Option<IpAddr>,
    mtu: Option<u32>,
    priority: Option<u32>,
) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .map_err(|e| e.to_string())?
        .output_interface(index)
        // RTPROT_BOOT, as netlink's default and the reference plugins' routes: rtnetlink's
        // builder would mark them `proto static`, which route-watching daemons treat as
        // admin-configured.
        .protocol(RouteProtocol::Boot);
    if let Some(gw) = gw {
        b = b.gateway(gw).map_err(|e| e.to_string())?;
    } else {
        b = b.scope(RouteScope::Link);
    }
    if let Some(p) = priority {
        b = b.priority(p);
    }
    let mut msg = b.build();
    if let Some(m) = mtu {
        msg.attributes
            .push(rtnetlink::packet_route::route::RouteAttribute::Metrics(
                vec![RouteMetric::Mtu(m)],
            ));
    }
    Ok(msg)
}

/// Puts the IPAM result on a pod interface that is up, the way the reference plugins'
/// `ConfigureIface` does: addresses, then routes (a route's gateway defaults to the gateway of
/// an address of the same family).
pub async fn configure_addresses(
    h: &Handle,
    index: u32,
    ifname: &str,
    result: &CniResult,
) -> Result<(), DelegateError> {
    for ip in &result.ips {
        add_address(h, index, ip.address).await.map_err(|e| {
            DelegateError::netlink(format!("add address {} to {ifname}", ip.address), e)
        })?;
    }
    for r in &result.routes {
        let gw = r.gw.or_else(|| {
            result
                .ips
                .iter()
                .find(|ip| ip.address.addr().is_ipv4() == r.dst.addr().is_ipv4())
                .and_then(|ip| ip.gateway)
        });
        let msg = route_message(index, r.dst, gw, r.mtu, r.priority)
            .map_err(|reason| DelegateError::config("routes", reason))?;
        match h.route().add(msg).execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => {
                return Err(DelegateError::netlink(
                    format!("add route {} on {ifname}", r.dst),
                    e,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes links of one pod netns in a single kernel request: each joins one interface
/// group, then the group is deleted. Unregistering links waits for RCU grace periods, so one
/// batched unregister costs about as much as a single link: the wait, not the link count,
/// dominates.
///
/// Only links that are still the ones expected join (see [`owned::find`]: tag, journaled
/// index, MAC; never the name alone), and only when the namespace is `expected_ns`, the one
/// the ADD used; anything else is left to the delegates' own DEL. The group number is
/// fresh for each call, so a link the pod put in some group itself is not swept along.
/// Links already gone, or a netns already gone, are success.
pub fn remove_links_batched(
    netns: &Path,
    expected_ns: Option<NsId>,
    links: &[Expected<'_>],
    timeout: Duration,
) -> Result<(), DelegateError> {
    let ns = match NetNs::open(netns) {
        Ok(ns) => ns.bounded(timeout),
        Err(e) if e.is_gone() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if expected_ns.is_some_and(|want| ns.id().is_ok_and(|id| id != want)) {
        tracing::warn!(netns = %netns.display(), "not the namespace ADD used; no link removed in it");
        return Ok(());
    }
    let group = removal_group();
    ns.run(|h| async move {
        let mut grouped = 0;
        for e in links {
            let name = e.name;
            let link = match owned::find(&h, e)
                .await
                .map_err(|err| DelegateError::netlink(format!("look up {name} for removal"), err))?
            {
                Found::Ours(l) => l,
                Found::Gone => continue,
                Found::Foreign(why) => {
                    tracing::warn!(link = name, reason = %why, "not removing a link this attachment did not create");
                    continue;
                }
            };
            let msg = LinkUnspec::new_with_index(link.header.index)
                .link_group(group)
                .build();
            match h.link().set(msg).execute().await {
                Ok(()) => grouped += 1,
                Err(e) if is_gone(&e) => {}
                Err(e) => {
                    return Err(DelegateError::netlink(
                        format!("put {name} in the removal group"),
                        e,
                    ));
                }
            }
        }
        if grouped == 0 {
            return Ok(());
        }
        // RTM_DELLINK with ifindex 0 and IFLA_GROUP removes every link of the group at once.
        let msg = LinkMessageBuilder::<LinkUnspec>::default()
            .link_group(group)
            .build();
        match h.link().del_with_message(msg).execute().await {
            Err(e) if !is_gone(&e) => Err(DelegateError::netlink("delete the pod's link group", e)),
            _ => Ok(()),
        }
    })?
}

/// A non-zero interface group that changes with every call.
fn removal_group() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default();
    let group = fnv1a(&[&nanos, &std::process::id().to_string()]) as u32;
    group.max(1)
}

/// Opens (creating it and its folder) and locks a node-wide lock file, waiting at most
/// `timeout` for whoever holds it: then code 11, as for a delegate that does not answer.
pub(crate) fn lock_file(path: &str, timeout: Duration) -> Result<std::fs::File, DelegateError> {
    let io = |step: String| move |source| DelegateError::Io { step, source };
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    }
    let f = std::fs::File::create(path).map_err(io(format!("open lock {path}")))?;
    if !cni::file::lock_within(&f, timeout).map_err(io(format!("lock {path}")))? {
        return Err(DelegateError::Busy {
            what: path.to_string(),
            waited: timeout,
        });
    }
    Ok(f)
}

/// FNV-1a over the parts with a separator byte, for short stable names.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
