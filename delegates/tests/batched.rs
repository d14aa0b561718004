#![allow(clippy::unwrap_used)]
//! The DEL flow the meta plugin uses for a pod with several attachments: remove all of the
//! pod's links in one request, then run each delegate's DEL, which must still release IPAM
//! and treat the links as already gone.

mod common;

use common::{TestNs, conf, host_local, reservations};
use delegates::{Kind, Request};
use serde_json::json;

#[test]
fn batched_removal_then_delegate_dels() {
    let node = TestNs::new();
    let pod = TestNs::new();
    node.sh("ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up");
    let data = tempfile::tempdir().unwrap();
    let ipam = |s: &str| json!({"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": s}]]});
    let attachments = [
        (
            Kind::Bridge,
            conf(
                json!({"cniVersion": "1.0.0", "name": "b", "type": "bridge", "bridge": "bb0", "ipam": ipam("10.85.0.0/24")}),
            ),
            "eth0",
        ),
        (
            Kind::Macvlan,
            conf(
                json!({"cniVersion": "1.0.0", "name": "m1", "type": "macvlan", "master": "up0", "ipam": ipam("10.86.0.0/24")}),
            ),
            "net1",
        ),
        (
            Kind::Macvlan,
            conf(
                json!({"cniVersion": "1.0.0", "name": "m2", "type": "macvlan", "master": "up0", "ipam": ipam("10.87.0.0/24")}),
            ),
            "net2",
        ),
    ];
    node.enter(|| {
        let mut owned = Vec::new();
        for (kind, c, ifname) in &attachments {
            let ipam = host_local("c-batch", Some(pod.path()), ifname);
            let req = Request {
                container_id: "c-batch",
                netns: Some(pod.path()),
                ifname,
                conf: c,
                ipam: &ipam,
                timeout: std::time::Duration::from_secs(10),
                owned: &[],
            };
            owned.push(delegates::add(*kind, &req).unwrap().links);
        }
        let host = &owned[0]
            .iter()
            .find(|l| l.side == delegates::owned::Side::Node)
            .unwrap()
            .name;
        assert!(node.exec(&["ip", "link", "show", host]).status.success());

        // What the meta plugin does with the journaled links: the pod ends, by identity.
        let tags: Vec<String> = attachments
            .iter()
            .map(|(_, _, ifname)| delegates::owned::tag("c-batch", ifname))
            .collect();
        let expected: Vec<delegates::owned::Expected> = attachments
            .iter()
            .zip(&owned)
            .zip(&tags)
            .map(
                |(((_, _, ifname), links), tag)| delegates::owned::Expected {
                    name: ifname,
                    tag: Some(tag),
                    journaled: links.iter().find(|l| l.side == delegates::owned::Side::Pod),
                    mac: None,
                },
            )
            .collect();
        let pod_ns = delegates::netns::NsId::of_path(pod.path()).unwrap();
        delegates::remove_links_batched(
            pod.path(),
            Some(pod_ns),
            &expected,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        let left = pod.sh("ip -o link show | awk -F': ' '{print $2}'");
        assert_eq!(left.trim(), "lo", "every pod link removed in one go");
        assert!(
            !node.exec(&["ip", "link", "show", host]).status.success(),
            "veth host end went with its peer"
        );
        assert!(
            node.exec(&["ip", "link", "show", "up0"]).status.success(),
            "master untouched"
        );

        for ((kind, c, ifname), links) in attachments.iter().zip(&owned) {
            let ipam = host_local("c-batch", Some(pod.path()), ifname);
            let req = Request {
                container_id: "c-batch",
                netns: Some(pod.path()),
                ifname,
                conf: c,
                ipam: &ipam,
                timeout: std::time::Duration::from_secs(10),
                owned: links,
            };
            delegates::del(*kind, &req).unwrap();
        }
        for net in ["b", "m1", "m2"] {
            assert!(reservations(data.path(), net).is_empty(), "{net}");
        }
    });
}

#[test]
fn runtime_config_mac_is_applied() {
    let node = TestNs::new();
    let pod = TestNs::new();
    node.sh("ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up");
    let data = tempfile::tempdir().unwrap();
    for (kind, mut v) in [
        (Kind::Bridge, json!({"type": "bridge", "bridge": "bm0"})),
        (Kind::Macvlan, json!({"type": "macvlan", "master": "up0"})),
    ] {
        v["cniVersion"] = json!("1.0.0");
        v["name"] = json!("mac");
        v["runtimeConfig"] = json!({"mac": "02:11:22:33:44:55"});
        v["ipam"] = json!({"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.88.0.0/24"}]]});
        let c = conf(v);
        node.enter(|| {
            let ipam = host_local("c-mac", Some(pod.path()), "eth0");
            let req = Request {
                container_id: "c-mac",
                netns: Some(pod.path()),
                ifname: "eth0",
                conf: &c,
                ipam: &ipam,
                timeout: std::time::Duration::from_secs(10),
                owned: &[],
            };
            let r = delegates::add(kind, &req).unwrap().result;
            let pod_if = r.interfaces.iter().find(|i| i.sandbox.is_some()).unwrap();
            assert_eq!(pod_if.mac.as_deref(), Some("02:11:22:33:44:55"), "{kind:?}");
            assert_eq!(
                pod.json("ip -j link show dev eth0")[0]["address"],
                "02:11:22:33:44:55"
            );
            delegates::del(kind, &req).unwrap();
        });
    }
}
