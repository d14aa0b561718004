//! What the pod's annotations and the conf's namespace rules do to the set of attachments:
//! the default-network override, namespace isolation on every path, systemNamespaces and
//! defaultNetworks, NADs with an empty spec.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn world() -> (World, Value) {
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "n1",
        &w.macvlan_conf("n1", "upl0", "10.89.1.0/24"),
    );
    w.nad(
        "team-b",
        "nb",
        &w.macvlan_conf("nb", "upl0", "10.89.2.0/24"),
    );
    w.nad(
        "shared",
        "ns",
        &w.macvlan_conf("ns", "upl0", "10.89.3.0/24"),
    );
    w.nad(
        "kube-system",
        "alt",
        &w.bridge_conf("alt", "cni-alt", "10.87.0.0/24"),
    );
    w.nad(
        "team-b",
        "alt-b",
        &w.bridge_conf("alt-b", "cni-altb", "10.86.0.0/24"),
    );
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-a0", "10.88.50.0/24"),
        json!({}),
    );
    (w, conf)
}

fn pod_with(w: &World, ns: &str, name: &str, annotations: &[(&str, &str)]) {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n"
    );
    for (k, v) in annotations {
        yaml.push_str(&format!("    {k}: '{}'\n", v.replace('\'', "''")));
    }
    w.manifest(&format!("pod-{ns}-{name}.yaml"), &yaml);
}

