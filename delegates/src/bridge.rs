//! The bridge delegate: a veth pair whose container end is created directly in the pod netns
//! and whose host end joins a Linux bridge; IPAM addresses and routes go on the container end.
//! Reads the reference `bridge` plugin's conf schema.

use crate::error::{DelegateError, errno};
use crate::kind::Delegate;
use crate::link;
use crate::masq;
use crate::netns::{NetNs, NsId};
use crate::owned::{self, Added, Expected, OwnedLink, Side};
use crate::request::Request;
pub use crate::veth::host_veth_name;
use crate::veth::{BridgedPort, PodVeth, configure_bridged, create_pod_veth, ready_pod_end};
use cni::CniResult;
use cni::netconf::NetConf;
use cni::result::Route;
use ipnet::IpNet;
use nix::libc::EEXIST;
use rtnetlink::packet_route::link::BridgeVlanInfoFlags;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkUnspec};
use std::net::IpAddr;

const DEFAULT_BRIDGE: &str = "cni0";

pub const DELEGATE: Delegate = Delegate {
    types: &["bridge", "plexus-bridge"],
    virtual_link: true,
    validate,
    add,
    del,
    check,
};

fn validate(req: &Request) -> Result<(), DelegateError> {
    parse(req).map(drop)
}

#[derive(Debug)]
struct Conf<'a> {
    bridge: &'a str,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    mtu: Option<u32>,
    hairpin: bool,
    promisc: bool,
    vlan: Option<u16>,
    mac: Option<Vec<u8>>,
    network: &'a str,
}

fn parse<'a>(req: &Request<'a>) -> Result<Conf<'a>, DelegateError> {
    let k = crate::request::Keys(&req.conf.0);
    let is_default_gateway = k.bool("isDefaultGateway")?;
    let vlan = match k.u32("vlan")? {
        None | Some(0) => None,
        Some(v) if v < 4095 => Some(v as u16),
        Some(_) => return Err(DelegateError::config("vlan", "must be between 0 and 4094")),
    };
    if k.bool("macspoofchk")? {
        // Silently skipping an anti-spoofing rule would weaken isolation the user asked for.
        return Err(DelegateError::config(
            "macspoofchk",
            "not supported by the built-in bridge; use the bridge binary",
        ));
    }
    Ok(Conf {
        bridge: k.ifname("bridge")?.unwrap_or(DEFAULT_BRIDGE),
        // A default gateway is a gateway (reference bridge: isDefaultGateway implies isGateway).
        is_gateway: k.bool("isGateway")? || is_default_gateway,
        is_default_gateway,
        force_address: k.bool("forceAddress")?,
        ip_masq: k.bool("ipMasq")?,
        mtu: k.u32("mtu")?.filter(|m| *m != 0),
        hairpin: k.bool("hairpinMode")?,
        promisc: k.bool("promiscMode")?,
        vlan,
        mac: req.runtime_mac()?,
        network: k.str("name")?.unwrap_or(""),
    })
}

/// Fills in the gateways IPAM left out and, for `isDefaultGateway`, a default route per family.
fn apply_gateways(conf: &Conf, result: &mut CniResult) {
    for ip in &mut result.ips {
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = first_host(ip.address);
        }
    }
    if !conf.is_default_gateway {
        return;
    }
    let mut added = Vec::new();
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let v4 = gw.is_ipv4();
        let has_default = result
            .routes
            .iter()
            .chain(added.iter())
            .any(|r: &Route| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4);
        if !has_default {
            let dst = if v4 {
                IpNet::V4(Default::default())
            } else {
                IpNet::V6(Default::default())
            };
            added.push(Route {
                dst,
                gw: Some(gw),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            });
        }
    }
    result.routes.extend(added);
}

fn first_host(net: IpNet) -> Option<IpAddr> {
    match net.network() {
        IpAddr::V4(a) => Some(IpAddr::V4((u32::from(a).checked_add(1)?).into())),
        IpAddr::V6(a) => Some(IpAddr::V6((u128::from(a).checked_add(1)?).into())),
    }
}

