#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
//! The bridge delegate in real network namespaces, against the reference host-local IPAM, and
//! side by side with the reference bridge plugin.

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

fn net(extra: Value, ranges: Value) -> Net {
    let data = tempfile::tempdir().unwrap();
    let mut v = json!({
        "cniVersion": "1.0.0",
        "name": "brnet",
        "type": "bridge",
        "bridge": "brtest0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": data.path(),
            "ranges": ranges,
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        if k == "ipam" {
            for (ik, iv) in val.as_object().unwrap() {
                v["ipam"][ik] = iv.clone();
            }
        } else {
            v[k] = val.clone();
        }
    }
    Net {
        conf: conf(v),
        data,
    }
}

fn v4() -> Value {
    json!([[{"subnet": "10.77.0.0/24"}]])
}

fn add(
    n: &Net,
    cid: &str,
    pod: &Path,
    ifname: &str,
) -> Result<CniResult, delegates::DelegateError> {
    add_owned(n, cid, pod, ifname).map(|a| a.result)
}

/// ADD, with the links it reports for the caller to journal.
fn add_owned(
    n: &Net,
    cid: &str,
    pod: &Path,
    ifname: &str,
) -> Result<delegates::Added, delegates::DelegateError> {
    let ipam = host_local(cid, Some(pod), ifname);
    delegates::add(
        Kind::Bridge,
        &Request {
            container_id: cid,
            netns: Some(pod),
            ifname,
            conf: &n.conf,
            ipam: &ipam,
            timeout: std::time::Duration::from_secs(10),
            owned: &[],
        },
    )
}

fn del(
    n: &Net,
    cid: &str,
    pod: Option<&Path>,
    ifname: &str,
) -> Result<(), delegates::DelegateError> {
    del_owned(n, cid, pod, ifname, &[])
}

/// DEL as the meta plugin runs it, with the links the ADD reported (journaled).
fn del_owned(
    n: &Net,
    cid: &str,
    pod: Option<&Path>,
    ifname: &str,
    owned: &[delegates::OwnedLink],
) -> Result<(), delegates::DelegateError> {
    let ipam = host_local(cid, pod, ifname);
    delegates::del(
        Kind::Bridge,
        &Request {
            container_id: cid,
            netns: pod,
            ifname,
            conf: &n.conf,
            ipam: &ipam,
            timeout: std::time::Duration::from_secs(10),
            owned,
        },
    )
}

fn check(
    n: &Net,
    cid: &str,
    pod: &Path,
    ifname: &str,
    prev: &CniResult,
) -> Result<(), delegates::DelegateError> {
    let mut c = n.conf.clone();
    c.set("prevResult", prev.to_value(cni::Version::V1_0_0));
    let ipam = host_local(cid, Some(pod), ifname);
    delegates::check(
        Kind::Bridge,
        &Request {
            container_id: cid,
            netns: Some(pod),
            ifname,
            conf: &c,
            ipam: &ipam,
            timeout: std::time::Duration::from_secs(10),
            owned: &[],
        },
    )
}

fn addrs(ns: &TestNs, ifname: &str) -> Vec<String> {
    let v = ns.json(&format!("ip -j addr show dev {ifname}"));
    let mut out: Vec<String> = v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    out.sort();
    out
}

fn routes(ns: &TestNs, family: &str) -> Vec<String> {
    let v = ns.json(&format!("ip -j {family} route show"));
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] != "fe80::/64" && r["type"] != "multicast")
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

fn link_exists(ns: &TestNs, name: &str) -> bool {
    ns.exec(&["ip", "link", "show", "dev", name])
        .status
        .success()
}

#[test]
fn add_check_del_del() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(json!({}), v4());
    node.enter(|| {
        let r = add(&n, "c-acdd", pod.path(), "eth0").unwrap();
        let names: Vec<_> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
        let host = delegates::veth::host_veth_name("c-acdd", "eth0");
        assert_eq!(names, ["brtest0", host.as_str(), "eth0"]);
        assert_eq!(
            r.interfaces[2].sandbox.as_deref(),
            Some(pod.path().to_str().unwrap())
        );
        assert!(r.interfaces.iter().all(|i| i.mac.is_some()));
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].address.to_string(), "10.77.0.2/24");
        assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.77.0.1");
        assert_eq!(r.ips[0].interface, Some(2));

        assert_eq!(addrs(&pod, "eth0"), ["10.77.0.2/24"]);
        assert_eq!(addrs(&node, "brtest0"), ["10.77.0.1/24"]);
        let hl = node.json(&format!("ip -j link show dev {host}"));
        assert_eq!(hl[0]["master"], "brtest0");
        assert_eq!(
            pod.json("ip -j link show dev eth0")[0]["address"],
            json!(r.interfaces[2].mac)
        );
        assert!(
            pod.reaches(&node, "10.77.0.1"),
            "pod reaches its gateway on the bridge"
        );
        assert_eq!(node.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");

        check(&n, "c-acdd", pod.path(), "eth0", &r).unwrap();

        del(&n, "c-acdd", Some(pod.path()), "eth0").unwrap();
        assert!(!link_exists(&pod, "eth0"));
        assert!(!link_exists(&node, &host));
        assert!(reservations(n.data.path(), "brnet").is_empty());
        assert!(
            check(&n, "c-acdd", pod.path(), "eth0", &r).is_err(),
            "CHECK fails once the interface is gone"
        );

        del(&n, "c-acdd", Some(pod.path()), "eth0").unwrap();
    });
}

