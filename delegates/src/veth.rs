//! The veth pair every bridge-like delegate gives a pod: container end born in the pod
//! netns, host end on a bridge, host end named from the container so DEL can find it.

use crate::error::{DelegateError, errno};
use crate::link;
use cni::CniResult;
use cni::result::Interface;
use nix::libc::EEXIST;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

/// The host end's name: stable for a container and interface, so DEL finds it even when the
/// pod netns is gone, and ≤15 bytes.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{:08x}", link::fnv1a(&[container_id, ifname]) as u32)
}

pub(crate) struct PodVeth<'a> {
    pub host_name: &'a str,
    pub ifname: &'a str,
    pub pod_fd: std::os::fd::RawFd,
    pub controller: u32,
    pub controller_name: &'a str,
    pub mtu: Option<u32>,
    pub mac: Option<&'a [u8]>,
}

/// Creates the veth pair with its container end born in the pod netns (`IFLA_NET_NS_FD` on
/// the peer), so the container's name never exists on the host and cannot collide there; the
/// host end joins `controller` in the same request.
pub(crate) async fn create_pod_veth(host: &Handle, v: &PodVeth<'_>) -> Result<(), DelegateError> {
    let (host_name, ifname) = (v.host_name, v.ifname);
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(ifname)
        .setns_by_fd(v.pod_fd);
    if let Some(m) = v.mtu {
        peer = peer.mtu(m);
    }
    if let Some(mac) = v.mac {
        peer = peer.address(mac.to_vec());
    }
    let mut msg = LinkVeth::new(host_name, ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .controller(v.controller)
        .up();
    if let Some(m) = v.mtu {
        msg = msg.mtu(m);
    }
    host.link().add(msg.build()).execute().await.map_err(|e| {
        let step = if errno(&e) == Some(EEXIST) {
            format!("create veth {host_name} <-> {ifname}: a link with either name already exists")
        } else {
            format!(
                "create veth {host_name} <-> {ifname} on {}",
                v.controller_name
            )
        };
        DelegateError::netlink(step, e)
    })
}

/// A pod's veth once it hangs off its bridge: what the result reports about it.
pub(crate) struct BridgedPort<'a> {
    pub bridge: &'a str,
    pub host_name: &'a str,
    pub host_link: &'a LinkMessage,
    pub ifname: &'a str,
    pub sandbox: String,
    pub mtu: Option<u32>,
}

/// Puts the IPAM result on the pod end, then reports the bridge, the host end and the pod
/// end, in that order (the reference bridge plugin's). The bridge's MAC may change as ports
/// join, so it is read last.
pub(crate) async fn configure_bridged(
    host: &Handle,
    pod: &Handle,
    port: BridgedPort<'_>,
    result: &CniResult,
) -> Result<Vec<Interface>, DelegateError> {
    let pod_link = link::require(pod, port.ifname, "read the container interface").await?;
    link::configure(pod, pod_link.header.index, port.ifname, result).await?;
    let bridge = link::require(host, port.bridge, "read the bridge").await?;
    Ok(vec![
        Interface {
            name: port.bridge.to_string(),
            mac: link::mac(&bridge),
            ..Default::default()
        },
        Interface {
            name: port.host_name.to_string(),
            mac: link::mac(port.host_link),
            ..Default::default()
        },
        Interface {
            name: port.ifname.to_string(),
            mac: link::mac(&pod_link),
            mtu: port.mtu,
            sandbox: Some(port.sandbox),
            ..Default::default()
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_name_is_stable_short_and_distinct() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert!(a.len() <= 15 && a.starts_with("veth"), "{a}");
        assert_ne!(a, host_veth_name("c1", "net1"));
        assert_ne!(a, host_veth_name("c2", "eth0"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
    }
}
