//! The meta plugin with its built-in delegates: bridge, macvlan, ipvlan and vxlan run
//! in-process, with host-local and static IPAM in-process too. The plugin path given to plexus
//! holds none of those binaries, so a passing ADD proves nothing was exec'd.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn builtin_conf(w: &World, bridge: &str, subnet: &str) -> Value {
    w.plexus_conf(
        &w.bridge_conf("cluster", bridge, subnet),
        json!({"builtins": true}),
    )
}

/// A call whose CNI_PATH has no reference plugins: only this world's (empty) bin dir.
fn call(w: &World, command: &str, cid: &str, pod: &PodNs, name: &str) -> Call {
    let mut c = Call::new(command, cid, Some(&pod.path), w).pod("default", name);
    c.path = w.bin.display().to_string();
    c
}

fn networks(w: &World) {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "mv",
        &w.macvlan_conf("mv", "upl0", "10.89.1.0/24"),
    );
    w.nad(
        "default",
        "vx",
        &json!({"cniVersion": "1.0.0", "name": "vx", "type": "vxlan", "vni": 42,
                "underlayInterface": "upl0", "remotes": [],
                "ipam": {"type": "host-local", "subnet": "10.90.0.0/24",
                         "dataDir": w.ipam_dir.display().to_string()}}),
    );
    w.nad(
        "default",
        "st",
        &json!({"cniVersion": "1.0.0", "name": "st", "type": "macvlan", "master": "upl0",
                "capabilities": {"ips": true},
                "ipam": {"type": "static"}}),
    );
}

#[test]
fn lifecycle_runs_entirely_in_process() {
    enter_node_netns();
    let w = World::new();
    sh("ip addr add 192.0.2.1/24 dev lo");
    networks(&w);
    w.pod(
        "default",
        "p",
        r#"[{"name":"mv"},{"name":"vx"},{"name":"st","ips":["10.89.7.7/24"]}]"#,
    );
    let conf = builtin_conf(&w, "cni-bi0", "10.88.60.0/24");
    let pod = PodNs::new();
    let add = call(&w, "ADD", "c-bi", &pod, "p").run_json(&conf);
    add.ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1", "net2", "net3"]);
    assert_eq!(pod.addrs("eth0"), ["10.88.60.2/24"]);
    assert_eq!(pod.addrs("net1"), ["10.89.1.2/24"]);
    assert_eq!(pod.addrs("net2"), ["10.90.0.2/24"]);
    assert_eq!(pod.addrs("net3"), ["10.89.7.7/24"]);
    let node = node_links();
    assert!(
        node.contains(&"vxlan42".to_string()) && node.contains(&"vxbr42".to_string()),
        "{node:?}"
    );
    call(&w, "CHECK", "c-bi", &pod, "p").run_json(&conf).ok();
    call(&w, "DEL", "c-bi", &pod, "p").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
    let node = node_links();
    assert!(
        !node
            .iter()
            .any(|l| l.starts_with("vx") || l.starts_with("veth")),
        "left on the node: {node:?}"
    );
    call(&w, "DEL", "c-bi", &pod, "p").run_json(&conf).ok();
}

#[test]
fn built_ins_give_what_the_reference_plugins_give() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.pod("default", "p", "mv");
    let routes = |pod: &PodNs| {
        let out = pod.exec("ip -4 route show; ip -6 route show | grep -v fe80");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut seen = Vec::new();
    for (i, builtins) in [false, true].iter().enumerate() {
        let mut conf = w.plexus_conf(
            &w.bridge_conf("cluster", "cni-cmp", "10.88.61.0/24"),
            json!({}),
        );
        conf["builtins"] = json!(builtins);
        let pod = PodNs::new();
        let c = Call::new("ADD", &format!("c-cmp{i}"), Some(&pod.path), &w).pod("default", "p");
        let r = c.run_json(&conf);
        r.ok();
        let mut result = r.json();
        // MACs, sandbox paths and host veth names differ by nature (the reference plugin
        // picks a random veth name); everything else must match.
        for iface in result["interfaces"].as_array_mut().unwrap() {
            let iface = iface.as_object_mut().unwrap();
            iface.remove("mac");
            iface.remove("sandbox");
            if iface["name"].as_str().unwrap().starts_with("veth") {
                iface.insert("name".into(), json!("veth*"));
            }
        }
        seen.push((
            pod.links(),
            pod.addrs("eth0"),
            pod.addrs("net1"),
            routes(&pod),
            result,
        ));
        c.with("DEL").run_json(&conf).ok();
        w.assert_clean(Some(&pod));
        // host-local goes round-robin from its last reservation: start the next run afresh.
        std::fs::remove_dir_all(&w.ipam_dir).unwrap();
    }
    let (a, b) = (&seen[0], &seen[1]);
    assert_eq!(a.0, b.0, "interfaces");
    assert_eq!(a.1, b.1, "cluster addresses");
    assert_eq!(a.2, b.2, "secondary addresses");
    assert_eq!(a.3, b.3, "routes");
    assert_eq!(a.4, b.4, "result");
}

