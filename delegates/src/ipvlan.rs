//! The ipvlan delegate: like macvlan (shared flow in `macvlan.rs`), but the sub-interface
//! shares the master's MAC. Reads the reference `ipvlan` plugin's conf schema.
//!
//! Kernels built without `CONFIG_IPVLAN` (this test VM's) refuse the link kind with
//! EOPNOTSUPP; ADD then fails with code 103 "kernel lacks ipvlan" and releases its IPAM
//! reservation.

use crate::error::DelegateError;
use crate::kind::Delegate;
use crate::macvlan::{SubLink, add_sublink, check_sublink, del_sublink};
use crate::owned::Added;
use crate::request::Request;
use rtnetlink::LinkIpVlan;
use rtnetlink::packet_route::link::{IpVlanMode, LinkMessage};
use std::os::fd::RawFd;

pub fn mode(name: Option<&str>) -> Result<IpVlanMode, DelegateError> {
    match name.unwrap_or("l2") {
        "l2" => Ok(IpVlanMode::L2),
        "l3" => Ok(IpVlanMode::L3),
        "l3s" => Ok(IpVlanMode::L3S),
        other => Err(DelegateError::config(
            "mode",
            format!("unknown ipvlan mode {other:?} (l2, l3, l3s)"),
        )),
    }
}

/// The create message, kept apart from the kernel call so it can be checked byte for byte.
pub fn link_message(
    ifname: &str,
    master: u32,
    mode: IpVlanMode,
    mtu: Option<u32>,
    netns_fd: Option<RawFd>,
) -> LinkMessage {
    let mut b = LinkIpVlan::new(ifname, master, mode);
    if let Some(m) = mtu {
        b = b.mtu(m);
    }
    if let Some(fd) = netns_fd {
        b = b.setns_by_fd(fd);
    }
    b.build()
}

pub const DELEGATE: Delegate = Delegate {
    types: &["ipvlan", "plexus-ipvlan"],
    virtual_link: true,
    validate,
    add,
    del,
    check,
};

/// The conf's own keys, read in the order ADD reads them.
struct Conf<'a> {
    mode: IpVlanMode,
    mtu: Option<u32>,
    master: Option<&'a str>,
    link_in_container: bool,
}

fn parse<'a>(req: &Request<'a>) -> Result<Conf<'a>, DelegateError> {
    let k = crate::request::Keys(&req.conf.0);
    Ok(Conf {
        mode: mode(k.str("mode")?)?,
        mtu: k.u32("mtu")?.filter(|m| *m != 0),
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
        master,
        link_in_container,
    } = parse(req)?;
    let ifname = req.ifname;
    let build = move |master: u32, fd: Option<RawFd>| link_message(ifname, master, mode, mtu, fd);
    add_sublink(
        req,
        &SubLink {
            kind: "ipvlan",
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
    check_sublink(req, "ipvlan")
}
