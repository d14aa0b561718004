//! DEL never refuses for a reason ADD already refused: a conf that fails validation makes
//! ADD fail before anything is created (nothing journaled, nothing rolled back), so its DEL
//! succeeds and leaves nothing, lock included. And an entry that cannot be read as a whole still has what it
//! recorded removed. Through the real binary with the built-ins, ending with the leak oracle.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn conf(w: &World, bridge: &str, subnet: &str) -> Value {
    w.plexus_conf(
        &w.bridge_conf("cluster", bridge, subnet),
        json!({"builtins": true, "logLevel": "warning"}),
    )
}

#[test]
fn del_succeeds_for_every_conf_add_refused() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let ipam = json!({"type": "host-local", "subnet": "10.90.9.0/24",
                      "dataDir": w.ipam_dir.display().to_string()});
    let cases = [
        ("vni", json!({"type": "vxlan", "vni": 0})),
        ("port", json!({"type": "vxlan", "vni": 42, "port": 70000})),
        (
            "bridge",
            json!({"type": "bridge", "bridge": "a-bridge-name-too-long"}),
        ),
        (
            "mtu",
            json!({"type": "bridge", "bridge": "br-x", "mtu": "abc"}),
        ),
        (
            "mode",
            json!({"type": "macvlan", "master": "upl0", "mode": "bogus"}),
        ),
        (
            "dataDir",
            json!({"type": "macvlan", "master": "upl0",
                           "ipam": {"type": "host-local", "subnet": "10.90.9.0/24",
                                    "dataDir": "/etc"}}),
        ),
    ];
    let c = conf(&w, "cni-rc0", "10.88.80.0/24");
    let pod = PodNs::new();
    for (i, (key, nad)) in cases.iter().enumerate() {
        let mut nad = nad.clone();
        nad["cniVersion"] = json!("1.0.0");
        nad["name"] = json!(format!("bad{i}"));
        if nad.get("ipam").is_none() {
            nad["ipam"] = ipam.clone();
        }
        w.nad("default", &format!("bad{i}"), &nad);
        w.pod("default", &format!("p{i}"), &format!("bad{i}"));
        let add = Call::new("ADD", &format!("c-bad{i}"), Some(&pod.path), &w)
            .pod("default", &format!("p{i}"));
        let e = add.run_json(&c).err(7);
        assert!(e["msg"].as_str().unwrap().contains(key), "{key}: {e}");
        // The rollback's own DEL did not refuse either: nothing is left, lock included.
        w.assert_clean(Some(&pod));
        let del = add.with("DEL").run_json(&c);
        del.ok();
        w.assert_clean(Some(&pod));
    }
    // Every conf is checked before anything is created: the ADD says why, and there is
    // nothing to roll back.
    let e = Call::new("ADD", "c-bad0", Some(&pod.path), &w)
        .pod("default", "p0")
        .run_json(&c);
    assert!(
        e.stderr.contains("ADD refused before anything was created") && e.stderr.contains("vni"),
        "ADD says why: {}",
        e.stderr
    );
    assert!(!e.stderr.contains("rolling back"), "{}", e.stderr);
}

#[test]
fn an_unreadable_entry_still_has_what_it_recorded_removed() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "mv",
        &w.macvlan_conf("mv", "upl0", "10.89.1.0/24"),
    );
    w.pod("default", "p", "mv");
    let c = conf(&w, "cni-rc1", "10.88.81.0/24");
    let pod = PodNs::new();
    let add = Call::new("ADD", "c-salvage", Some(&pod.path), &w).pod("default", "p");
    add.run_json(&c).ok();
    assert_eq!(w.reservations().len(), 2);
    // The entry no longer parses as a whole, and the store cannot plan the pod again: its
    // NAD and pod are gone. Only the record itself can say what to undo.
    let entry = w
        .journal_files()
        .into_iter()
        .find(|f| f.ends_with(".json"))
        .unwrap();
    let path = w.cni_dir.join(entry);
    let mut v = w.journal_entry();
    v["format"] = json!(99);
    v["containerID"] = json!(["not", "a", "string"]);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    for f in std::fs::read_dir(&w.manifests).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    add.with("DEL").run_json(&c).ok();
    assert_eq!(w.reservations(), Vec::<String>::new(), "addresses released");
    assert_eq!(pod.links(), ["lo"], "links removed");
    assert_eq!(
        w.journal_files(),
        ["quarantine"],
        "only the quarantined copy"
    );
    assert_eq!(w.stray_processes(), Vec::<String>::new());
    w.assert_node_clean();
}
