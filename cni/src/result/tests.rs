use super::*;
use proptest::prelude::*;
use serde_json::json;

fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(dst: &str, gw: Option<&str>) -> Route {
    Route {
        dst: net(dst),
        gw: gw.map(ip),
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    }
}

/// Host veth + pod eth0, dual stack plus a second v4 address, three routes (one with every
/// 1.1.0 extra), full DNS.
fn rich() -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: "veth1a2b3c".into(),
                mac: Some("6e:1f:00:aa:bb:01".into()),
                mtu: Some(1450),
                ..Interface::default()
            },
            Interface {
                name: "eth0".into(),
                mac: Some("0a:58:0a:01:00:05".into()),
                mtu: Some(1450),
                sandbox: Some("/var/run/netns/pod-1".into()),
                socket_path: Some("/run/vhost/pod-1.sock".into()),
                pci_id: Some("0000:18:02.5".into()),
            },
        ],
        ips: vec![
            IpConfig {
                address: net("10.1.0.5/16"),
                gateway: Some(ip("10.1.0.1")),
                interface: Some(1),
            },
            IpConfig {
                address: net("2001:db8::5/64"),
                gateway: Some(ip("2001:db8::1")),
                interface: Some(1),
            },
            IpConfig {
                address: net("10.2.0.5/24"),
                gateway: None,
                interface: Some(1),
            },
        ],
        routes: vec![
            Route {
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(100),
                table: Some(200),
                scope: Some(0),
                ..route("0.0.0.0/0", Some("10.1.0.1"))
            },
            route("::/0", Some("2001:db8::1")),
            route("192.168.0.0/16", Some("10.2.0.1")),
        ],
        dns: Dns {
            nameservers: vec!["10.96.0.10".into(), "2001:db8::53".into()],
            domain: Some("cluster.local".into()),
            search: vec!["ns1.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        },
    }
}

#[test]
fn rich_result_snapshots_in_every_version() {
    let r = rich();
    for v in Version::ALL {
        let name = format!("result__rich_v{}", v.as_str().replace('.', "_"));
        let value = r.to_value(v);
        snapshots().bind(|| insta::assert_json_snapshot!(name, value));
    }
}

#[test]
fn cni_version_is_the_first_key_in_every_version() {
    for v in Version::ALL {
        let value = rich().to_value(v);
        let first = value.as_object().unwrap().keys().next().cloned();
        assert_eq!(first.as_deref(), Some("cniVersion"), "{v}");
        assert_eq!(value["cniVersion"], v.as_str());
    }
}

#[test]
fn parses_spec_example_v0_2_0() {
    // The spec at v0.2.0, its result.
    let value = json!({
        "cniVersion": "0.2.0",
        "ip4": {
            "ip": "10.1.0.5/16",
            "gateway": "10.1.0.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
        },
        "ip6": {"ip": "2001:db8::5/64", "routes": [{"dst": "::/0"}]},
        "dns": {"nameservers": ["10.1.0.1"]}
    });
    let (r, v) = CniResult::parse_any(&value).unwrap();
    assert_eq!(v, Version::V0_2_0);
    assert_eq!(
        r,
        CniResult {
            interfaces: vec![],
            ips: vec![
                IpConfig {
                    address: net("10.1.0.5/16"),
                    gateway: Some(ip("10.1.0.1")),
                    interface: None,
                },
                IpConfig {
                    address: net("2001:db8::5/64"),
                    gateway: None,
                    interface: None,
                },
            ],
            routes: vec![route("0.0.0.0/0", Some("10.1.0.1")), route("::/0", None)],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Dns::default()
            },
        }
    );
    assert_eq!(r.to_value(Version::V0_2_0), value);
}

#[test]
fn parses_v0_1_0_and_a_result_without_cni_version_as_0_1_0() {
    let value = json!({"ip4": {"ip": "10.1.0.5/16"}});
    let (r, v) = CniResult::parse_any(&value).unwrap();
    assert_eq!(v, Version::V0_1_0);
    assert_eq!(r.ips.len(), 1);
    assert_eq!(r.ips[0].address, net("10.1.0.5/16"));
    assert!(r.interfaces.is_empty() && r.routes.is_empty() && r.dns.is_empty());
}

