//! Delegates whose DEL fails (reliability matrix D7, D8): the other attachments are still
//! removed, the journal keeps only what is left, the next DEL retries only that; a DEL that
//! fails for good ends as success with a tombstone that GC keeps retrying.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// A stand-in that adds fine, counts its DELs in `dels`, and fails DEL while `broken` exists.
fn flaky(w: &World) -> (std::path::PathBuf, std::path::PathBuf) {
    let dels = w.tmp.path().join("dels");
    let broken = w.tmp.path().join("broken");
    w.script(
        "flaky",
        &format!(
            r#"case "$CNI_COMMAND" in
ADD) echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"'$CNI_IFNAME'"}}]}}' ;;
DEL) echo x >> {dels}
     if [ -e {broken} ]; then echo '{{"code":11,"msg":"backend unreachable"}}'; exit 1; fi ;;
esac"#,
            dels = dels.display(),
            broken = broken.display()
        ),
    );
    std::fs::write(&broken, "").unwrap();
    (dels, broken)
}

fn setup(w: &World, bridge: &str, extra: Value) -> Value {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "n1",
        &w.macvlan_conf("n1", "upl0", "10.89.1.0/24"),
    );
    w.nad(
        "default",
        "n2",
        &w.macvlan_conf("n2", "upl0", "10.89.2.0/24"),
    );
    w.nad(
        "default",
        "fl",
        &json!({"cniVersion": "1.0.0", "name": "fl", "type": "flaky"}),
    );
    w.pod("default", "p", "n1, fl, n2");
    w.plexus_conf(&w.bridge_conf("cluster", bridge, "10.88.90.0/24"), extra)
}

fn count(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn entry(w: &World) -> Value {
    w.journal_entry()
}

#[test]
fn d7_a_failing_delegate_del_is_retried_alone() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(&w, "cni-d7", json!({}));
    let (dels, broken) = flaky(&w);
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-d7", Some(&pod.path), &w).pod("default", "p");
    call.run_json(&conf).ok();
    let del = call.with("DEL");
    let e = del.run_json(&conf).err(100);
    assert!(e["msg"].as_str().unwrap().contains("default/fl"), "{e}");
    assert!(
        e["details"].as_str().unwrap().contains("code 11"),
        "the delegate's own code is kept: {e}"
    );
    // Everything else is gone already: links and IPs of the cluster network, n1 and n2.
    assert_eq!(pod.links(), ["lo"]);
    assert_eq!(w.reservations(), Vec::<String>::new());
    let states: Vec<(String, String)> = entry(&w)["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["network"].as_str().unwrap().into(),
                a["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("cluster".into(), "removed".into()),
            ("default/n1".into(), "removed".into()),
            ("default/fl".into(), "added".into()),
            ("default/n2".into(), "removed".into()),
        ]
    );
    std::fs::remove_file(&broken).unwrap();
    del.run_json(&conf).ok();
    assert_eq!(
        count(&dels),
        2,
        "the second DEL retried only the failed delegate"
    );
    w.assert_clean(Some(&pod));
}

#[test]
fn d8_a_del_that_keeps_failing_ends_as_a_tombstone_that_gc_retries() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(
        &w,
        "cni-d8",
        json!({"delAttempts": 2, "delGiveUpAfter": 0, "gcGracePeriod": 0}),
    );
    let (dels, broken) = flaky(&w);
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-d8", Some(&pod.path), &w).pod("default", "p");
    call.run_json(&conf).ok();
    let del = call.with("DEL");
    del.run_json(&conf).err(100);
    // The second failure reaches delAttempts: the runtime gets success, the entry stays.
    del.run_json(&conf).ok();
    assert_eq!(count(&dels), 2);
    let e = entry(&w);
    assert_eq!(e["tombstone"], true, "{e}");
    assert_eq!(e["failedDels"], 2);
    // A new ADD for the same attachment stays refused while the tombstone is there.
    call.run_json(&conf).err(7);
    // GC retries the tombstone and reports while it still fails...
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    let mut gc = Call::new("GC", "", None, &w);
    gc.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    let e = gc.run_json(&gc_conf).err(100);
    assert!(e["msg"].as_str().unwrap().contains("c-d8"), "{e}");
    assert_eq!(count(&dels), 3);
    // ...and clears it once the delegate recovers.
    std::fs::remove_file(&broken).unwrap();
    gc.run_json(&gc_conf).ok();
    assert_eq!(count(&dels), 4);
    w.assert_clean(Some(&pod));
}
