use super::*;
use proptest::prelude::*;

fn parse(s: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    parse_networks(s, "pod-ns")
}

fn err(s: &str) -> String {
    match parse(s) {
        Ok(v) => panic!("{s:?} parsed as {v:?}"),
        Err(e) => {
            assert_eq!(e.code(), 7);
            e.to_string()
        }
    }
}

#[test]
fn blank_annotation_selects_nothing() {
    assert_eq!(parse("").unwrap(), vec![]);
    assert_eq!(parse("  \n\t").unwrap(), vec![]);
    assert_eq!(parse("[]").unwrap(), vec![]);
}

#[test]
fn comma_form_defaults_namespace_and_reads_ifname() {
    let v = parse(" macvlan-a , other-ns/sriov-b@data0,c@net5 ").unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].key(), "pod-ns/macvlan-a");
    assert_eq!(v[0].interface, None);
    assert_eq!(v[1].key(), "other-ns/sriov-b");
    assert_eq!(v[1].interface.as_ref().map(|i| i.as_str()), Some("data0"));
    assert_eq!(v[2].key(), "pod-ns/c");
    assert_eq!(v[2].interface.as_ref().map(|i| i.as_str()), Some("net5"));
}

#[test]
fn comma_form_rejects_malformed_items() {
    for bad in [
        "a/b/c",
        "n@x@y",
        "Net_1",
        "a,,b",
        "a,",
        "/a",
        "ns/",
        "../x",
        "a%2Fb/x",
        "a@",
        "a@lo",
        "a@abcdefghijklmnop",
        "a@eth0:1",
        "a b",
        &"a".repeat(254),
    ] {
        let msg = err(bad);
        assert!(msg.contains("element "), "{bad}: {msg}");
    }
    let msg = err("ok, Bad");
    assert!(msg.contains("element 1 (\"Bad\"): name"), "{msg}");
    let msg = err("a@x@y");
    assert!(msg.contains("interface"), "{msg}");
}

