//! `plexus demo`, the README's main job, end to end: it must attach, ping across every
//! network, tear down, and leave nothing. The demo checks its own leftovers and says "nothing
//! left"; this test does not take its word for it: a run stopped by a crash point right
//! after its DELs leaves the namespaces, the IPAM folder and the journal in place, and the
//! test looks at them itself.
#![allow(clippy::unwrap_used)]

mod common;

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NODE_NS: &str = "plexus-demo-node";
const POD_NS: [&str; 2] = ["plexus-demo-web", "plexus-demo-db"];
/// Where the example NADs keep their host-local reservations.
const IPAM_DIR: &str = "/run/plexus-demo";

fn demo(fault: Option<&str>) -> (Output, PathBuf) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plexus"));
    cmd.arg("demo").env_remove("CNI_COMMAND");
    if let Some(f) = fault {
        cmd.env("PLEXUS_FAULT", f);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The demo's scratch folder (manifests, journal) is named by its pid.
    let work = std::env::temp_dir().join(format!("plexus-demo-{}", child.id()));
    (child.wait_with_output().unwrap(), work)
}

/// Removes whatever a stopped demo left, also when an assertion failed.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for ns in POD_NS.iter().chain([&NODE_NS]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(IPAM_DIR);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (name, kind) of every link in a named netns.
fn links(ns: &str) -> Vec<(String, String)> {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "-j", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip -n {ns}: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut l: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_string(),
                l["linkinfo"]["info_kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    l.sort();
    l
}

/// Every file under `dir` whose name is an IP address: a host-local reservation.
fn reservations(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(reservations(&p));
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        {
            out.push(p);
        }
    }
    out
}

fn assert_pings(text: &str) {
    for network in ["default/cluster", "default/macvlan-a", "default/vxlan-d"] {
        let line = text
            .lines()
            .find(|l| {
                l.trim_start().starts_with(network) && (l.ends_with("ok") || l.ends_with("FAILED"))
            })
            .unwrap_or_else(|| panic!("no ping line for {network}:\n{text}"));
        assert!(line.ends_with("ok"), "{line}");
    }
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "crash points exist in debug builds only"
)]
fn demo_attaches_pings_and_leaves_nothing() {
    common::require_root();

    // Stopped right after its DELs: everything the demo made is still there to look at.
    let (out, work) = demo(Some("demo-after-del"));
    let _cleanup = Leftovers(work.clone());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        Some(nix::libc::SIGABRT),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pings(&text);
    assert!(text.contains("== DEL default/db"), "{text}");
    for ns in POD_NS {
        assert_eq!(
            links(ns),
            [("lo".to_string(), String::new())],
            "{ns}: pod interfaces left"
        );
    }
    // The node keeps its uplink and the bridges of the cluster and static-c networks (a
    // bridge outlives its pods, as with the reference plugin); no veth end, and neither the
    // overlay's vxlan device nor its bridge plexus-vx42 (the last DEL removes both).
    let node = links(NODE_NS);
    let node: Vec<(&str, &str)> = node.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
    assert_eq!(
        node,
        [
            ("lo", ""),
            ("plexus-br1", "bridge"),
            ("plexus-ul0", "bridge"),
            ("plexus0", "bridge")
        ],
        "left on the node"
    );
    assert!(
        std::fs::read_dir(Path::new(IPAM_DIR).join("ipam")).is_ok(),
        "the demo's reservations live elsewhere: this test looks in the wrong place"
    );
    assert_eq!(
        reservations(Path::new(IPAM_DIR)),
        Vec::<PathBuf>::new(),
        "IP reservations left"
    );
    assert!(work.join("state").is_dir());
    let journal = common::journal_files(&work.join("state"));
    assert_eq!(journal, Vec::<String>::new(), "journal files left");
    drop(_cleanup);

    // The whole run, as the README's user sees it: success, and the machine as it was.
    let (out, work) = demo(None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pings(&text);
    assert!(text.contains("nothing left"), "{text}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("plexus-demo"));
    assert!(!Path::new(IPAM_DIR).exists());
    assert!(!work.exists());
}
