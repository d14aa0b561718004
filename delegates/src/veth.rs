//! The veth pair every bridge-like delegate gives a pod: container end born in the pod
//! netns, host end on a bridge. The host end's name is picked free on the node (retrying on
//! a clash) and reported, never recomputed: DEL finds it through the journal or the cached
//! result, and a name two containers happen to share cannot make one pod remove the other's.

use crate::error::{DelegateError, errno};
use crate::link;
use cni::CniResult;
use cni::result::Interface;
use nix::libc::EEXIST;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

/// How many host-end names a veth create tries before giving up.
const NAME_TRIES: u32 = 16;

/// The first name tried for the host end: derived from the container and interface, so a
/// node's veths are easy to tell apart by eye. Only a first choice: two containers can hash
/// to the same one, and then the next candidate is used.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{:08x}", link::fnv1a(&[container_id, ifname]) as u32)
}

/// Host-end names to try in order: [`host_veth_name`], then names salted with the time and
/// the try number, so two ADDs whose first choices clash part ways.
fn host_veth_names(container_id: &str, ifname: &str) -> impl Iterator<Item = String> {
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default();
    let (cid, ifname) = (container_id.to_string(), ifname.to_string());
    (0..NAME_TRIES).map(move |i| {
        if i == 0 {
            host_veth_name(&cid, &ifname)
        } else {
            let n = link::fnv1a(&[&cid, &ifname, &salt, &i.to_string()]);
            format!("veth{:08x}", n as u32)
        }
    })
}

pub(crate) struct PodVeth<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// The attachment's tag, put on the host end as soon as it exists.
    pub tag: &'a str,
    pub pod_fd: std::os::fd::RawFd,
    pub controller: u32,
    pub controller_name: &'a str,
    pub mtu: Option<u32>,
    pub mac: Option<&'a [u8]>,
}

/// Creates the veth pair with its container end born in the pod netns (`IFLA_NET_NS_FD` on
/// the peer), so the container's name never exists on the host and cannot collide there; the
/// host end joins `controller` in the same request and is tagged right after. Returns the
/// host end.
///
/// The kernel answers EEXIST for either name. The pod already having `ifname` is the
/// spec's error (and its interface is kept); a taken host name means another try.
pub(crate) async fn create_pod_veth(
    host: &Handle,
    pod: &Handle,
    v: &PodVeth<'_>,
) -> Result<LinkMessage, DelegateError> {
    let ifname = v.ifname;
    let mut last = None;
    for host_name in host_veth_names(v.container_id, ifname) {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(ifname)
            .setns_by_fd(v.pod_fd);
        if let Some(m) = v.mtu {
            peer = peer.mtu(m);
        }
        if let Some(mac) = v.mac {
            peer = peer.address(mac.to_vec());
        }
        let mut msg = LinkVeth::new(&host_name, ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .controller(v.controller)
            .up();
        if let Some(m) = v.mtu {
            msg = msg.mtu(m);
        }
        match host.link().add(msg.build()).execute().await {
            Ok(()) => return tag_host_end(host, &host_name, v.tag).await,
            Err(e) if errno(&e) == Some(EEXIST) => {
                let in_pod = link::by_name(pod, ifname).await.map_err(|e| {
                    DelegateError::netlink(format!("look up {ifname} in the pod"), e)
                })?;
                if in_pod.is_some() {
                    return Err(DelegateError::Exists {
                        ifname: ifname.to_string(),
                    });
                }
                last = Some((host_name, e));
            }
            Err(e) => {
                return Err(DelegateError::netlink(
                    format!(
                        "create veth {host_name} <-> {ifname} on {}",
                        v.controller_name
                    ),
                    e,
                ));
            }
        }
    }
    let (host_name, e) = last.ok_or_else(|| DelegateError::Failed {
        step: format!("create veth for {ifname}"),
        reason: "no host name to try".into(),
    })?;
    Err(DelegateError::netlink(
        format!("create veth for {ifname}: {NAME_TRIES} host names taken, the last {host_name}"),
        e,
    ))
}

/// Looks up the host end just created and tags it; if that fails the pair is removed again
/// (it is certainly ours: the create succeeded a moment ago).
async fn tag_host_end(
    host: &Handle,
    host_name: &str,
    tag: &str,
) -> Result<LinkMessage, DelegateError> {
    let l = link::require(host, host_name, "read the host veth").await?;
    if let Err(e) = link::set_tag(host, l.header.index, host_name, tag).await {
        let _ = link::delete(host, l.header.index).await;
        return Err(e);
    }
    Ok(l)
}

/// A pod's veth once it hangs off its bridge: what the result reports about it.
pub(crate) struct BridgedPort<'a> {
    pub bridge: &'a str,
    pub host_link: &'a LinkMessage,
    pub ifname: &'a str,
    pub sandbox: String,
    pub mtu: Option<u32>,
}

/// The pod end of a new pair, read back in the pod, then tagged and set up in one change.
pub(crate) async fn ready_pod_end(
    pod: &Handle,
    ifname: &str,
    tag: &str,
) -> Result<LinkMessage, DelegateError> {
    let pod_link = link::require(pod, ifname, "read the container interface").await?;
    link::set_up(pod, pod_link.header.index, ifname, tag).await?;
    Ok(pod_link)
}

/// Puts the IPAM result on the pod end (made ready by [`ready_pod_end`]), then reports the
/// bridge, the host end and the pod end, in that order (the reference bridge plugin's). The
/// bridge's MAC may change as ports join, so it is read last.
pub(crate) async fn configure_bridged(
    host: &Handle,
    pod: &Handle,
    port: BridgedPort<'_>,
    pod_link: &LinkMessage,
    result: &CniResult,
) -> Result<Vec<Interface>, DelegateError> {
    link::configure_addresses(pod, pod_link.header.index, port.ifname, result).await?;
    let bridge = link::require(host, port.bridge, "read the bridge").await?;
    Ok(vec![
        Interface {
            name: port.bridge.to_string(),
            mac: link::mac(&bridge),
            ..Default::default()
        },
        Interface {
            name: crate::owned::name(port.host_link)
                .unwrap_or_default()
                .to_string(),
            mac: link::mac(port.host_link),
            ..Default::default()
        },
        Interface {
            name: port.ifname.to_string(),
            mac: link::mac(pod_link),
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
    fn host_veth_names_start_stable_then_vary() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert!(a.len() <= 15 && a.starts_with("veth"), "{a}");
        assert_ne!(a, host_veth_name("c1", "net1"));
        assert_ne!(a, host_veth_name("c2", "eth0"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        let names: Vec<String> = host_veth_names("c1", "eth0").collect();
        assert_eq!(names[0], a);
        assert_eq!(names.len(), NAME_TRIES as usize);
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(names.iter().all(|n| n.len() <= 15));
    }
}
