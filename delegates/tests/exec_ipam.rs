#![allow(clippy::unwrap_used)]
//! ExecIpam against fake IPAM plugins in a private root-owned directory: what the plugin
//! sees, how its answers and failures come back, and what is refused before any exec.

mod common;

use cni::netconf::NetConf;
use common::conf;
use delegates::Ipam;
use delegates::exec_ipam::ExecIpam;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A plugin directory that passes the lookup's checks (root-owned, mode 0700 from tempdir).
fn plugin_dir(plugins: &[(&str, &str)]) -> TempDir {
    common::require_root();
    let dir = TempDir::new().unwrap();
    for (name, body) in plugins {
        write_plugin(dir.path(), name, body);
    }
    dir
}

fn write_plugin(dir: &Path, name: &str, body: &str) {
    common::write_executable(&dir.join(name), &format!("#!/bin/sh\n{body}\n"));
}

fn ipam(dir: &Path, timeout: Duration) -> ExecIpam {
    ExecIpam {
        container_id: "c-exec".to_string(),
        netns: Some("/proc/self/ns/net".into()),
        ifname: "net1".to_string(),
        cni_path: format!("/nonexistent:{}", dir.display()),
        cni_args: Some("IgnoreUnknown=1;IP=10.5.0.9".to_string()),
        timeout,
    }
}

fn net(ipam_type: &str) -> NetConf {
    conf(json!({
        "cniVersion": "1.0.0", "name": "n", "type": "bridge",
        "ipam": {"type": ipam_type, "subnet": "10.5.0.0/24"}
    }))
}

#[test]
fn add_passes_env_and_conf_and_reads_the_result_in_its_own_version() {
    let dir = plugin_dir(&[]);
    let out = dir.path().join("seen");
    let body = format!(
        "env > {out}.env\ncat > {out}.stdin\n\
         printf '{{\"cniVersion\":\"0.4.0\",\"ips\":[{{\"version\":\"4\",\"address\":\"10.5.0.7/24\",\"gateway\":\"10.5.0.1\"}}]}}'",
        out = out.display()
    );
    write_plugin(dir.path(), "fake", &body);
    let r = ipam(dir.path(), Duration::from_secs(10))
        .add(&net("fake"))
        .unwrap();
    assert_eq!(r.ips.len(), 1);
    assert_eq!(r.ips[0].address.to_string(), "10.5.0.7/24");
    assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.5.0.1");

    let env = std::fs::read_to_string(out.with_extension("env")).unwrap();
    let vars: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert_eq!(get("CNI_COMMAND"), Some("ADD"));
    assert_eq!(get("CNI_CONTAINERID"), Some("c-exec"));
    assert_eq!(get("CNI_IFNAME"), Some("net1"));
    assert_eq!(get("CNI_NETNS"), Some("/proc/self/ns/net"));
    assert_eq!(get("CNI_ARGS"), Some("IgnoreUnknown=1;IP=10.5.0.9"));
    assert_eq!(get("PATH"), Some(cni::exec::PLUGIN_PATH_ENV));
    // Nothing of the caller's environment leaks through; the shell adds only its own.
    let allowed = [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_IFNAME",
        "CNI_NETNS",
        "CNI_ARGS",
        "CNI_PATH",
        "PATH",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    for (k, _) in &vars {
        assert!(allowed.contains(k), "unexpected variable {k} in {env}");
    }
    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("stdin")).unwrap()).unwrap();
    assert_eq!(stdin["ipam"]["type"], "fake");
    assert_eq!(stdin["name"], "n");
}

#[test]
fn a_result_without_cni_version_is_read_in_the_confs_version() {
    // Read as 0.1.0 (the spec's meaning of a missing cniVersion) this would have no ips at all.
    let dir = plugin_dir(&[(
        "bare",
        r#"printf '{"ips":[{"address":"10.5.0.8/24","gateway":"10.5.0.1"}]}'"#,
    )]);
    let r = ipam(dir.path(), Duration::from_secs(10))
        .add(&net("bare"))
        .unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.5.0.8/24");
}

#[test]
fn the_plugins_own_error_object_is_kept() {
    let dir = plugin_dir(&[(
        "busy",
        r#"printf '{"cniVersion":"1.0.0","code":11,"msg":"pool busy","details":"try later"}'; exit 1"#,
    )]);
    let i = ipam(dir.path(), Duration::from_secs(10));
    for e in [
        i.add(&net("busy")).unwrap_err().to_error_object(),
        i.del(&net("busy")).unwrap_err().to_error_object(),
        i.check(&net("busy")).unwrap_err().to_error_object(),
    ] {
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.as_str()),
            (11, "pool busy", "try later")
        );
    }
}

#[test]
fn a_crash_without_error_object_is_code_100_with_stderr() {
    let dir = plugin_dir(&[("crash", "echo 'boom: no lease' >&2; exit 2")]);
    let e = ipam(dir.path(), Duration::from_secs(10))
        .add(&net("crash"))
        .unwrap_err()
        .to_error_object();
    assert_eq!(e.code, 100, "{e:?}");
    assert!(e.msg.starts_with("ipam: "), "{e:?}");
    assert!(e.details.contains("boom: no lease"), "{e:?}");
}

#[test]
fn a_plugin_that_hangs_is_killed_at_the_timeout() {
    let dir = plugin_dir(&[("hang", "sleep 30 & sleep 30")]);
    let started = Instant::now();
    let e = ipam(dir.path(), Duration::from_millis(300))
        .add(&net("hang"))
        .unwrap_err()
        .to_error_object();
    assert_eq!(e.code, 11, "{e:?}");
    assert!(e.msg.contains("timed out"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{e:?}");
}

#[test]
fn a_plugin_flooding_stdout_is_stopped() {
    let dir = plugin_dir(&[("flood", "yes '{}'")]);
    let e = ipam(dir.path(), Duration::from_secs(20))
        .add(&net("flood"))
        .unwrap_err()
        .to_error_object();
    assert_eq!(e.code, 100, "{e:?}");
    assert!(e.msg.contains("output too large"), "{e:?}");
}

#[test]
fn a_result_that_is_not_a_result_is_a_decode_error() {
    let dir = plugin_dir(&[("junk", "printf 'not json'")]);
    let e = ipam(dir.path(), Duration::from_secs(10))
        .add(&net("junk"))
        .unwrap_err()
        .to_error_object();
    assert_eq!(e.code, 6, "{e:?}");
}

#[test]
fn unsafe_types_and_directories_are_refused_before_exec() {
    let dir = plugin_dir(&[("fake", "touch ran; printf '{}'")]);
    let i = ipam(dir.path(), Duration::from_secs(10));
    for bad in ["../fake", "/bin/true", "", "fa ke"] {
        let e = i.add(&net(bad)).unwrap_err().to_error_object();
        assert_eq!(e.code, 7, "{bad:?}: {e:?}");
    }
    let e = i.add(&net("absent")).unwrap_err().to_error_object();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("not found"), "{e:?}");

    // The same plugin in a directory anyone can write is not run.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = i.add(&net("fake")).unwrap_err().to_error_object();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("writable"), "{e:?}");
    assert!(!dir.path().join("ran").exists());
    assert!(!Path::new("ran").exists());

    let no_type = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {}}));
    assert_eq!(i.add(&no_type).unwrap_err().code(), 7);
}
