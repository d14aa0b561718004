//! The macvlan delegate, and the flow it shares with ipvlan: a sub-interface of a master link
//! created directly in the pod netns (`IFLA_NET_NS_FD` on the create message: the master is
//! looked up in the caller's netns, the new link is born in the pod's under its final name).
//! Reads the reference `macvlan` plugin's conf schema.

use crate::error::{DelegateError, errno};
use crate::kind::Delegate;
use crate::link;
use crate::netns::{self, NetNs, NsId};
use crate::owned::{self, Added, Side};
use crate::request::Request;
use cni::result::Interface;
use nix::libc::{EEXIST, EOPNOTSUPP};
use rtnetlink::packet_route::link::{LinkMessage, MacVlanMode};
use rtnetlink::{Handle, LinkMacVlan};
use std::os::fd::RawFd;

/// What differs between macvlan and ipvlan; the rest of the flow is shared.
pub(crate) struct SubLink<'a> {
    pub kind: &'static str,
    pub master: Option<&'a str>,
    /// The master lives in the pod netns (e.g. an SR-IOV VF moved there earlier).
    pub link_in_container: bool,
    /// Builds the create message from the master's index and the pod netns fd (None when the
    /// link is created from inside the pod netns).
    pub build: &'a (dyn Fn(u32, Option<RawFd>) -> LinkMessage + Sync),
}

pub fn mode(name: Option<&str>) -> Result<MacVlanMode, DelegateError> {
    match name.unwrap_or("bridge") {
        "bridge" => Ok(MacVlanMode::Bridge),
        "private" => Ok(MacVlanMode::Private),
        "vepa" => Ok(MacVlanMode::Vepa),
        "passthru" => Ok(MacVlanMode::Passthrough),
        other => Err(DelegateError::config(
            "mode",
            format!("unknown macvlan mode {other:?} (bridge, private, vepa, passthru)"),
        )),
    }
}

/// The create message, kept apart from the kernel call so it can be checked byte for byte.
pub fn link_message(
    ifname: &str,
    master: u32,
    mode: MacVlanMode,
    mtu: Option<u32>,
    mac: Option<Vec<u8>>,
    netns_fd: Option<RawFd>,
) -> LinkMessage {
    let mut b = LinkMacVlan::new(ifname, master, mode);
    if let Some(m) = mtu {
        b = b.mtu(m);
    }
    if let Some(mac) = mac {
        b = b.address(mac);
    }
    if let Some(fd) = netns_fd {
        b = b.setns_by_fd(fd);
    }
    b.build()
}

pub const DELEGATE: Delegate = Delegate {
    types: &["macvlan", "plexus-macvlan"],
    virtual_link: true,
    validate,
    add,
    del,
    check,
};

/// The conf's own keys, read in the order ADD reads them.
struct Conf<'a> {
    mode: MacVlanMode,
    mtu: Option<u32>,
    mac: Option<Vec<u8>>,
    master: Option<&'a str>,
    link_in_container: bool,
}

fn parse<'a>(req: &Request<'a>) -> Result<Conf<'a>, DelegateError> {
    let k = crate::request::Keys(&req.conf.0);
    Ok(Conf {
        mode: mode(k.str("mode")?)?,
        mtu: k.u32("mtu")?.filter(|m| *m != 0),
        mac: req.runtime_mac()?,
        master: k.ifname("master")?,
        link_in_container: k.bool("linkInContainer")?,
    })
}

fn validate(req: &Request) -> Result<(), DelegateError> {
    parse(req).map(drop)
}

pub fn add(req: &Request) -> Result<Added, DelegateError> {
    let Conf {
        mode,
        mtu,
        mac,
        master,
        link_in_container,
    } = parse(req)?;
    let ifname = req.ifname;
    let build = move |master: u32, fd: Option<RawFd>| {
        link_message(ifname, master, mode, mtu, mac.clone(), fd)
    };
    add_sublink(
        req,
        &SubLink {
            kind: "macvlan",
            master,
            link_in_container,
            build: &build,
        },
    )
}

pub fn del(req: &Request) -> Result<(), DelegateError> {
    del_sublink(req)
}

pub fn check(req: &Request) -> Result<(), DelegateError> {
    check_sublink(req, "macvlan")
}

/// The interface of the default IPv4 (else IPv6) route, the reference plugins' default master.
async fn default_route_link(h: &Handle) -> Result<Option<u32>, DelegateError> {
    use futures::TryStreamExt;
    use rtnetlink::RouteMessageBuilder;
    use rtnetlink::packet_route::route::RouteAttribute;
    use std::net::{Ipv4Addr, Ipv6Addr};
    for filter in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let routes: Vec<_> = h
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(|e| DelegateError::netlink("find the default route", e))?;
        let oif = routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            });
        if oif.is_some() {
            return Ok(oif);
        }
    }
    Ok(None)
}

