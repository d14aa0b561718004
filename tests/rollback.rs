//! ADD is all-or-nothing: a delegate that fails, hangs, or prints garbage or too much makes
//! Plexus DEL what it already added, in reverse, and return the error; nothing is left.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// NADs `n1`..`n4` through macvlan+host-local, and `bad` through the stand-in `stand-in`.
fn networks(w: &World) {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    for i in 1..=4 {
        w.nad(
            "default",
            &format!("n{i}"),
            &w.macvlan_conf(&format!("n{i}"), "upl0", &format!("10.89.{i}.0/24")),
        );
    }
    w.nad(
        "default",
        "bad",
        &json!({"cniVersion": "1.0.0", "name": "bad", "type": "stand-in"}),
    );
}

fn conf(w: &World, bridge: &str, timeout: u64) -> Value {
    let mut c = w.plexus_conf(
        &w.bridge_conf("cluster", bridge, "10.88.10.0/24"),
        json!({}),
    );
    c["timeout"] = json!(timeout);
    c
}

/// Wrappers around Debian's bridge and macvlan that append `<command> <ifname>` to the
/// returned log before running the real plugin: the order of calls becomes visible.
fn recording(w: &World) -> std::path::PathBuf {
    let log = w.tmp.path().join("calls");
    for plugin in ["bridge", "macvlan"] {
        w.script(
            &format!("rec-{plugin}"),
            &format!(
                "echo \"$CNI_COMMAND $CNI_IFNAME\" >> {}\nexec {REFERENCE_PLUGINS}/{plugin}",
                log.display()
            ),
        );
    }
    log
}

fn calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn failure_on_the_third_attachment_rolls_back_the_first_two() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    let log = recording(&w);
    for n in ["n1", "n2"] {
        let mut c = w.macvlan_conf(n, "upl0", &format!("10.89.{}.0/24", &n[1..]));
        c["type"] = json!("rec-macvlan");
        w.nad("default", n, &c);
    }
    // Fails ADD with its own error, accepts DEL; logs both like the wrappers.
    w.script(
        "stand-in",
        &format!(
            r#"echo "$CNI_COMMAND $CNI_IFNAME" >> {}
[ "$CNI_COMMAND" = DEL ] && exit 0
echo '{{"cniVersion":"1.0.0","code":7,"msg":"stand-in refuses","details":"on purpose"}}'; exit 1"#,
            log.display()
        ),
    );
    w.pod("default", "p", "n1, bad, n2");
    let pod = PodNs::new();
    let mut cluster = w.bridge_conf("cluster", "cni-r0", "10.88.10.0/24");
    cluster["type"] = json!("rec-bridge");
    let conf = w.plexus_conf(&cluster, json!({"timeout": 20}));
    let r = Call::new("ADD", "c-fail3", Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&conf);
    let e = r.err(100);
    assert!(e["msg"].as_str().unwrap().contains("default/bad"), "{e}");
    assert!(
        e["details"].as_str().unwrap().contains("stand-in refuses"),
        "delegate's msg kept: {e}"
    );
    assert!(
        e["details"].as_str().unwrap().contains('7'),
        "delegate's code kept: {e}"
    );
    // cluster (eth0) and n1 (net1) were added, the stand-in (net2) failed; everything that
    // was started is DELed, last first, and n2 (net3) never ran.
    assert_eq!(
        calls(&log),
        [
            "ADD eth0", "ADD net1", "ADD net2", "DEL net2", "DEL net1", "DEL eth0"
        ]
    );
    w.assert_clean(Some(&pod));
    assert!(
        !node_links().iter().any(|l| l.starts_with("veth")),
        "host veth left: {:?}",
        node_links()
    );
}

#[test]
fn a_hanging_delegate_times_out_with_code_11_and_its_process_group_dies() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    w.script(
        "stand-in",
        r#"[ "$CNI_COMMAND" = DEL ] && exit 0
sleep 1000 &
sleep 1000"#,
    );
    w.pod("default", "p", "n1, bad");
    let pod = PodNs::new();
    let started = Instant::now();
    let r = Call::new("ADD", "c-hang", Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&conf(&w, "cni-r1", 2));
    let e = r.err(11);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(e["msg"].as_str().unwrap().contains("default/bad"), "{e}");
    w.assert_clean(Some(&pod));
}

