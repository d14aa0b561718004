//! libcni as the caller, the library inside CRI-O, podman and containerd's go-cni: a tiny Go
//! program (tests/fixtures/libcni/caller.go) built here with Debian's Go from Debian's libcni
//! source (golang-github-appc-cni-dev, GOPATH mode: nothing is downloaded) runs
//! ValidateNetworkList, AddNetworkList, CheckNetworkList and DelNetworkList (twice, the second
//! without a netns, as containerd does) against a Plexus conflist. GC and STATUS are called
//! when that libcni has them: Debian bookworm's libcni 1.1.2 predates both (they came with
//! libcni 1.2), so there the program cannot call them.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const GOPATH: &str = "/usr/share/gocode";
const LIBCNI_API: &str = "/usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go";

/// GC and STATUS as libcni 1.2 and later spell them; used only when the API has them.
const GC_AND_STATUS: &str = r#"
	err = cni.GCNetworkList(ctx, list, &libcni.GCArgs{})
	report("gc", err, nil)
	err = cni.GetStatusNetworkList(ctx, list)
	report("status", err, nil)
"#;

/// Builds the caller; returns its path and whether it calls GC and STATUS.
fn build_caller(dir: &Path) -> (std::path::PathBuf, bool) {
    let api = std::fs::read_to_string(LIBCNI_API).unwrap_or_else(|e| {
        panic!("{LIBCNI_API}: {e}: the README's test command installs golang-github-appc-cni-dev")
    });
    let has_gc = api.contains("func (c *CNIConfig) GCNetworkList")
        && api.contains("func (c *CNIConfig) GetStatusNetworkList");
    let source = include_str!("fixtures/libcni/caller.go").replace(
        "\t// EXTRA_STEPS\n",
        if has_gc { GC_AND_STATUS } else { "" },
    );
    let src_dir = dir.join("caller");
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::write(src_dir.join("main.go"), source).unwrap();
    let bin = dir.join("libcni-caller");
    let out = Command::new("go")
        .current_dir(&src_dir)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("main.go")
        .output()
        .unwrap_or_else(|e| panic!("go: {e}: the README's test command installs golang-go"));
    assert!(
        out.status.success(),
        "go build of the libcni caller: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (bin, has_gc)
}

#[test]
fn libcni_validates_adds_checks_and_deletes_a_plexus_network() {
    enter_node_netns();
    sh("ip link add lcup0 type bridge && ip link set lcup0 up");
    let w = World::new();
    let (caller, has_gc) = build_caller(w.tmp.path());
    let status = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_plexus"))
        .arg(w.bin.join("plexus"))
        .status()
        .unwrap();
    assert!(status.success());
    w.nad(
        "default",
        "blue",
        &w.macvlan_conf("blue", "lcup0", "10.86.1.0/24"),
    );
    // Written by hand the way an admin or `plexus generate-config` would; libcni 1.1 speaks
    // up to 1.0.0. The GC step needs 1.1.0, which this libcni could not parse anyway.
    let conf_dir = w.tmp.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conflist = json!({"cniVersion": "1.0.0", "name": "plexusnet", "plugins": [{
        "type": "plexus",
        "capabilities": {"io.kubernetes.cri.pod-annotations": true},
        "cniDir": w.cni_dir.display().to_string(),
        "binDir": w.bin.display().to_string(),
        "manifests": w.manifests.display().to_string(),
        // Every attachment in the result, so the pod's network shows in what libcni gets.
        "resultMode": "merged",
        "delegates": [w.bridge_conf("cluster", "lcbr0", "10.86.0.0/24")]
    }]});
    std::fs::write(conf_dir.join("10-plexus.conflist"), conflist.to_string()).unwrap();

    let pod = PodNs::new();
    let out = Command::new(&caller)
        .arg(&conf_dir)
        .arg("plexusnet")
        .arg(&pod.path)
        .arg("libcni-c1")
        .arg("eth0")
        .arg(format!("{}:{REFERENCE_PLUGINS}", w.bin.display()))
        .arg(w.tmp.path().join("libcni-cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let steps: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    let mut expected = vec!["load", "validate", "add", "check"];
    if has_gc {
        expected.extend(["gc", "status"]);
    }
    expected.extend(["del", "del-again"]);
    assert_eq!(
        names,
        expected,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in &steps {
        assert_eq!(s["ok"], true, "libcni {} failed: {s}", s["step"]);
    }
    let validate = &steps[1]["value"];
    assert!(
        validate
            .as_array()
            .is_some_and(|caps| caps.contains(&json!("io.kubernetes.cri.pod-annotations"))),
        "ValidateNetworkList reports the declared capability: {validate}"
    );
    let add = &steps[2]["value"];
    assert_eq!(add["cniVersion"], "1.0.0", "{add}");
    let ips: Vec<&str> = add["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap())
        .collect();
    // The cluster network, and the pod's network named in the annotations libcni passed
    // (the pod is not in the manifests folder).
    assert_eq!(ips.len(), 2, "{add}");
    assert!(ips[0].starts_with("10.86.0."), "{add}");
    assert!(ips[1].starts_with("10.86.1."), "{add}");
    assert_eq!(
        w.journal_files(),
        Vec::<String>::new(),
        "the DELs left journal files"
    );
    assert_eq!(w.reservations(), Vec::<String>::new());
    assert_eq!(pod.links(), ["lo"]);
    assert!(
        !has_gc || steps.iter().any(|s| s["step"] == "gc"),
        "GC is called when libcni has it"
    );
}
