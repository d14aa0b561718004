//! An attachment's DEL and rollback remove only what that attachment created. Another pod,
//! the node, an interface the pod had before, and a second ADD of the same container keep
//! their links (same index, MAC and addresses) and their addresses, whatever names clash.
//! Every case through the real binary, in real namespaces, ending with the leak oracle.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// The uplink `upl0` and NAD `mv` (macvlan on it, host-local on 10.89.1.0/24).
fn networks(w: &World) {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "mv",
        &w.macvlan_conf("mv", "upl0", "10.89.1.0/24"),
    );
}

fn conf(w: &World, builtins: bool, bridge: &str, subnet: &str) -> Value {
    let mut c = w.plexus_conf(&w.bridge_conf("cluster", bridge, subnet), json!({}));
    c["builtins"] = json!(builtins);
    c
}

fn call(w: &World, command: &str, cid: &str, pod: &PodNs, name: &str) -> Call {
    Call::new(command, cid, Some(&pod.path), w).pod("default", name)
}

#[test]
fn del_with_another_pods_netns_or_the_nodes_removes_nothing_in_it() {
    for builtins in [true, false] {
        enter_node_netns();
        let w = World::new();
        networks(&w);
        w.pod("default", "p", "mv");
        let c = conf(&w, builtins, "cni-o0", "10.88.70.0/24");
        let (a, b) = (PodNs::new(), PodNs::new());
        call(&w, "ADD", "c-a", &a, "p").run_json(&c).ok();
        call(&w, "ADD", "c-b", &b, "p").run_json(&c).ok();
        let b_before = b.link_table();
        assert_eq!(b_before.len(), 3, "lo, eth0, net1: {b_before:?}");
        let node_before = node_link_table();

        // A's DEL names B's netns: B keeps everything; A is undone in the netns its ADD
        // recorded, which still is A's.
        let mut del_a = call(&w, "DEL", "c-a", &a, "p");
        del_a.netns = Some(b.path.clone());
        del_a.run_json(&c).ok();
        assert_eq!(b.link_table(), b_before, "builtins={builtins}");
        assert_eq!(a.links(), ["lo"], "builtins={builtins}");
        let a_host_ends = node_before.len() - node_link_table().len();
        assert_eq!(a_host_ends, 1, "only A's host veth left the node");
        assert_eq!(w.reservations().len(), 2, "B's two addresses stay");

        // B's DEL names the node's own netns: the node keeps its links but B's host end.
        let node_before = node_link_table();
        let mut del_b = call(&w, "DEL", "c-b", &b, "p");
        del_b.netns = Some(node_netns_path());
        del_b.run_json(&c).ok();
        let node_after = node_link_table();
        assert_eq!(node_before.len() - node_after.len(), 1);
        assert!(node_after.iter().all(|l| node_before.contains(l)));
        assert_eq!(b.links(), ["lo"]);
        w.assert_clean(Some(&b));
    }
}

#[test]
fn del_whose_netns_path_now_names_another_pod_touches_nothing_there() {
    // A's netns is gone and its recorded path is not B's: B's netns, given as CNI_NETNS, is
    // not the one A's ADD used. The delegates get no netns and only release A's addresses.
    for builtins in [true, false] {
        enter_node_netns();
        let w = World::new();
        networks(&w);
        w.pod("default", "p", "mv");
        let c = conf(&w, builtins, "cni-o1", "10.88.71.0/24");
        let (a, b) = (PodNs::new(), PodNs::new());
        call(&w, "ADD", "c-a", &a, "p").run_json(&c).ok();
        call(&w, "ADD", "c-b", &b, "p").run_json(&c).ok();
        let b_before = b.link_table();
        let b_path = b.path.clone();
        let a_call = call(&w, "DEL", "c-a", &a, "p");
        a.destroy();
        let mut del_a = a_call;
        del_a.netns = Some(b_path);
        del_a.run_json(&c).ok();
        assert_eq!(b.link_table(), b_before, "builtins={builtins}");
        assert_eq!(
            w.reservations().len(),
            2,
            "A's addresses released, B's kept"
        );
        call(&w, "DEL", "c-b", &b, "p").run_json(&c).ok();
        w.assert_clean(Some(&b));
    }
}

#[test]
fn an_interface_the_pod_already_has_is_refused_and_kept() {
    for builtins in [true, false] {
        enter_node_netns();
        let w = World::new();
        networks(&w);
        w.pod("default", "p", "mv");
        let c = conf(&w, builtins, "cni-o2", "10.88.72.0/24");
        let pod = PodNs::new();
        let made = pod.exec(
            "ip link add net1 type veth peer name keep1 && ip addr add 192.0.2.9/24 dev net1 && ip link set net1 up",
        );
        assert!(made.status.success());
        let before = pod.link_table();
        let e = call(&w, "ADD", "c-x", &pod, "p").run_json(&c).err(7);
        assert!(e["msg"].as_str().unwrap().contains("net1"), "{e}");
        assert_eq!(pod.link_table(), before, "builtins={builtins}");
        assert_eq!(w.reservations(), Vec::<String>::new());
        assert_eq!(w.journal_files(), Vec::<String>::new());
        w.assert_node_clean();
        // The runtime's DEL after the failed ADD does not take it either.
        call(&w, "DEL", "c-x", &pod, "p").run_json(&c).ok();
        assert_eq!(pod.link_table(), before);

        // CNI_IFNAME=lo: the pod's loopback is an interface it already has.
        let mut lo = call(&w, "ADD", "c-lo", &pod, "q");
        lo.ifname = "lo".into();
        lo.run_json(&c).err(7);
        lo.with("DEL").run_json(&c).ok();
        assert_eq!(pod.link_table(), before, "builtins={builtins}");
        assert_eq!(w.reservations(), Vec::<String>::new());
        assert_eq!(w.journal_files(), Vec::<String>::new());
        w.assert_node_clean();
    }
}

