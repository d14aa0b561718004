//! `ipMasq`: source NAT for a pod's traffic leaving its subnet, in nftables.
//!
//! One table per network (`inet plexus-masq-<hash>`) with one rule per pod address, tagged
//! with a comment naming the container and interface so DEL removes exactly its own rules; the
//! table goes with the network's last rule. `nft` runs as a child of the calling thread, so the
//! rules land in the node's netns. A lock file serialises ADD and DEL of one network, because
//! "last rule gone → delete table" must not race another pod's ADD.

use crate::error::DelegateError;
use cni::result::IpConfig;
use serde_json::Value;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const LOCK_DIR: &str = "/run/plexus";
const CHAIN: &str = "postrouting";

pub fn table_name(network: &str) -> String {
    format!("plexus-masq-{:08x}", crate::link::fnv1a(&[network]) as u32)
}

fn tag(container_id: &str, ifname: &str) -> String {
    // nft comments are limited to 128 bytes; a hash keeps long container IDs inside it.
    format!(
        "plexus {:016x}",
        crate::link::fnv1a(&[container_id, ifname])
    )
}

fn lock(network: &str, timeout: Duration) -> Result<File, DelegateError> {
    let path = format!("{LOCK_DIR}/{}.lock", table_name(network));
    crate::link::lock_file(&path, timeout)
}

/// Runs `nft`, its whole process group killed if it is not done within `timeout`.
fn nft(script: Option<&str>, args: &[&str], timeout: Duration) -> Result<String, DelegateError> {
    let mut cmd = Command::new("nft");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let io = |source| DelegateError::Io {
        step: "run nft".into(),
        source,
    };
    let mut child = cmd.spawn().map_err(io)?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    if let (Some(s), Some(mut stdin)) = (script, child.stdin.take()) {
        stdin.write_all(s.as_bytes()).map_err(io)?;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(io)?,
        Err(_) => {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            return Err(DelegateError::Failed {
                step: format!("nft {}", args.join(" ")),
                reason: format!("no answer within {timeout:?}; killed"),
            });
        }
    };
    if !out.status.success() {
        return Err(DelegateError::Failed {
            step: format!("nft {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nft script that masquerades each pod address leaving its own subnet (multicast too
/// stays unmasqueraded, as with the reference plugins).
pub fn add_script(network: &str, container_id: &str, ifname: &str, ips: &[IpConfig]) -> String {
    let table = table_name(network);
    let tag = tag(container_id, ifname);
    let mut s = format!(
        "add table inet {table}\n\
         add chain inet {table} {CHAIN} {{ type nat hook postrouting priority srcnat; }}\n"
    );
    for ip in ips {
        let (fam, mcast) = if ip.address.addr().is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        s.push_str(&format!(
            "add rule inet {table} {CHAIN} {fam} saddr {} {fam} daddr != {} {fam} daddr != {mcast} masquerade comment \"{tag}\"\n",
            ip.address.addr(),
            ip.address.trunc(),
        ));
    }
    s
}

/// Adds the pod's rules in one nft transaction: they all go in, or none does.
pub fn add(
    network: &str,
    container_id: &str,
    ifname: &str,
    ips: &[IpConfig],
    timeout: Duration,
) -> Result<(), DelegateError> {
    if ips.is_empty() {
        return Ok(());
    }
    let _guard = lock(network, timeout)?;
    nft(
        Some(&add_script(network, container_id, ifname, ips)),
        &["-f", "-"],
        timeout,
    )
    .map(drop)
}

pub fn remove(
    network: &str,
    container_id: &str,
    ifname: &str,
    timeout: Duration,
) -> Result<(), DelegateError> {
    let _guard = lock(network, timeout)?;
    let table = table_name(network);
    let listed = match nft(
        None,
        &["-j", "-a", "list", "table", "inet", &table],
        timeout,
    ) {
        Ok(s) => s,
        // No table: nothing of ours left.
        Err(_) => return Ok(()),
    };
    let v: Value = serde_json::from_str(&listed).map_err(|e| DelegateError::Failed {
        step: format!("read nft table {table}"),
        reason: e.to_string(),
    })?;
    let tag = tag(container_id, ifname);
    let mut ours = Vec::new();
    let mut others = 0usize;
    for item in v
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let handle = rule.get("handle").and_then(Value::as_u64);
        match (rule.get("comment").and_then(Value::as_str), handle) {
            (Some(c), Some(h)) if c == tag => ours.push(h),
            _ => others += 1,
        }
    }
    if others == 0 {
        return nft(None, &["delete", "table", "inet", &table], timeout).map(drop);
    }
    let script: String = ours
        .iter()
        .map(|h| format!("delete rule inet {table} {CHAIN} handle {h}\n"))
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    nft(Some(&script), &["-f", "-"], timeout).map(drop)
}
