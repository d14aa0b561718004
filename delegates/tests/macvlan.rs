#![allow(clippy::unwrap_used)]
//! The macvlan delegate in real network namespaces, against host-local and side by side with
//! the reference macvlan plugin.

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

fn net(extra: Value) -> Net {
    let data = tempfile::tempdir().unwrap();
    let mut v = json!({
        "cniVersion": "1.0.0",
        "name": "mvnet",
        "type": "macvlan",
        "master": "up0",
        "ipam": {
            "type": "host-local",
            "dataDir": data.path(),
            "ranges": [[{"subnet": "10.79.0.0/24", "gateway": "10.79.0.254"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
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

/// A node with an Ethernet-like uplink `up0` (a veth whose peer is up, so it has carrier).
fn node() -> TestNs {
    let node = TestNs::new();
    node.sh("ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up");
    node
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
    delegates::add(Kind::Macvlan, &req(n, cid, Some(pod), &ipam)).map(|a| a.result)
}

fn del(n: &Net, cid: &str, pod: Option<&Path>) -> Result<(), delegates::DelegateError> {
    let ipam = host_local(cid, pod, "eth0");
    delegates::del(Kind::Macvlan, &req(n, cid, pod, &ipam))
}

fn check(n: &Net, cid: &str, pod: &Path, prev: &CniResult) -> Result<(), delegates::DelegateError> {
    let mut c = Net {
        conf: n.conf.clone(),
        data: tempfile::tempdir().unwrap(),
    };
    c.conf
        .set("prevResult", prev.to_value(cni::Version::V1_0_0));
    let ipam = host_local(cid, Some(pod), "eth0");
    delegates::check(Kind::Macvlan, &req(&c, cid, Some(pod), &ipam))
}

fn link(ns: &TestNs, name: &str) -> Value {
    ns.json(&format!("ip -d -j link show dev {name}"))[0].clone()
}

fn ifindex(ns: &TestNs, name: &str) -> Value {
    link(ns, name)["ifindex"].clone()
}

#[test]
fn add_check_del_del() {
    let node = node();
    let pod = TestNs::new();
    let n = net(json!({"mode": "bridge", "mtu": 1400}));
    node.enter(|| {
        let r = add(&n, "c-mv", pod.path()).unwrap();
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].name, "eth0");
        assert_eq!(
            r.interfaces[0].sandbox.as_deref(),
            Some(pod.path().to_str().unwrap())
        );
        assert_eq!(r.ips[0].address.to_string(), "10.79.0.1/24");
        assert_eq!(r.ips[0].interface, Some(0));

        let l = link(&pod, "eth0");
        assert_eq!(l["linkinfo"]["info_kind"], "macvlan");
        assert_eq!(l["linkinfo"]["info_data"]["mode"], "bridge");
        assert_eq!(l["mtu"], 1400);
        assert_eq!(
            l["link_index"],
            ifindex(&node, "up0"),
            "master is the node's up0"
        );
        assert_eq!(l["address"], json!(r.interfaces[0].mac));
        let routes = pod.sh("ip route show default");
        assert!(
            routes.contains("default via 10.79.0.254 dev eth0"),
            "{routes}"
        );

        check(&n, "c-mv", pod.path(), &r).unwrap();
        del(&n, "c-mv", Some(pod.path())).unwrap();
        assert!(!pod.exec(&["ip", "link", "show", "eth0"]).status.success());
        assert!(reservations(n.data.path(), "mvnet").is_empty());
        assert!(check(&n, "c-mv", pod.path(), &r).is_err());
        del(&n, "c-mv", Some(pod.path())).unwrap();
    });
}

#[test]
fn master_defaults_to_the_default_route_interface() {
    let node = node();
    node.sh("ip link add up2 type veth peer name up3 && ip link set up2 up && ip link set up3 up");
    node.sh("ip addr add 10.5.0.1/24 dev up2 && ip route add default via 10.5.0.254 dev up2");
    let pod = TestNs::new();
    let n = net(json!({"master": null}));
    node.enter(|| {
        add(&n, "c-def", pod.path()).unwrap();
        assert_eq!(link(&pod, "eth0")["link_index"], ifindex(&node, "up2"));
        del(&n, "c-def", Some(pod.path())).unwrap();
    });
}

/// One call looks a master up once for all its attachments; the next call looks again, so an
/// uplink replaced between two calls (a new index under the same name) is the one it uses.
#[test]
fn master_is_looked_up_once_per_call_not_across_calls() {
    let node = node();
    let pods = [TestNs::new(), TestNs::new(), TestNs::new()];
    let n = net(json!({}));
    // Both calls on one thread, as a daemon's worker makes them.
    let (first, second) = node.enter(|| {
        delegates::netns::session(|| {
            add(&n, "c-1", pods[0].path()).unwrap();
            add(&n, "c-2", pods[1].path()).unwrap();
        });
        let first = ifindex(&node, "up0");
        node.sh("ip link del up0 && ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up");
        delegates::netns::session(|| add(&n, "c-3", pods[2].path()).unwrap());
        (first, ifindex(&node, "up0"))
    });
    assert_ne!(first, second);
    assert_eq!(link(&pods[2], "eth0")["link_index"], second);
}

/// IPAM runs after the link is made: when it fails (its one address is taken), the link goes
/// again and nothing of this pod is reserved.
#[test]
fn an_ipam_failure_removes_the_new_link() {
    let node = node();
    let pod = TestNs::new();
    let mut n = net(json!({}));
    let data = n.data.path().to_path_buf();
    n.conf.set(
        "ipam",
        json!({"type": "host-local", "dataDir": data,
            "ranges": [[{"subnet": "10.79.0.0/24", "rangeStart": "10.79.0.5", "rangeEnd": "10.79.0.5"}]]}),
    );
    std::fs::create_dir_all(data.join("mvnet")).unwrap();
    std::fs::write(data.join("mvnet/10.79.0.5"), "someone-else\r\neth0").unwrap();
    node.enter(|| {
        let e = add(&n, "c-ipf", pod.path()).unwrap_err();
        assert!(matches!(e, delegates::DelegateError::Ipam(_)), "{e}");
    });
    assert!(
        !pod.exec(&["ip", "link", "show", "dev", "eth0"])
            .status
            .success(),
        "the new link is left in the pod"
    );
    assert_eq!(reservations(&data, "mvnet"), ["10.79.0.5"]);
}

#[test]
fn no_master_and_no_default_route_is_a_config_error() {
    let node = node();
    let pod = TestNs::new();
    let n = net(json!({"master": null}));
    node.enter(|| {
        let e = add(&n, "c-nom", pod.path()).unwrap_err();
        assert_eq!(e.code(), 7, "{e}");
        assert!(e.to_string().contains("master"), "{e}");
        assert!(reservations(n.data.path(), "mvnet").is_empty());
    });
}

#[test]
fn missing_master_releases_the_address() {
    let node = node();
    let pod = TestNs::new();
    let n = net(json!({"master": "nosuch0"}));
    node.enter(|| {
        let e = add(&n, "c-miss", pod.path()).unwrap_err();
        assert_eq!(e.code(), 7, "{e}");
        assert!(e.to_string().contains("nosuch0"), "{e}");
        assert!(reservations(n.data.path(), "mvnet").is_empty());
    });
}

#[test]
fn bridge_mode_pods_reach_each_other_private_mode_pods_do_not() {
    let node = node();
    let (a, b) = (TestNs::new(), TestNs::new());
    for (mode, reach) in [("bridge", true), ("private", false)] {
        let n = net(json!({"mode": mode}));
        node.enter(|| {
            let _ra = add(&n, "c-a", a.path()).unwrap();
            let rb = add(&n, "c-b", b.path()).unwrap();
            let addr = rb.ips[0].address.addr().to_string();
            assert_eq!(a.reaches(&b, &addr), reach, "mode {mode}");
            del(&n, "c-a", Some(a.path())).unwrap();
            del(&n, "c-b", Some(b.path())).unwrap();
        });
    }
}

#[test]
fn link_in_container_uses_a_master_inside_the_pod() {
    let node = node();
    let pod = TestNs::new();
    pod.sh("ip link add vf0 type veth peer name vf1 && ip link set vf0 up && ip link set vf1 up");
    let n = net(json!({"master": "vf0", "linkInContainer": true}));
    node.enter(|| {
        add(&n, "c-lic", pod.path()).unwrap();
        assert_eq!(link(&pod, "eth0")["link"], "vf0");
        del(&n, "c-lic", Some(pod.path())).unwrap();
        assert!(
            pod.exec(&["ip", "link", "show", "vf0"]).status.success(),
            "master stays"
        );
    });
}

#[test]
fn del_after_pod_netns_is_gone_releases_the_address() {
    let node = node();
    let pod = TestNs::new();
    let path = pod.path().to_path_buf();
    let n = net(json!({}));
    node.enter(|| add(&n, "c-gone", &path).unwrap());
    pod.close();
    node.enter(|| {
        del(&n, "c-gone", Some(&path)).unwrap();
        del(&n, "c-gone", None).unwrap();
    });
    assert!(reservations(n.data.path(), "mvnet").is_empty());
}

#[test]
fn bad_mode_is_a_config_error_before_any_allocation() {
    let node = node();
    let pod = TestNs::new();
    let n = net(json!({"mode": "sideways"}));
    node.enter(|| {
        let e = add(&n, "c-bad", pod.path()).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("\"mode\""), "{e}");
        assert!(reservations(n.data.path(), "mvnet").is_empty());
    });
}

fn reference(command: &str, n: &Net, cid: &str, pod: &Path) -> Value {
    reference_in("/usr/lib/cni", command, n, cid, pod)
}

/// The reference macvlan with `cni_path` as its `CNI_PATH` (where it finds its IPAM).
fn reference_in(cni_path: &str, command: &str, n: &Net, cid: &str, pod: &Path) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/lib/cni/macvlan")
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", pod)
        .env("CNI_IFNAME", "eth0")
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
fn same_outcome_as_the_reference_macvlan() {
    let (ours_node, ref_node) = (node(), node());
    let (ours_pod, ref_pod) = (TestNs::new(), TestNs::new());
    let extra = json!({"mode": "vepa", "mtu": 1300});
    let (ours_net, ref_net) = (net(extra.clone()), net(extra));
    let ours = ours_node.enter(|| add(&ours_net, "c-eq", ours_pod.path()).unwrap());
    let theirs = ref_node.enter(|| reference("ADD", &ref_net, "c-eq", ref_pod.path()));
    let theirs = CniResult::parse_any(&theirs).unwrap().0;
    let shape = |r: &CniResult| {
        let ifs: Vec<_> = r
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.sandbox.is_some()))
            .collect();
        (ifs, r.ips.clone(), r.routes.clone())
    };
    assert_eq!(shape(&ours), shape(&theirs));
    let view = |ns: &TestNs| {
        let l = link(ns, "eth0");
        let routes = ns.sh("ip route show");
        let addrs = ns.sh("ip -4 -o addr show dev eth0 | awk '{print $4}'");
        (
            l["mtu"].clone(),
            l["linkinfo"]["info_data"]["mode"].clone(),
            routes,
            addrs,
        )
    };
    assert_eq!(view(&ours_pod), view(&ref_pod));
    ours_node.enter(|| del(&ours_net, "c-eq", Some(ours_pod.path())).unwrap());
    ref_node.enter(|| reference("DEL", &ref_net, "c-eq", ref_pod.path()));
    assert_eq!(
        ours_pod
            .exec(&["ip", "link", "show", "eth0"])
            .status
            .success(),
        ref_pod
            .exec(&["ip", "link", "show", "eth0"])
            .status
            .success()
    );
}

/// An exec'd IPAM runs once the interface is in the pod, as under the reference macvlan: dhcp
/// runs its client on the interface. The stand-in answers only if it can see `CNI_IFNAME` in
/// `CNI_NETNS` when it runs.
#[test]
fn exec_ipam_runs_once_the_interface_exists_as_under_the_reference() {
    let node = node();
    let dir = tempfile::tempdir().unwrap();
    common::write_needs_link_ipam(dir.path());
    let n = net(json!({"ipam": {"type": "needs-link"}}));
    let (ours, theirs) = (TestNs::new(), TestNs::new());
    let cni_path = dir.path().display().to_string();
    node.enter(|| {
        let ipam = common::exec_ipam_from(&cni_path, "c-nl", Some(ours.path()), "eth0");
        let r = delegates::add(Kind::Macvlan, &req(&n, "c-nl", Some(ours.path()), &ipam))
            .unwrap()
            .result;
        assert_eq!(r.ips[0].address.to_string(), "10.79.0.50/24");
        let v = reference_in(&cni_path, "ADD", &n, "c-nl-ref", theirs.path());
        assert_eq!(v["ips"][0]["address"], "10.79.0.50/24");
    });
    // The IPv4 address as the reference configures it (the link-local ones follow the MACs).
    let addrs = |ns: &TestNs| ns.json("ip -j -4 addr show dev eth0")[0]["addr_info"].clone();
    assert_eq!(addrs(&ours), addrs(&theirs));
}
