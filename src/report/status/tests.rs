use super::*;
use cni::Version;
use cni::result::{Interface, Route};
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::json;

pub fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ipc(a: &str, gw: Option<&str>, interface: Option<usize>) -> IpConfig {
    IpConfig {
        address: net(a),
        gateway: gw.map(addr),
        interface,
    }
}

fn route(dst: &str, gw: Option<&str>) -> Route {
    Route {
        dst: net(dst),
        gw: gw.map(addr),
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    }
}

fn host(name: &str) -> Interface {
    Interface {
        name: name.into(),
        ..Interface::default()
    }
}

fn pod(name: &str, mac: &str) -> Interface {
    Interface {
        name: name.into(),
        mac: Some(mac.into()),
        sandbox: Some("/var/run/netns/cni-1234".into()),
        ..Interface::default()
    }
}

/// Bridge-style cluster network: host bridge and veth, pod eth0, dual stack.
fn cluster() -> CniResult {
    CniResult {
        interfaces: vec![
            host("cni0"),
            host("veth5e6f7a8b"),
            Interface {
                mtu: Some(1450),
                ..pod("eth0", "0a:58:0a:f4:01:07")
            },
        ],
        ips: vec![
            ipc("10.244.1.7/24", Some("10.244.1.1"), Some(2)),
            ipc("fd00:244:1::7/64", Some("fd00:244:1::1"), Some(2)),
        ],
        routes: vec![
            route("0.0.0.0/0", Some("10.244.1.1")),
            route("::/0", Some("fd00:244:1::1")),
        ],
        dns: Dns {
            nameservers: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            search: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        },
    }
}

fn macvlan() -> CniResult {
    CniResult {
        interfaces: vec![pod("net1", "02:42:c0:a8:0a:05")],
        ips: vec![ipc("192.168.10.5/24", Some("192.168.10.1"), Some(0))],
        routes: vec![route("192.168.0.0/16", Some("192.168.10.1"))],
        dns: Dns::default(),
    }
}

/// Two pod interfaces from one plugin, dual stack on the first, and an address without an
/// interface index.
fn dual() -> CniResult {
    CniResult {
        interfaces: vec![
            pod("data0", "02:23:45:67:89:01"),
            pod("data1", "02:23:45:67:89:02"),
        ],
        ips: vec![
            ipc("10.2.2.42/24", Some("10.2.2.1"), Some(0)),
            ipc("2001:db8:2::42/64", Some("2001:db8:2::1"), Some(0)),
            ipc("10.3.3.3/24", None, Some(1)),
            ipc("10.9.9.9/32", None, None),
        ],
        routes: vec![
            route("10.0.0.0/8", Some("10.2.2.1")),
            route("0.0.0.0/0", Some("10.3.3.1")),
        ],
        dns: Dns {
            nameservers: vec!["10.2.2.53".into(), "10.96.0.10".into()],
            domain: Some("data.example".into()),
            search: vec!["data.example".into()],
            options: vec![],
        },
    }
}

fn device_info() -> serde_json::Value {
    json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.5"}})
}

fn rich_pod_status() -> Vec<NetworkStatus> {
    let (c, m, d) = (cluster(), macvlan(), dual());
    let dev = device_info();
    let dr_mac = [addr("192.168.10.1")];
    let dr_dual = [addr("10.3.3.1"), addr("2001:db8:2::1")];
    network_status(&[
        StatusInput {
            network: "kube-system/cbr0",
            is_default: true,
            result: &c,
            default_route: &[],
            device_info: None,
        },
        StatusInput {
            network: "ns1/macvlan-a",
            is_default: false,
            result: &m,
            default_route: &dr_mac,
            device_info: None,
        },
        StatusInput {
            network: "ns2/sriov-dual",
            is_default: false,
            result: &d,
            default_route: &dr_dual,
            device_info: Some(&dev),
        },
    ])
}

#[test]
fn rich_pod_network_status() {
    let status = rich_pod_status();
    snapshots().bind(|| insta::assert_json_snapshot!("status__rich_pod", status));
}