#[test]
fn parses_spec_example_v0_3_1_with_ip_versions() {
    let value = json!({
        "cniVersion": "0.3.1",
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
        ],
        "ips": [
            {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
            {"version": "6", "address": "2001:db8::5/64", "interface": 1}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.1.0.1"], "search": ["example.com"]}
    });
    let r = CniResult::parse(&value, Version::V0_3_1).unwrap();
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(
        r.interfaces[1].sandbox.as_deref(),
        Some("/var/run/netns/blue")
    );
    assert_eq!(r.ips[0].interface, Some(1));
    assert_eq!(r.ips[1].gateway, None);
    assert_eq!(r.routes, vec![route("0.0.0.0/0", None)]);
    assert_eq!(r.dns.search, vec!["example.com".to_string()]);
    assert_eq!(r.to_value(Version::V0_3_1), value);
    assert_eq!(
        r.sandbox_interfaces().map(|(i, _)| i).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn v0_4_0_writes_an_empty_dns_object_and_1_0_0_omits_it() {
    let r = CniResult {
        ips: vec![IpConfig {
            address: net("10.1.0.5/16"),
            gateway: None,
            interface: None,
        }],
        ..CniResult::default()
    };
    assert_eq!(
        r.to_value(Version::V0_4_0),
        json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/16"}], "dns": {}})
    );
    assert_eq!(
        r.to_value(Version::V0_2_0),
        json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16"}, "dns": {}})
    );
    assert_eq!(
        r.to_value(Version::V1_0_0),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16"}]})
    );
}

#[test]
fn v1_0_0_drops_the_fields_1_1_0_added_when_read_and_written() {
    let value = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mtu": 9000, "sandbox": "/n", "pciID": "0000:00:01.0"}],
        "ips": [{"version": "4", "address": "10.1.0.5/16", "interface": 0}],
        "routes": [{"dst": "10.0.0.0/8", "gw": "10.1.0.1", "mtu": 1400, "table": 5}]
    });
    let r = CniResult::parse(&value, Version::V1_0_0).unwrap();
    assert_eq!(
        r.interfaces,
        vec![Interface {
            name: "eth0".into(),
            sandbox: Some("/n".into()),
            ..Interface::default()
        }]
    );
    assert_eq!(r.routes, vec![route("10.0.0.0/8", Some("10.1.0.1"))]);
    // 1.0.0 has no ips[].version.
    assert_eq!(
        r.to_value(Version::V1_0_0)["ips"],
        json!([{"interface": 0, "address": "10.1.0.5/16"}])
    );
}

#[test]
fn v1_1_0_keeps_interface_and_route_extras() {
    let value = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 9000,
                        "sandbox": "/n", "socketPath": "/s.sock", "pciID": "0000:00:01.0"}],
        "ips": [{"interface": 0, "address": "fd00::5/64", "gateway": "fd00::1"}],
        "routes": [{"dst": "fd00:1::/64", "gw": "fd00::1", "mtu": 1400, "advmss": 1340,
                    "priority": 10, "table": 100, "scope": 253}],
        "dns": {"nameservers": ["fd00::53"], "domain": "example", "search": ["a"], "options": ["ndots:2"]}
    });
    let (r, v) = CniResult::parse_any(&value).unwrap();
    assert_eq!(v, Version::V1_1_0);
    assert_eq!(r.interfaces[0].mtu, Some(9000));
    assert_eq!(r.interfaces[0].socket_path.as_deref(), Some("/s.sock"));
    assert_eq!(r.interfaces[0].pci_id.as_deref(), Some("0000:00:01.0"));
    assert_eq!(r.routes[0].scope, Some(253));
    assert_eq!(r.routes[0].table, Some(100));
    assert_eq!(r.dns.domain.as_deref(), Some("example"));
    assert_eq!(r.to_value(Version::V1_1_0), value);
}

#[test]
fn go_unset_values_read_as_none() {
    let value = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "", "mtu": 0, "sandbox": ""}],
        "ips": [{"address": "10.0.0.2/24", "gateway": ""}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "", "priority": 0, "table": 0, "scope": 0}],
        "dns": {"domain": ""}
    });
    let r = CniResult::parse(&value, Version::V1_1_0).unwrap();
    assert_eq!(
        r.interfaces[0],
        Interface {
            name: "eth0".into(),
            ..Interface::default()
        }
    );
    assert_eq!(r.ips[0].gateway, None);
    // table and scope are pointers in Go: zero is a real value there.
    assert_eq!(
        r.routes[0],
        Route {
            table: Some(0),
            scope: Some(0),
            ..route("0.0.0.0/0", None)
        }
    );
    assert!(r.dns.is_empty());
    assert_eq!(r.sandbox_interfaces().count(), 0);
}

