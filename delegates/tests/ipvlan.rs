#![allow(clippy::unwrap_used)]
//! ipvlan: this VM's kernel has no ipvlan, so the message is checked byte for byte
//! (netlink-packet-route's golden style) and the integration test expects the clear
//! "kernel lacks ipvlan" error with nothing left behind.

mod common;

use common::{TestNs, conf, host_local, reservations};
use delegates::{Kind, Request};
use rtnetlink::packet_core::{Emitable, Parseable};
use rtnetlink::packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, IpVlanMode, LinkAttribute, LinkInfo, LinkMessage,
};
use serde_json::json;

/// RTM_NEWLINK payload for `ip link add link <ifindex 5> name eth0 mtu 1400 netns <fd 7>
/// type ipvlan mode l2`, written out from the uapi headers (if_link.h), not captured from code.
#[rustfmt::skip]
const GOLDEN: &[u8] = &[
    // struct ifinfomsg: family AF_UNSPEC, pad, type 0, index 0, flags 0, change 0
    0x00, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,
    // IFLA_IFNAME (3), len 9: "eth0\0", padded to 12
    0x09, 0x00, 0x03, 0x00,  b'e', b't', b'h', b'0',  0x00, 0x00, 0x00, 0x00,
    // IFLA_LINK (5), len 8: master ifindex 5
    0x08, 0x00, 0x05, 0x00,  0x05, 0x00, 0x00, 0x00,
    // IFLA_MTU (4), len 8: 1400
    0x08, 0x00, 0x04, 0x00,  0x78, 0x05, 0x00, 0x00,
    // IFLA_NET_NS_FD (28), len 8: fd 7 — the link is born in the pod netns
    0x08, 0x00, 0x1c, 0x00,  0x07, 0x00, 0x00, 0x00,
    // IFLA_LINKINFO (18), len 28
    0x1c, 0x00, 0x12, 0x00,
    //   IFLA_INFO_KIND (1), len 11: "ipvlan\0", padded to 12
    0x0b, 0x00, 0x01, 0x00,  b'i', b'p', b'v', b'l',  b'a', b'n', 0x00, 0x00,
    //   IFLA_INFO_DATA (2), len 12
    0x0c, 0x00, 0x02, 0x00,
    //     IFLA_IPVLAN_MODE (1), len 6: IPVLAN_MODE_L2 (0), padded to 8
    0x06, 0x00, 0x01, 0x00,  0x00, 0x00, 0x00, 0x00,
];

#[test]
fn create_message_matches_golden_bytes() {
    let msg = delegates::ipvlan::link_message("eth0", 5, IpVlanMode::L2, Some(1400), Some(7));
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    assert_eq!(buf, GOLDEN);

    let parsed = LinkMessage::parse(GOLDEN).unwrap();
    assert_eq!(parsed, msg);
    assert!(parsed.attributes.contains(&LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::IpVlan),
        LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(IpVlanMode::L2)])),
    ])));
}

#[test]
fn modes_map_to_the_kernel_constants() {
    for (name, mode) in [
        (None, IpVlanMode::L2),
        (Some("l2"), IpVlanMode::L2),
        (Some("l3"), IpVlanMode::L3),
        (Some("l3s"), IpVlanMode::L3S),
    ] {
        assert_eq!(delegates::ipvlan::mode(name).unwrap(), mode);
    }
    let e = delegates::ipvlan::mode(Some("l4")).unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(e.to_string().contains("\"mode\""), "{e}");
}

#[test]
fn add_on_a_kernel_without_ipvlan_is_code_103_and_leaves_nothing() {
    let node = TestNs::new();
    let pod = TestNs::new();
    node.sh("ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up");
    let kernel_has_ipvlan = node
        .exec(&[
            "ip", "link", "add", "link", "up0", "name", "probe0", "type", "ipvlan",
        ])
        .status
        .success();
    assert!(
        !kernel_has_ipvlan,
        "this test documents a kernel without ipvlan; it has one"
    );
    let data = tempfile::tempdir().unwrap();
    let c = conf(json!({
        "cniVersion": "1.0.0", "name": "ipvnet", "type": "ipvlan", "master": "up0",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.78.0.0/24"}]]}
    }));
    node.enter(|| {
        let ipam = host_local("c-ipv", Some(pod.path()), "eth0");
        let req = Request {
            container_id: "c-ipv",
            netns: Some(pod.path()),
            ifname: "eth0",
            conf: &c,
            ipam: &ipam,
            timeout: std::time::Duration::from_secs(10),
            owned: &[],
        };
        let e = delegates::add(Kind::Ipvlan, &req).unwrap_err();
        assert_eq!(e.code(), 103, "{e:?}");
        assert_eq!(e.to_string(), "kernel lacks ipvlan");
        let obj = e.to_error_object();
        assert_eq!((obj.code, obj.msg.as_str()), (103, "kernel lacks ipvlan"));
        assert!(
            reservations(data.path(), "ipvnet").is_empty(),
            "IPAM reservation released"
        );
        assert!(!pod.exec(&["ip", "link", "show", "eth0"]).status.success());
        let node_links = node.sh("ip -o link show | wc -l");
        assert_eq!(node_links.trim(), "3", "lo, up0, up1 only");
        // DEL after the failed ADD is still fine.
        delegates::del(Kind::Ipvlan, &req).unwrap();
    });
}
