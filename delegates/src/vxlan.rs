//! The vxlan delegate: an L2 overlay across nodes. Per network and node there is one vxlan
//! device (`vxlan<vni>`) enslaved to one bridge (`vxbr<vni>` unless `bridge` is set); each pod
//! gets a veth whose host end joins that bridge. The device and bridge appear with the first
//! pod on the node and go with the last one.
//!
//! Conf keys: `vni` (required), `port` (4789), `group` (multicast) or `remotes` (head-end
//! replication: an all-zero FDB entry per remote, the node's own addresses skipped so one conf
//! serves every node), `underlayInterface`, `localIP`, `mtu` (default: underlay MTU minus the
//! encapsulation), `bridge`, `learning` (true).
//!
//! "Last pod" is decided by counting the bridge's ports other than the vxlan device, under a
//! lock file per VNI, so a DEL never removes the device under a concurrent ADD.

use crate::error::{DelegateError, errno};
use crate::kind::Delegate;
use crate::link;
use crate::netns::{NetNs, NsId};
use crate::owned::{self, Added, OwnedLink, Side};
use crate::request::Request;
use crate::veth::{BridgedPort, PodVeth, configure_bridged, create_pod_veth, ready_pod_end};
use cni::CniResult;
use cni::result::Interface;
use futures::{StreamExt, TryStreamExt};
use nix::libc::EEXIST;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkVxlan};
use std::fs::File;
use std::net::IpAddr;
use std::time::Duration;

const LOCK_DIR: &str = "/run/plexus";
const MAX_VNI: u32 = (1 << 24) - 1;

pub const DELEGATE: Delegate = Delegate {
    types: &["vxlan", "plexus-vxlan"],
    virtual_link: true,
    validate,
    add,
    del,
    check,
};

fn validate(req: &Request) -> Result<(), DelegateError> {
    parse(req).map(drop)
}

#[derive(Debug, Clone)]
pub struct Conf {
    pub vni: u32,
    pub port: u16,
    pub group: Option<IpAddr>,
    pub remotes: Vec<IpAddr>,
    pub underlay: Option<String>,
    pub local: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub bridge: String,
    pub learning: bool,
}

impl Conf {
    pub fn device(&self) -> String {
        format!("vxlan{}", self.vni)
    }

    /// The alias of the vxlan device and bridge Plexus creates for this VNI: the last DEL
    /// removes only devices that carry it, never a bridge the node's admin made and named
    /// in `bridge`.
    pub fn tag(&self) -> String {
        format!("plexus:vxlan/{}", self.vni)
    }
}

fn ip_key(key: &str, s: &str) -> Result<IpAddr, DelegateError> {
    s.parse()
        .map_err(|_| DelegateError::config(key, format!("{s:?} is not an IP address")))
}

pub fn parse(req: &Request) -> Result<Conf, DelegateError> {
    let k = req.keys();
    let vni = k
        .u32("vni")?
        .ok_or_else(|| DelegateError::config("vni", "is required"))?;
    if vni == 0 || vni > MAX_VNI {
        return Err(DelegateError::config(
            "vni",
            format!("must be 1..={MAX_VNI}"),
        ));
    }
    let port = match k.u32("port")? {
        None => 4789,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| DelegateError::config("port", "must be 1..=65535"))?,
    };
    let group = k.str("group")?.map(|s| ip_key("group", s)).transpose()?;
    if let Some(g) = group
        && !g.is_multicast()
    {
        return Err(DelegateError::config(
            "group",
            format!("{g} is not multicast"),
        ));
    }
    let remotes = k
        .strings("remotes")?
        .into_iter()
        .map(|s| ip_key("remotes", s))
        .collect::<Result<Vec<_>, _>>()?;
    if group.is_some() && !remotes.is_empty() {
        return Err(DelegateError::config(
            "remotes",
            "use either group or remotes, not both",
        ));
    }
    let local = k
        .str("localIP")?
        .map(|s| ip_key("localIP", s))
        .transpose()?;
    let learning = match req.conf.0.get("learning") {
        None | Some(serde_json::Value::Null) => true,
        Some(_) => k.bool("learning")?,
    };
    Ok(Conf {
        vni,
        port,
        group,
        remotes,
        underlay: k.ifname("underlayInterface")?.map(str::to_string),
        local,
        mtu: k.u32("mtu")?.filter(|m| *m != 0),
        bridge: k
            .ifname("bridge")?
            .map_or_else(|| format!("vxbr{vni}"), str::to_string),
        learning,
    })
}

