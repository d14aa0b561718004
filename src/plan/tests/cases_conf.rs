//! Cases about reading NAD configs, naming interfaces and limits.

use super::*;

pub(super) fn cases() -> Vec<Case> {
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