#[test]
fn check_notices_a_missing_address() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(json!({}), v4());
    node.enter(|| {
        let r = add(&n, "c-chk", pod.path(), "eth0").unwrap();
        pod.sh("ip addr del 10.77.0.2/24 dev eth0");
        let e = check(&n, "c-chk", pod.path(), "eth0", &r).unwrap_err();
        assert!(e.to_string().contains("10.77.0.2"), "{e}");
        del(&n, "c-chk", Some(pod.path()), "eth0").unwrap();
    });
}

#[test]
fn del_without_add_succeeds_without_netns_too() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(json!({}), v4());
    node.enter(|| {
        del(&n, "c-never", Some(pod.path()), "eth0").unwrap();
        del(&n, "c-never", None, "eth0").unwrap();
    });
}

#[test]
fn del_after_pod_netns_is_gone_releases_the_address() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(json!({}), v4());
    let path = pod.path().to_path_buf();
    let added = node.enter(|| {
        let added = add_owned(&n, "c-gone", &path, "eth0").unwrap();
        assert_eq!(reservations(n.data.path(), "brnet"), ["10.77.0.2"]);
        added
    });
    pod.close();
    node.enter(|| {
        // The kernel removes the pair with the netns, but not at once: the journaled host
        // end is removed by DEL too.
        del_owned(&n, "c-gone", Some(&path), "eth0", &added.links).unwrap();
        assert!(reservations(n.data.path(), "brnet").is_empty());
        let host = delegates::veth::host_veth_name("c-gone", "eth0");
        assert!(!link_exists(&node, &host), "host end removed");
    });
}

#[test]
fn two_pods_on_one_bridge_reach_each_other() {
    let node = TestNs::new();
    let a = TestNs::new();
    let b = TestNs::new();
    let n = net(json!({"isGateway": false}), v4());
    node.enter(|| {
        let ra = add(&n, "c-a", a.path(), "eth0").unwrap();
        let rb = add(&n, "c-b", b.path(), "net1").unwrap();
        assert_ne!(ra.ips[0].address, rb.ips[0].address);
        assert!(a.reaches(&b, &rb.ips[0].address.addr().to_string()));
        assert!(b.reaches(&a, &ra.ips[0].address.addr().to_string()));
        assert!(
            addrs(&node, "brtest0").is_empty(),
            "no gateway address without isGateway"
        );
        del(&n, "c-a", Some(a.path()), "eth0").unwrap();
        assert!(!link_exists(&a, "eth0"), "a is detached");
        del(&n, "c-b", Some(b.path()), "net1").unwrap();
    });
}

#[test]
fn mtu_applies_to_both_ends_and_the_new_bridge() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(json!({"mtu": 1400}), v4());
    node.enter(|| {
        add(&n, "c-mtu", pod.path(), "eth0").unwrap();
        let host = delegates::veth::host_veth_name("c-mtu", "eth0");
        assert_eq!(pod.json("ip -j link show dev eth0")[0]["mtu"], 1400);
        assert_eq!(
            node.json(&format!("ip -j link show dev {host}"))[0]["mtu"],
            1400
        );
        assert_eq!(node.json("ip -j link show dev brtest0")[0]["mtu"], 1400);
        del(&n, "c-mtu", Some(pod.path()), "eth0").unwrap();
    });
}