/// The pair is made and bridged before IPAM runs, as the reference bridge plugin orders it:
/// an exec'd IPAM such as dhcp runs its client on the pod's interface.
pub fn add(req: &Request) -> Result<Added, DelegateError> {
    let conf = parse(req)?;
    let netns = req.open_netns(req.netns_required()?)?;
    let made = make_port(req, &conf, &netns)?;
    let mut result = match req.ipam_add() {
        Ok(r) => r,
        Err(e) => {
            undo_links(req, &made.links);
            return Err(e);
        }
    };
    cni::fault::point("bridge-after-ipam");
    apply_gateways(&conf, &mut result);
    match configure(req, &conf, &netns, &made, &mut result) {
        Ok(()) => Ok(Added {
            result,
            links: made.links,
        }),
        Err(e) => {
            // Masquerade rules are added in one nft transaction as the last step, so none
            // exist; the pair goes, then the addresses.
            undo_links(req, &made.links);
            let _ = req.ipam_del();
            Err(e)
        }
    }
}

/// What [`make_port`] made: the bridge as found or created, the pair's host end, and both
/// ends as the attachment records them.
struct Made {
    bridge: rtnetlink::packet_route::link::LinkMessage,
    host_link: rtnetlink::packet_route::link::LinkMessage,
    pod_link: rtnetlink::packet_route::link::LinkMessage,
    links: Vec<OwnedLink>,
}

/// The bridge, the veth pair with its host end on it (hairpin, VLAN), and the pod end tagged
/// and up. A failure leaves nothing of the pair (the bridge, shared with other pods, stays
/// as the reference plugin leaves it).
fn make_port(req: &Request, conf: &Conf, netns: &NetNs) -> Result<Made, DelegateError> {
    let (container_id, ifname) = (req.container_id, req.ifname);
    let tag = req.tag();
    let tag = tag.as_str();
    let (pod_ns, node_ns) = (
        netns.id()?,
        NsId::current().map_err(|source| DelegateError::Io {
            step: "identify the node's netns".into(),
            source,
        })?,
    );
    let pod_fd = netns.fd();
    netns.run_with_host(|host, pod| async move {
        let bridge = ensure_bridge(&host, conf).await?;
        let veth = PodVeth {
            container_id,
            ifname,
            tag,
            pod_fd,
            controller: bridge.header.index,
            controller_name: conf.bridge,
            mtu: conf.mtu,
            mac: conf.mac.as_deref(),
        };
        let host_link = create_pod_veth(&host, &pod, &veth).await?;
        // From here on the pair is ours: a failure removes it (its host end takes the pod end).
        cni::fault::point("bridge-after-veth");
        match configure_port(&host, &pod, conf, &host_link, ifname, tag).await {
            Ok(pod_link) => Ok(Made {
                links: vec![
                    owned::record(Side::Pod, &pod_link, pod_ns),
                    owned::record(Side::Node, &host_link, node_ns),
                ],
                bridge,
                host_link,
                pod_link,
            }),
            Err(e) => {
                let _ = link::delete(&host, host_link.header.index).await;
                Err(e)
            }
        }
    })?
}

/// After IPAM: the gateways on the bridge, the pod end's addresses and routes, then what the
/// node needs beyond links. The result's interfaces are the bridge's, the host end's and the
/// pod end's.
fn configure(
    req: &Request,
    conf: &Conf,
    netns: &NetNs,
    made: &Made,
    result: &mut CniResult,
) -> Result<(), DelegateError> {
    let to_configure = result.clone();
    let sandbox = netns.path().display().to_string();
    let ifname = req.ifname;
    let interfaces = netns.run_with_host(|host, pod| async move {
        if conf.is_gateway {
            ensure_gateways(&host, &made.bridge, conf, &to_configure).await?;
        }
        let port = BridgedPort {
            bridge: conf.bridge,
            host_link: &made.host_link,
            ifname,
            sandbox,
            mtu: None,
        };
        configure_bridged(&host, &pod, port, &made.pod_link, &to_configure).await
    })??;
    node_side(req, conf, &result.ips)?;
    result.interfaces = interfaces;
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    Ok(())
}

/// Each IPAM gateway as an address of the bridge (`isGateway`).
async fn ensure_gateways(
    host: &Handle,
    br: &rtnetlink::packet_route::link::LinkMessage,
    conf: &Conf<'_>,
    result: &CniResult,
) -> Result<(), DelegateError> {
    for ip in &result.ips {
        if let Some(gw) = ip.gateway {
            let gw_net = IpNet::new(gw, ip.address.prefix_len())
                .map_err(|e| DelegateError::config("ipam", e.to_string()))?;
            ensure_bridge_address(host, br, conf, gw_net).await?;
        }
    }
    Ok(())
}

