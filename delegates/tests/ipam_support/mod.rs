//! Shared by the ipam_* integration tests: confs over a temporary dataDir, requests, and
//! running the reference plugins from /usr/lib/cni.
#![allow(dead_code, clippy::unwrap_used)]

use cni::CniResult;
use cni::args::CniArgs;
use cni::netconf::NetConf;
use delegates::ipam::IpamRequest;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

pub const NETWORK: &str = "net1";
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// A bridge conf whose `ipam` is `ipam` with `dataDir` pointed at `data_dir`.
pub fn conf(data_dir: &Path, mut ipam: Value) -> NetConf {
    ipam["dataDir"] = json!(data_dir.to_str().unwrap());
    let v = json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "ipam": ipam});
    NetConf(v.as_object().unwrap().clone())
}

pub fn host_local(data_dir: &Path, subnet: &str) -> NetConf {
    conf(
        data_dir,
        json!({"type": "host-local", "ranges": [[{"subnet": subnet}]]}),
    )
}

pub fn req<'a>(
    id: &'a str,
    ifname: &'a str,
    conf: &'a NetConf,
    args: &'a CniArgs,
) -> IpamRequest<'a> {
    IpamRequest {
        container_id: id,
        ifname,
        conf,
        args,
        data_dirs: anywhere(),
        timeout: std::time::Duration::from_secs(10),
    }
}

/// An allow-list that lets `dataDir` be any absolute path: these tests are about allocation.
pub fn anywhere() -> &'static [std::path::PathBuf] {
    static ROOT: std::sync::LazyLock<Vec<std::path::PathBuf>> =
        std::sync::LazyLock::new(|| vec![std::path::PathBuf::from("/")]);
    &ROOT
}

pub fn addrs(r: &CniResult) -> Vec<String> {
    r.ips.iter().map(|i| i.address.to_string()).collect()
}

/// Reservation files (name → content) in the network's directory, lock and
/// last_reserved_ip files left out.
pub fn reservations(data_dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(data_dir.join(NETWORK))
        .map(|rd| {
            rd.map(|e| e.unwrap())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .unwrap()
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                })
                .map(|e| {
                    let content = std::fs::read_to_string(e.path()).unwrap();
                    (e.file_name().into_string().unwrap(), content)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Runs `/usr/lib/cni/<plugin>` as a runtime would; Ok(stdout JSON) on exit 0, Err(stdout
/// JSON error object) otherwise.
pub fn reference(
    plugin: &str,
    command: &str,
    id: &str,
    ifname: &str,
    conf: &NetConf,
    cni_args: &str,
) -> Result<Value, Value> {
    let path = Path::new(REFERENCE_DIR).join(plugin);
    assert!(
        path.exists(),
        "{} is missing: install Debian's containernetworking-plugins",
        path.display()
    );
    let mut child = Command::new(&path)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", REFERENCE_DIR)
        .env("CNI_ARGS", cni_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&conf.to_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout: Value = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stdout)
    }
}

pub fn reference_addrs(v: &Value) -> Vec<String> {
    v["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}
