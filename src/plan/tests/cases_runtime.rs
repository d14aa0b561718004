//! Cases about what reaches each plugin: runtimeConfig, args.cni, CNI_ARGS, device IDs.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
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
            defaults: vec!["kube-system/monitoring"],
            ..Case::new(
                "defaults_get_no_runtime_config",
                "a defaultNetworks entry declaring portMappings still gets none of the \
                 runtime's runtimeConfig",
                |o| {
                    assert!(plugin(o, 0, 1).get("runtimeConfig").is_some());
                    assert!(plugin(o, 1, 1).get("runtimeConfig").is_none());
                },
            )
            .nad(
                CLUSTER,
                json!({"cniVersion":"1.0.0","name":"cluster","plugins":[
                    {"type":"ptp","ipam":{"type":"host-local","subnet":"10.244.1.0/24"}},
                    {"type":"portmap","capabilities":{"portMappings":true}}]}),
            )
            .nad(
                "kube-system/monitoring",
                json!({"cniVersion":"1.0.0","name":"monitoring","plugins":[
                    {"type":"bridge","bridge":"mon0","ipam":{"type":"host-local","subnet":"10.99.0.0/16"}},
                    {"type":"portmap","capabilities":{"portMappings":true}}]}),
            )
            .runtime(json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}))
        },
        Case::new(
            "nad_runtime_config_replaced",
            "a runtimeConfig written in the NAD is replaced when Plexus injects one (as libcni \
             does) and kept when there is nothing to inject",
            |o| {
                assert_eq!(plugin(o, 1, 0)["runtimeConfig"], json!({"stale":true}));
                assert_eq!(plugin(o, 1, 1)["runtimeConfig"], json!({"mac":"02:00:00:00:00:02"}));
            },
        )
        .nad(
            "tenant/chain",
            json!({"cniVersion":"1.0.0","name":"chain","plugins":[
                {"type":"macvlan","master":"eth1","runtimeConfig":{"stale":true},
                 "ipam":{"type":"host-local","subnet":"10.10.0.0/24"}},
                {"type":"tuning","capabilities":{"mac":true},"runtimeConfig":{"stale":true}}]}),
        )
        .annotation(r#"[{"name":"chain","mac":"02:00:00:00:00:02"}]"#),
    ]
}
