//! Multus thin-plugin confs as Multus's documentation shapes them (tests/fixtures/multus/),
//! run through the real binary with only `type` changed: `clusterNetwork` as a NAD name, a
//! conf name, a file and a directory; several inline `delegates`; `defaultNetworks` with
//! `systemNamespaces`; `logOptions`. The store is the fake API server over HTTPS; every
//! delegate runs as a built-in, the confs' default.
#![allow(clippy::unwrap_used)]

mod common;

use common::apiserver::{FakeApi, FakeOptions, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

struct Node {
    w: World,
    api: FakeApi,
    conf_dir: PathBuf,
    log_file: PathBuf,
}

impl Node {
    fn new() -> Node {
        enter_node_netns();
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        let w = World::new();
        let api = FakeApi::start(FakeOptions::default());
        let conf_dir = w.tmp.path().join("multus.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        // The file `clusterNetwork` names by path, by directory and by conf name.
        let cluster = w.bridge_conf("cluster-from-file", "mcbr1", "10.91.0.0/24");
        std::fs::write(conf_dir.join("10-cluster.conf"), cluster.to_string()).unwrap();
        let n = Node {
            log_file: w.tmp.path().join("multus.log"),
            w,
            api,
            conf_dir,
        };
        let nad = |ns: &str, name: &str, conf: Value| {
            n.api.add_nad(nad_object(ns, name, Some(&conf)));
        };
        nad(
            "kube-system",
            "cluster-net",
            n.w.bridge_conf("cluster-net", "mcbr2", "10.92.0.0/24"),
        );
        nad(
            "kube-system",
            "extra-net",
            n.w.macvlan_conf("extra-net", "upl0", "10.92.1.0/24"),
        );
        nad(
            "default",
            "blue",
            n.w.macvlan_conf("blue", "upl0", "10.92.2.0/24"),
        );
        n.api
            .add_pod(pod_object("default", "web", UID, &[(NETWORKS, "blue")]));
        n.api.add_pod(pod_object("default", "plain", UID, &[]));
        n.api.add_pod(pod_object("admin", "tool", UID, &[]));
        n
    }

    /// The fixture with its paths filled in and `type` changed from multus to plexus: the
    /// one edit a user makes.
    fn conf(&self, fixture: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/multus/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        );
        let kubeconfig = self.api.kubeconfig(self.w.tmp.path());
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("@KUBECONFIG@", &kubeconfig.display().to_string())
            .replace("@CONFDIR@", &self.conf_dir.display().to_string())
            .replace("@CNIDIR@", &self.w.cni_dir.display().to_string())
            .replace("@BINDIR@", &self.w.bin.display().to_string())
            .replace("@IPAMDIR@", &self.w.ipam_dir.display().to_string())
            .replace("@LOGFILE@", &self.log_file.display().to_string());
        let mut v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "multus", "{fixture} is a Multus conf");
        v["type"] = json!("plexus");
        // Not a second edit of the Multus conf's meaning: this test's NADs keep host-local
        // reservations in the test's own folder instead of /var/lib/cni/networks, and a node
        // must allow such a folder before a NAD may choose it (README, ipamDataDirs).
        if v.get("ipamDataDirs").is_none() {
            v["ipamDataDirs"] = json!([self.w.ipam_dir.display().to_string()]);
        }
        v
    }

    fn call(&self, command: &str, cid: &str, pod: &PodNs, ns: &str, name: &str) -> Call {
        let mut c = Call::new(command, cid, Some(&pod.path), &self.w).pod(ns, name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    }

    /// ADD of pod `ns/name` with `conf`: the pod's links and the result; then DEL, and
    /// nothing is left.
    fn attach(&self, conf: &Value, ns: &str, name: &str) -> (Vec<String>, Value, PodNs) {
        let pod = PodNs::new();
        let cid = format!("mc-{ns}-{name}");
        let out = self.call("ADD", &cid, &pod, ns, name).run_json(conf);
        out.ok();
        let result = out.json();
        let links = pod.links();
        (links, result, pod)
    }

    fn detach(&self, conf: &Value, ns: &str, name: &str, pod: PodNs) {
        let cid = format!("mc-{ns}-{name}");
        self.call("DEL", &cid, &pod, ns, name).run_json(conf).ok();
        self.w.assert_clean(Some(&pod));
    }
}

fn links(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.push("lo".into());
    v.sort();
    v
}

fn first_ip(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn cluster_network_as_a_nad_name() {
    let n = Node::new();
    let conf = n.conf("cluster-nad.conf");
    let (l, result, pod) = n.attach(&conf, "default", "web");
    assert_eq!(l, links(&["eth0", "net1"]));
    assert_eq!(result["cniVersion"], "0.3.1");
    assert!(first_ip(&result).starts_with("10.92.0."), "{result}");
    assert!(pod.addrs("net1")[0].starts_with("10.92.2."));
    n.detach(&conf, "default", "web", pod);
}

#[test]
fn cluster_network_as_a_conf_name_in_conf_dir() {
    let n = Node::new();
    let conf = n.conf("cluster-conf-name.conf");
    let (l, result, pod) = n.attach(&conf, "default", "plain");
    assert_eq!(l, links(&["eth0"]));
    assert!(first_ip(&result).starts_with("10.91.0."), "{result}");
    n.detach(&conf, "default", "plain", pod);
}

#[test]
fn cluster_network_as_a_directory() {
    let n = Node::new();
    let conf = n.conf("cluster-dir.conf");
    let (l, result, pod) = n.attach(&conf, "default", "plain");
    assert_eq!(l, links(&["eth0"]));
    assert!(first_ip(&result).starts_with("10.91.0."), "{result}");
    n.detach(&conf, "default", "plain", pod);
}

/// The documentation's full example: a file path, defaultNetworks, systemNamespaces,
/// capabilities and logOptions.
#[test]
fn cluster_network_as_a_file_with_default_networks_system_namespaces_and_log_options() {
    let n = Node::new();
    let conf = n.conf("cluster-file.conf");
    let (l, result, pod) = n.attach(&conf, "default", "web");
    assert_eq!(l, links(&["eth0", "net1", "net2"]));
    assert!(first_ip(&result).starts_with("10.91.0."), "{result}");
    assert!(
        pod.addrs("net1")[0].starts_with("10.92.1."),
        "defaultNetworks first"
    );
    assert!(
        pod.addrs("net2")[0].starts_with("10.92.2."),
        "then the pod's networks"
    );
    n.detach(&conf, "default", "web", pod);

    // A pod in a system namespace gets no defaultNetworks.
    let (l, _, pod) = n.attach(&conf, "admin", "tool");
    assert_eq!(l, links(&["eth0"]));
    n.detach(&conf, "admin", "tool", pod);

    let log = std::fs::read_to_string(&n.log_file).unwrap();
    assert!(
        log.contains("DEBUG"),
        "logLevel debug writes debug lines: {log}"
    );
}

/// Multus attaches every inline delegate in order: the first as CNI_IFNAME, the rest as
/// net1.., then the pod's networks.
#[test]
fn several_inline_delegates_are_all_attached_in_order() {
    let n = Node::new();
    let conf = n.conf("delegates.conf");
    let (l, result, pod) = n.attach(&conf, "default", "web");
    assert_eq!(l, links(&["eth0", "net1", "net2"]));
    assert!(first_ip(&result).starts_with("10.90.0."), "{result}");
    assert!(pod.addrs("eth0")[0].starts_with("10.90.0."));
    assert!(pod.addrs("net1")[0].starts_with("10.90.1."), "delegates[1]");
    assert!(
        pod.addrs("net2")[0].starts_with("10.92.2."),
        "the pod's network"
    );
    n.detach(&conf, "default", "web", pod);
}
