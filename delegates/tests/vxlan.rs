#![allow(clippy::unwrap_used)]
//! The vxlan delegate with two simulated nodes: two node netns joined by a veth underlay, a
//! pod netns on each, traffic across the overlay.

mod common;

use cni::CniResult;
use cni::netconf::NetConf;
use common::{TestNs, conf, host_local, reservations};
use delegates::{Kind, Request};
use serde_json::{Value, json};
use std::path::Path;

struct Net {
    conf: NetConf,
    data: tempfile::TempDir,
}

/// `range` picks the node's slice of the overlay subnet, as a per-node IPAM would.
fn net(extra: Value, range: (&str, &str)) -> Net {
    let data = tempfile::tempdir().unwrap();
    let mut v = json!({
        "cniVersion": "1.0.0",
        "name": "vxnet",
        "type": "vxlan",
        "vni": 4242,
        "underlayInterface": "ul0",
        "remotes": ["10.200.0.1", "10.200.0.2"],
        "ipam": {
            "type": "host-local",
            "dataDir": data.path(),
            "ranges": [[{"subnet": "10.90.0.0/24", "rangeStart": range.0, "rangeEnd": range.1}]],
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        if val.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = val.clone();
        }
    }
    Net {
        conf: conf(v),
        data,
    }
}

const A: (&str, &str) = ("10.90.0.10", "10.90.0.19");
const B: (&str, &str) = ("10.90.0.20", "10.90.0.29");

/// Two nodes whose `ul0` links face each other: 10.200.0.1 and 10.200.0.2.
fn two_nodes() -> (TestNs, TestNs) {
    let (a, b) = (TestNs::new(), TestNs::new());
    a.sh(&format!(
        "ip link add ul0 type veth peer name ul0b && ip link set ul0b netns {}",
        b.tid()
    ));
    a.sh("ip addr add 10.200.0.1/24 dev ul0 && ip link set ul0 up");
    b.sh("ip link set ul0b name ul0 && ip addr add 10.200.0.2/24 dev ul0 && ip link set ul0 up");
    (a, b)
}

fn req<'a>(
    n: &'a Net,
    cid: &'a str,
    pod: Option<&'a Path>,
    ipam: &'a dyn delegates::Ipam,
) -> Request<'a> {
    Request {
        container_id: cid,
        netns: pod,
        ifname: "eth0",
        conf: &n.conf,
        ipam,
        timeout: std::time::Duration::from_secs(10),
        owned: &[],
    }
}

fn add(n: &Net, cid: &str, pod: &Path) -> Result<CniResult, delegates::DelegateError> {
    let ipam = host_local(cid, Some(pod), "eth0");
    delegates::add(Kind::Vxlan, &req(n, cid, Some(pod), &ipam)).map(|a| a.result)
}

fn del(n: &Net, cid: &str, pod: Option<&Path>) -> Result<(), delegates::DelegateError> {
    let ipam = host_local(cid, pod, "eth0");
    delegates::del(Kind::Vxlan, &req(n, cid, pod, &ipam))
}

fn check(n: &Net, cid: &str, pod: &Path, prev: &CniResult) -> Result<(), delegates::DelegateError> {
    let mut c = Net {
        conf: n.conf.clone(),
        data: tempfile::tempdir().unwrap(),
    };
    c.conf
        .set("prevResult", prev.to_value(cni::Version::V1_0_0));
    let ipam = host_local(cid, Some(pod), "eth0");
    delegates::check(Kind::Vxlan, &req(&c, cid, Some(pod), &ipam))
}

fn exists(ns: &TestNs, name: &str) -> bool {
    ns.exec(&["ip", "link", "show", "dev", name])
        .status
        .success()
}

