//! The snapshot matrix: each case resolves its annotation against its own NADs, runs the
//! plan, asserts what the case is about, and snapshots the attachments (or the error) as
//! `plan__<case>`, with the input in the snapshot's `info` header.

use super::*;
use crate::selection::{parse_default_network, parse_networks};
use serde_json::json;

fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

const POD_NS: &str = "tenant";
const CLUSTER: &str = "kube-system/cluster";

type Outcome = Result<Vec<Attachment>, PlanError>;

struct Case {
    name: &'static str,
    what: &'static str,
    nads: Vec<(String, Value)>,
    annotation: String,
    default_network: Option<&'static str>,
    defaults: Vec<&'static str>,
    runtime: Value,
    devices: Vec<(&'static str, &'static str)>,
    pod: bool,
    /// Snapshot only network and interface of each attachment (for the long lists).
    compact: bool,
    check: fn(&Outcome),
}

impl Case {
    fn new(name: &'static str, what: &'static str, check: fn(&Outcome)) -> Case {
        Case {
            name,
            what,
            nads: vec![(
                CLUSTER.into(),
                json!({"cniVersion":"1.0.0","name":"cluster","type":"ptp",
                       "ipam":{"type":"host-local","subnet":"10.244.1.0/24"}}),
            )],
            annotation: String::new(),
            default_network: None,
            defaults: Vec::new(),
            runtime: json!({}),
            devices: Vec::new(),
            pod: true,
            compact: false,
            check,
        }
    }
    fn nad(mut self, key: &str, config: Value) -> Case {
        self.nads.retain(|(k, _)| k != key);
        self.nads.push((key.to_string(), config));
        self
    }
    fn annotation(mut self, a: impl Into<String>) -> Case {
        self.annotation = a.into();
        self
    }
    fn runtime(mut self, rc: Value) -> Case {
        self.runtime = rc;
        self
    }

    fn config(&self, key: &str) -> Map<String, Value> {
        let found = self.nads.iter().find(|(k, _)| k == key);
        match found.map(|(_, v)| v) {
            Some(Value::Object(m)) => m.clone(),
            _ => panic!("case {} has no object NAD {key}", self.name),
        }
    }

    fn resolve(&self, key: String, selection: Option<NetworkSelection>) -> ResolvedNetwork {
        ResolvedNetwork {
            config: self.config(&key),
            device_id: self
                .devices
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, d)| d.to_string()),
            key,
            selection,
        }
    }

    fn run(&self) -> Outcome {
        let cluster_sel = self
            .default_network
            .map(|a| parse_default_network(a, "kube-system").unwrap());
        let cluster_key = cluster_sel.as_ref().map_or(CLUSTER.into(), |s| s.key());
        let cluster = self.resolve(cluster_key, cluster_sel);
        let defaults: Vec<_> = self
            .defaults
            .iter()
            .map(|k| self.resolve(k.to_string(), None))
            .collect();
        let secondaries: Vec<_> = parse_networks(&self.annotation, POD_NS)
            .unwrap()
            .into_iter()
            .map(|s| self.resolve(s.key(), Some(s)))
            .collect();
        let eth0 = IfName::parse("eth0").unwrap();
        let runtime = self.runtime.as_object().unwrap().clone();
        plan(&PlanRequest {
            cluster: &cluster,
            defaults: &defaults,
            secondaries: &secondaries,
            runtime_ifname: &eth0,
            runtime_config: &runtime,
            pod: self.pod.then_some(PodIdentity {
                namespace: POD_NS,
                name: "web-0",
                uid: Some("6f1c1c3e-4a4f-4f4e-9c55-3a8e1f0b6a11"),
                infra_container_id: "c0ffee",
            }),
        })
    }

    fn input(&self) -> Value {
        json!({
            "annotation": self.annotation,
            "default_network": self.default_network,
            "defaults": self.defaults,
            "runtime_config": self.runtime,
            "devices": self.devices.iter().map(|(k, d)| json!({k.to_string(): d})).collect::<Vec<_>>(),
            "pod": self.pod,
            "nads": self.nads.iter().map(|(k, v)| json!({"key": k, "config": v})).collect::<Vec<_>>(),
        })
    }
}