#[test]
fn rich_pod_places_every_address_once() {
    let status = rich_pod_status();
    let by_iface = |name: &str| {
        status
            .iter()
            .find(|s| s.interface.as_deref() == Some(name))
            .unwrap()
    };
    assert_eq!(status.len(), 4);
    assert_eq!(by_iface("eth0").ips, ["10.244.1.7", "fd00:244:1::7"]);
    assert!(by_iface("eth0").default);
    assert_eq!(by_iface("eth0").gateway, ["10.244.1.1", "fd00:244:1::1"]);
    assert_eq!(by_iface("net1").ips, ["192.168.10.5"]);
    assert_eq!(by_iface("net1").default_route, ["192.168.10.1"]);
    assert!(by_iface("net1").gateway.is_empty());
    assert_eq!(by_iface("data0").ips, ["10.2.2.42", "2001:db8:2::42"]);
    assert_eq!(by_iface("data0").default_route, ["2001:db8:2::1"]);
    // The index-less address goes to the last pod interface of its result.
    assert_eq!(by_iface("data1").ips, ["10.3.3.3", "10.9.9.9"]);
    assert_eq!(by_iface("data1").default_route, ["10.3.3.1"]);
    // The default route's gateway sits in data1's subnet only.
    assert!(by_iface("data0").gateway.is_empty());
    assert_eq!(by_iface("data1").gateway, ["10.3.3.1"]);
    assert_eq!(status.iter().filter(|s| s.default).count(), 1);
    assert_eq!(by_iface("data1").device_info, Some(device_info()));
}

#[test]
fn keys_are_written_in_npwg_order_with_default_and_dns_always_present() {
    let m = macvlan();
    let status = network_status(&[StatusInput {
        network: "ns1/macvlan-a",
        is_default: false,
        result: &m,
        default_route: &[],
        device_info: None,
    }]);
    let text = serde_json::to_string(&status).unwrap();
    assert_eq!(
        text,
        r#"[{"name":"ns1/macvlan-a","interface":"net1","ips":["192.168.10.5"],"mac":"02:42:c0:a8:0a:05","default":false,"dns":{}}]"#
    );
}

#[test]
fn reads_what_multus_writes() {
    let text = r#"[{"name":"kube-system/cbr0","interface":"eth0","ips":["10.244.1.7"],
        "mac":"0a:58:0a:f4:01:07","mtu":1450,"default":true,"dns":{},"gateway":["10.244.1.1"]},
        {"name":"ns2/net-b","interface":"data0","ips":["10.2.2.42","2001:db8::5"],
        "mac":"02:23:45:67:89:01","dns":{},
        "device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:02.5"}}}]"#;
    let status: Vec<NetworkStatus> = serde_json::from_str(text).unwrap();
    assert_eq!(status[0].mtu, Some(1450));
    assert_eq!(status[0].gateway, ["10.244.1.1"]);
    assert!(!status[1].default);
    assert_eq!(status[1].device_info.as_ref().unwrap()["type"], "pci");
}

#[test]
fn result_without_pod_interface_gives_one_entry_with_all_addresses() {
    let r = CniResult {
        interfaces: vec![host("cni0")],
        ips: vec![
            ipc("10.5.0.2/24", Some("10.5.0.1"), None),
            ipc("10.6.0.2/24", None, Some(0)),
        ],
        routes: vec![route("0.0.0.0/0", Some("10.5.0.1"))],
        dns: Dns::default(),
    };
    let status = network_status(&[StatusInput {
        network: "default/legacy",
        is_default: true,
        result: &r,
        default_route: &[addr("10.5.0.1")],
        device_info: None,
    }]);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].interface, None);
    assert_eq!(status[0].mac, None);
    assert_eq!(status[0].ips, ["10.5.0.2", "10.6.0.2"]);
    assert!(status[0].default);
    assert_eq!(status[0].gateway, ["10.5.0.1"]);
    assert_eq!(status[0].default_route, ["10.5.0.1"]);
}

#[test]
fn addresses_of_host_interfaces_are_not_pod_addresses() {
    let r = CniResult {
        interfaces: vec![host("br0"), pod("eth0", "02:00:00:00:00:01")],
        ips: vec![
            ipc("10.7.0.1/24", None, Some(0)),
            ipc("10.7.0.2/24", None, Some(1)),
        ],
        ..CniResult::default()
    };
    let status = network_status(&[StatusInput {
        network: "a/b",
        is_default: false,
        result: &r,
        default_route: &[],
        device_info: None,
    }]);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].ips, ["10.7.0.2"]);
}

#[test]
fn merged_rich_pod() {
    let (c, m, d) = (cluster(), macvlan(), dual());
    let merged = merged_result(&[&c, &m, &d]);
    assert_eq!(merged.interfaces.len(), 6);
    assert_eq!(
        merged.ips.iter().map(|i| i.interface).collect::<Vec<_>>(),
        [Some(2), Some(2), Some(3), Some(4), Some(4), Some(5), None]
    );
    assert_eq!(
        merged.dns.nameservers,
        ["10.96.0.10".to_string(), "10.2.2.53".to_string()]
    );
    assert_eq!(merged.dns.domain.as_deref(), Some("cluster.local"));
    let v1 = merged.to_value(Version::V1_1_0);
    let v040 = merged.to_value(Version::V0_4_0);
    let v020 = merged.to_value(Version::V0_2_0);
    snapshots().bind(|| {
        insta::assert_json_snapshot!("status__merged_rich_pod_v1_1_0", v1);
        insta::assert_json_snapshot!("status__merged_rich_pod_v0_4_0", v040);
        insta::assert_json_snapshot!("status__merged_rich_pod_v0_2_0", v020);
    });
}