fn info(ns: &TestNs, name: &str) -> Value {
    ns.json(&format!("ip -d -j link show dev {name}"))[0].clone()
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_the_overlay() {
    let (na, nb) = two_nodes();
    let (pa, pb) = (TestNs::new(), TestNs::new());
    let (neta, netb) = (net(json!({}), A), net(json!({}), B));
    let ra = na.enter(|| add(&neta, "c-a", pa.path()).unwrap());
    let rb = nb.enter(|| add(&netb, "c-b", pb.path()).unwrap());
    assert_eq!(ra.ips[0].address.to_string(), "10.90.0.10/24");
    assert_eq!(rb.ips[0].address.to_string(), "10.90.0.20/24");
    let names: Vec<_> = ra.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names[0], "vxbr4242");
    assert_eq!(names[2], "eth0");

    assert!(pa.reaches(&pb, "10.90.0.20"));
    assert!(pb.reaches(&pa, "10.90.0.10"));

    // Underlay 1500 minus 50 bytes of VXLAN/UDP/IPv4/Ethernet.
    assert_eq!(info(&na, "vxlan4242")["mtu"], 1450);
    assert_eq!(info(&pa, "eth0")["mtu"], 1450);
    assert_eq!(ra.interfaces[2].mtu, Some(1450));
    // The node's own address among `remotes` is skipped.
    let fdb = na.json("bridge -j fdb show dev vxlan4242");
    let dsts: Vec<_> = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == "00:00:00:00:00:00")
        .map(|e| e["dst"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dsts, ["10.200.0.2"]);

    na.enter(|| check(&neta, "c-a", pa.path(), &ra).unwrap());
    na.enter(|| del(&neta, "c-a", Some(pa.path())).unwrap());
    nb.enter(|| del(&netb, "c-b", Some(pb.path())).unwrap());
    for n in [&na, &nb] {
        assert!(!exists(n, "vxlan4242") && !exists(n, "vxbr4242"));
    }
}

#[test]
fn device_and_bridge_live_as_long_as_pods_on_the_node() {
    let (na, _nb) = two_nodes();
    let (p1, p2) = (TestNs::new(), TestNs::new());
    let n = net(json!({}), A);
    na.enter(|| {
        let r1 = add(&n, "c-1", p1.path()).unwrap();
        add(&n, "c-2", p2.path()).unwrap();
        assert!(
            p1.reaches(&p2, "10.90.0.11"),
            "pods on one node share the bridge"
        );
        del(&n, "c-1", Some(p1.path())).unwrap();
        assert!(
            exists(&na, "vxlan4242") && exists(&na, "vxbr4242"),
            "c-2 still uses them"
        );
        assert!(check(&n, "c-1", p1.path(), &r1).is_err());
        del(&n, "c-2", Some(p2.path())).unwrap();
        assert!(
            !exists(&na, "vxlan4242") && !exists(&na, "vxbr4242"),
            "last pod gone"
        );
        del(&n, "c-2", Some(p2.path())).unwrap();
        del(&n, "c-never", None).unwrap();
    });
    assert!(reservations(n.data.path(), "vxnet").is_empty());
}

#[test]
fn device_settings_follow_the_conf() {
    let (na, _nb) = two_nodes();
    let pod = TestNs::new();
    let n = net(
        json!({"port": 8472, "learning": false, "mtu": 1400, "bridge": "ovl0", "remotes": null, "group": "239.1.1.1"}),
        A,
    );
    na.enter(|| {
        add(&n, "c-s", pod.path()).unwrap();
        let d = info(&na, "vxlan4242");
        let data = &d["linkinfo"]["info_data"];
        assert_eq!(data["id"], 4242, "{d}");
        assert_eq!(data["port"], 8472, "{d}");
        assert_eq!(data["learning"], false, "{d}");
        assert_eq!(data["group"], "239.1.1.1", "{d}");
        assert_eq!(data["link"], "ul0", "{d}");
        assert_eq!(d["master"], "ovl0");
        assert_eq!(d["mtu"], 1400);
        assert_eq!(info(&pod, "eth0")["mtu"], 1400);
        del(&n, "c-s", Some(pod.path())).unwrap();
        assert!(!exists(&na, "ovl0"));
    });
}

