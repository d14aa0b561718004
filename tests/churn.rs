//! A long churn of overlapping ADD/DEL cycles, and the counts of everything it could leak
//! taken before and after. Alone in its test binary: the counts are of this process (file
//! descriptors, children, namespace handles), which a test running beside it would change.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::process::Child;
use std::time::Instant;

/// What a run could leak, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    /// Open file descriptors of this test process (pipes to children, namespace handles).
    fds: usize,
    /// Children of this process not yet reaped, and processes of this world still running.
    children: usize,
    strays: usize,
    /// Network namespaces this process holds: its own pod fixtures, nothing else.
    netns: usize,
    /// Links in the node netns, and in all pod netns together.
    node_links: usize,
    pod_links: usize,
    journal_files: usize,
    reservations: usize,
}

fn count(w: &World, pods: &[PodNs]) -> Counts {
    let fd_targets: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut netns: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_link(t.path().join("ns/net")).ok())
        .map(|p| p.display().to_string())
        .chain(fd_targets.iter().filter(|t| t.starts_with("net:")).cloned())
        .collect();
    netns.sort();
    netns.dedup();
    let children: usize = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum();
    Counts {
        fds: fd_targets.len(),
        children,
        strays: w.stray_processes().len(),
        netns: netns.len(),
        node_links: node_links().len(),
        pod_links: pods.iter().map(|p| p.links().len()).sum(),
        journal_files: w.journal_files().len(),
        reservations: w.reservations().len(),
    }
}

/// 504 ADD/DEL cycles, 8 pods at a time: four pods whose delegates run in-process and four
/// whose delegates are Debian's reference plugins, every ADD and DEL overlapping others. Each
/// call answers; afterwards nothing has grown: file descriptors, processes, namespaces,
/// links, journal files, reservations.
#[test]
fn churn_of_500_cycles_leaves_every_count_where_it_was() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "n1",
        &w.macvlan_conf("n1", "upl0", "10.89.8.0/24"),
    );
    w.pod("default", "p", "n1");
    let conf_for = |builtins: bool| {
        let bridge = if builtins { "cni-ch-b" } else { "cni-ch-e" };
        let subnet = if builtins {
            "10.88.90.0/24"
        } else {
            "10.88.91.0/24"
        };
        let mut c = w.plexus_conf(
            &w.bridge_conf(&format!("cluster-{bridge}"), bridge, subnet),
            json!({"builtins": builtins}),
        );
        c["name"] = json!("plexus");
        serde_json::to_vec(&c).unwrap()
    };
    let confs = [conf_for(true), conf_for(false)];
    let pods: Vec<PodNs> = (0..8).map(|_| PodNs::new()).collect();
    let call = |i: usize, round: usize, command: &str| {
        Call::new(command, &format!("ch{i}-{round}"), Some(&pods[i].path), &w)
            .pod("default", "p")
            .spawn(&confs[i % 2])
    };
    let cycle = |round: usize| {
        let adds: Vec<Child> = (0..8).map(|i| call(i, round, "ADD")).collect();
        // The DELs start while later ADDs still run: pod i's DEL follows its own ADD only.
        let mut dels = Vec::new();
        for (i, a) in adds.into_iter().enumerate() {
            let (code, v) = finish("ADD", a);
            assert_eq!(code, None, "round {round} pod {i}: {v}");
            dels.push(call(i, round, "DEL"));
        }
        for (i, d) in dels.into_iter().enumerate() {
            let (code, v) = finish("DEL", d);
            assert_eq!(code, None, "round {round} pod {i}: {v}");
        }
    };
    // A warm-up round: the first ADD on each path creates the bridge that stays.
    cycle(0);
    let before = count(&w, &pods);
    let started = Instant::now();
    for round in 1..=63 {
        cycle(round);
    }
    let took = started.elapsed();
    let after = count(&w, &pods);
    eprintln!("churn: 504 cycles in {took:?}\nbefore {before:?}\nafter  {after:?}");
    assert_eq!(after, before);
    assert_eq!(after.strays, 0);
    assert_eq!(after.journal_files, 0);
    assert_eq!(after.reservations, 0);
    assert_eq!(after.pod_links, pods.len(), "only lo in every pod");
    w.assert_clean(None);
}