fn ok(o: &Outcome) -> &[Attachment] {
    match o {
        Ok(a) => a,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn error(o: &Outcome) -> String {
    match o {
        Ok(a) => panic!("expected an error, got {} attachments", a.len()),
        Err(e) => {
            assert_eq!(e.code(), 7);
            e.to_string()
        }
    }
}

/// The plugin `i` of attachment `a` as JSON.
fn plugin(o: &Outcome, a: usize, i: usize) -> Value {
    Value::Object(ok(o)[a].conf.plugins[i].0.clone())
}

fn ifnames(o: &Outcome) -> Vec<String> {
    ok(o).iter().map(|a| a.ifname.to_string()).collect()
}

const MACVLAN: &str = "tenant/macvlan-a";

fn macvlan() -> Value {
    json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan","master":"eth1",
           "ipam":{"type":"host-local","subnet":"10.10.0.0/24"}})
}

fn macvlan_static(caps: Value) -> Value {
    json!({"cniVersion":"1.0.0","name":"macvlan-static","type":"macvlan","master":"eth1",
           "capabilities":caps,"ipam":{"type":"static"}})
}

fn chain(first_caps: Value, second_caps: Value) -> Value {
    json!({"cniVersion":"1.0.0","name":"chain","plugins":[
        {"type":"macvlan","master":"eth1","capabilities":first_caps,"ipam":{"type":"static"}},
        {"type":"tuning","capabilities":second_caps}]})
}

