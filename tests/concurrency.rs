//! Many pods at once on one node (reliability matrix C1): 64 ADDs in parallel, two
//! attachments each, on networks with room for fewer pods than that. Every success gets
//! unique addresses, every failure leaves nothing, and DEL of all of them leaves nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;

fn run_parallel(builtins: bool, bridge: &str) {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    // A /26 has 61 usable addresses after the gateway: fewer than 64 pods.
    w.nad(
        "default",
        "small",
        &w.macvlan_conf("small", "upl0", "10.89.1.0/26"),
    );
    w.pod("default", "p", "small");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", bridge, "10.88.80.0/24"),
        json!({"builtins": builtins}),
    );
    let pods: Vec<PodNs> = (0..64).map(|_| PodNs::new()).collect();
    let calls: Vec<Call> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| Call::new("ADD", &format!("c-par{i}"), Some(&p.path), &w).pod("default", "p"))
        .collect();
    let stdin = serde_json::to_vec(&conf).unwrap();
    // Spawn all at once from this thread (children start in its netns, the node's).
    let children: Vec<std::process::Child> = calls.iter().map(|c| c.spawn(&stdin)).collect();
    let mut ok = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if out.status.success() {
            ok.push(i);
        } else {
            assert_eq!(v["code"], 100, "pod {i}: {v}");
            assert!(
                v["details"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no IP addresses available")
                    || v["msg"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("no IP addresses available"),
                "pod {i}: {v}"
            );
            assert_eq!(pods[i].links(), ["lo"], "pod {i}: a failed ADD left links");
        }
    }
    assert_eq!(ok.len(), 61, "successes = the /26's capacity");
    let mut seen = BTreeSet::new();
    for i in &ok {
        for dev in ["eth0", "net1"] {
            for a in pods[*i].addrs(dev) {
                assert!(seen.insert(a.clone()), "{a} given twice");
            }
        }
    }
    assert_eq!(seen.len(), 61 * 2);
    assert_eq!(
        w.reservations().len(),
        61 * 2,
        "reservations match the successes"
    );
    let journal_entries = w
        .journal_files()
        .iter()
        .filter(|f| f.ends_with(".json"))
        .count();
    assert_eq!(journal_entries, 61, "only successful ADDs stay journaled");
    for c in &calls {
        c.with("DEL").run_json(&conf).ok();
    }
    w.assert_clean(None);
    for p in &pods {
        assert_eq!(p.links(), ["lo"]);
    }
}

#[test]
fn sixty_four_parallel_adds_through_the_reference_plugins() {
    run_parallel(false, "cni-par0");
}

#[test]
fn sixty_four_parallel_adds_through_the_built_ins() {
    run_parallel(true, "cni-par1");
}

/// C2 and C3: churn of ADD/DEL cycles from several workers at once, and ADD racing DEL on
/// the same container (which the spec forbids, but runtimes have done): no crash, every
/// command answers, and after a final DEL nothing is left.
#[test]
fn churn_and_same_container_races_leave_nothing() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "n1",
        &w.macvlan_conf("n1", "upl0", "10.89.1.0/24"),
    );
    w.pod("default", "p", "n1");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-churn", "10.88.81.0/24"),
        json!({"builtins": true}),
    );
    let stdin = serde_json::to_vec(&conf).unwrap();
    let spawn = |command: &str, cid: &str, netns: &std::path::Path| {
        Call::new(command, cid, Some(netns), &w)
            .pod("default", "p")
            .spawn(&stdin)
    };
    // Churn: 4 pods cycled 30 times, their ADDs and DELs overlapping each other.
    let pods: Vec<PodNs> = (0..4).map(|_| PodNs::new()).collect();
    for round in 0..30 {
        let adds: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| spawn("ADD", &format!("churn{i}-{round}"), &p.path))
            .collect();
        for (i, a) in adds.into_iter().enumerate() {
            let out = a.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round} pod {i}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let dels: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| spawn("DEL", &format!("churn{i}-{round}"), &p.path))
            .collect();
        for d in dels {
            assert!(d.wait_with_output().unwrap().status.success());
        }
    }
    w.assert_clean(None);
    for p in &pods {
        assert_eq!(p.links(), ["lo"]);
    }
    // Races on one container: ADD and DEL launched together; either order is possible, both
    // must answer with a CNI result or error object, and a final DEL cleans up.
    let pod = &pods[0];
    for round in 0..20 {
        let cid = format!("race-{round}");
        let add = spawn("ADD", &cid, &pod.path);
        let del = spawn("DEL", &cid, &pod.path);
        for (command, child) in [("ADD", add), ("DEL", del)] {
            let out = child.wait_with_output().unwrap();
            assert_answered(command, &out);
        }
        Call::new("DEL", &cid, Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf)
            .ok();
        assert_eq!(pod.links(), ["lo"], "round {round}");
    }
    w.assert_clean(None);
}