#[test]
fn garbage_and_oversized_output_are_clear_errors() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    let pod = PodNs::new();
    let cases = [
        (
            "garbage",
            r#"[ "$CNI_COMMAND" = DEL ] && exit 0
echo 'this is not json'"#,
        ),
        ("empty", r#"exit 0"#),
        (
            "huge",
            r#"[ "$CNI_COMMAND" = DEL ] && exit 0
head -c 67108864 /dev/zero | tr '\0' 'x'"#,
        ),
    ];
    for (i, (name, body)) in cases.iter().enumerate() {
        w.script("stand-in", body);
        w.pod("default", "p", "n1, bad");
        let r = Call::new("ADD", &format!("c-{name}"), Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf(&w, &format!("cni-r2{i}"), 20));
        let e = r.err(100);
        assert!(
            e["msg"].as_str().unwrap().contains("default/bad"),
            "{name}: {e}"
        );
        if *name == "huge" {
            assert!(
                e["msg"].as_str().unwrap().contains("too large")
                    || e["details"].as_str().unwrap_or("").contains("too large"),
                "{e}"
            );
        }
        w.assert_clean(Some(&pod));
    }
}

#[test]
fn a_killed_add_is_undone_by_the_next_del() {
    killed_add(false, "cni-r3");
}

/// The same with the cluster network and `n1` made in-process by the built-ins.
#[test]
fn a_killed_built_in_add_is_undone_by_the_next_del() {
    killed_add(true, "cni-r4");
}

fn killed_add(builtins: bool, bridge: &str) {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    let ready = w.tmp.path().join("ready");
    w.script(
        "stand-in",
        &format!(
            r#"[ "$CNI_COMMAND" = DEL ] && exit 0
touch {}
sleep 1000"#,
            ready.display()
        ),
    );
    w.pod("default", "p", "n1, bad");
    let pod = PodNs::new();
    let mut c = conf(&w, bridge, 60);
    c["builtins"] = json!(builtins);
    // Spawned from this thread, so plexus runs in the node netns.
    let mut child = Call::new("ADD", "c-kill2", Some(&pod.path), &w)
        .pod("default", "p")
        .spawn(&serde_json::to_vec(&c).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "stand-in never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The stand-in's group outlives a SIGKILLed parent; the runtime would kill the sandbox.
    w.kill_strays();
    assert!(
        pod.links().contains(&"net1".to_string()),
        "the first attachments were made"
    );
    Call::new("DEL", "c-kill2", Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&c)
        .ok();
    w.assert_clean(Some(&pod));
}

/// Every attachment of the plan is checked before the first is created: a third network
/// whose plugin cannot be found, is not executable, is refused, or is a built-in whose conf (or IPAM conf) its
/// ADD would refuse fails the ADD with nothing created. The recording wrappers of the first
/// two networks show that no delegate ran at all; no link, reservation or journal entry is
/// left, and the error is the one the attachment itself would have given.
#[test]
fn a_bad_third_network_fails_the_add_before_anything_is_created() {
    enter_node_netns();
    let w = World::new();
    networks(&w);
    let log = recording(&w);
    for n in ["n1", "n2"] {
        let mut c = w.macvlan_conf(n, "upl0", &format!("10.89.{}.0/24", &n[1..]));
        c["type"] = json!("rec-macvlan");
        w.nad("default", n, &c);
    }
    let mut cluster = w.bridge_conf("cluster", "cni-r5", "10.88.10.0/24");
    cluster["type"] = json!("rec-bridge");
    let conf = w.plexus_conf(&cluster, json!({"timeout": 20, "builtins": true}));
    let mut built_in = w.macvlan_conf("bad", "upl0", "10.89.9.0/24");
    built_in["type"] = json!("macvlan");
    let mut bad_mode = built_in.clone();
    bad_mode["mode"] = json!("sideways");
    let mut bad_ipam = built_in.clone();
    bad_ipam["ipam"]["ranges"] = json!([[{"subnet": "10.89.9.0/99"}]]);
    let cases = [
        (
            "exec'd, not found",
            json!({"cniVersion": "1.0.0", "name": "bad", "type": "no-such-plugin"}),
            "no-such-plugin",
        ),
        (
            "exec'd, refused",
            json!({"cniVersion": "1.0.0", "name": "bad", "type": "plexus"}),
            "recursion",
        ),
        ("built-in, bad conf", bad_mode, "mode"),
        ("built-in, bad IPAM conf", bad_ipam, "ipam"),
    ];
    let pod = PodNs::new();
    for (i, (what, nad, names)) in cases.into_iter().enumerate() {
        w.nad("default", "bad", &nad);
        w.pod("default", "p", "n1, n2, bad");
        let e = Call::new("ADD", &format!("c-early{i}"), Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf)
            .err(7);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains("default/bad"), "{what}: {e}");
        assert!(
            msg.contains(names) || e["details"].as_str().unwrap_or("").contains(names),
            "{what}: the error says why: {e}"
        );
        assert_eq!(calls(&log), Vec::<String>::new(), "{what}: a delegate ran");
        w.assert_clean(Some(&pod));
    }
}
