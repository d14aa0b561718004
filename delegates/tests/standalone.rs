#![allow(clippy::unwrap_used)]
//! The standalone binaries, run the way a runtime runs a plugin: CNI_* env, conf on stdin,
//! from a thread in the node netns (children inherit the spawning thread's netns).

mod common;

use common::{TestNs, reservations};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

struct Call<'a> {
    bin: &'a str,
    command: &'a str,
    netns: Option<&'a std::path::Path>,
    ifname: Option<&'a str>,
}

fn call(c: &Call, conf: &Value) -> (bool, Value) {
    call_with(c, conf, &[])
}

/// `call` with extra or overriding environment variables.
fn call_with(c: &Call, conf: &Value, env: &[(&str, &str)]) -> (bool, Value) {
    let mut cmd = Command::new(c.bin);
    cmd.env_clear()
        .env("CNI_COMMAND", c.command)
        .env("CNI_CONTAINERID", "c-bin")
        .env("CNI_PATH", "/usr/lib/cni")
        // The temp folders the tests use for dataDir.
        .env("PLEXUS_IPAM_DATA_DIRS", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = c.netns {
        cmd.env("CNI_NETNS", n);
    }
    if let Some(i) = c.ifname {
        cmd.env("CNI_IFNAME", i);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    (out.status.success(), v)
}

const BRIDGE: &str = env!("CARGO_BIN_EXE_plexus-bridge");

fn bridge_conf(version: &str, data: &std::path::Path) -> Value {
    json!({
        "cniVersion": version, "name": "binnet", "type": "plexus-bridge", "bridge": "binbr0",
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.81.0.0/24"}]]}
    })
}

#[test]
fn bridge_binary_add_check_del() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let conf = bridge_conf("1.0.0", data.path());
    node.enter(|| {
        let at = |command| Call {
            bin: BRIDGE,
            command,
            netns: Some(pod.path()),
            ifname: Some("eth0"),
        };
        let (ok, result) = call(&at("ADD"), &conf);
        assert!(ok, "{result}");
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(result["interfaces"][2]["name"], "eth0");
        assert_eq!(result["ips"][0]["address"], "10.81.0.2/24");
        assert_eq!(result["ips"][0]["gateway"], "10.81.0.1");
        assert_eq!(result["ips"][0]["interface"], 2);
        assert!(pod.sh("ip -o addr show dev eth0").contains("10.81.0.2/24"));

        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result.clone();
        let (ok, out) = call(&at("CHECK"), &with_prev);
        assert!(ok, "{out}");
        assert_eq!(out, Value::Null, "CHECK prints nothing on success");

        let (ok, out) = call(&at("DEL"), &conf);
        assert!(ok, "{out}");
        assert!(reservations(data.path(), "binnet").is_empty());
        let (ok, out) = call(
            &Call {
                netns: None,
                ..at("DEL")
            },
            &conf,
        );
        assert!(ok, "DEL again, without a netns: {out}");
    });
}

#[test]
fn older_versions_get_ip_families() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let conf = bridge_conf("0.4.0", data.path());
    node.enter(|| {
        let at = |command| Call {
            bin: BRIDGE,
            command,
            netns: Some(pod.path()),
            ifname: Some("eth0"),
        };
        let (ok, result) = call(&at("ADD"), &conf);
        assert!(ok, "{result}");
        assert_eq!(result["cniVersion"], "0.4.0");
        assert_eq!(result["ips"][0]["version"], "4");
        call(&at("DEL"), &conf);
    });
}

#[test]
fn version_lists_every_version_the_results_convert_to() {
    let (ok, v) = call(
        &Call {
            bin: BRIDGE,
            command: "VERSION",
            netns: None,
            ifname: None,
        },
        &json!({"cniVersion": "1.0.0"}),
    );
    assert!(ok);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!([
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
        ])
    );
}