#[test]
fn interface_index_past_the_interfaces_is_dropped() {
    let value = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/n"}],
        "ips": [{"address": "10.0.0.2/24", "interface": 3}, {"address": "10.0.0.3/24", "interface": 0}]
    });
    let r = CniResult::parse(&value, Version::V1_0_0).unwrap();
    assert_eq!(r.ips[0].interface, None);
    assert_eq!(r.ips[1].interface, Some(0));
    let mut built = r.clone();
    built.ips[1].interface = Some(7);
    assert_eq!(
        built.to_value(Version::V0_4_0)["ips"][1],
        json!({"version": "4", "address": "10.0.0.3/24"})
    );
}

#[test]
fn legacy_keeps_first_address_per_family_and_routes_of_present_families() {
    let r = CniResult {
        interfaces: vec![Interface {
            name: "eth0".into(),
            sandbox: Some("/n".into()),
            ..Interface::default()
        }],
        ips: vec![
            IpConfig {
                address: net("10.0.0.2/24"),
                gateway: Some(ip("10.0.0.1")),
                interface: Some(0),
            },
            IpConfig {
                address: net("10.0.1.2/24"),
                gateway: None,
                interface: Some(0),
            },
        ],
        routes: vec![
            route("::/0", Some("fd00::1")),
            Route {
                mtu: Some(1300),
                ..route("0.0.0.0/0", Some("10.0.0.1"))
            },
        ],
        dns: Dns::default(),
    };
    assert_eq!(
        r.to_value(Version::V0_2_0),
        json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]},
            "dns": {}
        })
    );
    let p = r.project(Version::V0_1_0);
    assert!(p.interfaces.is_empty());
    assert_eq!(p.ips.len(), 1);
    assert_eq!(p.ips[0].interface, None);
    assert_eq!(p.routes, vec![route("0.0.0.0/0", Some("10.0.0.1"))]);
}

#[test]
fn legacy_rendering_without_address_is_refused_by_try_to_value() {
    let r = CniResult::default();
    let err = r.try_to_value(Version::V0_2_0).unwrap_err();
    assert_eq!(err.code(), Code::IncompatibleVersion);
    assert_eq!(
        r.to_value(Version::V0_2_0),
        json!({"cniVersion": "0.2.0", "dns": {}})
    );
    assert_eq!(
        r.try_to_value(Version::V0_3_0).unwrap(),
        json!({"cniVersion": "0.3.0", "dns": {}})
    );
    assert_eq!(
        r.try_to_value(Version::V1_0_0).unwrap(),
        json!({"cniVersion": "1.0.0"})
    );
}

#[test]
fn decode_problems_are_code_6_and_unknown_versions_code_1() {
    let cases = [
        (
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}),
            6,
            "ips",
        ),
        (
            json!({"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]}),
            6,
            "interfaces",
        ),
        (
            json!({"cniVersion": "0.4.0", "routes": {"dst": "0.0.0.0/0"}}),
            6,
            "routes",
        ),
        (
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "nope"}}),
            6,
            "ip4",
        ),
        (
            json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "scope": 300}]}),
            6,
            "routes",
        ),
        (
            json!({"cniVersion": "1.1.0", "dns": {"nameservers": "10.0.0.1"}}),
            6,
            "dns",
        ),
        (json!({"cniVersion": 1}), 6, "cniVersion"),
        (json!({"cniVersion": "0.5.0"}), 1, "0.5.0"),
        (json!(["not", "an", "object"]), 6, "object"),
    ];
    for (value, code, mentions) in cases {
        let err = CniResult::parse_any(&value).unwrap_err();
        assert_eq!(err.code().as_u32(), code, "{value}: {err}");
        assert!(
            err.to_string().contains(mentions),
            "{err} should mention {mentions}"
        );
    }
    let err = CniResult::from_slice(b"{\"cniVersion\": ").unwrap_err();
    assert!(matches!(err, ResultError::Json(_)));
    assert_eq!(err.code(), Code::Decode);
}

#[test]
fn from_slice_reads_the_version_from_the_document() {
    let bytes = br#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}"#;
    let (r, v) = CniResult::from_slice(bytes).unwrap();
    assert_eq!(v, Version::V0_4_0);
    assert_eq!(r.ips[0].address, net("10.0.0.2/24"));
}

// --- property tests -------------------------------------------------------------------------

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, p)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap())),
        (any::<[u16; 8]>(), 0u8..=128)
            .prop_map(|(a, p)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), p).unwrap())),
    ]
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
    ]
}

fn arb_word() -> impl Strategy<Value = String> {
    "[a-z0-9:./-]{1,12}"
}