#[test]
fn default_gateway_and_ipam_routes_land_in_the_pod() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(
        json!({"isDefaultGateway": true, "ipam": {"routes": [{"dst": "192.168.50.0/24"}]}}),
        v4(),
    );
    node.enter(|| {
        let r = add(&n, "c-gw", pod.path(), "eth0").unwrap();
        let dsts: Vec<_> = r
            .routes
            .iter()
            .map(|r| (r.dst.to_string(), r.gw.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            dsts,
            [
                ("192.168.50.0/24".into(), None),
                ("0.0.0.0/0".into(), Some("10.77.0.1".into()))
            ]
        );
        assert_eq!(
            routes(&pod, "-4"),
            [
                "10.77.0.0/24 via - dev eth0",
                "192.168.50.0/24 via 10.77.0.1 dev eth0",
                "default via 10.77.0.1 dev eth0",
            ]
        );
        check(&n, "c-gw", pod.path(), "eth0", &r).unwrap();
        pod.sh("ip route del 192.168.50.0/24");
        assert!(
            check(&n, "c-gw", pod.path(), "eth0", &r).is_err(),
            "CHECK notices the missing route"
        );
        del(&n, "c-gw", Some(pod.path()), "eth0").unwrap();
    });
}

#[test]
fn ipv6_and_dual_stack() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(
        json!({"isDefaultGateway": true}),
        json!([[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]),
    );
    node.enter(|| {
        let r = add(&n, "c-v6", pod.path(), "eth0").unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(addrs(&pod, "eth0"), ["10.77.0.2/24", "fd00:77::2/64"]);
        assert_eq!(addrs(&node, "brtest0"), ["10.77.0.1/24", "fd00:77::1/64"]);
        assert!(routes(&pod, "-6").contains(&"default via fd00:77::1 dev eth0".to_string()));
        assert!(
            pod.reaches(&node, "fd00:77::1"),
            "v6 gateway reachable (no DAD wait)"
        );
        check(&n, "c-v6", pod.path(), "eth0", &r).unwrap();
        del(&n, "c-v6", Some(pod.path()), "eth0").unwrap();
        assert!(reservations(n.data.path(), "brnet").is_empty());
    });
}

#[test]
fn hairpin_and_promisc() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(json!({"hairpinMode": true, "promiscMode": true}), v4());
    node.enter(|| {
        add(&n, "c-hp", pod.path(), "eth0").unwrap();
        let host = delegates::veth::host_veth_name("c-hp", "eth0");
        let d = node.json(&format!("ip -d -j link show dev {host}"));
        assert_eq!(d[0]["linkinfo"]["info_slave_data"]["hairpin"], true, "{d}");
        let br = node.json("ip -d -j link show dev brtest0");
        assert!(
            br[0]["flags"]
                .as_array()
                .unwrap()
                .contains(&json!("PROMISC")),
            "{br}"
        );
        del(&n, "c-hp", Some(pod.path()), "eth0").unwrap();
    });
}