fn ips(run: &Run) -> Vec<String> {
    run.json()["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn default_network_annotation_replaces_the_cluster_network() {
    enter_node_netns();
    let (w, conf) = world();
    pod_with(
        &w,
        "default",
        "p",
        &[
            ("v1.multus-cni.io/default-network", "alt"),
            ("k8s.v1.cni.cncf.io/networks", "n1"),
        ],
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-alt", Some(&pod.path), &w).pod("default", "p");
    let r = call.run_json(&conf);
    r.ok();
    // eth0 comes from kube-system/alt, not the conf's cluster network.
    assert_eq!(ips(&r), ["10.87.0.2/24"]);
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn namespace_isolation_applies_to_every_reference_path() {
    enter_node_netns();
    let (w, mut conf) = world();
    conf["namespaceIsolation"] = json!(true);
    conf["globalNamespaces"] = json!("default,shared");
    let pod = PodNs::new();
    let cases: &[(&str, &str, &str)] = &[
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
        pod_with(&w, "team-a", &name, &[(key, value)]);
        let r = Call::new("ADD", &format!("c-iso{i}"), Some(&pod.path), &w)
            .pod("team-a", &name)
            .run_json(&conf);
        let e = r.err(101);
        assert!(
            e["msg"].as_str().unwrap().contains("team-b/"),
            "{what}: {e}"
        );
        assert_eq!(pod.links(), ["lo"], "{what}");
        assert_eq!(w.reservations(), Vec::<String>::new(), "{what}");
    }
    // Global namespaces and the pod's own are allowed.
    pod_with(
        &w,
        "team-a",
        "ok",
        &[("k8s.v1.cni.cncf.io/networks", "shared/ns, default/n1")],
    );
    let call = Call::new("ADD", "c-iso-ok", Some(&pod.path), &w).pod("team-a", "ok");
    call.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1", "net2"]);
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn default_networks_skip_system_namespaces_compared_by_namespace() {
    enter_node_netns();
    let (w, mut conf) = world();
    conf["defaultNetworks"] = json!(["default/n1"]);
    let pod = PodNs::new();
    // A pod in kube-system gets no defaultNetworks...
    let call = Call::new("ADD", "c-sys", Some(&pod.path), &w).pod("kube-system", "coredns");
    call.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo"]);
    call.with("DEL").run_json(&conf).ok();
    // ...and a pod *named* kube-system elsewhere does get them.
    let call = Call::new("ADD", "c-sys2", Some(&pod.path), &w).pod("default", "kube-system");
    call.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn empty_spec_nads_read_conf_dir_only_when_the_conf_opts_in() {
    enter_node_netns();
    let (w, mut conf) = world();
    let conf_dir = w.tmp.path().join("net.d");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::write(
        conf_dir.join("10-hostnet.conf"),
        serde_json::to_vec(&w.macvlan_conf("hostnet", "upl0", "10.89.4.0/24")).unwrap(),
    )
    .unwrap();
    conf["confDir"] = json!(conf_dir.display().to_string());
    w.manifest(
        "nad-empty.yaml",
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: hostnet\n",
    );
    pod_with(
        &w,
        "default",
        "e",
        &[("k8s.v1.cni.cncf.io/networks", "hostnet")],
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-empty", Some(&pod.path), &w).pod("default", "e");
    let e = call.run_json(&conf).err(7);
    assert!(
        e["msg"].as_str().unwrap().contains("default/hostnet"),
        "{e}"
    );
    assert_eq!(pod.links(), ["lo"]);
    conf["nadConfFromConfDir"] = json!(true);
    call.run_json(&conf).ok();
    assert_eq!(pod.addrs("net1"), ["10.89.4.2/24"]);
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn a_pod_missing_from_the_folder_gets_the_cluster_network_only() {
    enter_node_netns();
    let (w, mut conf) = world();
    conf["defaultNetworks"] = json!(["default/n1"]);
    let pod = PodNs::new();
    // podman passes only K8S_POD_NAME.
    let mut call = Call::new("ADD", "c-podman", Some(&pod.path), &w);
    call.args = "K8S_POD_NAME=not-in-folder".into();
    call.run_json(&conf).ok();
    assert_eq!(
        pod.links(),
        ["eth0", "lo", "net1"],
        "cluster + defaultNetworks"
    );
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn default_route_moves_the_pods_default_gateway() {
    enter_node_netns();
    let (w, mut conf) = world();
    conf["resultMode"] = json!("merged");
    pod_with(
        &w,
        "default",
        "gw",
        &[(
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name":"n1","default-route":["10.89.1.1"]}]"#,
        )],
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-gw", Some(&pod.path), &w).pod("default", "gw");
    let r = call.run_json(&conf);
    r.ok();
    let out = pod.exec("ip -4 route show default");
    let routes = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        routes.lines().count(),
        1,
        "exactly one default route: {routes}"
    );
    assert!(routes.contains("via 10.89.1.1 dev net1"), "{routes}");
    // The results agree with the netns: only net1's carries a default route.
    let v = r.json();
    let defaults: Vec<&Value> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rt| rt["dst"] == "0.0.0.0/0")
        .collect();
    assert_eq!(defaults, [&json!({"dst": "0.0.0.0/0", "gw": "10.89.1.1"})]);
    call.with("CHECK").run_json(&conf).ok();
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn device_plugin_resources_reach_the_delegate_and_the_status() {
    enter_node_netns();
    let (w, mut conf) = world();
    let seen = w.tmp.path().join("seen-conf");
    // A stand-in SR-IOV-like delegate: records the conf it got, reports one pod interface.
    w.script(
        "devcheck",
        &format!(
            r#"if [ "$CNI_COMMAND" = ADD ]; then cat > {seen}; echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"'$CNI_IFNAME'","sandbox":"'$CNI_NETNS'"}}],"ips":[{{"address":"10.66.0.5/24","interface":0}}]}}'; fi"#,
            seen = seen.display()
        ),
    );
    let checkpoint = w.tmp.path().join("kubelet_internal_checkpoint");
    std::fs::write(
        &checkpoint,
        json!({"Data": {"PodDeviceEntries": [
            {"PodUID": "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c", "ContainerName": "app",
             "ResourceName": "example.com/sriov", "DeviceIDs": {"0": ["0000:18:02.5", "0000:18:02.6"]}}
        ], "RegisteredDevices": {}}, "Checksum": 0})
        .to_string(),
    )
    .unwrap();
    conf["deviceCheckpoint"] = json!(checkpoint.display().to_string());
    w.manifest(
        "nad-sriov.yaml",
        &format!(
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: sriov\n  annotations:\n    k8s.v1.cni.cncf.io/resourceName: example.com/sriov\nspec:\n  config: '{}'\n",
            json!({"cniVersion": "1.0.0", "name": "sriov", "type": "devcheck", "capabilities": {"deviceID": true}})
        ),
    );
    w.pod("default", "vf", "sriov");
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-vf", Some(&pod.path), &w).pod("default", "vf");
    call.run_json(&conf).ok();
    let got: Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(got["runtimeConfig"]["deviceID"], "0000:18:02.5", "{got}");
    let journal = w.journal_entry();
    let status = &journal["networkStatus"][1];
    assert_eq!(status["name"], "default/sriov");
    assert_eq!(
        status["device-info"],
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.5"}})
    );
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}