#[test]
fn merge_drops_an_index_that_would_point_into_a_neighbour() {
    let a = CniResult {
        interfaces: vec![pod("eth0", "02:00:00:00:00:01")],
        ips: vec![ipc("10.0.0.2/24", None, Some(1))],
        ..CniResult::default()
    };
    let b = CniResult {
        interfaces: vec![pod("net1", "02:00:00:00:00:02")],
        ..CniResult::default()
    };
    let merged = merged_result(&[&a, &b]);
    assert_eq!(merged.ips[0].interface, None);
    assert_eq!(merged_result(&[]), CniResult::default());
}

// --- properties ----------------------------------------------------------------------------

fn arb_result() -> impl Strategy<Value = CniResult> {
    (0usize..4, proptest::collection::vec(any::<bool>(), 4)).prop_flat_map(|(n, in_pod)| {
        let interfaces: Vec<Interface> = (0..n)
            .map(|i| {
                if in_pod[i] {
                    pod(&format!("net{i}"), "02:00:00:00:00:01")
                } else {
                    host(&format!("veth{i}"))
                }
            })
            .collect();
        let index = proptest::option::of(0..n + 1);
        let ip = (any::<[u8; 4]>(), 8u8..=32, index).prop_map(|(a, p, interface)| IpConfig {
            address: IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap()),
            gateway: None,
            interface,
        });
        let ns = proptest::collection::vec("[a-c]", 0..3);
        (
            Just(interfaces),
            proptest::collection::vec(ip, 0..5),
            ns.clone(),
            ns,
        )
            .prop_map(|(interfaces, ips, nameservers, search)| CniResult {
                interfaces,
                ips,
                routes: vec![],
                dns: Dns {
                    nameservers,
                    search,
                    ..Dns::default()
                },
            })
    })
}

proptest! {
    #[test]
    fn merge_keeps_every_address_on_the_same_interface(rs in proptest::collection::vec(arb_result(), 0..4)) {
        let refs: Vec<&CniResult> = rs.iter().collect();
        let merged = merged_result(&refs);
        prop_assert_eq!(merged.interfaces.len(), rs.iter().map(|r| r.interfaces.len()).sum::<usize>());
        let mut k = 0;
        for r in &rs {
            for ip in &r.ips {
                let m = &merged.ips[k];
                prop_assert_eq!(m.address, ip.address);
                let before = ip.interface.and_then(|i| r.interfaces.get(i));
                let after = m.interface.map(|i| &merged.interfaces[i]);
                prop_assert_eq!(before, after);
                k += 1;
            }
            for s in &r.dns.nameservers {
                prop_assert!(merged.dns.nameservers.contains(s));
            }
        }
        prop_assert_eq!(k, merged.ips.len());
        let unique: std::collections::HashSet<&String> = merged.dns.search.iter().collect();
        prop_assert_eq!(unique.len(), merged.dns.search.len());
    }

    #[test]
    fn status_never_drops_an_index_less_address(rs in proptest::collection::vec(arb_result(), 1..4)) {
        let inputs: Vec<StatusInput<'_>> = rs
            .iter()
            .enumerate()
            .map(|(i, r)| StatusInput {
                network: "ns/net",
                is_default: i == 0,
                result: r,
                default_route: &[],
                device_info: None,
            })
            .collect();
        let status = network_status(&inputs);
        prop_assert_eq!(status.iter().filter(|s| s.default).count(), 1);
        let all: Vec<String> = status.iter().flat_map(|s| s.ips.iter().cloned()).collect();
        for r in &rs {
            let pods = r.sandbox_interfaces().count();
            for ip in &r.ips {
                let text = ip.address.addr().to_string();
                let to_pod = match ip.interface {
                    None => true,
                    // An index past the interfaces says nothing, like no index.
                    Some(i) => pods == 0 || r.interfaces.get(i).is_none_or(|f| f.sandbox.is_some()),
                };
                if to_pod {
                    prop_assert!(all.contains(&text), "{} missing", text);
                }
            }
        }
        let expected: usize = rs.iter().map(|r| r.sandbox_interfaces().count().max(1)).sum();
        prop_assert_eq!(status.len(), expected);
    }
}
