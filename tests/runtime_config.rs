//! `runtimeConfig` as real runtimes write it: containerd 1.6 fills it from Go structs without
//! JSON tags (`HostPort`, `IngressRate`, `Servers`, `Subnet`), and passes every pod
//! annotation under `io.kubernetes.cri.pod-annotations` when the plugin declares it.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// The runtimeConfig containerd 1.6 sends with these capabilities declared, byte for byte.
fn containerd_runtime_config() -> Value {
    json!({
        "portMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
        "bandwidth": {"IngressRate": 10000000u64, "IngressBurst": 4294967295u64,
                      "EgressRate": 20000000u64, "EgressBurst": 4294967295u64},
        "dns": {"Servers": ["10.96.0.10"], "Searches": ["default.svc.cluster.local"],
                "Options": ["ndots:5"]}
    })
}

/// A stand-in plugin that keeps the conf it was given (per command) and succeeds.
fn recorder(w: &World) {
    let dir = w.tmp.path().display().to_string();
    w.script(
        "recorder",
        &format!(
            "cat > {dir}/recorded.$CNI_COMMAND.json\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\"}}'\nexit 0"
        ),
    );
}

fn recorded(w: &World, command: &str) -> Value {
    let text = std::fs::read_to_string(w.tmp.path().join(format!("recorded.{command}.json")))
        .unwrap_or_else(|e| panic!("the stand-in got no {command}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn go_spelled_values_reach_delegates_in_the_conventions_spelling() {
    enter_node_netns();
    let w = World::new();
    recorder(&w);
    let cluster = json!({"cniVersion": "1.0.0", "name": "rc", "plugins": [
        {"type": "recorder", "capabilities": {"portMappings": true, "bandwidth": true, "dns": true}}
    ]});
    let conf = w.plexus_conf(
        &cluster,
        json!({"runtimeConfig": containerd_runtime_config(),
               "capabilities": {"portMappings": true, "bandwidth": true, "dns": true}}),
    );
    let pod = PodNs::new();
    let add = Call::new("ADD", "rc1", Some(&pod.path), &w);
    add.run_json(&conf).ok();
    assert_eq!(
        recorded(&w, "ADD")["runtimeConfig"],
        json!({
            "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
            "bandwidth": {"ingressRate": 10000000u64, "ingressBurst": 4294967295u64,
                          "egressRate": 20000000u64, "egressBurst": 4294967295u64},
            "dns": {"servers": ["10.96.0.10"], "searches": ["default.svc.cluster.local"],
                    "options": ["ndots:5"]}
        })
    );
    add.with("DEL").run_json(&conf).ok();
    assert_eq!(
        recorded(&w, "DEL")["runtimeConfig"]["portMappings"][0]["hostPort"],
        18080,
        "DEL hands the same runtimeConfig"
    );
    w.assert_clean(Some(&pod));
}

/// containerd writes `ipRanges` as `[[{"Subnet": .., "RangeStart": .., "RangeEnd": "",
/// "Gateway": ""}]]`: the built-in host-local and the reference one (exec'd) both allocate
/// from the range it names.
#[test]
fn go_spelled_ip_ranges_are_honoured_in_process_and_by_the_reference() {
    enter_node_netns();
    for builtins in [true, false] {
        let w = World::new();
        // The pool is the runtime's alone (a conf subnet too would overlap it).
        let cluster = json!({"cniVersion": "1.0.0", "name": "ranges", "type": "bridge",
            "bridge": "rcbr0", "capabilities": {"ipRanges": true},
            "ipam": {"type": "host-local", "dataDir": w.ipam_dir.display().to_string()}});
        let conf = w.plexus_conf(
            &cluster,
            json!({"builtins": builtins, "runtimeConfig": {"ipRanges": [[{
                "Subnet": "10.93.0.0/24", "RangeStart": "10.93.0.50", "RangeEnd": "", "Gateway": ""
            }]]}}),
        );
        let pod = PodNs::new();
        let add = Call::new("ADD", "rc2", Some(&pod.path), &w);
        let result = add.run_json(&conf);
        result.ok();
        assert_eq!(
            result.json()["ips"][0]["address"],
            "10.93.0.50/24",
            "builtins {builtins}"
        );
        add.with("DEL").run_json(&conf).ok();
        w.assert_clean(Some(&pod));
    }
}

const POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";
const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

fn with_pod_annotations(conf: &mut Value, annotations: Value) {
    conf["capabilities"] = json!({ POD_ANNOTATIONS: true });
    conf["runtimeConfig"] = json!({ POD_ANNOTATIONS: annotations });
}

/// With the manifests store, a pod the folder does not describe still gets the networks its
/// annotations (passed by the runtime) ask for.
#[test]
fn a_pod_missing_from_the_manifests_folder_gets_its_networks_from_the_runtime() {
    enter_node_netns();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let w = World::new();
    w.nad(
        "default",
        "blue",
        &w.macvlan_conf("blue", "upl0", "10.94.1.0/24"),
    );
    let mut conf = w.plexus_conf(
        &w.bridge_conf("cluster", "pabr0", "10.94.0.0/24"),
        json!({}),
    );
    with_pod_annotations(
        &mut conf,
        json!({"k8s.v1.cni.cncf.io/networks": "blue", "other": "x"}),
    );
    let pod = PodNs::new();
    let add = Call::new("ADD", "pa1", Some(&pod.path), &w).pod("default", "not-in-folder");
    add.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    assert!(pod.addrs("net1")[0].starts_with("10.94.1."));
    add.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

/// With the API store the runtime's copy of the annotations says which networks; the pod is
/// still read from the API to check its UID (and to publish network-status).
#[test]
fn with_the_api_store_the_runtimes_annotations_choose_the_networks_and_the_uid_is_still_checked() {
    use common::apiserver::{FakeApi, FakeOptions, Route, nad_object, pod_object};
    enter_node_netns();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let w = World::new();
    let api = FakeApi::start(FakeOptions::default());
    for (name, subnet) in [("blue", "10.95.1.0/24"), ("green", "10.95.2.0/24")] {
        api.add_nad(nad_object(
            "default",
            name,
            Some(&w.macvlan_conf(name, "upl0", subnet)),
        ));
    }
    // The API's copy (edited after the sandbox was made) names blue; the runtime's, green.
    api.add_pod(pod_object(
        "default",
        "web",
        UID,
        &[("k8s.v1.cni.cncf.io/networks", "blue")],
    ));
    let mut conf = w.plexus_conf(
        &w.bridge_conf("cluster", "pabr1", "10.95.0.0/24"),
        json!({"kubeconfig": api.kubeconfig(w.tmp.path()).display().to_string()}),
    );
    conf.as_object_mut().unwrap().remove("manifests");
    with_pod_annotations(&mut conf, json!({"k8s.v1.cni.cncf.io/networks": "green"}));
    let pod = PodNs::new();
    let mut add = Call::new("ADD", "pa2", Some(&pod.path), &w).pod("default", "web");
    add.args = format!("{};K8S_POD_UID={UID}", add.args);
    add.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    assert!(pod.addrs("net1")[0].starts_with("10.95.2."), "green");
    assert_eq!(api.requests_for(Route::GetPod).len(), 1);
    assert_eq!(api.requests_for(Route::PatchPodStatus).len(), 1);
    add.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));

    // Another pod of the same name (other UID): refused before anything is attached.
    let mut stale = Call::new("ADD", "pa3", Some(&pod.path), &w).pod("default", "web");
    stale.args = format!(
        "{};K8S_POD_UID=99999999-8888-4777-8666-555555555555",
        stale.args
    );
    stale.run_json(&conf).err(102);
    // A pod the API server no longer has gets nothing, whatever the runtime passed.
    api.delete_pod("default", "web");
    add.run_json(&conf).err(3);
    w.assert_clean(Some(&pod));
}

#[test]
fn malformed_runtime_pod_annotations_are_code_7() {
    enter_node_netns();
    let w = World::new();
    let mut conf = w.plexus_conf(
        &w.bridge_conf("cluster", "pabr2", "10.96.0.0/24"),
        json!({}),
    );
    with_pod_annotations(&mut conf, json!({"k8s.v1.cni.cncf.io/networks": 5}));
    let pod = PodNs::new();
    let e = Call::new("ADD", "pa4", Some(&pod.path), &w)
        .run_json(&conf)
        .err(7);
    assert!(e["msg"].as_str().unwrap().contains(POD_ANNOTATIONS), "{e}");
    w.assert_clean(Some(&pod));
}