/// The bridge port of a new pair (hairpin, VLAN), and the pod end read back, tagged and up.
async fn configure_port(
    host: &Handle,
    pod: &Handle,
    conf: &Conf<'_>,
    host_link: &rtnetlink::packet_route::link::LinkMessage,
    ifname: &str,
    tag: &str,
) -> Result<rtnetlink::packet_route::link::LinkMessage, DelegateError> {
    let hidx = host_link.header.index;
    let host_name = owned::name(host_link).unwrap_or_default();
    if conf.hairpin {
        host.link()
            .set_port(LinkBridgePort::new(hidx).hairpin(true).build())
            .execute()
            .await
            .map_err(|e| DelegateError::netlink(format!("set hairpin on {host_name}"), e))?;
    }
    if let Some(vid) = conf.vlan {
        set_port_vlan(host, hidx, host_name, vid).await?;
    }
    ready_pod_end(pod, ifname, tag).await
}

/// What the node needs beyond links: forwarding for a gateway, masquerading for `ipMasq`.
fn node_side(
    req: &Request,
    conf: &Conf,
    ips: &[cni::result::IpConfig],
) -> Result<(), DelegateError> {
    if conf.is_gateway {
        enable_forwarding(ips)?;
    }
    if conf.ip_masq {
        masq::add(conf.network, req.container_id, req.ifname, ips, req.timeout)?;
    }
    Ok(())
}

/// Removes the pair this ADD made (by its host end, still identified as made), when a step
/// after the netlink work fails.
fn undo_links(req: &Request, links: &[OwnedLink]) {
    let tag = req.tag();
    let Some(host) = links.iter().find(|l| l.side == Side::Node) else {
        return;
    };
    let e = Expected {
        name: &host.name,
        tag: Some(&tag),
        journaled: Some(host),
        mac: None,
    };
    let _ = req
        .node_netns()
        .and_then(|ns| ns.run(|h| async move { owned::remove(&h, &e).await }));
}

async fn ensure_bridge(
    h: &Handle,
    conf: &Conf<'_>,
) -> Result<rtnetlink::packet_route::link::LinkMessage, DelegateError> {
    let name = conf.bridge;
    if let Some(existing) = link::by_name(h, name)
        .await
        .map_err(|e| DelegateError::netlink(format!("look up bridge {name}"), e))?
    {
        return check_existing_bridge(h, conf, existing).await;
    }
    let mut msg = LinkBridge::new(name);
    if let Some(m) = conf.mtu {
        msg = msg.mtu(m);
    }
    if conf.vlan.is_some() {
        msg = msg.vlan_filtering(true);
    }
    if conf.promisc {
        msg = msg.promiscuous(true);
    }
    match h.link().add(msg.build()).execute().await {
        Ok(()) => {}
        // Another ADD created it between our lookup and create; use theirs.
        Err(e) if errno(&e) == Some(EEXIST) => {}
        Err(e) => {
            return Err(vlan_filtering_error(
                conf,
                e,
                format!("create bridge {name}"),
            ));
        }
    }
    let br = link::require(h, name, "read the new bridge").await?;
    // Pin the bridge's MAC to its own: otherwise it takes the lowest port MAC and changes as
    // pods come and go, which breaks neighbours' ARP caches.
    if let Some(mac) = br.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => Some(b.clone()),
        _ => None,
    }) {
        h.link()
            .set(
                LinkUnspec::new_with_index(br.header.index)
                    .address(mac)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| DelegateError::netlink(format!("pin the MAC of bridge {name}"), e))?;
    }
    Ok(br)
}

/// Kernels built without `CONFIG_BRIDGE_VLAN_FILTERING` refuse the option with EOPNOTSUPP.
fn vlan_filtering_error(conf: &Conf, e: rtnetlink::Error, step: String) -> DelegateError {
    if conf.vlan.is_some() && errno(&e) == Some(nix::libc::EOPNOTSUPP) {
        DelegateError::KernelLacks {
            kind: "bridge vlan filtering",
            source: e,
        }
    } else {
        DelegateError::netlink(step, e)
    }
}