#[test]
fn json_form_reads_every_key() {
    let v = parse(
        r#"[{"name":"net-b","namespace":"ns2","interface":"data0",
            "ips":["10.2.2.42/24","2001:db8::5"],"mac":"02:23:45:67:89:AB",
            "default-route":["10.2.2.1"],"cni-args":{"spoofchk":"on"},
            "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
            "bandwidth":{"ingressRate":2048,"ingressBurst":300,"egressRate":8000,"egressBurst":200},
            "deviceID":"0000:18:02.5","x.example.com/extra":1},
           {"name":"ib-net","infiniband-guid":"24:8A:07:03:00:8d:ae:2f"},
           {"name":"tenantblue","ipam-claim-reference":"vm123.tenantblue","interfaceRequest":"ib9"}]"#,
    )
    .unwrap();
    assert_eq!(v.len(), 3);
    let b = &v[0];
    assert_eq!(b.key(), "ns2/net-b");
    assert_eq!(b.interface.as_ref().map(|i| i.as_str()), Some("data0"));
    assert_eq!(b.ips, vec!["10.2.2.42/24", "2001:db8::5"]);
    assert_eq!(b.mac.as_deref(), Some("02:23:45:67:89:ab"));
    assert_eq!(b.default_route, vec!["10.2.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(b.cni_args.as_ref().unwrap()["spoofchk"], "on");
    assert_eq!(b.port_mappings.len(), 1);
    assert_eq!(b.bandwidth.as_ref().unwrap()["egressBurst"], 200);
    assert_eq!(b.device_id.as_deref(), Some("0000:18:02.5"));
    assert_eq!(v[1].key(), "pod-ns/ib-net");
    assert_eq!(
        v[1].infiniband_guid.as_deref(),
        Some("24:8a:07:03:00:8d:ae:2f")
    );
    assert_eq!(
        v[2].ipam_claim_reference.as_deref(),
        Some("vm123.tenantblue")
    );
    assert_eq!(v[2].interface.as_ref().map(|i| i.as_str()), Some("ib9"));
}

#[test]
fn json_empty_and_null_optional_values_count_as_absent() {
    let v = parse(r#"[{"name":"a","namespace":"","mac":null,"interface":"","ips":null}]"#).unwrap();
    assert_eq!(v[0].namespace, "pod-ns");
    assert_eq!(v[0].mac, None);
    assert_eq!(v[0].interface, None);
    assert!(v[0].ips.is_empty());
}

#[test]
fn json_errors_name_element_and_field() {
    let cases: &[(&str, &str)] = &[
        (r#"[{"#, "not valid JSON"),
        (
            r#"{"name":"a"}"#,
            "must be a JSON list of objects, not an object",
        ),
        (r#""a""#, "not a string"),
        (r#"["a"]"#, "element 0 (unnamed): element: is a string"),
        (r#"[{"name":"a","name":"b"}]"#, "duplicate key"),
        (
            r#"[{"namespace":"x"}]"#,
            "element 0 (unnamed): name: is missing",
        ),
        (r#"[{"name":7}]"#, "name: is a number"),
        (r#"[{"name":"Net_1"}]"#, "element 0 (\"Net_1\"): name"),
        (r#"[{"name":"a","namespace":"a/b"}]"#, "namespace"),
        (r#"[{"name":"a","namespace":".."}]"#, "namespace"),
        (r#"[{"name":"a","interface":"lo"}]"#, "interface: \"lo\""),
        (r#"[{"name":"a","interface":"net1\n"}]"#, "interface"),
        (
            r#"[{"name":"a","interface":"abcdefghijklmnop"}]"#,
            "interface",
        ),
        (
            r#"[{"name":"a","interface":"x","interfaceRequest":"y"}]"#,
            "both interface",
        ),
        (
            r#"[{"name":"a","interfaceRequest":"a/b"}]"#,
            "interfaceRequest",
        ),
        (
            r#"[{"name":"a","mac":"ff:ff:ff:ff:ff:ff"}]"#,
            "mac: \"ff:ff:ff:ff:ff:ff\" is a multicast",
        ),
        (r#"[{"name":"a","mac":"01:00:5e:00:00:01"}]"#, "mac"),
        (r#"[{"name":"a","mac":"00:00:00:00:00:00"}]"#, "mac"),
        (r#"[{"name":"a","mac":"zz:00:00:00:00:01"}]"#, "mac"),
        (r#"[{"name":"a","ips":["10.0.0.1/33"]}]"#, "ips: entry 0"),
        (r#"[{"name":"a","ips":["300.1.1.1"]}]"#, "ips"),
        (r#"[{"name":"a","ips":["fe80::1%eth0"]}]"#, "ips"),
        (
            r#"[{"name":"a","ips":"10.0.0.1"}]"#,
            "ips: is a string, not a list",
        ),
        (r#"[{"name":"a","ips":[1]}]"#, "ips: entry 0 is a number"),
        (
            r#"[{"name":"a","ips":["10.0.0.1/24","10.0.0.1"]}]"#,
            "listed twice",
        ),
        (
            r#"[{"name":"a","ips":["10.0.0.1"],"ipam-claim-reference":"c"}]"#,
            "ipam-claim-reference: cannot be combined with ips",
        ),
        (
            r#"[{"name":"a","ipam-claim-reference":"A b"}]"#,
            "ipam-claim-reference",
        ),
        (
            r#"[{"name":"a","default-route":["10.0.0.0/8"]}]"#,
            "default-route: entry 0",
        ),
        (r#"[{"name":"a","default-route":["x"]}]"#, "default-route"),
        (
            r#"[{"name":"a","cni-args":"x"}]"#,
            "cni-args: is a string, not an object",
        ),
        (r#"[{"name":"a","cni-args":[1]}]"#, "cni-args"),
        (
            r#"[{"name":"a","portMappings":[{"hostPort":0,"containerPort":80}]}]"#,
            "portMappings: entry 0: hostPort",
        ),
        (
            r#"[{"name":"a","portMappings":[{"hostPort":80,"containerPort":70000}]}]"#,
            "containerPort",
        ),
        (
            r#"[{"name":"a","portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}]"#,
            "protocol",
        ),
        (
            r#"[{"name":"a","portMappings":[1]}]"#,
            "portMappings: entry 0: entry is not an object",
        ),
        (
            r#"[{"name":"a","bandwidth":{"ingressRate":-1}}]"#,
            "bandwidth: ingressRate",
        ),
        (r#"[{"name":"a","bandwidth":"fast"}]"#, "bandwidth"),
        (
            r#"[{"name":"a","infiniband-guid":"24:8a:07:03:00:8d:ae"}]"#,
            "infiniband-guid",
        ),
        (r#"[{"name":"a","deviceID":"a b"}]"#, "deviceID"),
        (
            r#"[{"name":"a"},{"name":"b","mac":1}]"#,
            "element 1 (\"b\"): mac: is a number",
        ),
    ];
    for (input, want) in cases {
        let msg = err(input);
        assert!(msg.contains(want), "{input}: {msg:?} lacks {want:?}");
        assert!(
            msg.starts_with("annotation k8s.v1.cni.cncf.io/networks: "),
            "{msg}"
        );
    }
}

#[test]
fn cross_element_rules() {
    let msg = err(r#"[{"name":"a","interface":"data0"},{"name":"b","interface":"data0"}]"#);
    assert!(
        msg.contains("elements 0 and 1 both request interface data0"),
        "{msg}"
    );
    let msg = err("a@x,b@x");
    assert!(msg.contains("elements 0 and 1"), "{msg}");
    let msg = err(
        r#"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.1.0.1"]}]"#,
    );
    assert!(
        msg.contains("element 1 (\"b\"): default-route: a second IPv4 gateway"),
        "{msg}"
    );
    let msg = err(r#"[{"name":"a","default-route":["10.0.0.1","10.0.0.2"]}]"#);
    assert!(msg.contains("element 0"), "{msg}");
    // One gateway per family may come from different networks.
    let v = parse(
        r#"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["fd00::1"]}]"#,
    )
    .unwrap();
    assert_eq!(v.len(), 2);
}

#[test]
fn limits_are_enforced() {
    let names: Vec<String> = (0..=MAX_SELECTIONS).map(|i| format!("n{i}")).collect();
    assert!(err(&names.join(",")).contains("33 networks, more than 32"));
    assert_eq!(parse(&names[..MAX_SELECTIONS].join(",")).unwrap().len(), 32);
    let json: Vec<String> = names
        .iter()
        .map(|n| format!("{{\"name\":\"{n}\"}}"))
        .collect();
    assert!(err(&format!("[{}]", json.join(","))).contains("more than 32"));
    let huge = format!(
        "[{{\"name\":\"a\",\"x\":\"{}\"}}]",
        "y".repeat(MAX_ANNOTATION_BYTES)
    );
    assert!(err(&huge).contains("larger than 262144 bytes"));
    let ips: Vec<String> = (0..=MAX_LIST_ENTRIES)
        .map(|i| format!("\"10.0.{}.{}\"", i / 250, i % 250))
        .collect();
    assert!(
        err(&format!("[{{\"name\":\"a\",\"ips\":[{}]}}]", ips.join(",")))
            .contains("more than 64 entries")
    );
}

#[test]
fn error_messages_escape_control_characters() {
    let msg = err("[{\"name\":\"a\\u001b[31m\\nb\"}]");
    assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg:?}");
}

#[test]
fn default_network_needs_exactly_one() {
    let d = parse_default_network("calico", "kube-system").unwrap();
    assert_eq!(d.key(), "kube-system/calico");
    let d = parse_default_network(r#"[{"name":"x","namespace":"n"}]"#, "kube-system").unwrap();
    assert_eq!(d.key(), "n/x");
    for (bad, want) in [
        ("a,b", "found 2"),
        ("", "found 0"),
        ("[]", "found 0"),
        ("A", "name"),
    ] {
        let e = parse_default_network(bad, "kube-system").unwrap_err();
        assert_eq!(e.code(), 7);
        let msg = e.to_string();
        assert!(
            msg.starts_with("annotation v1.multus-cni.io/default-network: "),
            "{msg}"
        );
        assert!(msg.contains(want), "{bad}: {msg}");
    }
}

/// The comma form of selections that only carry name, namespace and interface.
fn format_comma(list: &[NetworkSelection]) -> String {
    list.iter()
        .map(|s| {
            let mut out = format!("{}/{}", s.namespace, s.name);
            if let Some(i) = &s.interface {
                out.push('@');
                out.push_str(i.as_str());
            }
            out
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?"
}

fn selection() -> impl Strategy<Value = NetworkSelection> {
    (
        prop::collection::vec(label(), 1..4),
        label(),
        prop::option::of("[a-z][a-z0-9_.-]{0,14}"),
    )
        .prop_filter_map("loopback is refused", |(name, ns, ifname)| {
            let mut s = NetworkSelection::named(name.join("."), ns);
            match ifname.as_deref() {
                Some("lo") => return None,
                Some(i) => s.interface = Some(cni::IfName::parse(i).ok()?),
                None => {}
            }
            Some(s)
        })
}

proptest! {
    #[test]
    fn comma_form_round_trips(list in prop::collection::vec(selection(), 1..=MAX_SELECTIONS)) {
        let mut seen = std::collections::HashSet::new();
        let list: Vec<_> = list
            .into_iter()
            .filter(|s| s.interface.as_ref().is_none_or(|i| seen.insert(i.clone())))
            .collect();
        let text = format_comma(&list);
        prop_assert_eq!(parse_networks(&text, "elsewhere").unwrap(), list);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = parse_networks(&s, "ns");
        let _ = parse_default_network(&s, "ns");
    }

    #[test]
    fn json_like_text_never_panics(s in r#"[\[\]{}",:a-z0-9@/ .-]{0,120}"#) {
        if let Err(e) = parse_networks(&s, "ns") {
            prop_assert_eq!(e.code(), 7);
        }
    }
}

/// Values worth throwing at any key: valid ones for some keys, wrong types, edge cases.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        Just(Value::from("")),
        Just(Value::from("net-a")),
        Just(Value::from("Net_A")),
        Just(Value::from("eth0")),
        Just(Value::from("lo")),
        Just(Value::from("02:23:45:67:89:ab")),
        Just(Value::from("ff:ff:ff:ff:ff:ff")),
        Just(Value::from("24:8a:07:03:00:8d:ae:2f")),
        Just(Value::from("10.1.0.5/24")),
        Just(Value::from("10.1.0.5/33")),
        Just(Value::from("fe80::1%eth0")),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(80)),
        Just(Value::from(70000)),
        Just(Value::from(1.5)),
        Just(Value::from(true)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("hostPort".to_string()),
                        Just("containerPort".to_string()),
                        Just("protocol".to_string()),
                        Just("ingressRate".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn any_element() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("name"),
        Just("namespace"),
        Just("interface"),
        Just("interfaceRequest"),
        Just("ips"),
        Just("mac"),
        Just("default-route"),
        Just("portMappings"),
        Just("bandwidth"),
        Just("cni-args"),
        Just("infiniband-guid"),
        Just("ipam-claim-reference"),
        Just("deviceID"),
        Just("x.example.com/other"),
    ];
    prop::collection::vec((key, any_value()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

proptest! {
    #[test]
    fn arbitrary_json_elements_are_validated_or_refused(
        list in prop::collection::vec(any_element(), 0..4)
    ) {
        let text = Value::Array(list).to_string();
        match parse_networks(&text, "pod-ns") {
            Err(e) => {
                prop_assert_eq!(e.code(), 7);
                prop_assert!(e.to_string().starts_with("annotation k8s.v1.cni.cncf.io/networks: "));
            }
            Ok(sels) => {
                for s in sels {
                    prop_assert!(fields::dns_subdomain(&s.name).is_ok());
                    prop_assert!(fields::dns_label(&s.namespace).is_ok());
                    if let Some(m) = &s.mac {
                        prop_assert_eq!(fields::mac(m), Ok(m.clone()));
                    }
                    for ip in &s.ips {
                        prop_assert!(fields::ip_with_prefix(ip).is_ok());
                    }
                    prop_assert!(s.ips.is_empty() || s.ipam_claim_reference.is_none());
                    prop_assert!(s.interface.as_ref().is_none_or(|i| i.as_str() != "lo"));
                }
            }
        }
    }
}

#[test]
fn port_mappings_and_bandwidth_in_go_spelling_are_read_and_respelled() {
    let v = parse_networks(
        r#"[{"name":"a","portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp"}],
             "bandwidth":{"IngressRate":2048,"EgressBurst":200}}]"#,
        "default",
    )
    .unwrap();
    assert_eq!(
        v[0].port_mappings,
        vec![serde_json::json!({"hostPort":8080,"containerPort":80,"protocol":"tcp"})]
    );
    assert_eq!(
        v[0].bandwidth,
        Some(serde_json::json!({"ingressRate":2048,"egressBurst":200}))
    );
    let e = parse_networks(
        r#"[{"name":"a","portMappings":[{"HostPort":0,"ContainerPort":80}]}]"#,
        "default",
    )
    .unwrap_err();
    assert!(e.to_string().contains("hostPort"), "{e}");
}

/// The JSON form of a selection, every field it carries written out.
fn format_json(list: &[NetworkSelection]) -> String {
    let elements: Vec<Value> = list
        .iter()
        .map(|s| {
            let mut e = serde_json::Map::new();
            e.insert("name".into(), s.name.clone().into());
            e.insert("namespace".into(), s.namespace.clone().into());
            if let Some(i) = &s.interface {
                e.insert("interface".into(), i.as_str().into());
            }
            if !s.ips.is_empty() {
                e.insert("ips".into(), s.ips.clone().into());
            }
            if let Some(m) = &s.mac {
                e.insert("mac".into(), m.clone().into());
            }
            if !s.default_route.is_empty() {
                let gws: Vec<String> = s.default_route.iter().map(|g| g.to_string()).collect();
                e.insert("default-route".into(), gws.into());
            }
            if let Some(a) = &s.cni_args {
                e.insert("cni-args".into(), Value::Object(a.clone()));
            }
            Value::Object(e)
        })
        .collect();
    Value::Array(elements).to_string()
}

fn rich_selection() -> impl Strategy<Value = NetworkSelection> {
    let ip = (1u8..=223, any::<u8>(), any::<u8>(), 1u8..=254, 8u8..=32)
        .prop_map(|(a, b, c, d, len)| format!("{a}.{b}.{c}.{d}/{len}"));
    // Locally administered unicast: never all-zero, broadcast or multicast.
    let mac = ("[0-9a-f][26ae]", prop::collection::vec("[0-9a-f]{2}", 5))
        .prop_map(|(first, rest)| format!("{first}:{}", rest.join(":")));
    let gw = (1u8..=223, any::<u8>(), any::<u8>(), 1u8..=254)
        .prop_map(|(a, b, c, d)| IpAddr::from([a, b, c, d]));
    let args = prop::collection::btree_map("[a-z]{1,6}", "\\PC{0,8}", 0..3).prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<serde_json::Map<String, Value>>()
    });
    (
        selection(),
        prop::collection::vec(ip, 0..3),
        prop::option::of(mac),
        prop::option::of(gw),
        prop::option::of(args),
    )
        .prop_map(|(mut s, ips, mac, gw, args)| {
            s.ips = ips;
            s.mac = mac;
            s.default_route = gw.into_iter().collect();
            s.cni_args = args;
            s
        })
}

proptest! {
    /// The JSON form is read losslessly: what it says comes back field for field.
    #[test]
    fn json_form_round_trips(list in prop::collection::vec(rich_selection(), 1..=8)) {
        let mut seen = std::collections::HashSet::new();
        let list: Vec<_> = list
            .into_iter()
            .filter(|s| s.interface.as_ref().is_none_or(|i| seen.insert(i.clone())))
            .collect();
        // One default-route owner per family, or the annotation is refused.
        let mut list = list;
        let mut owner = false;
        for s in &mut list {
            if owner {
                s.default_route.clear();
            }
            owner |= !s.default_route.is_empty();
        }
        let text = format_json(&list);
        prop_assert_eq!(parse_networks(&text, "elsewhere").unwrap(), list, "{}", text);
    }
}
