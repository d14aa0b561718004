//! Pod-wide route changes that no single delegate owns: moving the default route to the
//! interface a pod selected with `default-route`.

use crate::error::DelegateError;
use crate::link::{self, route_message};
use crate::netns::NetNs;
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// A default route to set: via `gateway`, out of `ifname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub gateway: IpAddr,
    pub ifname: String,
}

/// For each family given, removes every default route of the main table in the netns and
/// adds one via the gateway on the chosen interface. One default gateway per family: what
/// the pod asked for replaces what the delegates set up (Multus's behaviour, without ECMP).
/// The netlink work is bounded by `timeout`.
pub fn replace_default_routes(
    netns: &Path,
    routes: &[DefaultRoute],
    timeout: std::time::Duration,
) -> Result<(), DelegateError> {
    if routes.is_empty() {
        return Ok(());
    }
    let ns = NetNs::open(netns)?.bounded(timeout);
    ns.run(|h| async move {
        for r in routes {
            let filter = match r.gateway {
                IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
                IpAddr::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
            };
            let existing: Vec<RouteMessage> =
                h.route()
                    .get(filter)
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|e| DelegateError::netlink("list routes", e))?;
            for m in existing.into_iter().filter(is_main_default) {
                match h.route().del(m).execute().await {
                    Err(e) if !link::is_gone(&e) => {
                        return Err(DelegateError::netlink("remove a default route", e));
                    }
                    _ => {}
                }
            }
            let dev = link::require(&h, &r.ifname, "set the default route").await?;
            let any = match r.gateway {
                IpAddr::V4(_) => IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                IpAddr::V6(_) => IpNet::from(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            };
            // `from(addr)` is a host prefix; the default route is the zero-length one.
            let dst = IpNet::new(any.addr(), 0).unwrap_or(any);
            let msg = route_message(dev.header.index, dst, Some(r.gateway), None, None)
                .map_err(|reason| DelegateError::config("default-route", reason))?;
            h.route().add(msg).execute().await.map_err(|e| {
                DelegateError::netlink(
                    format!("add default route via {} on {}", r.gateway, r.ifname),
                    e,
                )
            })?;
        }
        Ok(())
    })?
}

fn is_main_default(m: &RouteMessage) -> bool {
    const RT_TABLE_MAIN: u8 = 254;
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    m.header.destination_prefix_length == 0 && table == u32::from(RT_TABLE_MAIN)
}