#[test]
fn del_after_the_netns_is_gone_releases_built_in_ipam() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.pod("default", "p", "mv, vx");
    let conf = builtin_conf(&w, "cni-bi2", "10.88.62.0/24");
    let pod = PodNs::new();
    call(&w, "ADD", "c-gone", &pod, "p").run_json(&conf).ok();
    assert_eq!(w.reservations().len(), 3);
    let path = pod.destroy();
    let mut del = Call::new("DEL", "c-gone", Some(&path), &w).pod("default", "p");
    del.path = w.bin.display().to_string();
    del.run_json(&conf).ok();
    w.assert_clean(None);
    let node = node_links();
    assert!(
        !node
            .iter()
            .any(|l| l.starts_with("vx") || l.starts_with("veth")),
        "left on the node: {node:?}"
    );
}

#[test]
fn a_link_failure_after_ipam_releases_the_address() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    // The master does not exist: IPAM has already allocated when the link fails.
    w.nad(
        "default",
        "broken",
        &w.macvlan_conf("broken", "no-such-master", "10.89.9.0/24"),
    );
    w.pod("default", "p", "mv, broken");
    let conf = builtin_conf(&w, "cni-bi3", "10.88.63.0/24");
    let pod = PodNs::new();
    let e = call(&w, "ADD", "c-broken", &pod, "p")
        .run_json(&conf)
        .err(7);
    assert!(e["msg"].as_str().unwrap().contains("default/broken"), "{e}");
    w.assert_clean(Some(&pod));
}

#[test]
fn ipvlan_on_a_kernel_without_it_is_code_103_and_leaves_nothing() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.nad(
        "default",
        "iv",
        &json!({"cniVersion": "1.0.0", "name": "iv", "type": "ipvlan", "master": "upl0",
                "ipam": {"type": "host-local", "subnet": "10.89.5.0/24",
                         "dataDir": w.ipam_dir.display().to_string()}}),
    );
    w.pod("default", "p", "mv, iv");
    let conf = builtin_conf(&w, "cni-bi4", "10.88.64.0/24");
    let pod = PodNs::new();
    let r = call(&w, "ADD", "c-iv", &pod, "p").run_json(&conf);
    let e = r.err(103);
    assert!(
        e["msg"].as_str().unwrap().contains("kernel lacks ipvlan"),
        "{e}"
    );
    w.assert_clean(Some(&pod));
}

#[test]
fn the_reference_binary_runs_when_a_type_is_opted_out() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.pod("default", "p", "mv");
    let mut conf = builtin_conf(&w, "cni-bi5", "10.88.65.0/24");
    conf["builtins"] = json!({"macvlan": false});
    let pod = PodNs::new();
    // With only this world's bin dir on the path, the opted-out macvlan cannot be found.
    let r = call(&w, "ADD", "c-opt", &pod, "p").run_json(&conf);
    let e = r.err(7);
    assert!(e["msg"].as_str().unwrap().contains("macvlan"), "{e}");
    w.assert_clean(Some(&pod));
    // With the reference plugins on the path it runs by exec.
    let c = Call::new("ADD", "c-opt2", Some(&pod.path), &w).pod("default", "p");
    c.run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    c.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}