fn arb_interface() -> impl Strategy<Value = Interface> {
    (
        "[a-z][a-z0-9]{0,14}",
        proptest::option::of(arb_word()),
        proptest::option::of(1u32..65536),
        proptest::option::of(arb_word()),
        proptest::option::of(arb_word()),
        proptest::option::of(arb_word()),
    )
        .prop_map(|(name, mac, mtu, sandbox, socket_path, pci_id)| Interface {
            name,
            mac,
            mtu,
            sandbox,
            socket_path,
            pci_id,
        })
}

fn arb_route() -> impl Strategy<Value = Route> {
    (
        arb_net(),
        proptest::option::of(arb_addr()),
        proptest::option::of(1u32..10000),
        proptest::option::of(1u32..10000),
        proptest::option::of(1u32..10000),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(|(dst, gw, mtu, advmss, priority, table, scope)| Route {
            dst,
            gw,
            mtu,
            advmss,
            priority,
            table,
            scope,
        })
}

fn arb_dns() -> impl Strategy<Value = Dns> {
    (
        proptest::collection::vec(arb_word(), 0..3),
        proptest::option::of(arb_word()),
        proptest::collection::vec(arb_word(), 0..3),
        proptest::collection::vec(arb_word(), 0..3),
    )
        .prop_map(|(nameservers, domain, search, options)| Dns {
            nameservers,
            domain,
            search,
            options,
        })
}

/// Results already in normal form: every interface index valid, no Go-unset values.
fn arb_result() -> impl Strategy<Value = CniResult> {
    proptest::collection::vec(arb_interface(), 0..4).prop_flat_map(|interfaces| {
        let n = interfaces.len();
        let index = if n == 0 {
            Just(None).boxed()
        } else {
            proptest::option::of(0..n).boxed()
        };
        let ipc = (arb_net(), proptest::option::of(arb_addr()), index).prop_map(
            |(address, gateway, interface)| IpConfig {
                address,
                gateway,
                interface,
            },
        );
        (
            Just(interfaces),
            proptest::collection::vec(ipc, 0..5),
            proptest::collection::vec(arb_route(), 0..5),
            arb_dns(),
        )
            .prop_map(|(interfaces, ips, routes, dns)| CniResult {
                interfaces,
                ips,
                routes,
                dns,
            })
    })
}

fn arb_version() -> impl Strategy<Value = Version> {
    proptest::sample::select(Version::ALL.to_vec())
}

proptest! {
    #[test]
    fn current_version_round_trips_exactly(r in arb_result()) {
        let value = r.to_value(Version::V1_1_0);
        let (back, v) = CniResult::parse_any(&value).unwrap();
        prop_assert_eq!(v, Version::V1_1_0);
        prop_assert_eq!(back, r);
    }

    #[test]
    fn older_versions_read_back_as_the_projection(r in arb_result(), v in arb_version()) {
        let value = r.to_value(v);
        let text = serde_json::to_vec(&value).unwrap();
        let (back, read_v) = CniResult::from_slice(&text).unwrap();
        prop_assert_eq!(read_v, v);
        prop_assert_eq!(back, r.project(v));
    }

    #[test]
    fn up_then_down_is_stable(r in arb_result(), v in arb_version()) {
        let old = r.to_value(v);
        let up = CniResult::parse(&old, v).unwrap().to_value(Version::V1_1_0);
        let down = CniResult::parse(&up, Version::V1_1_0).unwrap().to_value(v);
        prop_assert_eq!(down, old);
    }

    #[test]
    fn stepwise_down_conversion_equals_direct(r in arb_result(), a in arb_version(), b in arb_version()) {
        let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
        prop_assert_eq!(r.project(hi).project(lo), r.project(lo));
    }

    #[test]
    fn legacy_keeps_at_most_one_address_per_family(r in arb_result(), v in arb_version()) {
        let p = r.project(v);
        if v.is_legacy_result() {
            prop_assert!(p.interfaces.is_empty());
            prop_assert!(p.ips.iter().filter(|i| is_v4(&i.address)).count() <= 1);
            prop_assert!(p.ips.iter().filter(|i| !is_v4(&i.address)).count() <= 1);
            for rt in &p.routes {
                prop_assert!(p.ips.iter().any(|i| is_v4(&i.address) == is_v4(&rt.dst)));
            }
        } else {
            prop_assert_eq!(p.ips.len(), r.ips.len());
            prop_assert_eq!(p.routes.len(), r.routes.len());
        }
        prop_assert_eq!(p.dns, r.dns);
    }
}
