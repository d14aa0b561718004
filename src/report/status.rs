//! The pod's `k8s.v1.cni.cncf.io/network-status` entries and the merged result Plexus prints,
//! both pure functions of the attachments' results. This module knows the NPWG annotation
//! format but not how it reaches the API server.
//!
//! Where Multus (through network-attachment-definition-client) and the NPWG spec differ, the
//! entries follow what Multus writes, because that is what existing readers parse: bare IPs
//! without prefix, `gateway` for the default-route gateways, `mtu`, DNS `options`, and `dns`
//! always present. The spec's `default-route` key is written too, from the pod's selection.

use cni::result::{CniResult, Dns, IpConfig};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[cfg(test)]
mod tests;

/// One element of the network-status annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `namespace/name` of the network.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Addresses without prefix length, as Multus writes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Always written: NPWG §5.3 requires it, though Multus omits `false`.
    #[serde(default)]
    pub default: bool,
    /// Always written, `{}` when empty, as Multus does.
    #[serde(default)]
    pub dns: Dns,
    /// Multus's key: gateways of the result's routes to `0.0.0.0/0` and `::/0` (nad-client
    /// `isDefaultRoute`), not the `gateway` of each IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
    /// NPWG §5.3's key: the gateways the pod's selection asked for with `default-route`.
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_route: Vec<String>,
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<serde_json::Value>,
}

/// What [`network_status`] needs to know about one attachment.
#[derive(Debug, Clone, Copy)]
pub struct StatusInput<'a> {
    /// `namespace/name` of the network.
    pub network: &'a str,
    /// This attachment is the pod's default (cluster) network.
    pub is_default: bool,
    pub result: &'a CniResult,
    /// The `default-route` gateways of the pod's selection for this network.
    pub default_route: &'a [IpAddr],
    pub device_info: Option<&'a serde_json::Value>,
}

