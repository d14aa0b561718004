//! What a NAD (tenant input) or a careless conf names on the node's filesystem cannot hold a
//! call or make root write where it likes: a FIFO, a device or an oversized file as
//! `resolvConf`, `logFile` or an auxiliary-chain conf, and a pool lock someone holds, cost
//! at most `timeout` and end in a clean error; host-local's `dataDir` must lie in a folder
//! the node allows (`ipamDataDirs`). Through the real binary with the built-ins.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Plexus conf with the built-ins, a 2 s timeout, and NAD `n` (macvlan + host-local with the
/// given ipam keys) as the pod's network.
fn setup(w: &World, bridge: &str, ipam: Value) -> Value {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let mut nad = w.macvlan_conf("n", "upl0", "10.89.5.0/24");
    if let (Value::Object(i), Value::Object(extra)) = (&mut nad["ipam"], ipam) {
        i.extend(extra);
    }
    w.nad("default", "n", &nad);
    w.pod("default", "p", "n");
    let mut c = w.plexus_conf(
        &w.bridge_conf("cluster", bridge, "10.88.90.0/24"),
        json!({"builtins": true}),
    );
    c["timeout"] = json!(2);
    c
}

fn add(w: &World, pod: &PodNs, cid: &str) -> Call {
    Call::new("ADD", cid, Some(&pod.path), w).pod("default", "p")
}

#[test]
fn resolv_conf_that_is_not_a_small_regular_file_is_refused_at_once() {
    enter_node_netns();
    let w = World::new();
    let fifo = w.tmp.path().join("resolv.fifo");
    mkfifo(&fifo);
    let big = w.tmp.path().join("resolv.big");
    std::fs::write(&big, vec![b'#'; 1 << 20]).unwrap();
    let pod = PodNs::new();
    let mut c = Value::Null;
    for (i, path) in [fifo.as_path(), "/dev/zero".as_ref(), w.tmp.path(), &big]
        .iter()
        .enumerate()
    {
        let mut nad = w.macvlan_conf("n", "upl0", "10.89.5.0/24");
        nad["ipam"]["resolvConf"] = json!(path);
        if i == 0 {
            c = setup(&w, "cni-bd0", json!({}));
        }
        w.nad("default", "n", &nad);
        let started = Instant::now();
        let e = add(&w, &pod, &format!("c-rc{i}")).run_json(&c).err(7);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path:?} took {:?}",
            started.elapsed()
        );
        assert!(
            e["msg"].as_str().unwrap().contains("ipam.resolvConf"),
            "{path:?}: {e}"
        );
        w.assert_clean(Some(&pod));
    }
}

#[test]
fn a_held_pool_or_container_lock_costs_the_timeout_then_code_11() {
    enter_node_netns();
    let w = World::new();
    let c = setup(&w, "cni-bd1", json!({}));
    let (a, b) = (PodNs::new(), PodNs::new());
    add(&w, &a, "c-first").run_json(&c).ok();
    let a_links = a.link_table();
    let reserved = w.reservations();
    // Someone holds the pool's lock and never lets go.
    let held = std::fs::File::open(w.ipam_dir.join("n/lock")).unwrap();
    held.lock().unwrap();
    let started = Instant::now();
    let e = add(&w, &b, "c-second").run_json(&c).err(11);
    let took = started.elapsed();
    assert!(e["msg"].as_str().unwrap().contains("still held"), "{e}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(b.links(), ["lo"]);
    assert_eq!(
        w.reservations(),
        reserved,
        "the first pod keeps its addresses"
    );
    assert_eq!(a.link_table(), a_links);
    drop(held);
    // The container's own lock (an operation on it that never ends) costs the same.
    let journal = plexus::journal::Journal::open(&w.cni_dir).unwrap();
    let held = journal.lock("c-first", Duration::ZERO).unwrap();
    let started = Instant::now();
    add(&w, &a, "c-first").with("DEL").run_json(&c).err(11);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(a.link_table(), a_links);
    drop(held);
    add(&w, &a, "c-first").with("DEL").run_json(&c).ok();
    add(&w, &b, "c-second").with("DEL").run_json(&c).ok();
    w.assert_clean(Some(&b));
}

#[test]
fn a_log_file_or_chain_conf_that_is_not_a_regular_file_is_refused_clearly() {
    enter_node_netns();
    let w = World::new();
    let mut c = setup(&w, "cni-bd2", json!({}));
    let pod = PodNs::new();
    // logFile: a FIFO nobody reads would hold every call; logging goes to stderr instead.
    let log = w.tmp.path().join("plexus.log");
    mkfifo(&log);
    c["logFile"] = json!(log);
    let started = Instant::now();
    let r = add(&w, &pod, "c-log").run_json(&c);
    r.ok();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    add(&w, &pod, "c-log").with("DEL").run_json(&c).ok();
    w.assert_clean(Some(&pod));

    // The auxiliary chain's folder holding a FIFO named like a conf.
    c.as_object_mut().unwrap().remove("logFile");
    let conf_dir = w.tmp.path().join("net.d");
    std::fs::create_dir_all(conf_dir.join("chain")).unwrap();
    mkfifo(&conf_dir.join("chain/10-aux.conf"));
    c["confDir"] = json!(conf_dir);
    c["auxiliaryCNIChainName"] = json!("chain");
    let started = Instant::now();
    let e = add(&w, &pod, "c-aux").run_json(&c).err(7);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        e["msg"].as_str().unwrap().contains("not a regular file"),
        "{e}"
    );
    w.assert_clean(Some(&pod));
    // The chain's folder itself being a file.
    std::fs::remove_dir_all(conf_dir.join("chain")).unwrap();
    std::fs::write(conf_dir.join("chain"), "").unwrap();
    let e = add(&w, &pod, "c-aux").run_json(&c).err(7);
    assert!(
        e["msg"].as_str().unwrap().contains("not a directory"),
        "{e}"
    );
    w.assert_clean(Some(&pod));
}

#[test]
fn a_nad_chooses_its_data_dir_only_among_the_folders_the_node_allows() {
    enter_node_netns();
    let w = World::new();
    let c = setup(&w, "cni-bd3", json!({}));
    let pod = PodNs::new();
    let outside = w.tmp.path().join("outside");
    for (i, dir) in [
        "relative/ipam".to_string(),
        outside.display().to_string(),
        "/etc".to_string(),
        format!("{}/../outside", w.ipam_dir.display()),
    ]
    .iter()
    .enumerate()
    {
        let mut nad = w.macvlan_conf("n", "upl0", "10.89.5.0/24");
        nad["ipam"]["dataDir"] = json!(dir);
        w.nad("default", "n", &nad);
        let e = add(&w, &pod, &format!("c-dd{i}")).run_json(&c).err(7);
        assert!(
            e["msg"].as_str().unwrap().contains("ipam.dataDir"),
            "{dir}: {e}"
        );
        w.assert_clean(Some(&pod));
    }
    assert!(!outside.exists(), "nothing created outside");
    assert!(!std::path::Path::new("/etc/n").exists());
    // A folder below an allowed one is fine.
    let mut nad = w.macvlan_conf("n", "upl0", "10.89.5.0/24");
    nad["ipam"]["dataDir"] = json!(w.ipam_dir.join("tenant-a"));
    w.nad("default", "n", &nad);
    add(&w, &pod, "c-ok").run_json(&c).ok();
    add(&w, &pod, "c-ok").with("DEL").run_json(&c).ok();
    w.assert_clean(Some(&pod));
}