#[test]
fn a_second_add_for_the_container_never_touches_the_first() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.pod("default", "p", "mv");
    let c = conf(&w, true, "cni-o3", "10.88.73.0/24");
    let pod = PodNs::new();
    let first = call(&w, "ADD", "c-2", &pod, "p");
    first.run_json(&c).ok();
    let (links, ips, journal) = (pod.link_table(), w.reservations(), w.journal_files());
    assert_eq!(ips.len(), 2);

    // Another CNI_IFNAME for the same container would plan net1 again: refused before
    // anything runs, so its rollback cannot release the first ADD's net1 address.
    let mut second = first.clone();
    second.ifname = "eth1".into();
    let e = second.run_json(&c).err(7);
    assert!(e["msg"].as_str().unwrap().contains("net1"), "{e}");
    second.with("DEL").run_json(&c).ok();
    assert_eq!(pod.link_table(), links);
    assert_eq!(w.reservations(), ips);
    assert_eq!(w.journal_files(), journal);

    // Without secondaries both ADDs succeed, and each DEL releases only its own address:
    // host-local keys reservations by container and interface.
    let mut other = call(&w, "ADD", "c-2", &pod, "podman");
    other.ifname = "eth1".into();
    other.run_json(&c).ok();
    assert_eq!(w.reservations().len(), 3);
    other.with("DEL").run_json(&c).ok();
    assert_eq!(pod.link_table(), links);
    assert_eq!(w.reservations(), ips);

    first.with("DEL").run_json(&c).ok();
    w.assert_clean(Some(&pod));
}

/// Two container IDs whose derived host veth names (the first name tried) are the same.
fn colliding_ids() -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for n in 0u64.. {
        let id = format!("c-{n}");
        let name = delegates::veth::host_veth_name(&id, "eth0");
        if let Some(first) = seen.insert(name, id.clone()) {
            return (first, id);
        }
    }
    unreachable!("a 32-bit name space has collisions")
}

#[test]
fn two_pods_whose_derived_veth_names_collide_cannot_hurt_each_other() {
    enter_node_netns();
    let w = World::new();
    let (id_a, id_b) = colliding_ids();
    let derived = delegates::veth::host_veth_name(&id_a, "eth0");
    assert_eq!(derived, delegates::veth::host_veth_name(&id_b, "eth0"));
    let good = conf(&w, true, "cni-o4", "10.88.74.0/24");
    // B's cluster network fails after its veth exists: a route via an unreachable gateway.
    let mut bad = good.clone();
    bad["delegates"][0]["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "10.77.77.1"}]);
    let (a, b) = (PodNs::new(), PodNs::new());

    call(&w, "ADD", &id_a, &a, "a").run_json(&good).ok();
    let a_pod = a.link_table();
    let a_host = node_link_table()
        .into_iter()
        .find(|l| l.name == derived)
        .expect("A's host end has the derived name");

    // B's failed ADD undoes only its own pair, never A's namesake.
    call(&w, "ADD", &id_b, &b, "b").run_json(&bad).err(100);
    assert_eq!(b.links(), ["lo"]);
    assert!(node_link_table().contains(&a_host), "A's host end kept");
    assert_eq!(a.link_table(), a_pod);
    assert_eq!(w.reservations().len(), 1, "B's address released, A's kept");

    // B's ADD picks another free name, reports it, and its DEL removes only that.
    let added = call(&w, "ADD", &id_b, &b, "b").run_json(&good);
    added.ok();
    let b_host = added.json()["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(b_host, derived);
    assert!(node_link_table().iter().any(|l| l.name == b_host));
    call(&w, "DEL", &id_b, &b, "b").run_json(&good).ok();
    assert!(node_link_table().contains(&a_host), "A's host end kept");
    assert!(!node_link_table().iter().any(|l| l.name == b_host));
    assert_eq!(a.link_table(), a_pod);

    // A's DEL the other way round, after B is set up again.
    call(&w, "ADD", &id_b, &b, "b").run_json(&good).ok();
    let b_pod = b.link_table();
    call(&w, "DEL", &id_a, &a, "a").run_json(&good).ok();
    assert_eq!(b.link_table(), b_pod);
    call(&w, "DEL", &id_b, &b, "b").run_json(&good).ok();
    assert_eq!(a.links(), ["lo"]);
    w.assert_clean(Some(&b));
}

#[test]
fn a_chain_that_changes_the_pods_mac_is_still_recognised() {
    // The built-in bridge makes eth0; the reference tuning plugin after it gives it another
    // MAC. The identity DEL checks is the one the chain ended with, so the batched removal
    // takes eth0 along with net1 instead of taking it for someone else's.
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.pod("default", "p", "mv");
    let mut bridge = w.bridge_conf("cluster", "cni-o5", "10.88.75.0/24");
    bridge.as_object_mut().unwrap().remove("cniVersion");
    bridge.as_object_mut().unwrap().remove("name");
    let cluster = json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
        bridge, {"type": "tuning", "mac": "02:aa:bb:cc:dd:ee"}
    ]});
    let c = w.plexus_conf(&cluster, json!({"builtins": true, "logLevel": "warning"}));
    let pod = PodNs::new();
    let add = call(&w, "ADD", "c-mac", &pod, "p");
    add.run_json(&c).ok();
    assert!(
        pod.link_table()
            .iter()
            .any(|l| l.name == "eth0" && l.mac == "02:aa:bb:cc:dd:ee")
    );
    let del = add.with("DEL").run_json(&c);
    del.ok();
    assert!(!del.stderr.contains("did not create"), "{}", del.stderr);
    w.assert_clean(Some(&pod));
}
