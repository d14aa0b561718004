//! The command line: `plexus version` and `plexus exec`, which goes through the same code
//! path as the runtime's exec of the binary.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

fn plexus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap()
}

#[test]
fn version_names_the_cni_versions() {
    let out = plexus(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(text.contains("0.1.0") && text.contains("1.1.0"), "{text}");
}

#[test]
fn exec_add_check_del_with_a_networks_override() {
    enter_node_netns();
    let w = World::new();
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
    // The folder's pod asks for n1; the command line asks for n2 on "data0" instead.
    w.pod("default", "web", "n1");
    let conf_path = w.tmp.path().join("plexus.conf");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-cli0", "10.88.40.0/24"),
        json!({}),
    );
    std::fs::write(&conf_path, serde_json::to_vec(&conf).unwrap()).unwrap();
    let pod = PodNs::new();
    let ns = pod.path.display().to_string();
    let conf_arg = conf_path.display().to_string();
    let path = w.cni_path();
    let common = [
        "--conf",
        &conf_arg,
        "--netns",
        &ns,
        "--pod",
        "default/web",
        "--cni-path",
        &path,
    ];

    let mut add: Vec<&str> = vec!["exec", "add"];
    add.extend(common);
    add.extend(["--networks", "n2@data0", "--json"]);
    let out = plexus(&add);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(&str, &str)> = v["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["network"].as_str().unwrap(),
                a["ifname"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("cluster", "eth0"), ("default/n2", "data0")]);
    assert_eq!(v["networkStatus"][1]["ips"], json!(["10.89.2.2"]));
    assert_eq!(pod.links(), ["data0", "eth0", "lo"]);

    let mut check: Vec<&str> = vec!["exec", "check"];
    check.extend(common);
    let out = plexus(&check);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("CHECK "));

    // A second add is refused, and the table mode reports the error on stderr.
    let mut again: Vec<&str> = vec!["exec", "add"];
    again.extend(common);
    let out = plexus(&again);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut del: Vec<&str> = vec!["exec", "del"];
    del.extend(common);
    let out = plexus(&del);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.assert_clean(Some(&pod));
}

#[test]
fn exec_add_prints_a_summary_table() {
    enter_node_netns();
    let w = World::new();
    let conf_path = w.tmp.path().join("plexus.conf");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-cli1", "10.88.41.0/24"),
        json!({}),
    );
    std::fs::write(&conf_path, serde_json::to_vec(&conf).unwrap()).unwrap();
    let pod = PodNs::new();
    let ns = pod.path.display().to_string();
    let conf_arg = conf_path.display().to_string();
    let path = w.cni_path();
    let out = plexus(&[
        "exec",
        "add",
        "--conf",
        &conf_arg,
        "--netns",
        &ns,
        "--cni-path",
        &path,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("ATTACHMENT") && lines[1].contains("DELEGATE"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("cluster")
            && lines[2].contains("10.88.41.2/24")
            && lines[2].contains("bridge"),
        "{text}"
    );
    let out = plexus(&[
        "exec",
        "del",
        "--conf",
        &conf_arg,
        "--netns",
        &ns,
        "--cni-path",
        &path,
    ]);
    assert!(out.status.success());
    w.assert_clean(Some(&pod));
}