fn cases() -> Vec<Case> {
    vec![
        Case::new("single_conf", "one conf NAD becomes net1 with the pod's CNI_ARGS", |o| {
            assert_eq!(ifnames(o), ["eth0", "net1"]);
            let a = &ok(o)[1];
            assert_eq!(a.network, MACVLAN);
            assert!(!a.is_default && ok(o)[0].is_default);
            assert_eq!(
                a.cni_args,
                "IgnoreUnknown=true;K8S_POD_NAMESPACE=tenant;K8S_POD_NAME=web-0;\
                 K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=6f1c1c3e-4a4f-4f4e-9c55-3a8e1f0b6a11"
            );
        })
        .nad(MACVLAN, macvlan())
        .annotation("macvlan-a"),
        Case::new(
            "conflist_chain",
            "a macvlan+tuning conflist keeps both plugins in order, capabilities stripped",
            |o| {
                assert_eq!(ok(o)[1].conf.plugins.len(), 2);
                assert_eq!(plugin(o, 1, 0)["type"], "macvlan");
                assert_eq!(plugin(o, 1, 1)["type"], "tuning");
                assert!(plugin(o, 1, 1).get("capabilities").is_none());
                assert!(plugin(o, 1, 1).get("runtimeConfig").is_none());
            },
        )
        .nad("tenant/chain", chain(json!({"ips":true}), json!({"mac":true})))
        .annotation("chain"),
        Case::new(
            "ips_declared",
            "ips reach only the plugin declaring the ips capability, and CNI_ARGS IP=",
            |o| {
                assert_eq!(
                    plugin(o, 1, 0)["runtimeConfig"],
                    json!({"ips":["10.10.0.5/24","2001:db8::5/64"]})
                );
                assert!(plugin(o, 1, 1).get("runtimeConfig").is_none());
                assert!(ok(o)[1].cni_args.ends_with(";IP=10.10.0.5/24,2001:db8::5/64"));
            },
        )
        .nad("tenant/chain", chain(json!({"ips":true}), json!({"mac":true})))
        .annotation(r#"[{"name":"chain","ips":["10.10.0.5/24","2001:db8::5/64"]}]"#),
        Case::new("ips_undeclared", "ips on a NAD nobody declares ips for fails", |o| {
            assert_eq!(
                error(o),
                "network tenant/macvlan-a: the pod asks for ips but no plugin of the chain \
                 declares the \"ips\" capability"
            );
        })
        .nad(MACVLAN, macvlan())
        .annotation(r#"[{"name":"macvlan-a","ips":["10.10.0.5/24"]}]"#),
        Case::new(
            "mac_declared",
            "mac reaches only the tuning plugin that declares it, and CNI_ARGS MAC=",
            |o| {
                assert!(plugin(o, 1, 0).get("runtimeConfig").is_none());
                assert_eq!(plugin(o, 1, 1)["runtimeConfig"], json!({"mac":"02:23:45:67:89:ab"}));
                assert!(ok(o)[1].cni_args.ends_with(";MAC=02:23:45:67:89:ab"));
            },
        )
        .nad("tenant/chain", chain(json!({"ips":true}), json!({"mac":true})))
        .annotation(r#"[{"name":"chain","mac":"02:23:45:67:89:AB"}]"#),
        Case::new("mac_undeclared", "mac without a mac capability fails", |o| {
            assert!(error(o).contains("asks for mac but no plugin of the chain declares the \"mac\""));
        })
        .nad("tenant/chain", chain(json!({"ips":true}), json!({"mac":false})))
        .annotation(r#"[{"name":"chain","mac":"02:23:45:67:89:ab"}]"#),
        Case::new(
            "runtime_config_to_cluster",
            "the runtime's runtimeConfig reaches the cluster plugins per declared capability; \
             undeclared keys are dropped",
            |o| {
                assert_eq!(
                    plugin(o, 0, 0).get("runtimeConfig"),
                    None,
                    "bridge declares nothing"
                );
                assert_eq!(
                    plugin(o, 0, 1)["runtimeConfig"],
                    json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
                );
                assert_eq!(
                    plugin(o, 0, 2)["runtimeConfig"],
                    json!({"bandwidth":{"ingressRate":1000,"ingressBurst":100}})
                );
            },
        )
        .nad(
            CLUSTER,
            json!({"cniVersion":"1.0.0","name":"cluster","plugins":[
                {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.244.1.0/24"}},
                {"type":"portmap","capabilities":{"portMappings":true}},
                {"type":"bandwidth","capabilities":{"bandwidth":true}}]}),
        )
        .runtime(json!({
            "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
            "bandwidth":{"ingressRate":1000,"ingressBurst":100},
            "cgroupPath":"/kubepods/pod1"})),
        Case::new(
            "runtime_config_isolation",
            "the runtime's runtimeConfig never reaches a secondary, even one declaring every \
             capability",
            |o| {
                assert_eq!(
                    plugin(o, 0, 0)["runtimeConfig"],
                    json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
                           "ips":["10.244.1.9"],"mac":"0a:58:0a:f4:01:09"})
                );
                assert!(plugin(o, 1, 0).get("runtimeConfig").is_none());
            },
        )
        .nad(
            CLUSTER,
            json!({"cniVersion":"1.0.0","name":"cluster","type":"ptp",
                   "capabilities":{"portMappings":true,"ips":true,"mac":true},
                   "ipam":{"type":"host-local","subnet":"10.244.1.0/24"}}),
        )
        .nad(
            MACVLAN,
            macvlan_static(json!({"portMappings":true,"ips":true,"mac":true,"bandwidth":true,
                                  "dns":true,"aliases":true,"cgroupPath":true})),
        )
        .annotation("macvlan-a")
        .runtime(json!({
            "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
            "ips":["10.244.1.9"],"mac":"0a:58:0a:f4:01:09",
            "dns":{"nameservers":["10.96.0.10"]},"aliases":{"cluster":["web"]},
            "cgroupPath":"/kubepods/pod1"})),
        Case::new(
            "port_mappings_selection",
            "portMappings from the selection go to the secondary's portmap plugin only",
            |o| {
                assert!(plugin(o, 0, 0).get("runtimeConfig").is_none());
                assert_eq!(
                    plugin(o, 1, 1)["runtimeConfig"],
                    json!({"portMappings":[{"hostPort":9090,"containerPort":90,"protocol":"UDP"}]})
                );
            },
        )
        .nad(
            "tenant/with-portmap",
            json!({"cniVersion":"1.0.0","name":"with-portmap","plugins":[
                {"type":"bridge","bridge":"br-a","ipam":{"type":"host-local","subnet":"10.20.0.0/24"}},
                {"type":"portmap","capabilities":{"portMappings":true}}]}),
        )
        .annotation(
            r#"[{"name":"with-portmap","portMappings":[{"hostPort":9090,"containerPort":90,"protocol":"UDP"}]}]"#,
        ),
        Case::new("bandwidth", "bandwidth from the selection reaches the bandwidth plugin", |o| {
            assert_eq!(
                plugin(o, 1, 1)["runtimeConfig"],
                json!({"bandwidth":{"ingressRate":2048,"ingressBurst":300,"egressRate":8000,"egressBurst":200}})
            );
        })
        .nad(
            "tenant/shaped",
            json!({"cniVersion":"1.0.0","name":"shaped","plugins":[
                {"type":"macvlan","master":"eth1","ipam":{"type":"host-local","subnet":"10.30.0.0/24"}},
                {"type":"bandwidth","capabilities":{"bandwidth":true}}]}),
        )
        .annotation(
            r#"[{"name":"shaped","bandwidth":{"ingressRate":2048,"ingressBurst":300,"egressRate":8000,"egressBurst":200}}]"#,
        ),
        Case::new(
            "cni_args_merge",
            "cni-args are added to every plugin's args.cni next to the NAD's own keys",
            |o| {
                assert_eq!(
                    plugin(o, 1, 0)["args"],
                    json!({"cni":{"labels":[{"key":"a","value":"b"}],"spoofchk":"on"}})
                );
                assert_eq!(plugin(o, 1, 1)["args"], json!({"cni":{"spoofchk":"on"}}));
            },
        )
        .nad(
            "tenant/chain",
            json!({"cniVersion":"1.0.0","name":"chain","plugins":[
                {"type":"macvlan","master":"eth1","args":{"cni":{"labels":[{"key":"a","value":"b"}]}},
                 "ipam":{"type":"host-local","subnet":"10.10.0.0/24"}},
                {"type":"tuning"}]}),
        )
        .annotation(r#"[{"name":"chain","cni-args":{"spoofchk":"on"}}]"#),
        Case::new(
            "cni_args_no_override",
            "a cni-args key the NAD already sets to another value fails instead of overriding",
            |o| {
                let msg = error(o);
                assert!(msg.starts_with("network tenant/macvlan-a: cni-args: key \"mode\""), "{msg}");
                assert!(msg.contains("\"bridge\""), "{msg}");
            },
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan","master":"eth1",
                   "args":{"cni":{"mode":"bridge"}},"ipam":{"type":"host-local","subnet":"10.10.0.0/24"}}),
        )
        .annotation(r#"[{"name":"macvlan-a","cni-args":{"mode":"private"}}]"#),
        Case::new(
            "cni_args_same_value",
            "repeating a NAD's args.cni key with the same value is accepted",
            |o| {
                assert_eq!(plugin(o, 1, 0)["args"], json!({"cni":{"mode":"bridge","extra":1}}));
            },
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan","master":"eth1",
                   "args":{"cni":{"mode":"bridge"}},"ipam":{"type":"host-local","subnet":"10.10.0.0/24"}}),
        )
        .annotation(r#"[{"name":"macvlan-a","cni-args":{"mode":"bridge","extra":1}}]"#),
        Case::new(
            "cni_args_ips_undeclared",
            "cni-args.ips (read by host-local) needs the ips capability like ips does",
            |o| assert!(error(o).contains("asks for cni-args.ips but no plugin")),
        )
        .nad(MACVLAN, macvlan())
        .annotation(r#"[{"name":"macvlan-a","cni-args":{"ips":["10.10.0.9"]}}]"#),
        Case::new("nad_without_name", "a conf without name gets the NAD's name", |o| {
            assert_eq!(ok(o)[1].conf.name, "unnamed");
            assert_eq!(plugin(o, 1, 0)["name"], "unnamed");
        })
        .nad(
            "tenant/unnamed",
            json!({"cniVersion":"1.0.0","type":"macvlan","master":"eth1",
                   "ipam":{"type":"host-local","subnet":"10.10.0.0/24"}}),
        )
        .annotation("unnamed"),
        Case::new(
            "explicit_name_kept",
            "a conf's own name is kept even when it differs from the NAD's",
            |o| assert_eq!(ok(o)[1].conf.name, "macvlan-a"),
        )
        .nad("tenant/other-nad", macvlan())
        .annotation("other-nad"),
        Case::new(
            "explicit_interface",
            "an interface named in the annotation is used; others keep their position number",
            |o| assert_eq!(ifnames(o), ["eth0", "data0", "net2"]),
        )
        .nad(MACVLAN, macvlan())
        .annotation("macvlan-a@data0, macvlan-a"),
        Case::new(
            "same_nad_twice",
            "the same NAD twice is two attachments, net1 and net2",
            |o| {
                assert_eq!(ifnames(o), ["eth0", "net1", "net2"]);
                assert_eq!(ok(o)[1].conf, ok(o)[2].conf);
            },
        )
        .nad(MACVLAN, macvlan())
        .annotation("macvlan-a,tenant/macvlan-a"),
        Case {
            defaults: vec!["kube-system/monitoring"],
            ..Case::new(
                "defaults_then_secondaries",
                "defaultNetworks come right after the cluster network and count in netN",
                |o| {
                    assert_eq!(ifnames(o), ["eth0", "net1", "net2"]);
                    assert_eq!(ok(o)[1].network, "kube-system/monitoring");
                    assert_eq!(ok(o)[2].network, MACVLAN);
                },
            )
            .nad(
                "kube-system/monitoring",
                json!({"cniVersion":"0.4.0","name":"monitoring","type":"bridge","bridge":"mon0",
                       "ipam":{"type":"host-local","subnet":"10.99.0.0/16"}}),
            )
            .nad(MACVLAN, macvlan())
            .annotation("macvlan-a")
        },
        Case::new(
            "duplicate_ifname",
            "an interface requested later that an earlier attachment got by number fails",
            |o| {
                assert_eq!(
                    error(o),
                    "network tenant/macvlan-a (attachment 2): interface net1 is already used \
                     by attachment 1 (network tenant/macvlan-a)"
                );
            },
        )
        .nad(MACVLAN, macvlan())
        .annotation("macvlan-a, macvlan-a@net1"),
        Case::new(
            "interface_is_runtime_ifname",
            "asking for the runtime's interface name fails",
            |o| {
                assert_eq!(
                    error(o),
                    "network tenant/macvlan-a (attachment 1): interface eth0 is already used \
                     by attachment 0 (network kube-system/cluster)"
                );
            },
        )
        .nad(MACVLAN, macvlan())
        .annotation("macvlan-a@eth0"),
        Case::new(
            "conflist_missing_cni_version",
            "a conflist without cniVersion fails naming the key",
            |o| {
                assert_eq!(
                    error(o),
                    "network tenant/chain: config: key \"cniVersion\" is missing"
                );
            },
        )
        .nad(
            "tenant/chain",
            json!({"name":"chain","plugins":[{"type":"macvlan","master":"eth1"}]}),
        )
        .annotation("chain"),
        Case::new(
            "unsupported_cni_version",
            "a cniVersion this crate does not know fails",
            |o| assert!(error(o).contains("unsupported cniVersion \"9.9.9\"")),
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"9.9.9","name":"macvlan-a","type":"macvlan","master":"eth1"}),
        )
        .annotation("macvlan-a"),
        Case::new(
            "type_and_plugins",
            "a config with both type and plugins is ambiguous and fails",
            |o| assert!(error(o).contains("exactly one of \"type\" and \"plugins\"")),
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan",
                   "plugins":[{"type":"macvlan"}]}),
        )
        .annotation("macvlan-a"),
        Case::new("empty_plugins", "plugins: [] fails", |o| {
            assert_eq!(
                error(o),
                "network tenant/chain: config: key \"plugins\": the list is empty"
            );
        })
        .nad(
            "tenant/chain",
            json!({"cniVersion":"1.0.0","name":"chain","plugins":[]}),
        )
        .annotation("chain"),
        Case::new(
            "nad_args_not_object",
            "a NAD whose args is a string fails cleanly when the pod sends cni-args",
            |o| assert_eq!(error(o), "network tenant/macvlan-a: args: is not an object"),
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan","master":"eth1","args":"x"}),
        )
        .annotation(r#"[{"name":"macvlan-a","cni-args":{"a":"b"}}]"#),
        Case::new(
            "nad_args_cni_not_object",
            "a plugin whose args.cni is a list fails even without cni-args from the pod",
            |o| {
                assert_eq!(
                    error(o),
                    "network tenant/chain: plugins[1].args.cni: is not an object"
                )
            },
        )
        .nad(
            "tenant/chain",
            json!({"cniVersion":"1.0.0","name":"chain","plugins":[
                {"type":"macvlan","master":"eth1"},{"type":"tuning","args":{"cni":[1]}}]}),
        )
        .annotation("chain"),
        Case::new(
            "too_many_attachments",
            "the cluster network plus 32 selections is 33 attachments, one too many",
            |o| assert_eq!(error(o), "plan: 33 attachments, more than 32"),
        )
        .nad(MACVLAN, macvlan())
        .annotation(vec!["macvlan-a"; 32].join(",")),
        Case {
            compact: true,
            ..Case::new(
            "max_attachments",
            "the cluster network plus 31 selections is exactly the limit",
            |o| {
                assert_eq!(ok(o).len(), 32);
                assert_eq!(ok(o)[31].ifname.as_str(), "net31");
            },
        )
        .nad(MACVLAN, macvlan())
        .annotation(vec!["macvlan-a"; 31].join(","))
        },
        Case::new(
            "ipam_claim_reference",
            "ipam-claim-reference travels in args.cni of every plugin",
            |o| {
                for i in 0..2 {
                    assert_eq!(
                        plugin(o, 1, i)["args"],
                        json!({"cni":{"ipam-claim-reference":"vm123.tenantblue"}})
                    );
                }
            },
        )
        .nad("tenant/chain", chain(json!({}), json!({})))
        .annotation(r#"[{"name":"chain","ipam-claim-reference":"vm123.tenantblue"}]"#),
        Case::new(
            "default_route",
            "default-route is kept on the attachment and not passed to the delegate",
            |o| {
                let a = &ok(o)[1];
                assert_eq!(a.default_route, vec!["10.10.0.1".parse::<IpAddr>().unwrap()]);
                assert!(!a.conf.to_value().to_string().contains("10.10.0.1\""));
            },
        )
        .nad(MACVLAN, macvlan())
        .annotation(r#"[{"name":"macvlan-a","default-route":["10.10.0.1"]}]"#),
        Case::new(
            "infiniband_guid",
            "infiniband-guid becomes runtimeConfig.infinibandGUID",
            |o| {
                assert_eq!(
                    plugin(o, 1, 0)["runtimeConfig"],
                    json!({"infinibandGUID":"24:8a:07:03:00:8d:ae:2f"})
                )
            },
        )
        .nad(
            "tenant/ib-net",
            json!({"cniVersion":"0.3.1","name":"ib-net","type":"ib-sriov",
                   "capabilities":{"infinibandGUID":true},"ipam":{"type":"whereabouts"}}),
        )
        .annotation(r#"[{"name":"ib-net","infiniband-guid":"24:8A:07:03:00:8D:AE:2F"}]"#),
        Case::new(
            "infiniband_guid_undeclared",
            "infiniband-guid without the infinibandGUID capability fails",
            |o| assert!(error(o).contains("asks for infiniband-guid but no plugin of the chain declares the \"infinibandGUID\"")),
        )
        .nad(MACVLAN, macvlan())
        .annotation(r#"[{"name":"macvlan-a","infiniband-guid":"24:8a:07:03:00:8d:ae:2f"}]"#),
        Case {
            devices: vec![("tenant/sriov", "0000:18:02.5")],
            ..Case::new(
                "device_id_from_resource",
                "the resource's device ID is set as deviceID/pciBusID on every plugin and as \
                 runtimeConfig.deviceID where declared; the pod's deviceID is ignored",
                |o| {
                    assert_eq!(ok(o)[1].device_id.as_deref(), Some("0000:18:02.5"));
                    for i in 0..2 {
                        assert_eq!(plugin(o, 1, i)["deviceID"], "0000:18:02.5");
                        assert_eq!(plugin(o, 1, i)["pciBusID"], "0000:18:02.5");
                    }
                    assert_eq!(plugin(o, 1, 0)["runtimeConfig"], json!({"deviceID":"0000:18:02.5"}));
                    assert!(plugin(o, 1, 1).get("runtimeConfig").is_none());
                },
            )
            .nad(
                "tenant/sriov",
                json!({"cniVersion":"1.0.0","name":"sriov","plugins":[
                    {"type":"sriov","capabilities":{"deviceID":true},"ipam":{"type":"host-local","subnet":"10.50.0.0/24"}},
                    {"type":"tuning"}]}),
            )
            .annotation(r#"[{"name":"sriov","deviceID":"0000:99:00.1"}]"#)
        },
        Case::new(
            "device_id_from_selection",
            "without a resource, the pod's deviceID reaches plugins declaring deviceID",
            |o| {
                assert_eq!(ok(o)[1].device_id.as_deref(), Some("0000:99:00.1"));
                assert_eq!(plugin(o, 1, 0)["runtimeConfig"], json!({"deviceID":"0000:99:00.1"}));
                assert!(plugin(o, 1, 0).get("pciBusID").is_none());
            },
        )
        .nad(
            "tenant/sriov",
            json!({"cniVersion":"1.0.0","name":"sriov","type":"host-device",
                   "capabilities":{"deviceID":true}}),
        )
        .annotation(r#"[{"name":"sriov","deviceID":"0000:99:00.1"}]"#),
        Case::new(
            "cni_versions_negotiation",
            "cniVersions picks the highest version this crate supports",
            |o| assert_eq!(ok(o)[1].conf.cni_version, cni::Version::V1_0_0),
        )
        .nad(
            "tenant/multi",
            json!({"cniVersions":["0.4.0","1.0.0","9.9.9"],"name":"multi","plugins":[
                {"type":"macvlan","master":"eth1","ipam":{"type":"host-local","subnet":"10.60.0.0/24"}}]}),
        )
        .annotation("multi"),
        Case {
            default_network: Some(r#"[{"name":"calico","namespace":"kube-system","ips":["10.244.7.7"]}]"#),
            ..Case::new(
                "default_network_override",
                "the default-network selection replaces the cluster network; its ips join the \
                 runtime's runtimeConfig and win over the runtime's ips",
                |o| {
                    let a = &ok(o)[0];
                    assert_eq!(a.network, "kube-system/calico");
                    assert_eq!(a.ifname.as_str(), "eth0");
                    assert_eq!(
                        plugin(o, 0, 0)["runtimeConfig"],
                        json!({"portMappings":[{"hostPort":80,"containerPort":80}],"ips":["10.244.7.7"]})
                    );
                    assert!(a.cni_args.ends_with(";IP=10.244.7.7"));
                },
            )
            .nad(
                "kube-system/calico",
                json!({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico",
                       "capabilities":{"ips":true,"portMappings":true}}),
            )
            .runtime(json!({"ips":["10.244.1.2"],"portMappings":[{"hostPort":80,"containerPort":80}]}))
        },
        Case {
            default_network: Some("kube-system/calico@net0"),
            ..Case::new(
                "default_network_interface",
                "the default network cannot be moved off the runtime's interface",
                |o| {
                    assert!(error(o).starts_with(
                        "network kube-system/calico: interface: the cluster network always uses \
                         the runtime's interface eth0, not net0"
                    ))
                },
            )
            .nad(
                "kube-system/calico",
                json!({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico"}),
            )
        },
        Case {
            pod: false,
            ..Case::new(
                "no_pod_identity",
                "outside Kubernetes CNI_ARGS carries only IgnoreUnknown and the pod's requests",
                |o| {
                    assert_eq!(ok(o)[0].cni_args, "IgnoreUnknown=true");
                    assert_eq!(ok(o)[1].cni_args, "IgnoreUnknown=true;MAC=02:00:00:00:00:01");
                },
            )
            .nad(MACVLAN, macvlan_static(json!({"mac":true})))
            .annotation(r#"[{"name":"macvlan-a","mac":"02:00:00:00:00:01"}]"#)
        },
        Case::new(
            "plugin_type_path",
            "a plugin type that is a path is refused (CVE-2021-20206)",
            |o| {
                assert_eq!(
                    error(o),
                    "network tenant/chain: plugins[1].type: \"../../bin/sh\" is not a bare plugin name"
                )
            },
        )
        .nad(
            "tenant/chain",
            json!({"cniVersion":"1.0.0","name":"chain","plugins":[
                {"type":"macvlan"},{"type":"../../bin/sh"}]}),
        )
        .annotation("chain"),
        Case::new(
            "ipam_type_path",
            "an ipam type that is a path is refused",
            |o| assert_eq!(error(o), "network tenant/macvlan-a: ipam.type: \"/bin/sh\" is not a bare plugin name"),
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan","ipam":{"type":"/bin/sh"}}),
        )
        .annotation("macvlan-a"),
        Case::new(
            "bad_network_name",
            "a network name that would be a path in host-local's data dir is refused",
            |o| assert!(error(o).starts_with("network tenant/macvlan-a: name: \"../x\"")),
        )
        .nad(
            MACVLAN,
            json!({"cniVersion":"1.0.0","name":"../x","type":"macvlan"}),
        )
        .annotation("macvlan-a"),
    ]
}

/// Properties every successful plan has, whatever the case.
fn invariants(case: &Case, out: &[Attachment]) {
    assert_eq!(out[0].ifname.as_str(), "eth0", "{}", case.name);
    assert!(
        out[0].is_default && out[1..].iter().all(|a| !a.is_default),
        "{}",
        case.name
    );
    let mut names: Vec<_> = out.iter().map(|a| a.ifname.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        out.len(),
        "{}: interface names repeat",
        case.name
    );
    for a in out {
        for p in &a.conf.plugins {
            assert!(
                !p.0.contains_key("capabilities"),
                "{}: capabilities left",
                case.name
            );
        }
    }
}

#[test]
fn plan_matrix() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names repeat");
    for case in &cases {
        let outcome = case.run();
        (case.check)(&outcome);
        let shown = match &outcome {
            Ok(out) => {
                invariants(case, out);
                if case.compact {
                    out.iter()
                        .map(|a| json!([a.network, a.ifname]))
                        .collect::<Value>()
                } else {
                    serde_json::to_value(out).unwrap()
                }
            }
            Err(e) => json!({"error": e.to_string(), "code": e.code()}),
        };
        let mut settings = snapshots();
        settings.set_description(case.what);
        settings.set_info(&case.input());
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_json_snapshot!(format!("plan__{}", case.name), shown));
    }
}

#[test]
fn pod_identity_with_separator_is_refused() {
    let net = ResolvedNetwork {
        key: CLUSTER.into(),
        config: json!({"cniVersion":"1.0.0","name":"c","type":"ptp"})
            .as_object()
            .unwrap()
            .clone(),
        selection: None,
        device_id: None,
    };
    let eth0 = IfName::parse("eth0").unwrap();
    let req = PlanRequest {
        cluster: &net,
        defaults: &[],
        secondaries: &[],
        runtime_ifname: &eth0,
        runtime_config: &Map::new(),
        pod: Some(PodIdentity {
            namespace: "ns",
            name: "p;K8S_POD_NAMESPACE=kube-system",
            uid: None,
            infra_container_id: "c",
        }),
    };
    let e = plan(&req).unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(e.to_string().starts_with("pod K8S_POD_NAME"), "{e}");
}