#[test]
fn errors_are_cni_error_objects_with_exit_1() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    node.enter(|| {
        let mut bad = bridge_conf("1.0.0", data.path());
        bad["mtu"] = json!("big");
        let at = Call { bin: BRIDGE, command: "ADD", netns: Some(pod.path()), ifname: Some("eth0") };
        let (ok, e) = call(&at, &bad);
        assert!(!ok);
        assert_eq!(e["code"], 7, "{e}");
        assert_eq!(e["cniVersion"], "1.0.0");
        assert!(e["msg"].as_str().unwrap().contains("mtu"), "{e}");

        let (ok, e) = call(&Call { ifname: None, ..at }, &bridge_conf("1.0.0", data.path()));
        assert!(!ok);
        assert_eq!(e["code"], 4, "{e}");

        let (ok, e) = call(
            &Call { bin: BRIDGE, command: "ADD", netns: Some(pod.path()), ifname: Some("eth0") },
            &bridge_conf("9.9.9", data.path()),
        );
        assert!(!ok);
        assert_eq!(e["code"], 1, "{e}");

        let ipvlan = json!({
            "cniVersion": "1.0.0", "name": "binipv", "type": "plexus-ipvlan", "master": "lo",
            "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.82.0.0/24"}]]}
        });
        let (ok, e) = call(
            &Call { bin: env!("CARGO_BIN_EXE_plexus-ipvlan"), command: "ADD", netns: Some(pod.path()), ifname: Some("eth0") },
            &ipvlan,
        );
        assert!(!ok);
        assert_eq!((e["code"].clone(), e["msg"].clone()), (json!(103), json!("kernel lacks ipvlan")), "{e}");
        assert!(reservations(data.path(), "binipv").is_empty());
    });
}

#[test]
fn macvlan_and_vxlan_binaries_add_and_del() {
    let node = TestNs::new();
    let pod = TestNs::new();
    node.sh("ip link add up0 type veth peer name up1 && ip link set up0 up && ip link set up1 up");
    let data = tempfile::tempdir().unwrap();
    let ipam = |subnet: &str| json!({"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": subnet}]]});
    let confs = [
        (
            env!("CARGO_BIN_EXE_plexus-macvlan"),
            json!({"cniVersion": "1.0.0", "name": "m", "type": "plexus-macvlan", "master": "up0", "ipam": ipam("10.83.0.0/24")}),
            "net1",
        ),
        (
            env!("CARGO_BIN_EXE_plexus-vxlan"),
            json!({"cniVersion": "1.0.0", "name": "v", "type": "plexus-vxlan", "vni": 77, "underlayInterface": "up0", "ipam": ipam("10.84.0.0/24")}),
            "net2",
        ),
    ];
    node.enter(|| {
        for (bin, conf, ifname) in &confs {
            let at = |command| Call {
                bin,
                command,
                netns: Some(pod.path()),
                ifname: Some(ifname),
            };
            let (ok, r) = call(&at("ADD"), conf);
            assert!(ok, "{bin}: {r}");
            assert!(pod.exec(&["ip", "link", "show", ifname]).status.success());
            let (ok, r) = call(&at("DEL"), conf);
            assert!(ok, "{bin}: {r}");
            assert!(!pod.exec(&["ip", "link", "show", ifname]).status.success());
        }
    });
}

#[test]
fn legacy_versions_get_the_ip4_shape_and_refuse_a_result_without_address() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let conf = bridge_conf("0.2.0", data.path());
    node.enter(|| {
        let at = |command| Call {
            bin: BRIDGE,
            command,
            netns: Some(pod.path()),
            ifname: Some("eth0"),
        };
        let (ok, result) = call(&at("ADD"), &conf);
        assert!(ok, "{result}");
        assert_eq!(result["cniVersion"], "0.2.0");
        assert_eq!(result["ip4"]["ip"], "10.81.0.2/24");
        assert_eq!(result["ip4"]["gateway"], "10.81.0.1");
        assert!(result.get("interfaces").is_none(), "{result}");
        let (ok, out) = call(&at("DEL"), &conf);
        assert!(ok, "{out}");

        // No IPAM: 0.2.0 has no way to say "no address", so the ADD is refused and undone.
        let mut no_ipam = conf.clone();
        no_ipam.as_object_mut().unwrap().remove("ipam");
        let (ok, e) = call(&at("ADD"), &no_ipam);
        assert!(!ok);
        assert_eq!(e["code"], 1, "{e}");
        assert!(!pod.exec(&["ip", "link", "show", "eth0"]).status.success());
    });
}

