//! Test fixtures: private network namespaces held by threads, and an IPAM that execs the
//! reference host-local. Everything disappears with the threads, even when a test panics.

#![allow(dead_code)]

use cni::netconf::NetConf;
use delegates::exec_ipam::ExecIpam;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::JoinHandle;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and need root (CAP_NET_ADMIN)"
    );
}

/// A network namespace kept alive by a thread that unshared into it. Its path,
/// `/proc/<pid>/task/<tid>/ns/net`, is what a runtime would pass as `CNI_NETNS`.
pub struct TestNs {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestNs {
    pub fn new() -> TestNs {
        require_root();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let r = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map(|()| {
                format!(
                    "/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                )
            });
            let ok = r.is_ok();
            let _ = ready_tx.send(r);
            if ok {
                let _ = stop_rx.recv();
            }
        });
        let path = ready_rx
            .recv()
            .expect("netns thread started")
            .expect("unshare(CLONE_NEWNET)");
        let ns = TestNs {
            path: PathBuf::from(path),
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        ns.sh("ip link set lo up");
        ns
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The holder thread's id, for `ip link set ... netns <tid>`.
    pub fn tid(&self) -> String {
        let s = self.path.to_string_lossy();
        s.split('/')
            .nth(4)
            .expect("/proc/<pid>/task/<tid>/ns/net")
            .to_string()
    }

    /// Runs a command inside this netns.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .args(args)
            .output()
            .expect("run nsenter")
    }

    /// Runs a shell command inside this netns and returns stdout; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "{script:?} failed in {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, script: &str) -> serde_json::Value {
        serde_json::from_str(&self.sh(script)).expect("command printed JSON")
    }

    /// Whether this netns reaches `addr` in `server`: a TCP connection from here to a listener
    /// bound to `addr` there. (No `ping` on this machine; a TCP handshake proves the same
    /// two-way reachability, and binding proves `addr` lives in `server`.)
    pub fn reaches(&self, server: &TestNs, addr: &str) -> bool {
        let ip: std::net::IpAddr = addr.parse().expect("an IP address");
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            let srv = s.spawn(move || {
                server.setns_here();
                let l = std::net::TcpListener::bind((ip, 0)).expect("bind in server netns");
                tx.send(l.local_addr().expect("bound").port())
                    .expect("send port");
                l.set_nonblocking(true).expect("nonblocking");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
                while std::time::Instant::now() < deadline {
                    if l.accept().is_ok() {
                        return true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                false
            });
            let port = rx.recv().expect("server bound");
            let connected = self.enter(|| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::new(ip, port),
                    std::time::Duration::from_secs(2),
                )
                .is_ok()
            });
            connected && srv.join().expect("server thread")
        })
    }

    fn setns_here(&self) {
        let file = std::fs::File::open(&self.path).expect("open test netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into test netns");
    }

    /// Runs `f` on a thread that has entered this netns, as the runtime would run the plugin
    /// with this as the node's netns.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.setns_here();
                f()
            })
            .join()
            .expect("test thread in netns")
        })
    }

    /// Ends the holder thread; the netns goes away once nothing else holds it.
    pub fn close(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

pub fn conf(v: serde_json::Value) -> NetConf {
    match v {
        serde_json::Value::Object(m) => NetConf::from_map(m),
        _ => panic!("conf must be an object"),
    }
}

pub fn host_local(container_id: &str, netns: Option<&Path>, ifname: &str) -> ExecIpam {
    exec_ipam_from("/usr/lib/cni", container_id, netns, ifname)
}

/// An exec'd IPAM looked up in `cni_path`.
pub fn exec_ipam_from(
    cni_path: &str,
    container_id: &str,
    netns: Option<&Path>,
    ifname: &str,
) -> ExecIpam {
    ExecIpam {
        container_id: container_id.to_string(),
        netns: netns.map(Path::to_path_buf),
        ifname: ifname.to_string(),
        cni_path: cni_path.to_string(),
        cni_args: None,
        timeout: std::time::Duration::from_secs(30),
    }
}

/// Files host-local keeps for reservations (one per address), excluding its bookkeeping and
/// the blanked spares a release keeps for reuse (docs/ipam.md).
pub fn reservations(data_dir: &Path, network: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(data_dir.join(network)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("last_reserved_ip") && n != "lock" && !n.starts_with(".spare."))
        .collect();
    v.sort();
    v
}

/// Writes an executable (a stand-in plugin) from a child process: a file this test process
/// held open for writing would be inherited by any child another test thread forks at that
/// moment, and exec'ing it would then fail with ETXTBSY until that child execs.
#[allow(dead_code)]
pub fn write_executable(path: &std::path::Path, contents: &str) {
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            "printf '%s' \"$1\" > \"$2\" && chmod 0755 \"$2\"",
            "sh",
        ])
        .arg(contents)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "write {}", path.display());
}

/// An allow-list that lets host-local's `dataDir` be any absolute path: these tests use a
/// temporary folder each.
pub fn anywhere() -> &'static [std::path::PathBuf] {
    static ROOT: std::sync::LazyLock<Vec<std::path::PathBuf>> =
        std::sync::LazyLock::new(|| vec![std::path::PathBuf::from("/")]);
    &ROOT
}

/// Writes `needs-link` into `dir`: an IPAM plugin that answers ADD only if it can see
/// `CNI_IFNAME` in `CNI_NETNS` when it runs, as the dhcp plugin needs the interface to run its
/// client on. The address it hands out is 10.79.0.50/24 (gateway .254).
pub fn write_needs_link_ipam(dir: &std::path::Path) {
    write_executable(
        &dir.join("needs-link"),
        r#"#!/bin/sh
[ "$CNI_COMMAND" = ADD ] || exit 0
if nsenter --net="$CNI_NETNS" ip link show dev "$CNI_IFNAME" >/dev/null 2>&1; then
  printf '{"cniVersion":"1.0.0","ips":[{"address":"10.79.0.50/24","gateway":"10.79.0.254"}]}'
else
  printf '{"cniVersion":"1.0.0","code":11,"msg":"no %s in the pod yet"}' "$CNI_IFNAME"
  exit 1
fi
"#,
    );
}