/// The outer headers: Ethernet 14 + VXLAN 8 + UDP 8 + IPv4 20 (or IPv6 40).
fn overhead(c: &Conf) -> u32 {
    let v6 = c
        .local
        .or(c.group)
        .or(c.remotes.first().copied())
        .is_some_and(|a| a.is_ipv6());
    if v6 { 70 } else { 50 }
}

struct Lock(#[allow(dead_code)] File);

fn lock(vni: u32, timeout: Duration) -> Result<Lock, DelegateError> {
    link::lock_file(&format!("{LOCK_DIR}/vxlan-{vni}.lock"), timeout).map(Lock)
}

pub fn add(req: &Request) -> Result<Added, DelegateError> {
    let conf = parse(req)?;
    let netns = req.open_netns(req.netns_required()?)?;
    let ids = Ids {
        pod: netns.id()?,
        node: NsId::current().map_err(|source| DelegateError::Io {
            step: "identify the node's netns".into(),
            source,
        })?,
    };
    let mut result = req.ipam_add()?;
    let guard = match lock(conf.vni, req.timeout) {
        Ok(g) => g,
        Err(e) => {
            let _ = req.ipam_del();
            return Err(e);
        }
    };
    let done = plug(req, &conf, &netns, ids, &result);
    drop(guard);
    match done {
        Ok((interfaces, links)) => {
            result.interfaces = interfaces;
            for ip in &mut result.ips {
                ip.interface = Some(2);
            }
            Ok(Added { result, links })
        }
        Err(e) => {
            let _ = req.ipam_del();
            Err(e)
        }
    }
}

/// The pod's and the node's netns, as the links made in them are recorded.
#[derive(Clone, Copy)]
struct Ids {
    pod: NsId,
    node: NsId,
}

/// The overlay (made when missing) and the pod's pair on it, configured with `result`. On
/// failure only the pair this ADD made goes, then the overlay if no pod uses it.
fn plug(
    req: &Request,
    c: &Conf,
    netns: &NetNs,
    ids: Ids,
    result: &CniResult,
) -> Result<(Vec<Interface>, Vec<OwnedLink>), DelegateError> {
    let (container_id, ifname) = (req.container_id, req.ifname);
    let tag = req.tag();
    let tag = tag.as_str();
    let pod_fd = netns.fd();
    let sandbox = netns.path().display().to_string();
    let done = netns.run_with_host(|host, pod| async move {
        let undo = async |made: Option<u32>| {
            if let Some(index) = made {
                let _ = link::delete(&host, index).await;
            }
            let _ = teardown_if_unused(&host, c).await;
        };
        let (br, mtu) = match ensure_overlay(&host, c).await {
            Ok(x) => x,
            Err(e) => {
                undo(None).await;
                return Err(e);
            }
        };
        let veth = PodVeth {
            container_id,
            ifname,
            tag,
            pod_fd,
            controller: br.header.index,
            controller_name: &c.bridge,
            mtu: Some(mtu),
            mac: None,
        };
        let host_link = match create_pod_veth(&host, &pod, &veth).await {
            Ok(l) => l,
            Err(e) => {
                undo(None).await;
                return Err(e);
            }
        };
        let port = BridgedPort {
            bridge: &c.bridge,
            host_link: &host_link,
            ifname,
            sandbox,
            mtu: Some(mtu),
        };
        let configured = async {
            let pod_link = ready_pod_end(&pod, ifname, tag).await?;
            let interfaces = configure_bridged(&host, &pod, port, &pod_link, result).await?;
            Ok::<_, DelegateError>((interfaces, pod_link))
        };
        match configured.await {
            Ok((interfaces, pod_link)) => Ok((
                interfaces,
                vec![
                    owned::record(Side::Pod, &pod_link, ids.pod),
                    owned::record(Side::Node, &host_link, ids.node),
                ],
            )),
            Err(e) => {
                undo(Some(host_link.header.index)).await;
                Err(e)
            }
        }
    });
    done?
}

/// The bridge and the vxlan device on it, created when missing; returns the bridge and the
/// MTU pods get.
async fn ensure_overlay(h: &Handle, c: &Conf) -> Result<(LinkMessage, u32), DelegateError> {
    let dev = c.device();
    let underlay = match &c.underlay {
        Some(name) => Some(
            link::by_name(h, name)
                .await
                .map_err(|e| DelegateError::netlink(format!("look up underlay {name}"), e))?
                .ok_or_else(|| {
                    DelegateError::config("underlayInterface", format!("link {name} not found"))
                })?,
        ),
        None => None,
    };
    let mtu = c.mtu.unwrap_or_else(|| {
        underlay
            .as_ref()
            .and_then(link::mtu)
            .unwrap_or(1500)
            .saturating_sub(overhead(c))
    });
    let br = ensure_bridge(h, c, mtu).await?;
    let vx = ensure_vxlan(h, c, &br, underlay.as_ref(), mtu).await?;
    let local = local_addresses(h, c, underlay.as_ref()).await?;
    for remote in c.remotes.iter().filter(|r| !local.contains(r)) {
        append_flood_entry(h, vx.header.index, *remote)
            .await
            .map_err(|e| DelegateError::netlink(format!("add remote {remote} to {dev}"), e))?;
    }
    Ok((br, mtu))
}

/// The overlay's bridge, created (and tagged as this conf's) when missing.
async fn ensure_bridge(h: &Handle, c: &Conf, mtu: u32) -> Result<LinkMessage, DelegateError> {
    let br = match link::by_name(h, &c.bridge)
        .await
        .map_err(|e| DelegateError::netlink(format!("look up bridge {}", c.bridge), e))?
    {
        Some(br) => br,
        None => {
            let msg = LinkBridge::new(&c.bridge).mtu(mtu).build();
            let created = match h.link().add(msg).execute().await {
                Err(e) if errno(&e) != Some(EEXIST) => {
                    return Err(DelegateError::netlink(
                        format!("create bridge {}", c.bridge),
                        e,
                    ));
                }
                Err(_) => false,
                Ok(()) => true,
            };
            let br = link::require(h, &c.bridge, "read the new bridge").await?;
            if created {
                link::set_tag(h, br.header.index, &c.bridge, &c.tag()).await?;
            }
            br
        }
    };
    if link::kind(&br) != Some(&InfoKind::Bridge) {
        return Err(DelegateError::config(
            "bridge",
            format!("{} exists and is not a bridge", c.bridge),
        ));
    }
    Ok(br)
}

/// The vxlan device, a port of `br`, created (and tagged) when missing; an existing link of
/// that name must already be this overlay's.
async fn ensure_vxlan(
    h: &Handle,
    c: &Conf,
    br: &LinkMessage,
    underlay: Option<&LinkMessage>,
    mtu: u32,
) -> Result<LinkMessage, DelegateError> {
    let dev = c.device();
    let vx = match link::by_name(h, &dev)
        .await
        .map_err(|e| DelegateError::netlink(format!("look up {dev}"), e))?
    {
        Some(vx) => vx,
        None => {
            let mut b = LinkVxlan::new(&dev, c.vni)
                .port(c.port)
                .learning(c.learning)
                .mtu(mtu)
                .controller(br.header.index)
                .up();
            if let Some(u) = underlay {
                b = b.dev(u.header.index);
            }
            match c.local {
                Some(IpAddr::V4(a)) => b = b.local(a),
                Some(IpAddr::V6(a)) => b = b.local6(a),
                None => {}
            }
            match c.group {
                Some(IpAddr::V4(g)) => b = b.group(g),
                Some(IpAddr::V6(g)) => b = b.group6(g),
                None => {}
            }
            h.link().add(b.build()).execute().await.map_err(|e| {
                DelegateError::netlink(format!("create vxlan {dev} (vni {})", c.vni), e)
            })?;
            let vx = link::require(h, &dev, "read the new vxlan device").await?;
            link::set_tag(h, vx.header.index, &dev, &c.tag()).await?;
            vx
        }
    };
    if link::kind(&vx) != Some(&InfoKind::Vxlan) {
        return Err(DelegateError::Failed {
            step: format!("use vxlan {dev}"),
            reason: "a link with that name exists and is not a vxlan device".into(),
        });
    }
    if link::controller(&vx) != Some(br.header.index) {
        return Err(DelegateError::Failed {
            step: format!("use vxlan {dev}"),
            reason: format!("it is not a port of {}", c.bridge),
        });
    }
    Ok(vx)
}

/// The node's own underlay addresses, skipped among `remotes`.
async fn local_addresses(
    h: &Handle,
    c: &Conf,
    underlay: Option<&LinkMessage>,
) -> Result<Vec<IpAddr>, DelegateError> {
    let mut out: Vec<IpAddr> = c.local.into_iter().collect();
    if let Some(u) = underlay {
        let addrs = link::addresses(h, u.header.index)
            .await
            .map_err(|e| DelegateError::netlink("list underlay addresses", e))?;
        out.extend(addrs.iter().map(|a| a.addr()));
    }
    Ok(out)
}

/// `bridge fdb append 00:00:00:00:00:00 dev <vxlan> dst <remote>`: broadcast and unknown
/// unicast go to every remote. Several entries share the all-zero MAC, which needs
/// NLM_F_APPEND — rtnetlink's neighbour request only sends EXCL or REPLACE, so the message is
/// built here. An existing entry is success.
async fn append_flood_entry(
    h: &Handle,
    index: u32,
    remote: IpAddr,
) -> Result<(), rtnetlink::Error> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    // NTF_SELF: the entry belongs to the vxlan device's own FDB, not the bridge's.
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
    msg.attributes
        .push(NeighbourAttribute::Destination(match remote {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    let mut handle = h.clone();
    let mut responses = handle.request(req)?;
    while let Some(m) = responses.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            let err = rtnetlink::Error::NetlinkError(e);
            if errno(&err) != Some(EEXIST) && errno(&err) != Some(0) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Removes the vxlan device and bridge when no pod port is left on the bridge, each only if
/// Plexus created it (it carries the VNI's tag). Call with the VNI lock held.
async fn teardown_if_unused(h: &Handle, c: &Conf) -> Result<(), DelegateError> {
    let Some(br) = link::by_name(h, &c.bridge)
        .await
        .map_err(|e| DelegateError::netlink(format!("look up bridge {}", c.bridge), e))?
    else {
        return Ok(());
    };
    let dev = c.device();
    // A dump filtered by IFLA_MASTER; the lock keeps this network's ports from changing
    // meanwhile, and the result is checked again client-side.
    let mut get = h.link().get();
    get.message_mut()
        .attributes
        .push(LinkAttribute::Controller(br.header.index));
    let ports: Vec<LinkMessage> = get
        .execute()
        .try_collect()
        .await
        .map_err(|e| DelegateError::netlink(format!("list ports of {}", c.bridge), e))?;
    let pods = ports
        .iter()
        .filter(|l| link::controller(l) == Some(br.header.index))
        .filter(|l| link_name(l) != Some(dev.as_str()))
        .count();
    if pods > 0 {
        return Ok(());
    }
    let tag = c.tag();
    let ours = |l: &LinkMessage| owned::alias(l) == Some(tag.as_str());
    if let Some(vx) = ports.iter().find(|l| link_name(l) == Some(dev.as_str()))
        && ours(vx)
    {
        link::delete(h, vx.header.index)
            .await
            .map_err(|e| DelegateError::netlink(format!("delete {dev}"), e))?;
    }
    if !ours(&br) {
        return Ok(());
    }
    link::delete(h, br.header.index)
        .await
        .map_err(|e| DelegateError::netlink(format!("delete bridge {}", c.bridge), e))
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub fn del(req: &Request) -> Result<(), DelegateError> {
    // A conf ADD refused left nothing to remove, but what needs no conf is still done.
    let conf = parse(req);
    let mut errors = Vec::new();
    if let Err(e) = req.ipam_del() {
        errors.push(e);
    }
    if let Err(e) = owned::remove_pod_link(req) {
        errors.push(e);
    }
    let conf = match conf {
        Ok(c) => c,
        Err(e) => {
            if let Err(e) = owned::remove_node_links(req, &[]) {
                errors.push(e);
            }
            errors.push(e);
            return DelegateError::collect(errors);
        }
    };
    // A pod netns that vanished takes its veth end with it, asynchronously: the host end is
    // removed too, under the VNI lock with the overlay's last-pod check.
    let c = &conf;
    let teardown = lock(conf.vni, req.timeout).and_then(|_guard| {
        owned::remove_node_links(req, &[c.bridge.as_str(), c.device().as_str()])?;
        req.node_netns()?
            .run(|h| async move { teardown_if_unused(&h, c).await })?
    });
    if let Err(e) = teardown {
        errors.push(e);
    }
    DelegateError::collect(errors)
}

pub fn check(req: &Request) -> Result<(), DelegateError> {
    let conf = parse(req)?;
    let prev = req.prev_result()?;
    let netns = req.open_netns(req.netns_required()?)?;
    req.ipam_check()?;
    // The host end's name as ADD reported it: it is picked free, never derived.
    let host_name = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name != conf.bridge)
        .map(|i| i.name.clone())
        .ok_or_else(|| DelegateError::Failed {
            step: "check the overlay".into(),
            reason: "prevResult names no host interface".into(),
        })?;
    let ifname = req.ifname;
    let c = &conf;
    let hn = host_name.as_str();
    netns.run_with_host(|host, pod| async move {
        let br = link::require(&host, &c.bridge, "check the bridge").await?;
        for name in [c.device().as_str(), hn] {
            let l = link::require(&host, name, "check the overlay").await?;
            if link::controller(&l) != Some(br.header.index) {
                return Err(DelegateError::Failed {
                    step: "check the overlay".into(),
                    reason: format!("{name} is not a port of {}", c.bridge),
                });
            }
        }
        crate::verify::pod_interface(&pod, ifname, &prev).await
    })?
}