#[test]
fn check_gc_and_status_follow_the_version_floors() {
    let data = tempfile::tempdir().unwrap();
    let at = |command| Call {
        bin: BRIDGE,
        command,
        netns: None,
        ifname: Some("eth0"),
    };
    let (ok, e) = call(&at("CHECK"), &bridge_conf("0.3.1", data.path()));
    assert!(!ok);
    assert_eq!(e["code"], 1, "{e}");
    assert_eq!(e["msg"], "config version does not allow CHECK");
    for command in ["GC", "STATUS"] {
        let (ok, e) = call(&at(command), &bridge_conf("1.0.0", data.path()));
        assert!(!ok, "{command}");
        assert_eq!(e["code"], 1, "{command}: {e}");
        let (ok, out) = call(&at(command), &bridge_conf("1.1.0", data.path()));
        assert!(ok, "{command}: {out}");
        assert_eq!(out, Value::Null);
    }
}

#[test]
fn builtin_ipam_runs_in_process_and_other_types_by_exec() {
    let node = TestNs::new();
    let pod = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    // A fake IPAM plugin that answers ADD with a fixed address and records each call.
    let plugins = tempfile::tempdir().unwrap();
    let log = plugins.path().join("calls");
    let fake = plugins.path().join("fake-ipam");
    common::write_executable(
        &fake,
        &format!(
            "#!/bin/sh\necho $CNI_COMMAND >> {}\n\
             printf '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.85.0.9/24\"}}]}}'\n",
            log.display()
        ),
    );
    let plugin_path = plugins.path().to_str().unwrap();
    node.enter(|| {
        let at = |command| Call {
            bin: BRIDGE,
            command,
            netns: Some(pod.path()),
            ifname: Some("eth0"),
        };
        // host-local with no plugin directory at all: only the in-process path can serve it.
        let conf = bridge_conf("1.0.0", data.path());
        let (ok, r) = call_with(&at("ADD"), &conf, &[("CNI_PATH", plugin_path)]);
        assert!(ok, "{r}");
        assert_eq!(r["ips"][0]["address"], "10.81.0.2/24");
        let (ok, r) = call_with(&at("DEL"), &conf, &[("CNI_PATH", plugin_path)]);
        assert!(ok, "{r}");
        assert!(reservations(data.path(), "binnet").is_empty());
        assert!(!log.exists(), "host-local must not be exec'd");

        let mut other = conf.clone();
        other["ipam"] = json!({"type": "fake-ipam"});
        other["bridge"] = json!("binbr1");
        let (ok, r) = call_with(&at("ADD"), &other, &[("CNI_PATH", plugin_path)]);
        assert!(ok, "{r}");
        assert_eq!(r["ips"][0]["address"], "10.85.0.9/24");
        assert!(pod.sh("ip -o addr show dev eth0").contains("10.85.0.9/24"));
        let (ok, r) = call_with(&at("DEL"), &other, &[("CNI_PATH", plugin_path)]);
        assert!(ok, "{r}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "ADD\nDEL\n");
    });
}

#[test]
fn a_full_or_closed_stdout_is_exit_1_never_a_panic() {
    for bin in [
        BRIDGE,
        env!("CARGO_BIN_EXE_plexus-host-local"),
        env!("CARGO_BIN_EXE_plexus-macvlan"),
    ] {
        let outs = || {
            let (r, w) = nix::unistd::pipe().unwrap();
            drop(r);
            [
                Stdio::from(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/full")
                        .unwrap(),
                ),
                Stdio::from(w),
            ]
        };
        for out in outs() {
            let mut child = Command::new(bin)
                .env_clear()
                .env("CNI_COMMAND", "VERSION")
                .stdin(Stdio::piped())
                .stdout(out)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child
                .stdin
                .take()
                .unwrap()
                .write_all(br#"{"cniVersion":"1.0.0"}"#);
            let o = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{bin}: {stderr}");
            assert!(!stderr.contains("panicked"), "{bin}: {stderr}");
        }
    }
}
