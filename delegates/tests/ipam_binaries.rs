#![allow(clippy::unwrap_used)]
//! `plexus-host-local` and `plexus-static` run as a runtime runs an IPAM plugin, next to the
//! reference binaries in /usr/lib/cni: same output for the same conf, and one dataDir shared
//! between the two host-locals without collisions.

mod common;

use common::{TestNs, reservations};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const HOST_LOCAL: &str = env!("CARGO_BIN_EXE_plexus-host-local");
const STATIC: &str = env!("CARGO_BIN_EXE_plexus-static");
const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const REF_STATIC: &str = "/usr/lib/cni/static";

/// Runs an IPAM binary; (exit 0, stdout as JSON or Null when empty).
fn run(
    bin: &str,
    command: &str,
    id: &str,
    netns: &Path,
    conf: &Value,
    args: &str,
) -> (bool, Value) {
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        // The temp folders the tests use for dataDir.
        .env("PLEXUS_IPAM_DATA_DIRS", std::env::temp_dir())
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    (out.status.success(), v)
}

fn ok(bin: &str, command: &str, id: &str, netns: &Path, conf: &Value) -> Value {
    let (success, v) = run(bin, command, id, netns, conf, "");
    assert!(success, "{bin} {command} {id}: {v}");
    v
}

fn host_local(version: &str, data: &Path, ipam_type: &str) -> Value {
    json!({
        "cniVersion": version, "name": "binipam", "type": "bridge",
        "ipam": {
            "type": ipam_type, "dataDir": data,
            "ranges": [
                [{"subnet": "10.91.0.0/24", "gateway": "10.91.0.254"}],
                [{"subnet": "fd00:91::/64"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.91.0/24", "gw": "10.91.0.254"}]
        }
    })
}

/// Debian's reference writes `"dns": {}` in a 1.0.0 result, where `CniResult::to_value` leaves
/// an empty `dns` out of 1.x results; both mean "no DNS".
fn without_empty_dns(mut v: Value) -> Value {
    if v["cniVersion"] == "1.0.0" && v["dns"] == json!({}) {
        v.as_object_mut().unwrap().remove("dns");
    }
    v
}

#[test]
fn host_local_prints_what_the_reference_prints_in_every_version() {
    let ns = TestNs::new();
    // Debian's reference host-local stops at 1.0.0.
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = ok(
            HOST_LOCAL,
            "ADD",
            "c1",
            ns.path(),
            &host_local(version, ours.path(), "plexus-host-local"),
        );
        let b = ok(
            REF_HOST_LOCAL,
            "ADD",
            "c1",
            ns.path(),
            &host_local(version, theirs.path(), "host-local"),
        );
        assert_eq!(a, without_empty_dns(b), "cniVersion {version}");
        assert_eq!(
            reservations(ours.path(), "binipam"),
            reservations(theirs.path(), "binipam"),
            "{version}"
        );
    }
}

#[test]
fn host_local_binaries_share_one_data_dir() {
    let ns = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local("1.0.0", data.path(), "host-local");
    let bins = [HOST_LOCAL, REF_HOST_LOCAL];
    let mut got = Vec::new();
    for i in 0..6 {
        let r = ok(bins[i % 2], "ADD", &format!("c{i}"), ns.path(), &conf);
        got.push(r["ips"][0]["address"].as_str().unwrap().to_string());
    }
    let want: Vec<String> = (1..=6).map(|n| format!("10.91.0.{n}/24")).collect();
    assert_eq!(got, want, "one allocation sequence across both binaries");

    // Each CHECKs and releases what the other reserved.
    for i in 0..6 {
        let other = bins[(i + 1) % 2];
        ok(other, "CHECK", &format!("c{i}"), ns.path(), &conf);
        ok(other, "DEL", &format!("c{i}"), ns.path(), &conf);
    }
    assert!(reservations(data.path(), "binipam").is_empty());
    // DEL of what is already gone succeeds on both.
    ok(HOST_LOCAL, "DEL", "c0", ns.path(), &conf);
    ok(REF_HOST_LOCAL, "DEL", "c0", ns.path(), &conf);
}

#[test]
fn concurrent_adds_from_both_binaries_never_collide() {
    let ns = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local("1.0.0", data.path(), "host-local");
    let results: Vec<(bool, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (conf, ns) = (&conf, ns.path());
                s.spawn(move || {
                    let bin = if i % 2 == 0 {
                        HOST_LOCAL
                    } else {
                        REF_HOST_LOCAL
                    };
                    run(bin, "ADD", &format!("p{i}"), ns, conf, "")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for (success, r) in &results {
        assert!(success, "{r}");
        for ip in r["ips"].as_array().unwrap() {
            assert!(seen.insert(ip["address"].clone()), "duplicate {ip}");
        }
    }
    assert_eq!(seen.len(), 48);
    assert_eq!(reservations(data.path(), "binipam").len(), 48);
}

#[test]
fn static_prints_what_the_reference_prints() {
    let ns = TestNs::new();
    let conf = |version: &str, ipam_type: &str| {
        json!({
            "cniVersion": version, "name": "binstatic", "type": "bridge",
            "ipam": {
                "type": ipam_type,
                "addresses": [
                    {"address": "10.92.0.5/24", "gateway": "10.92.0.1"},
                    {"address": "fd00:92::5/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.92.0.53"], "domain": "example.test", "search": ["example.test"]}
            }
        })
    };
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let a = ok(
            STATIC,
            "ADD",
            "c1",
            ns.path(),
            &conf(version, "plexus-static"),
        );
        let b = ok(REF_STATIC, "ADD", "c1", ns.path(), &conf(version, "static"));
        assert_eq!(a, without_empty_dns(b), "cniVersion {version}");
    }
    // CHECK against the reference's own result, and DEL (a no-op) on both.
    let mut with_prev = conf("1.0.0", "static");
    with_prev["prevResult"] = ok(REF_STATIC, "ADD", "c1", ns.path(), &with_prev);
    ok(STATIC, "CHECK", "c1", ns.path(), &with_prev);
    ok(STATIC, "DEL", "c1", ns.path(), &with_prev);
    with_prev["prevResult"]["ips"][0]["address"] = json!("10.92.0.6/24");
    let (success, e) = run(STATIC, "CHECK", "c1", ns.path(), &with_prev, "");
    assert!(!success);
    assert!(e["msg"].as_str().unwrap().contains("10.92.0.5"), "{e}");
}

#[test]
fn ipam_binaries_answer_version_and_refuse_what_their_version_cannot_do() {
    let ns = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    for bin in [HOST_LOCAL, STATIC] {
        let (success, v) = run(
            bin,
            "VERSION",
            "",
            ns.path(),
            &json!({"cniVersion": "1.1.0"}),
            "",
        );
        assert!(success, "{v}");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7, "{v}");
    }
    let (success, e) = run(
        HOST_LOCAL,
        "CHECK",
        "c1",
        ns.path(),
        &host_local("0.3.1", data.path(), "host-local"),
        "",
    );
    assert!(!success);
    assert_eq!(e["code"], 1, "{e}");
    assert_eq!(e["cniVersion"], "0.3.1", "{e}");
    let (success, out) = run(
        HOST_LOCAL,
        "GC",
        "",
        ns.path(),
        &host_local("1.1.0", data.path(), "host-local"),
        "",
    );
    assert!(success, "{out}");

    // A requested address from CNI_ARGS, as the reference honours it; outside the range it
    // is a config error and reserves nothing.
    let conf = host_local("1.0.0", data.path(), "host-local");
    let (success, r) = run(HOST_LOCAL, "ADD", "c-ip", ns.path(), &conf, "IP=10.91.0.77");
    assert!(success, "{r}");
    assert_eq!(r["ips"][0]["address"], "10.91.0.77/24");
    let (success, e) = run(HOST_LOCAL, "ADD", "c-out", ns.path(), &conf, "IP=10.93.0.7");
    assert!(!success);
    assert_eq!(e["code"], 7, "{e}");
    assert_eq!(
        reservations(data.path(), "binipam").len(),
        2,
        "c-ip's v4 and v6 only"
    );
}