#[test]
fn default_port_is_4789_with_learning() {
    let (na, _nb) = two_nodes();
    let pod = TestNs::new();
    let n = net(json!({}), A);
    na.enter(|| {
        add(&n, "c-d", pod.path()).unwrap();
        let data = info(&na, "vxlan4242")["linkinfo"]["info_data"].clone();
        assert_eq!(data["port"], 4789, "{data}");
        assert_eq!(data["learning"], true, "{data}");
        del(&n, "c-d", Some(pod.path())).unwrap();
    });
}

#[test]
fn del_after_pod_netns_is_gone_tears_down_the_overlay() {
    let (na, _nb) = two_nodes();
    let pod = TestNs::new();
    let path = pod.path().to_path_buf();
    let n = net(json!({}), A);
    na.enter(|| add(&n, "c-g", &path).unwrap());
    pod.close();
    na.enter(|| del(&n, "c-g", Some(&path)).unwrap());
    assert!(!exists(&na, "vxlan4242") && !exists(&na, "vxbr4242"));
    assert!(reservations(n.data.path(), "vxnet").is_empty());
}

#[test]
fn bad_config_names_the_key_and_allocates_nothing() {
    let (na, _nb) = two_nodes();
    let pod = TestNs::new();
    for (extra, key) in [
        (json!({"vni": null}), "vni"),
        (json!({"vni": 0}), "vni"),
        (json!({"vni": 16777216}), "vni"),
        (json!({"port": 70000}), "port"),
        (json!({"group": "10.1.1.1", "remotes": null}), "group"),
        (json!({"group": "239.1.1.1"}), "remotes"),
        (json!({"remotes": ["nope"]}), "remotes"),
        (
            json!({"underlayInterface": "missing0"}),
            "underlayInterface",
        ),
    ] {
        let n = net(extra.clone(), A);
        na.enter(|| {
            let e = add(&n, "c-bad", pod.path()).unwrap_err();
            assert_eq!(e.code(), 7, "{extra}: {e}");
            assert!(e.to_string().contains(key), "{extra}: {e}");
            assert!(reservations(n.data.path(), "vxnet").is_empty(), "{extra}");
            assert!(
                !exists(&na, "vxlan4242") && !exists(&na, "vxbr4242"),
                "{extra}"
            );
        });
    }
}

#[test]
fn concurrent_adds_and_dels_keep_the_refcount_right() {
    let (na, _nb) = two_nodes();
    let pods: Vec<TestNs> = (0..4).map(|_| TestNs::new()).collect();
    let n = net(json!({}), A);
    let na_ref = &na;
    let run_all = |op: &(dyn Fn(usize, &TestNs) + Sync)| {
        std::thread::scope(|s| {
            for (i, p) in pods.iter().enumerate() {
                s.spawn(move || na_ref.enter(|| op(i, p)));
            }
        });
    };
    run_all(&|i, p| {
        add(&n, &format!("c-p{i}"), p.path()).unwrap();
    });
    assert_eq!(
        na.sh("ip -o link show master vxbr4242 | wc -l").trim(),
        "5",
        "4 pods + vxlan"
    );
    // Two leave while two stay: the overlay must survive.
    run_all(&|i, p| {
        if i % 2 == 0 {
            del(&n, &format!("c-p{i}"), Some(p.path())).unwrap();
        }
    });
    assert!(exists(&na, "vxlan4242") && exists(&na, "vxbr4242"));
    let ip3 = pods[3].sh("ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1");
    assert!(
        pods[1].reaches(&pods[3], ip3.trim()),
        "remaining pods still connected"
    );
    run_all(&|i, p| {
        if i % 2 == 1 {
            del(&n, &format!("c-p{i}"), Some(p.path())).unwrap();
        }
    });
    assert!(!exists(&na, "vxlan4242") && !exists(&na, "vxbr4242"));
    assert!(reservations(n.data.path(), "vxnet").is_empty());
}
