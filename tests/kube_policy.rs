//! Tenant isolation and pod-supplied values through the Kubernetes API store (reliability
//! matrix S7, S9): a refused reference never becomes an API request, and a pod cannot slip
//! addresses, MACs or args past a NAD that did not opt in.
#![allow(clippy::unwrap_used)]

mod common;

use common::apiserver::{FakeApi, FakeOptions, Route, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

struct Node {
    w: World,
    api: FakeApi,
}

impl Node {
    fn new() -> Node {
        enter_node_netns();
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        Node {
            w: World::new(),
            api: FakeApi::start(FakeOptions::default()),
        }
    }

    fn conf(&self, extra: Value) -> Value {
        let kubeconfig = self.api.kubeconfig(self.w.tmp.path());
        let mut c = self.w.plexus_conf(
            &self.w.bridge_conf("cluster", "cni-kp", "10.88.70.0/24"),
            json!({"kubeconfig": kubeconfig.display().to_string()}),
        );
        c.as_object_mut().unwrap().remove("manifests");
        if let (Value::Object(m), Value::Object(e)) = (&mut c, extra) {
            m.extend(e);
        }
        c
    }

    fn call(&self, cid: &str, pod: &PodNs, ns: &str, name: &str) -> Call {
        let mut c = Call::new("ADD", cid, Some(&pod.path), &self.w).pod(ns, name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    }
}

#[test]
fn s7_isolation_refuses_every_path_before_any_nad_request() {
    let n = Node::new();
    for (ns, name, subnet) in [
        ("team-b", "nb", "10.89.2.0/24"),
        ("shared", "ns", "10.89.3.0/24"),
    ] {
        let c = n.w.macvlan_conf(name, "upl0", subnet);
        n.api.add_nad(nad_object(ns, name, Some(&c)));
    }
    let alt = n.w.bridge_conf("alt-b", "cni-kpb", "10.86.0.0/24");
    n.api.add_nad(nad_object("team-b", "alt-b", Some(&alt)));
    let conf = n.conf(json!({"namespaceIsolation": true, "globalNamespaces": "default,shared"}));
    let pod = PodNs::new();
    let cases = [
        ("comma form", "k8s.v1.cni.cncf.io/networks", "team-b/nb"),
        (
            "JSON namespace",
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name":"nb","namespace":"team-b"}]"#,
        ),
        (
            "default-network",
            "v1.multus-cni.io/default-network",
            "team-b/alt-b",
        ),
    ];
    for (i, (what, key, value)) in cases.iter().enumerate() {
        let name = format!("iso{i}");
        n.api
            .add_pod(pod_object("team-a", &name, UID, &[(key, value)]));
        n.api.clear_requests();
        let e = n
            .call(&format!("c-s7-{i}"), &pod, "team-a", &name)
            .run_json(&conf)
            .err(101);
        assert!(
            e["msg"].as_str().unwrap().contains("team-b/"),
            "{what}: {e}"
        );
        let nad_gets: Vec<String> = n
            .api
            .requests_for(Route::GetNad)
            .iter()
            .map(|l| l.url())
            .collect();
        assert_eq!(
            nad_gets,
            Vec::<String>::new(),
            "{what}: no NAD request for a refused reference"
        );
        n.w.assert_clean(Some(&pod));
    }
    // A global namespace is allowed.
    n.api.add_pod(pod_object(
        "team-a",
        "ok",
        UID,
        &[("k8s.v1.cni.cncf.io/networks", "shared/ns")],
    ));
    let ok = n.call("c-s7-ok", &pod, "team-a", "ok");
    ok.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    ok.with("DEL").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn s9_pod_values_need_the_nads_consent_and_never_override_it() {
    let n = Node::new();
    let plain = n.w.macvlan_conf("plain", "upl0", "10.89.4.0/24");
    n.api.add_nad(nad_object("default", "plain", Some(&plain)));
    let mut pinned = n.w.macvlan_conf("pinned", "upl0", "10.89.5.0/24");
    pinned["args"] = json!({"cni": {"mode-note": "nad-owned"}});
    n.api
        .add_nad(nad_object("default", "pinned", Some(&pinned)));
    let mut broken = n.w.macvlan_conf("broken", "upl0", "10.89.6.0/24");
    broken["args"] = json!("x");
    n.api
        .add_nad(nad_object("default", "broken", Some(&broken)));
    let conf = n.conf(json!({}));
    let pod = PodNs::new();
    let cases = [
        (
            "ips without the ips capability",
            r#"[{"name":"plain","ips":["10.89.4.50/24"]}]"#,
            "ips",
        ),
        (
            "mac without the mac capability",
            r#"[{"name":"plain","mac":"02:00:00:00:00:42"}]"#,
            "mac",
        ),
        (
            "cni-args overriding a NAD key",
            r#"[{"name":"pinned","cni-args":{"mode-note":"pod-owned"}}]"#,
            "mode-note",
        ),
        ("NAD args not an object", "broken", "args"),
    ];
    for (i, (what, networks, names)) in cases.iter().enumerate() {
        let name = format!("s9-{i}");
        n.api.add_pod(pod_object(
            "default",
            &name,
            UID,
            &[("k8s.v1.cni.cncf.io/networks", networks)],
        ));
        let e = n
            .call(&format!("c-s9-{i}"), &pod, "default", &name)
            .run_json(&conf)
            .err(7);
        assert!(e["msg"].as_str().unwrap().contains(names), "{what}: {e}");
        n.w.assert_clean(Some(&pod));
    }
}
