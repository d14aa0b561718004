//! A kubeconfig whose server is plain `http://`: accepted only for a loopback server (`kubectl
//! proxy` on the node), refused with code 7 saying why for any other.
#![allow(clippy::unwrap_used)]

mod common;

use common::apiserver::{FakeApi, FakeOptions, Route, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};
use std::path::Path;

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

fn conf(w: &World, kubeconfig: &Path) -> Value {
    let mut c = w.plexus_conf(
        &w.bridge_conf("cluster", "khbr0", "10.97.0.0/24"),
        json!({"kubeconfig": kubeconfig.display().to_string()}),
    );
    c.as_object_mut().unwrap().remove("manifests");
    c
}

fn call(w: &World, cid: &str, pod: &PodNs) -> Call {
    let mut c = Call::new("ADD", cid, Some(&pod.path), w).pod("default", "web");
    c.args = format!("{};K8S_POD_UID={UID}", c.args);
    c
}

#[test]
fn plain_http_to_a_loopback_server_is_used() {
    enter_node_netns();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let w = World::new();
    let api = FakeApi::start(FakeOptions {
        tls: false,
        ..FakeOptions::default()
    });
    api.add_nad(nad_object(
        "default",
        "blue",
        Some(&w.macvlan_conf("blue", "upl0", "10.97.1.0/24")),
    ));
    api.add_pod(pod_object(
        "default",
        "web",
        UID,
        &[("k8s.v1.cni.cncf.io/networks", "blue")],
    ));
    let port = api.addr().port();
    for (file, server) in [
        ("kc-ip", format!("http://127.0.0.1:{port}")),
        ("kc-name", format!("http://localhost:{port}")),
    ] {
        let conf = conf(&w, &api.kubeconfig_for(w.tmp.path(), file, &server));
        let pod = PodNs::new();
        let add = call(&w, "kh1", &pod);
        add.run_json(&conf).ok();
        assert_eq!(pod.links(), ["eth0", "lo", "net1"], "{server}");
        add.with("DEL").run_json(&conf).ok();
        w.assert_clean(Some(&pod));
    }
    assert!(!api.requests_for(Route::GetPod).is_empty());
}

#[test]
fn plain_http_to_any_other_server_is_code_7_saying_why() {
    enter_node_netns();
    let w = World::new();
    let api = FakeApi::start(FakeOptions {
        tls: false,
        ..FakeOptions::default()
    });
    for server in ["http://10.255.255.1:6443", "http://[fd00::1]:6443"] {
        let conf = conf(&w, &api.kubeconfig_for(w.tmp.path(), "kc-remote", server));
        let pod = PodNs::new();
        let e = call(&w, "kh2", &pod).run_json(&conf).err(7);
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains("loopback") && msg.contains("clear text"),
            "{msg}"
        );
        w.assert_clean(Some(&pod));
    }
    assert!(api.requests().is_empty());
}