/// The network-status entries of a pod, in attachment order.
///
/// Each attachment yields one entry per sandbox interface of its result (a plugin may report several), in
/// interface order. An IP goes to the entry of the interface its `interface` index names;
/// IPs without an index go to the last sandbox interface, as nad-client does, so they are
/// never dropped (nad-client #74); an index past the interfaces counts as none. IPs indexed
/// to a host-side interface are not pod addresses and are left out. A result without any
/// sandbox interface (IPAM-style or pre-0.3.0) yields a single entry without `interface` that
/// lists all its IPs. Only the first sandbox interface of the default network is `default`.
/// Each gateway of `gateway` (the result's default routes) and `default-route` (the
/// selection's) is written once, on the entry whose address subnet contains it, else on the
/// result's first entry.
pub fn network_status(inputs: &[StatusInput<'_>]) -> Vec<NetworkStatus> {
    inputs.iter().flat_map(attachment_status).collect()
}

fn attachment_status(input: &StatusInput<'_>) -> Vec<NetworkStatus> {
    let result = input.result;
    let entry = |interface: Option<&cni::result::Interface>| NetworkStatus {
        name: input.network.to_string(),
        interface: interface.map(|i| i.name.clone()),
        ips: Vec::new(),
        mac: interface
            .and_then(|i| i.mac.clone())
            .filter(|m| !m.is_empty()),
        mtu: interface.and_then(|i| i.mtu).filter(|m| *m != 0),
        default: false,
        dns: result.dns.clone(),
        gateway: Vec::new(),
        default_route: Vec::new(),
        device_info: input.device_info.cloned(),
    };

    let sandbox: Vec<usize> = result.sandbox_interfaces().map(|(i, _)| i).collect();
    // Each entry's addresses, kept with their prefix to place default-route gateways.
    let mut entries: Vec<(NetworkStatus, Vec<&IpConfig>)> = if sandbox.is_empty() {
        vec![(entry(None), result.ips.iter().collect())]
    } else {
        let mut entries: Vec<_> = sandbox
            .iter()
            .map(|&i| (entry(result.interfaces.get(i)), Vec::new()))
            .collect();
        let last = entries.len() - 1;
        for ip in &result.ips {
            // An index past the interfaces carries no information, like no index at all
            // (the same reading CniResult::parse gives it).
            let slot = match ip.interface.filter(|i| *i < result.interfaces.len()) {
                Some(idx) => sandbox.iter().position(|&s| s == idx),
                None => Some(last),
            };
            if let Some(slot) = slot {
                entries[slot].1.push(ip);
            }
        }
        entries
    };

    place(&mut entries, &default_route_gateways(result), |s| {
        &mut s.gateway
    });
    place(&mut entries, input.default_route, |s| &mut s.default_route);

    entries
        .into_iter()
        .enumerate()
        .map(|(n, (mut status, ips))| {
            status.default = input.is_default && n == 0;
            status.ips = ips.iter().map(|ip| ip.address.addr().to_string()).collect();
            status
        })
        .collect()
}

/// For a result with one pod interface this is Multus's "every gateway on the entry"; with
/// several it keeps a gateway off the interfaces that cannot reach it, where Multus repeats
/// all of them on every entry.
fn place(
    entries: &mut [(NetworkStatus, Vec<&IpConfig>)],
    gateways: &[IpAddr],
    list: impl Fn(&mut NetworkStatus) -> &mut Vec<String>,
) {
    for gw in gateways {
        let slot = entries
            .iter()
            .position(|(_, ips)| ips.iter().any(|ip| ip.address.contains(gw)))
            .unwrap_or(0);
        if let Some((status, _)) = entries.get_mut(slot) {
            let list = list(status);
            let text = gw.to_string();
            if !list.contains(&text) {
                list.push(text);
            }
        }
    }
}

/// Gateways of the routes to `0.0.0.0/0` and `::/0`, in route order.
fn default_route_gateways(result: &CniResult) -> Vec<IpAddr> {
    result
        .routes
        .iter()
        .filter(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_unspecified())
        .filter_map(|r| r.gw)
        .collect()
}

/// The result Plexus reports for the whole pod: every attachment's interfaces, IPs (with
/// `interface` indices shifted to the merged list) and routes, in attachment order. DNS is
/// the union of every result's nameservers, search domains and options, first occurrence
/// first, with the first `domain` any result gives.
pub fn merged_result(results: &[&CniResult]) -> CniResult {
    let mut merged = CniResult::default();
    for result in results {
        let offset = merged.interfaces.len();
        let count = result.interfaces.len();
        merged.interfaces.extend(result.interfaces.iter().cloned());
        merged.ips.extend(result.ips.iter().map(|ip| IpConfig {
            // An index past this result's own interfaces would point into a neighbour's.
            interface: ip.interface.filter(|i| *i < count).map(|i| i + offset),
            ..ip.clone()
        }));
        merged.routes.extend(result.routes.iter().cloned());
        merge_dns(&mut merged.dns, &result.dns);
    }
    merged
}

fn merge_dns(into: &mut Dns, from: &Dns) {
    fn union(into: &mut Vec<String>, from: &[String]) {
        for s in from {
            if !into.contains(s) {
                into.push(s.clone());
            }
        }
    }
    union(&mut into.nameservers, &from.nameservers);
    union(&mut into.search, &from.search);
    union(&mut into.options, &from.options);
    if into.domain.is_none() {
        into.domain = from.domain.clone().filter(|d| !d.is_empty());
    }
}

/// The NPWG device-info (v1.1.0) for a device-plugin device ID that is a PCI address
/// (`0000:18:02.5`, what SR-IOV device plugins hand out); other IDs carry no known type.
pub fn pci_device_info(device_id: &str) -> Option<serde_json::Value> {
    let b = device_id.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    let is_pci = b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11]);
    is_pci.then(|| {
        serde_json::json!({
            "type": "pci",
            "version": "1.1.0",
            "pci": {"pci-address": device_id.to_ascii_lowercase()}
        })
    })
}
