//! Races that can fail: a DEL or a GC that arrives while an ADD of the same container is
//! inside a delegate (a stand-in that waits for a file before it runs the real macvlan).
//! The long churn of overlapping cycles is in churn.rs.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The stand-in's switches: it says when an ADD has started, and holds it until released.
struct Gate {
    started: PathBuf,
    release: PathBuf,
    fail: PathBuf,
}

impl Gate {
    fn reset(&self) {
        for f in [&self.started, &self.release, &self.fail] {
            let _ = std::fs::remove_file(f);
        }
    }

    fn wait_started(&self) {
        wait_for("the gated ADD to reach its delegate", || {
            self.started.exists()
        });
    }

    fn open(&self) {
        std::fs::write(&self.release, "").unwrap();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A node with an uplink, NAD `default/gated` (macvlan + host-local behind the gate), pod
/// `default/p` selecting it, and the Plexus conf (cluster network: built-in bridge).
fn gated_node(w: &World, bridge: &str, extra: Value) -> (Gate, Value) {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let gate = Gate {
        started: w.tmp.path().join("started"),
        release: w.tmp.path().join("release"),
        fail: w.tmp.path().join("fail"),
    };
    w.script(
        "gated",
        &format!(
            r#"if [ "$CNI_COMMAND" = ADD ]; then
  touch {started}
  i=0
  while [ ! -e {release} ]; do sleep 0.02; i=$((i+1)); [ $i -lt 1500 ] || exit 1; done
  if [ -e {fail} ]; then echo '{{"cniVersion":"1.0.0","code":7,"msg":"told to fail"}}'; exit 1; fi
fi
exec {REFERENCE_PLUGINS}/macvlan"#,
            started = gate.started.display(),
            release = gate.release.display(),
            fail = gate.fail.display(),
        ),
    );
    let mut nad = w.macvlan_conf("gated", "upl0", "10.89.7.0/24");
    nad["type"] = json!("gated");
    w.nad("default", "gated", &nad);
    w.pod("default", "p", "gated");
    let mut conf = w.plexus_conf(
        &w.bridge_conf("cluster", bridge, "10.88.70.0/24"),
        json!({"builtins": true}),
    );
    if let (Value::Object(c), Value::Object(e)) = (&mut conf, extra) {
        c.extend(e);
    }
    (gate, conf)
}

/// DEL of a container whose ADD is inside a delegate: DEL waits for the ADD's lock (or,
/// past the wait limit, answers 11), then undoes whatever the ADD did, whether the ADD
/// succeeded or failed. Never a crash, an empty error or a half-undone pod.
#[test]
fn del_arriving_mid_add_waits_for_it_and_leaves_nothing() {
    enter_node_netns();
    let w = World::new();
    let (gate, conf) = gated_node(&w, "cni-race0", json!({}));
    let stdin = serde_json::to_vec(&conf).unwrap();
    let pod = PodNs::new();
    for (round, add_fails) in [(0, false), (1, true), (2, false)] {
        gate.reset();
        if add_fails {
            std::fs::write(&gate.fail, "").unwrap();
        }
        let cid = format!("c-race{round}");
        let add = Call::new("ADD", &cid, Some(&pod.path), &w).pod("default", "p");
        let add_child = add.spawn(&stdin);
        gate.wait_started();
        // The cluster network is already attached; the ADD is now inside `gated`.
        assert!(pod.links().contains(&"eth0".to_string()), "round {round}");
        let mut del_child = add.with("DEL").spawn(&stdin);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            del_child.try_wait().unwrap().is_none(),
            "round {round}: DEL answered while the ADD held the container"
        );
        gate.open();
        let (add_code, add_out) = finish("ADD", add_child);
        let (del_code, del_out) = finish("DEL", del_child);
        if add_fails {
            assert_eq!(add_code, Some(100), "round {round}: {add_out}");
        } else {
            assert_eq!(add_code, None, "round {round}: {add_out}");
            assert!(add_out["interfaces"].is_array(), "{add_out}");
        }
        match del_code {
            None => {}
            // The documented alternative to waiting: try again later, then the runtime does.
            Some(11) => {
                add.with("DEL").run_json(&conf).ok();
            }
            Some(c) => panic!("round {round}: DEL answered code {c}: {del_out}"),
        }
        w.assert_clean(Some(&pod));
    }
}

/// GC with no grace period while an ADD is in flight and the runtime's valid list does not
/// know it yet: GC must leave it alone, and the ADD completes with its attachments intact.
#[test]
fn gc_with_grace_zero_leaves_an_add_in_flight_alone() {
    enter_node_netns();
    let w = World::new();
    let (gate, conf) = gated_node(&w, "cni-race1", json!({"gcGracePeriod": 0}));
    let stdin = serde_json::to_vec(&conf).unwrap();
    let pod = PodNs::new();
    let add = Call::new("ADD", "c-inflight", Some(&pod.path), &w).pod("default", "p");
    let add_child = add.spawn(&stdin);
    gate.wait_started();
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    let mut gc = Call::new("GC", "", None, &w);
    gc.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    let gc_out = gc.spawn(&serde_json::to_vec(&gc_conf).unwrap());
    let (gc_code, gc_v) = finish("GC", gc_out);
    assert_eq!(gc_code, None, "{gc_v}");
    assert!(
        pod.links().contains(&"eth0".to_string()),
        "GC removed the in-flight ADD's first attachment"
    );
    assert_eq!(w.reservations(), ["cluster/10.88.70.2"]);
    gate.open();
    let (add_code, add_v) = finish("ADD", add_child);
    assert_eq!(add_code, None, "{add_v}");
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    assert_eq!(w.reservations(), ["cluster/10.88.70.2", "gated/10.89.7.2"]);
    // The next GC that lists it keeps it too; DEL then removes everything.
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "c-inflight", "ifname": "eth0"}]);
    gc.run_json(&gc_conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    add.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}