async fn check_existing_bridge(
    h: &Handle,
    conf: &Conf<'_>,
    br: rtnetlink::packet_route::link::LinkMessage,
) -> Result<rtnetlink::packet_route::link::LinkMessage, DelegateError> {
    let name = conf.bridge;
    if link::kind(&br) != Some(&rtnetlink::packet_route::link::InfoKind::Bridge) {
        return Err(DelegateError::Failed {
            step: format!("use bridge {name}"),
            reason: "a link with that name exists and is not a bridge".into(),
        });
    }
    let mut set = LinkUnspec::new_with_index(br.header.index).up();
    if conf.promisc {
        set = set.promiscuous(true);
    }
    h.link()
        .set(set.build())
        .execute()
        .await
        .map_err(|e| DelegateError::netlink(format!("set bridge {name} up"), e))?;
    if conf.vlan.is_some() {
        h.link()
            .set(LinkBridge::new(name).vlan_filtering(true).build())
            .execute()
            .await
            .map_err(|e| {
                vlan_filtering_error(conf, e, format!("enable VLAN filtering on {name}"))
            })?;
    }
    Ok(br)
}

/// The gateway address on the bridge. An IPv4 bridge has one address; another one is replaced
/// only with `forceAddress`. IPv6 allows several unless the subnets overlap.
async fn ensure_bridge_address(
    h: &Handle,
    br: &rtnetlink::packet_route::link::LinkMessage,
    conf: &Conf<'_>,
    gw: IpNet,
) -> Result<(), DelegateError> {
    let name = conf.bridge;
    let idx = br.header.index;
    let existing = link::addresses(h, idx)
        .await
        .map_err(|e| DelegateError::netlink(format!("list addresses of bridge {name}"), e))?;
    for a in existing
        .iter()
        .filter(|a| a.addr().is_ipv4() == gw.addr().is_ipv4())
    {
        if *a == gw {
            return Ok(());
        }
        let conflicts = gw.addr().is_ipv4() || a.contains(&gw.addr()) || gw.contains(&a.addr());
        if !conflicts {
            continue;
        }
        if !conf.force_address {
            return Err(DelegateError::Failed {
                step: format!("set gateway {gw} on bridge {name}"),
                reason: format!("the bridge already has {a}; set forceAddress to replace it"),
            });
        }
        let del = h
            .address()
            .get()
            .set_link_index_filter(idx)
            .set_address_filter(a.addr());
        let msgs: Vec<_> = futures::TryStreamExt::try_collect(del.execute())
            .await
            .map_err(|e| DelegateError::netlink(format!("read {a} on bridge {name}"), e))?;
        for m in msgs.into_iter().filter(|m| m.header.index == idx) {
            h.address()
                .del(m)
                .execute()
                .await
                .map_err(|e| DelegateError::netlink(format!("remove {a} from bridge {name}"), e))?;
        }
    }
    link::add_address(h, idx, gw)
        .await
        .map_err(|e| DelegateError::netlink(format!("set gateway {gw} on bridge {name}"), e))
}

/// The port's untagged PVID is `vid`; the default VLAN 1 goes, so the pod is only on `vid`.
async fn set_port_vlan(h: &Handle, idx: u32, name: &str, vid: u16) -> Result<(), DelegateError> {
    // `bridge vlan del`: RTM_DELLINK in family AF_BRIDGE naming the VLAN.
    let del = LinkBridgeVlan::new(idx)
        .vlan(1, BridgeVlanInfoFlags::empty())
        .build();
    match h.link().del_with_message(del).execute().await {
        Err(e) if !link::is_gone(&e) => {
            return Err(DelegateError::netlink(
                format!("remove VLAN 1 from {name}"),
                e,
            ));
        }
        _ => {}
    }
    let add = LinkBridgeVlan::new(idx)
        .vlan(
            vid,
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
        )
        .build();
    h.link()
        .set_port(add)
        .execute()
        .await
        .map_err(|e| DelegateError::netlink(format!("put {name} on VLAN {vid}"), e))?;
    Ok(())
}

