//! A crash at every step: for each crash point the code names (`cni::fault::POINTS`, which a
//! unit test keeps equal to the `fault::point` calls in the sources), the real binary is
//! aborted there (SIGABRT: no unwinding, no destructors, as abrupt as a kill -9), and then
//! DEL runs twice. Both DELs must answer 0, and nothing may be left: no link in the pod or on
//! the node, no host-local reservation, no journal entry, temp file or lock, no process.
//!
//! The pod has the three kinds of attachment an ADD can make: the cluster network through
//! the built-in bridge (masquerading), a NAD through the built-in macvlan and a NAD through an exec'd
//! reference plugin (ptp), with the network-status written to the fake API server.
#![allow(clippy::unwrap_used)]

mod common;

use cni::fault::{self, Point};
use common::apiserver::{FakeApi, FakeOptions, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};
use std::os::unix::process::ExitStatusExt;

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

struct Node {
    w: World,
    api: FakeApi,
    conf: Value,
}

impl Node {
    fn new() -> Node {
        enter_node_netns();
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        let w = World::new();
        let api = FakeApi::start(FakeOptions::default());
        let blue = w.macvlan_conf("blue", "upl0", "10.89.2.0/24");
        api.add_nad(nad_object("default", "blue", Some(&blue)));
        let green = json!({
            "cniVersion": "1.0.0", "name": "green", "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.89.3.0/24",
                     "dataDir": w.ipam_dir.display().to_string()}
        });
        api.add_nad(nad_object("default", "green", Some(&green)));
        // ipMasq: DEL removes the masquerade rules before the links, another window.
        let mut cluster = w.bridge_conf("cluster", "cni-crash0", "10.88.0.0/24");
        cluster["ipMasq"] = json!(true);
        let mut conf = w.plexus_conf(
            &cluster,
            json!({
                "builtins": true,
                "kubeconfig": api.kubeconfig(w.tmp.path()).display().to_string(),
                "gcGracePeriod": 0,
            }),
        );
        conf.as_object_mut().unwrap().remove("manifests");
        Node { w, api, conf }
    }

    /// A pod `name` on blue (built-in macvlan) and green (exec'd ptp), and its netns.
    fn pod(&self, name: &str) -> PodNs {
        self.api.add_pod(pod_object(
            "default",
            name,
            UID,
            &[("k8s.v1.cni.cncf.io/networks", "blue,green")],
        ));
        PodNs::new()
    }

    fn call(&self, command: &str, cid: &str, pod: &PodNs, name: &str) -> Call {
        let mut c = Call::new(command, cid, Some(&pod.path), &self.w).pod("default", name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    }

    /// GC with an empty valid list: every journaled attachment is stale.
    fn gc_call(&self) -> (Call, Value) {
        let mut conf = self.conf.clone();
        conf["cni.dev/valid-attachments"] = json!([]);
        (Call::new("GC", "", None, &self.w), conf)
    }
}

/// Runs `call` with the crash point armed and checks that the process died there, and only
/// there: a point the command never reaches would make the rest of the check vacuous.
fn crash(call: &Call, conf: &Value, point: &Point) -> Result<(), String> {
    let mut armed = call.clone();
    armed
        .extra_env
        .push((fault::ENV.to_string(), point.name.to_string()));
    let out = armed
        .spawn(serde_json::to_string(conf).unwrap().as_bytes())
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.signal() != Some(6) || !stderr.contains(point.name) {
        return Err(format!(
            "{}: {} did not abort there: {:?}, stdout {:?}, stderr {stderr:?}",
            point.name,
            point.during,
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(())
}

/// DEL twice: each must answer 0 with nothing on stdout.
fn del_twice(n: &Node, cid: &str, pod: &PodNs, name: &str, point: &str) -> Result<(), String> {
    for round in 1..=2 {
        let r = n.call("DEL", cid, pod, name).run_json(&n.conf);
        if r.code != 0 || !r.stdout.is_empty() {
            return Err(format!(
                "{point}: DEL {round} of {cid} answered {}: {} {}",
                r.code, r.stdout, r.stderr
            ));
        }
    }
    Ok(())
}

/// Everything the leak oracle checks, as a message instead of a panic, so that one run
/// names every point that leaks.
fn leaks(n: &Node, pods: &[&PodNs], point: &str) -> Option<String> {
    let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for p in pods {
            assert_eq!(p.links(), vec!["lo".to_string()], "links left in a pod");
        }
        n.w.assert_clean(None);
    }));
    check.err().map(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{point}: {msg}")
    })
}

fn walk(point: &Point) -> Result<(), String> {
    let n = Node::new();
    let pod = n.pod("web");
    let add = n.call("ADD", "c-crash", &pod, "web");
    let mut second = None;
    match point.during {
        "ADD" => crash(&add, &n.conf, point)?,
        "ADD after DEL" => {
            // Another pod's ADD and DEL first: its released reservations become the spares
            // this ADD claims.
            let before = n.pod("before");
            let earlier = n.call("ADD", "c-before", &before, "before");
            for call in [earlier.clone(), earlier.with("DEL")] {
                let r = call.run_json(&n.conf);
                if r.code != 0 {
                    return Err(format!(
                        "{}: the earlier pod's calls leave no spares: {} {}",
                        point.name, r.stdout, r.stderr
                    ));
                }
            }
            crash(&add, &n.conf, point)?;
        }
        "DEL" => {
            add.run_json(&n.conf).ok();
            crash(&add.with("DEL"), &n.conf, point)?;
        }
        "GC" => {
            // Two stale containers, so the crash falls between them.
            add.run_json(&n.conf).ok();
            let other = n.pod("db");
            n.call("ADD", "c-crash2", &other, "db")
                .run_json(&n.conf)
                .ok();
            let (gc, conf) = n.gc_call();
            crash(&gc, &conf, point)?;
            second = Some(other);
        }
        other => return Err(format!("{}: no walk for {other}", point.name)),
    }
    del_twice(&n, "c-crash", &pod, "web", point.name)?;
    if let Some(other) = &second {
        del_twice(&n, "c-crash2", other, "db", point.name)?;
    }
    let pods: Vec<&PodNs> = std::iter::once(&pod).chain(second.as_ref()).collect();
    match leaks(&n, &pods, point.name) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[test]
fn every_crash_point_is_undone_by_del() {
    require_root();
    let points: Vec<Point> = fault::POINTS
        .iter()
        .filter(|p| p.during != "demo")
        .copied()
        .collect();
    assert!(points.len() >= 10, "{points:?}");
    // Each point in a thread of its own: its own node netns, so one point's leftovers cannot
    // hide or cause another's.
    let failures: Vec<String> = points
        .iter()
        .filter_map(|p| {
            let p = *p;
            std::thread::spawn(move || walk(&p))
                .join()
                .unwrap_or_else(|e| Err(format!("{}: test panicked: {e:?}", p.name)))
                .err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