/// VLANs need bridge VLAN filtering, which some kernels (this one) are built without: then
/// ADD must say so with code 103 and leave nothing behind; otherwise the port is on the VLAN.
#[test]
fn vlan_port_or_a_clear_kernel_error() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let supported = node
        .exec(&[
            "ip",
            "link",
            "add",
            "probe0",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .status
        .success();
    let n = net(json!({"vlan": 42, "isGateway": false}), v4());
    node.enter(|| {
        let host = delegates::veth::host_veth_name("c-vl", "eth0");
        match add(&n, "c-vl", pod.path(), "eth0") {
            Ok(_) => {
                assert!(supported, "kernel lacks vlan filtering, ADD must fail");
                let vl = node.json(&format!("bridge -j vlan show dev {host}"));
                let vlans = &vl[0]["vlans"];
                assert_eq!(vlans.as_array().unwrap().len(), 1, "{vl}");
                assert_eq!(vlans[0]["vlan"], 42);
                del(&n, "c-vl", Some(pod.path()), "eth0").unwrap();
            }
            Err(e) => {
                assert!(!supported, "{e}");
                assert_eq!(e.code(), 103, "{e}");
                assert_eq!(e.to_string(), "kernel lacks bridge vlan filtering");
                assert!(!link_exists(&node, &host));
                assert!(!link_exists(&pod, "eth0"));
                assert!(reservations(n.data.path(), "brnet").is_empty());
            }
        }
    });
}

#[test]
fn ip_masq_rules_follow_the_pods() {
    let node = TestNs::new();
    let a = TestNs::new();
    let b = TestNs::new();
    let n = net(json!({"ipMasq": true}), v4());
    let table = delegates::masq::table_name("brnet");
    node.enter(|| {
        add(&n, "c-m1", a.path(), "eth0").unwrap();
        add(&n, "c-m2", b.path(), "eth0").unwrap();
        let listed = node.sh(&format!("nft list table inet {table}"));
        assert!(
            listed.contains("ip saddr 10.77.0.2 ip daddr != 10.77.0.0/24"),
            "{listed}"
        );
        assert!(listed.contains("ip saddr 10.77.0.3"), "{listed}");
        assert!(listed.contains("masquerade"), "{listed}");
        del(&n, "c-m1", Some(a.path()), "eth0").unwrap();
        let listed = node.sh(&format!("nft list table inet {table}"));
        assert!(!listed.contains("10.77.0.2 "), "{listed}");
        assert!(listed.contains("ip saddr 10.77.0.3"), "{listed}");
        del(&n, "c-m2", Some(b.path()), "eth0").unwrap();
        assert!(
            !node.sh("nft list tables").contains(&table),
            "table goes with the last pod"
        );
    });
}

#[test]
fn failed_link_setup_releases_ipam_and_leaves_no_host_veth() {
    let node = TestNs::new();
    let pod = TestNs::new();
    pod.sh("ip link add eth0 type bridge");
    let n = net(json!({}), v4());
    node.enter(|| {
        let e = add(&n, "c-fail", pod.path(), "eth0").unwrap_err();
        assert!(
            e.to_string()
                .contains("already has an interface named eth0"),
            "{e}"
        );
        assert_eq!(e.code(), 7);
        assert!(
            reservations(n.data.path(), "brnet").is_empty(),
            "address released"
        );
        let host = delegates::veth::host_veth_name("c-fail", "eth0");
        assert!(!link_exists(&node, &host));
        assert!(
            link_exists(&pod, "eth0"),
            "the pod's own link is not ours to delete"
        );
    });
}

/// IPAM runs after the pair is made: when it fails (its one address is taken), the pair goes
/// again and nothing of this pod is reserved.
#[test]
fn an_ipam_failure_removes_the_new_pair() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let n = net(
        json!({}),
        json!([[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.5", "rangeEnd": "10.77.0.5"}]]),
    );
    std::fs::create_dir_all(n.data.path().join("brnet")).unwrap();
    std::fs::write(
        n.data.path().join("brnet/10.77.0.5"),
        "someone-else\r\neth0",
    )
    .unwrap();
    node.enter(|| {
        let e = add(&n, "c-ipf", pod.path(), "eth0").unwrap_err();
        assert!(matches!(e, delegates::DelegateError::Ipam(_)), "{e}");
        let host = delegates::veth::host_veth_name("c-ipf", "eth0");
        assert!(!link_exists(&node, &host), "host end left");
        assert!(!link_exists(&pod, "eth0"), "pod end left");
        assert_eq!(reservations(n.data.path(), "brnet"), ["10.77.0.5"]);
    });
}

#[test]
fn bad_config_names_the_key_with_code_7() {
    let node = TestNs::new();
    let pod = TestNs::new();
    for (extra, key) in [
        (json!({"mtu": "big"}), "mtu"),
        (json!({"bridge": "a/b"}), "bridge"),
        (json!({"vlan": 5000}), "vlan"),
        (json!({"isGateway": "yes"}), "isGateway"),
    ] {
        let n = net(extra, v4());
        node.enter(|| {
            let e = add(&n, "c-bad", pod.path(), "eth0").unwrap_err();
            assert_eq!(e.code(), 7, "{e}");
            assert!(e.to_string().contains(key), "{e}");
            assert!(reservations(n.data.path(), "brnet").is_empty());
        });
    }
}

/// Runs the reference bridge plugin the way a runtime would, from the calling thread.
fn reference(command: &str, n: &Net, cid: &str, pod: &Path, ifname: &str) -> Value {
    reference_in("/usr/lib/cni", command, n, cid, pod, ifname)
}

/// The reference bridge with `cni_path` as its `CNI_PATH` (where it finds its IPAM).
fn reference_in(
    cni_path: &str,
    command: &str,
    n: &Net,
    cid: &str,
    pod: &Path,
    ifname: &str,
) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/lib/cni/bridge")
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", pod)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&n.conf.to_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn same_outcome_as_the_reference_bridge() {
    let conf_extra = json!({"isDefaultGateway": true, "mtu": 1450, "ipam": {"routes": [{"dst": "192.168.50.0/24"}]}});
    let ranges = json!([[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]);
    let (ours_node, ref_node) = (TestNs::new(), TestNs::new());
    let (ours_pod, ref_pod) = (TestNs::new(), TestNs::new());
    let (ours_net, ref_net) = (
        net(conf_extra.clone(), ranges.clone()),
        net(conf_extra, ranges),
    );

    let ours = ours_node.enter(|| add(&ours_net, "c-eq", ours_pod.path(), "eth0").unwrap());
    let theirs = ref_node.enter(|| reference("ADD", &ref_net, "c-eq", ref_pod.path(), "eth0"));
    let theirs = CniResult::parse_any(&theirs).unwrap().0;

    let shape = |r: &CniResult| {
        let ifs: Vec<_> = r
            .interfaces
            .iter()
            .map(|i| (i.name.starts_with("veth"), i.sandbox.is_some()))
            .collect();
        (
            ifs,
            r.interfaces[0].name.clone(),
            r.interfaces[2].name.clone(),
            r.ips.clone(),
            r.routes.clone(),
        )
    };
    assert_eq!(shape(&ours), shape(&theirs));

    assert_eq!(addrs(&ours_pod, "eth0"), addrs(&ref_pod, "eth0"));
    assert_eq!(routes(&ours_pod, "-4"), routes(&ref_pod, "-4"));
    assert_eq!(routes(&ours_pod, "-6"), routes(&ref_pod, "-6"));
    // Whole route lines too: protocol, scope and metrics must match, not just dst/gw.
    assert_eq!(
        ours_pod.sh("ip -4 route show"),
        ref_pod.sh("ip -4 route show")
    );
    assert_eq!(addrs(&ours_node, "brtest0"), addrs(&ref_node, "brtest0"));
    let mtu = |ns: &TestNs| ns.json("ip -j link show dev eth0")[0]["mtu"].clone();
    assert_eq!(mtu(&ours_pod), mtu(&ref_pod));

    ours_node.enter(|| del(&ours_net, "c-eq", Some(ours_pod.path()), "eth0").unwrap());
    ref_node.enter(|| reference("DEL", &ref_net, "c-eq", ref_pod.path(), "eth0"));
    assert_eq!(
        link_exists(&ours_pod, "eth0"),
        link_exists(&ref_pod, "eth0")
    );
    assert_eq!(
        reservations(ours_net.data.path(), "brnet"),
        reservations(ref_net.data.path(), "brnet")
    );
}

#[test]
fn concurrent_adds_share_a_new_bridge() {
    let node = TestNs::new();
    let pods: Vec<TestNs> = (0..4).map(|_| TestNs::new()).collect();
    let n = net(json!({}), v4());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (n, node) = (&n, &node);
                s.spawn(move || node.enter(|| add(n, &format!("c-par{i}"), p.path(), "eth0")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let ports = node.sh("ip -o link show master brtest0 | wc -l");
    assert_eq!(ports.trim(), "4");
    assert_eq!(
        addrs(&node, "brtest0"),
        ["10.77.0.1/24"],
        "one gateway address"
    );
    node.enter(|| {
        for (i, p) in pods.iter().enumerate() {
            del(&n, &format!("c-par{i}"), Some(p.path()), "eth0").unwrap();
        }
    });
    assert!(reservations(n.data.path(), "brnet").is_empty());
}

/// An exec'd IPAM runs once the pod's interface exists, as under the reference bridge: dhcp
/// runs its client on it (the stand-in: `common::write_needs_link_ipam`).
#[test]
fn exec_ipam_runs_once_the_interface_exists_as_under_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    common::write_needs_link_ipam(dir.path());
    let cni_path = dir.path().display().to_string();
    let extra = json!({"ipam": {"type": "needs-link"}});
    let (ours_net, ref_net) = (net(extra.clone(), v4()), net(extra, v4()));
    let (ours_node, ref_node) = (TestNs::new(), TestNs::new());
    let (ours_pod, ref_pod) = (TestNs::new(), TestNs::new());
    let ours = ours_node.enter(|| {
        let ipam = common::exec_ipam_from(&cni_path, "c-nl", Some(ours_pod.path()), "eth0");
        let req = Request {
            container_id: "c-nl",
            netns: Some(ours_pod.path()),
            ifname: "eth0",
            conf: &ours_net.conf,
            ipam: &ipam,
            timeout: std::time::Duration::from_secs(10),
            owned: &[],
        };
        delegates::add(Kind::Bridge, &req).unwrap().result
    });
    let theirs =
        ref_node.enter(|| reference_in(&cni_path, "ADD", &ref_net, "c-nl", ref_pod.path(), "eth0"));
    assert_eq!(ours.ips[0].address.to_string(), "10.79.0.50/24");
    assert_eq!(theirs["ips"][0]["address"], "10.79.0.50/24");
    assert_eq!(addrs(&ours_pod, "eth0"), addrs(&ref_pod, "eth0"));
    assert_eq!(addrs(&ours_node, "brtest0"), addrs(&ref_node, "brtest0"));
}