/// A gateway bridge routes between pods and the node; /proc/sys/net follows the calling
/// thread's netns, which is the node's here.
fn enable_forwarding(ips: &[cni::result::IpConfig]) -> Result<(), DelegateError> {
    let mut files = Vec::new();
    if ips.iter().any(|i| i.address.addr().is_ipv4()) {
        files.push("/proc/sys/net/ipv4/ip_forward");
    }
    if ips.iter().any(|i| i.address.addr().is_ipv6()) {
        files.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for f in files {
        std::fs::write(f, "1").map_err(|source| DelegateError::Io {
            step: format!("enable forwarding in {f}"),
            source,
        })?;
    }
    Ok(())
}

pub fn del(req: &Request) -> Result<(), DelegateError> {
    // A conf ADD refused left nothing to remove, but what needs no conf is still done.
    let conf = parse(req);
    let mut errors = Vec::new();
    // The rules go first and their socket closes last, after the links (see masq::remove).
    let mut masq_socket = None;
    match &conf {
        Ok(c) if c.ip_masq => {
            match masq::remove(c.network, req.container_id, req.ifname, req.timeout) {
                Ok(nft) => masq_socket = Some(nft),
                Err(e) => errors.push(e),
            }
        }
        Ok(_) => {}
        Err(_) => {}
    }
    if let Err(e) = req.ipam_del() {
        errors.push(e);
    }
    // Removing the container end takes the host end with it; the host end is looked for
    // too, for a pod netns already gone (the kernel removes the pair asynchronously then).
    if let Err(e) = owned::remove_pod_link(req) {
        errors.push(e);
    }
    let bridge = conf.as_ref().map(|c| c.bridge).unwrap_or(DEFAULT_BRIDGE);
    if let Err(e) = owned::remove_node_links(req, &[bridge]) {
        errors.push(e);
    }
    if let Err(e) = conf {
        errors.push(e);
    }
    drop(masq_socket);
    DelegateError::collect(errors)
}

/// The pod's `ipMasq` rules alone, for a DEL that removes them before the pod's links; the
/// socket comes back to be closed after those (see masq::remove). The bridge's own DEL then
/// finds the rules gone.
pub fn remove_masquerade(
    conf: &NetConf,
    container_id: &str,
    ifname: &str,
    timeout: std::time::Duration,
) -> Result<Option<crate::nftables::Nft>, DelegateError> {
    let k = crate::request::Keys(&conf.0);
    if !k.bool("ipMasq")? {
        return Ok(None);
    }
    masq::remove(k.str("name")?.unwrap_or(""), container_id, ifname, timeout).map(Some)
}

pub fn check(req: &Request) -> Result<(), DelegateError> {
    let conf = parse(req)?;
    let prev = req.prev_result()?;
    let netns = req.open_netns(req.netns_required()?)?;
    req.ipam_check()?;
    let host_name = reported_host_end(&prev, conf.bridge)?;
    let ifname = req.ifname;
    netns.run_with_host(|host, pod| async move {
        let br = link::require(&host, conf.bridge, "check the bridge").await?;
        let hl = link::require(&host, &host_name, "check the host veth").await?;
        if link::controller(&hl) != Some(br.header.index) {
            return Err(DelegateError::Failed {
                step: "check the host veth".into(),
                reason: format!("{host_name} is not a port of {}", conf.bridge),
            });
        }
        crate::verify::pod_interface(&pod, ifname, &prev).await
    })?
}

/// The host end's name as ADD reported it (the name is picked free at ADD, never derived).
fn reported_host_end(prev: &CniResult, bridge: &str) -> Result<String, DelegateError> {
    prev.interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name != bridge)
        .map(|i| i.name.clone())
        .ok_or_else(|| DelegateError::Failed {
            step: "check the host veth".into(),
            reason: "prevResult names no host interface".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_defaults_to_first_host_and_default_route_is_added_once() {
        let conf = Conf {
            bridge: "cni0",
            is_gateway: true,
            is_default_gateway: true,
            force_address: false,
            ip_masq: false,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: None,
            mac: None,
            network: "n",
        };
        let mut r = CniResult {
            ips: vec![cni::result::IpConfig {
                address: "10.9.0.7/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..Default::default()
        };
        apply_gateways(&conf, &mut r);
        assert_eq!(r.ips[0].gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        apply_gateways(&conf, &mut r);
        assert_eq!(
            r.routes.len(),
            1,
            "an existing default route is kept, not doubled"
        );
    }
}