/// The link is created before IPAM runs, as the reference plugins order it: an exec'd IPAM
/// such as dhcp runs its client on the interface, so the interface must exist by then.
pub(crate) fn add_sublink(req: &Request, spec: &SubLink) -> Result<Added, DelegateError> {
    let netns = req.open_netns(req.netns_required()?)?;
    let pod_ns = netns.id()?;
    let master_key = netns::session_seq().map(|session| MasterKey {
        session,
        pod: spec.link_in_container.then_some(pod_ns),
        name: spec.master.map(str::to_string),
    });
    let cached = master_key.as_ref().and_then(cached_master);
    let (pod_link, master) = create_sublink(&netns, req, spec, cached)?;
    let idx = pod_link.header.index;
    let undo_link = || {
        let _ = netns.run(|pod| async move { link::delete(&pod, idx).await });
    };
    let mut result = match req.ipam_add() {
        Ok(r) => r,
        Err(e) => {
            undo_link();
            return Err(e);
        }
    };
    cni::fault::point("sublink-after-ipam");
    let ifname = req.ifname;
    let configured = netns
        .run(|pod| {
            let result = &result;
            async move { link::configure_addresses(&pod, idx, ifname, result).await }
        })
        .map_err(DelegateError::from)
        .and_then(|r| r);
    if let Err(e) = configured {
        undo_link();
        let _ = req.ipam_del();
        return Err(e);
    }
    cni::fault::point("sublink-after-configure");
    if let Some(key) = master_key {
        remember_master(key, master);
    }
    result.interfaces = vec![Interface {
        name: req.ifname.to_string(),
        mac: link::mac(&pod_link),
        sandbox: Some(netns.path().display().to_string()),
        ..Default::default()
    }];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    Ok(Added {
        result,
        links: vec![owned::record(Side::Pod, &pod_link, pod_ns)],
    })
}

/// Creates the link straight into the pod under its final name, reads it back there and
/// tags it and sets it up in one change (from then on DEL can tell it from a namesake). A
/// link made but not tagged is removed again.
fn create_sublink(
    netns: &NetNs,
    req: &Request,
    spec: &SubLink,
    cached: Option<u32>,
) -> Result<(LinkMessage, u32), DelegateError> {
    let ifname = req.ifname;
    let tag = req.tag();
    let tag = tag.as_str();
    let pod_fd = netns.fd();
    netns.run_with_host(|host, pod| async move {
        let parent = if spec.link_in_container { &pod } else { &host };
        let master = match (cached, spec.master) {
            (Some(index), _) => index,
            (None, Some(name)) => link::by_name(parent, name)
                .await
                .map_err(|e| DelegateError::netlink(format!("look up master {name}"), e))?
                .map(|l| l.header.index)
                .ok_or_else(|| DelegateError::config("master", format!("link {name} not found")))?,
            (None, None) => default_route_link(parent).await?.ok_or_else(|| {
                DelegateError::config(
                    "master",
                    "not set and there is no default route to take it from",
                )
            })?,
        };
        let fd = (!spec.link_in_container).then_some(pod_fd);
        parent
            .link()
            .add((spec.build)(master, fd))
            .execute()
            .await
            .map_err(|e| match errno(&e) {
                // rtnl_newlink answers EOPNOTSUPP when no driver registers the link kind.
                Some(EOPNOTSUPP) => DelegateError::KernelLacks {
                    kind: spec.kind,
                    source: e,
                },
                // Created in the pod under its final name, so EEXIST can only mean the pod
                // already has it: the spec's error, and the pod keeps its interface.
                Some(EEXIST) => DelegateError::Exists {
                    ifname: ifname.to_string(),
                },
                _ => DelegateError::netlink(format!("create {} {ifname}", spec.kind), e),
            })?;
        let pod_link = link::require(&pod, ifname, "read the new interface").await?;
        let idx = pod_link.header.index;
        if let Err(e) = link::set_up(&pod, idx, ifname, tag).await {
            let _ = link::delete(&pod, idx).await;
            return Err(e);
        }
        Ok::<_, DelegateError>((pod_link, master))
    })?
}

/// A master looked up in this call: a pod with many attachments on one master (the usual
/// shape) looks it up once, not once per attachment. Kept for the session only, so a master
/// renamed or replaced between calls is looked up afresh.
#[derive(PartialEq)]
struct MasterKey {
    session: u64,
    /// The pod's netns for a master inside it; `None` for the node's.
    pod: Option<NsId>,
    /// `None`: the default route's interface.
    name: Option<String>,
}

thread_local! {
    static MASTERS: std::cell::RefCell<Vec<(MasterKey, u32)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn cached_master(key: &MasterKey) -> Option<u32> {
    MASTERS.with(|m| m.borrow().iter().find(|(k, _)| k == key).map(|(_, i)| *i))
}

fn remember_master(key: MasterKey, index: u32) {
    MASTERS.with(|m| {
        let mut m = m.borrow_mut();
        // Entries of earlier sessions are of no use any more.
        m.retain(|(k, _)| k.session == key.session);
        m.push((key, index));
    });
}

pub(crate) fn del_sublink(req: &Request) -> Result<(), DelegateError> {
    let mut errors = Vec::new();
    if let Err(e) = req.ipam_del() {
        errors.push(e);
    }
    if let Err(e) = owned::remove_pod_link(req) {
        errors.push(e);
    }
    DelegateError::collect(errors)
}

pub(crate) fn check_sublink(req: &Request, kind: &'static str) -> Result<(), DelegateError> {
    let prev = req.prev_result()?;
    let netns = req.open_netns(req.netns_required()?)?;
    req.ipam_check()?;
    let ifname = req.ifname;
    netns.run(|h| async move {
        let l = link::require(&h, ifname, "check the container interface").await?;
        let is_kind = match link::kind(&l) {
            Some(rtnetlink::packet_route::link::InfoKind::MacVlan) => kind == "macvlan",
            Some(rtnetlink::packet_route::link::InfoKind::IpVlan) => kind == "ipvlan",
            _ => false,
        };
        if !is_kind {
            return Err(DelegateError::Failed {
                step: "check the container interface".into(),
                reason: format!("{ifname} is not a {kind} link"),
            });
        }
        crate::verify::pod_interface(&h, ifname, &prev).await
    })?
}
