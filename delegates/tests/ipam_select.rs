#![allow(clippy::unwrap_used)]
//! BuiltinIpam: built-in types in-process (proved by an empty CNI_PATH), anything else by
//! exec, and in-process failures as CNI error objects.

mod common;

use cni::args::CniArgs;
use common::{conf, reservations};
use delegates::exec_ipam::ExecIpam;
use delegates::{BuiltinIpam, Ipam};
use serde_json::json;
use std::time::Duration;

fn exec(cni_path: &str) -> ExecIpam {
    ExecIpam {
        container_id: "c-sel".to_string(),
        netns: None,
        ifname: "net1".to_string(),
        cni_path: cni_path.to_string(),
        cni_args: None,
        timeout: Duration::from_secs(10),
    }
}

fn builtin<'a>(args: &'a CniArgs, cni_path: &str) -> BuiltinIpam<'a> {
    BuiltinIpam {
        container_id: "c-sel",
        ifname: "net1",
        args,
        data_dirs: common::anywhere(),
        exec: exec(cni_path),
    }
}

#[test]
fn host_local_and_its_plexus_alias_run_in_process() {
    let data = tempfile::tempdir().unwrap();
    let args = CniArgs::default();
    let ipam = builtin(&args, "");
    for (ty, net) in [("host-local", "sel-a"), ("plexus-host-local", "sel-b")] {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": net, "type": "bridge",
            "ipam": {"type": ty, "dataDir": data.path(), "ranges": [[{"subnet": "10.86.0.0/24"}]]}
        }));
        let r = ipam.add(&c).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.86.0.2/24", "{ty}");
        assert_eq!(reservations(data.path(), net), vec!["10.86.0.2"], "{ty}");
        ipam.check(&c).unwrap();
        ipam.del(&c).unwrap();
        assert!(reservations(data.path(), net).is_empty(), "{ty}");
    }
}

#[test]
fn static_runs_in_process_and_reads_cni_args() {
    let args = CniArgs::parse("IP=10.87.0.7/24;GATEWAY=10.87.0.1").unwrap();
    let ipam = builtin(&args, "");
    let c = conf(json!({
        "cniVersion": "1.0.0", "name": "s", "type": "bridge", "ipam": {"type": "static"}
    }));
    let r = ipam.add(&c).unwrap();
    assert_eq!(r.ips[0].address.to_string(), "10.87.0.7/24");
    assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.87.0.1");
    ipam.del(&c).unwrap();
}

/// A root-owned plugin directory whose `host-local` and `fake-ipam` only log their calls.
fn recording_plugins() -> tempfile::TempDir {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    for name in ["host-local", "fake-ipam"] {
        let path = dir.path().join(name);
        let body = format!(
            "#!/bin/sh\necho {name} $CNI_COMMAND >> {log}\n\
             printf '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.90.0.9/24\"}}]}}'\n",
            log = dir.path().join("calls").display()
        );
        common::write_executable(&path, &body);
    }
    dir
}

#[test]
fn other_types_go_to_exec_and_builtin_names_never_do() {
    let plugins = recording_plugins();
    let data = tempfile::tempdir().unwrap();
    let args = CniArgs::default();
    let ipam = builtin(&args, plugins.path().to_str().unwrap());
    let calls = || std::fs::read_to_string(plugins.path().join("calls")).unwrap_or_default();

    let hl = conf(json!({
        "cniVersion": "1.0.0", "name": "sel-x", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.86.0.0/24"}]]}
    }));
    assert_eq!(
        ipam.add(&hl).unwrap().ips[0].address.to_string(),
        "10.86.0.2/24"
    );
    ipam.del(&hl).unwrap();
    assert_eq!(calls(), "", "host-local on CNI_PATH must not run");

    let other = conf(json!({
        "cniVersion": "1.0.0", "name": "sel-x", "type": "bridge", "ipam": {"type": "fake-ipam"}
    }));
    assert_eq!(
        ipam.add(&other).unwrap().ips[0].address.to_string(),
        "10.90.0.9/24"
    );
    ipam.check(&other).unwrap();
    ipam.del(&other).unwrap();
    assert_eq!(calls(), "fake-ipam ADD\nfake-ipam CHECK\nfake-ipam DEL\n");

    // Forcing exec for a built-in type: the ExecIpam alone.
    assert_eq!(
        ipam.exec.add(&hl).unwrap().ips[0].address.to_string(),
        "10.90.0.9/24"
    );
    assert!(calls().ends_with("host-local ADD\n"));

    let missing = conf(json!({
        "cniVersion": "1.0.0", "name": "sel-x", "type": "bridge", "ipam": {"type": "absent"}
    }));
    let e = ipam.add(&missing).unwrap_err().to_error_object();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("not found"), "{e:?}");
}

#[test]
fn in_process_failures_keep_their_codes() {
    let data = tempfile::tempdir().unwrap();
    let args = CniArgs::parse("IP=10.99.0.5").unwrap();
    let c = conf(json!({
        "cniVersion": "1.0.0", "name": "sel-err", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.89.0.0/24"}]]}
    }));
    let e = builtin(&args, "").add(&c).unwrap_err();
    // The in-process IPAM's error stays typed up to whoever reports it.
    assert!(
        matches!(e, delegates::ipam::IpamFailure::Builtin(_)),
        "{e:?}"
    );
    let e = e.to_error_object();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("10.99.0.5"), "{e:?}");
    assert!(reservations(data.path(), "sel-err").is_empty());

    let bad = conf(json!({
        "cniVersion": "1.0.0", "name": "sel-err", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": "nope"}
    }));
    assert_eq!(
        builtin(&CniArgs::default(), "")
            .add(&bad)
            .unwrap_err()
            .code(),
        7
    );
}
