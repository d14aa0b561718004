//! CHECK: the container interface still matches the ADD result (the spec: the plugin
//! must verify what it set up against `prevResult`).

use crate::error::DelegateError;
use crate::link;
use cni::CniResult;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn failed(reason: String) -> DelegateError {
    DelegateError::Failed {
        step: "check the container interface".into(),
        reason,
    }
}

pub async fn pod_interface(
    h: &Handle,
    ifname: &str,
    prev: &CniResult,
) -> Result<(), DelegateError> {
    let pos = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| failed(format!("prevResult has no interface {ifname} in a sandbox")))?;
    let link = link::require(h, ifname, "check the container interface").await?;
    if let Some(want) = &prev.interfaces[pos].mac {
        let have = link::mac(&link).unwrap_or_default();
        if !want.eq_ignore_ascii_case(&have) {
            return Err(failed(format!(
                "{ifname} has MAC {have}, prevResult says {want}"
            )));
        }
    }
    let have = link::addresses(h, link.header.index)
        .await
        .map_err(|e| DelegateError::netlink(format!("list addresses of {ifname}"), e))?;
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(pos)) {
        if !have.contains(&ip.address) {
            return Err(failed(format!("{ifname} lacks address {}", ip.address)));
        }
    }
    if prev.routes.is_empty() {
        return Ok(());
    }
    let mut routes = dump_routes(h, RouteMessageBuilder::<Ipv4Addr>::new().build()).await?;
    routes.extend(dump_routes(h, RouteMessageBuilder::<Ipv6Addr>::new().build()).await?);
    for r in &prev.routes {
        let found = routes
            .iter()
            .any(|(dst, gw)| *dst == r.dst.trunc() && (r.gw.is_none() || *gw == r.gw));
        if !found {
            return Err(failed(format!("route to {} is missing", r.dst)));
        }
    }
    Ok(())
}

async fn dump_routes(
    h: &Handle,
    filter: RouteMessage,
) -> Result<Vec<(IpNet, Option<IpAddr>)>, DelegateError> {
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(filter)
        .execute()
        .try_collect()
        .await
        .map_err(|e| DelegateError::netlink("list routes", e))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            let addr = |a: &RouteAddress| match a {
                RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
                RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
                _ => None,
            };
            let dst = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(d) => addr(d),
                    _ => None,
                })
                .or(match m.header.address_family {
                    rtnetlink::packet_route::AddressFamily::Inet6 => {
                        Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
                    }
                    _ => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                })?;
            let gw = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => addr(g),
                _ => None,
            });
            Some((
                IpNet::new(dst, m.header.destination_prefix_length).ok()?,
                gw,
            ))
        })
        .collect())
}
