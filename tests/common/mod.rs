//! Test support for the binary-level tests: a private "node" netns per test thread, pod netns
//! fixtures, a runner for the real `plexus` binary, stand-in delegates and the leak oracle.
#![allow(dead_code, clippy::unwrap_used)]

pub mod apiserver;

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

pub fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

/// Fails loudly rather than skipping: these tests are the point of the suite.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and links: run them as root (the README's test command does)"
    );
    assert!(
        Path::new(REFERENCE_PLUGINS).join("bridge").exists(),
        "Debian's containernetworking-plugins are missing from {REFERENCE_PLUGINS}: the README's test command installs them"
    );
}

/// Moves the calling test thread into a fresh network namespace: the "node". Everything
/// created in it disappears with the thread, even when the test panics.
pub fn enter_node_netns() {
    require_root();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare node netns");
    sh("ip link set lo up");
}

/// A pod network namespace held open by a parked thread; dropping it lets the thread exit,
/// which frees the namespace and every link in it.
pub struct PodNs {
    pub path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl PodNs {
    pub fn new() -> PodNs {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare pod netns");
            let tid = nix::unistd::gettid();
            let path = PathBuf::from(format!("/proc/{}/task/{}/ns/net", std::process::id(), tid));
            ready_tx.send(path).expect("send netns path");
            let _ = stop_rx.recv();
        });
        let path = ready_rx.recv().expect("pod netns thread started");
        let p = PodNs {
            path,
            stop: Some(stop_tx),
            handle: Some(handle),
        };
        p.exec("ip link set lo up");
        p
    }

    /// Runs a shell command inside the pod netns.
    pub fn exec(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .args(["sh", "-c", cmd])
            .output()
            .expect("nsenter")
    }

    pub fn links(&self) -> Vec<String> {
        let out = self.exec("ip -j link show");
        link_names(&out.stdout)
    }

    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        let out = self.exec(&format!("ip -j addr show dev {ifname}"));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["scope"] == "global")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    /// Every link here with what identifies it: see [`link_table`].
    pub fn link_table(&self) -> Vec<LinkRow> {
        link_table(&self.exec("ip -j addr show").stdout)
    }

    /// Stops the holder thread: the namespace is gone afterwards (a reboot, for DEL tests).
    pub fn destroy(mut self) -> PathBuf {
        let path = self.path.clone();
        self.stop_thread();
        path
    }

    fn stop_thread(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// One link as a before/after comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkRow {
    pub name: String,
    pub ifindex: u64,
    pub mac: String,
    pub addrs: Vec<String>,
}

/// Links with their index, MAC and global addresses, from `ip -j addr show`.
pub fn link_table(json: &[u8]) -> Vec<LinkRow> {
    let v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
    let mut rows: Vec<LinkRow> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| LinkRow {
            name: l["ifname"].as_str().unwrap_or_default().to_string(),
            ifindex: l["ifindex"].as_u64().unwrap_or_default(),
            mac: l["address"].as_str().unwrap_or_default().to_string(),
            addrs: l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["scope"] == "global")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
                .collect(),
        })
        .collect();
    rows.sort();
    rows
}

/// The node's (the calling thread's netns) links: see [`link_table`].
pub fn node_link_table() -> Vec<LinkRow> {
    let out = Command::new("ip")
        .args(["-j", "addr", "show"])
        .output()
        .expect("ip");
    link_table(&out.stdout)
}

/// The path of the calling thread's netns (the node), as a runtime could pass it.
pub fn node_netns_path() -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/task/{}/ns/net",
        std::process::id(),
        nix::unistd::gettid()
    ))
}

fn link_names(json: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
    let mut names: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// Runs a shell command in the calling thread's netns (the node) and asserts success.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `cmd` (from the calling thread, so in its netns) with `input` on stdin and asserts it
/// succeeded; `what` names it in the failure.
pub fn run_with_input(mut cmd: Command, input: &[u8], what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("write stdin of {what}: {e}"));
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn node_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .expect("ip");
    link_names(&out.stdout)
}

/// What the calling thread's netns (the node) holds that Plexus could leave behind: links
/// (name, kind, alias), global addresses, nft tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    pub links: Vec<(String, String, String)>,
    pub addrs: Vec<(String, String)>,
    pub nft_tables: Vec<String>,
}

impl NodeState {
    pub fn capture() -> NodeState {
        let json = |args: &[&str]| -> Value {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect(args[0]);
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
        };
        let links = json(&["ip", "-j", "-d", "link", "show"]);
        let mut state = NodeState::default();
        for l in links.as_array().into_iter().flatten() {
            let name = l["ifname"].as_str().unwrap_or_default().to_string();
            let kind = l["linkinfo"]["info_kind"].as_str().unwrap_or_default();
            let alias = l["ifalias"].as_str().unwrap_or_default();
            state
                .links
                .push((name.clone(), kind.to_string(), alias.to_string()));
        }
        let addrs = json(&["ip", "-j", "addr", "show"]);
        for l in addrs.as_array().into_iter().flatten() {
            let name = l["ifname"].as_str().unwrap_or_default();
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a["scope"] == "global" {
                    let addr = format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]);
                    state.addrs.push((name.to_string(), addr));
                }
            }
        }
        let tables = json(&["nft", "-j", "list", "tables"]);
        for t in tables["nftables"].as_array().into_iter().flatten() {
            if let Some(t) = t.get("table") {
                state.nft_tables.push(format!(
                    "{} {}",
                    t["family"].as_str().unwrap_or_default(),
                    t["name"].as_str().unwrap_or_default()
                ));
            }
        }
        state.links.sort();
        state.addrs.sort();
        state.nft_tables.sort();
        state
    }

    /// What is here now that a node with no attachment left must not hold, measured against
    /// `baseline`: links other than bridges (a veth's host end, a vxlan device, ...), any
    /// link tagged by Plexus, addresses on anything but `lo` and bridges, new nft tables.
    pub fn leaks_since(&self, baseline: &NodeState) -> Vec<String> {
        let mut out = Vec::new();
        let had_link = |n: &str| baseline.links.iter().any(|(b, _, _)| b == n);
        let kind_of = |n: &str| {
            self.links
                .iter()
                .find(|(l, _, _)| l == n)
                .map(|(_, k, _)| k.as_str())
                .unwrap_or("")
        };
        for (name, kind, alias) in &self.links {
            if alias.starts_with("plexus:") {
                out.push(format!("link {name} ({kind}) tagged {alias}"));
            } else if name != "lo" && kind != "bridge" && !had_link(name) {
                out.push(format!("link {name} ({kind})"));
            }
        }
        for (name, addr) in &self.addrs {
            let allowed = name == "lo" || kind_of(name) == "bridge";
            if !allowed && !baseline.addrs.contains(&(name.clone(), addr.clone())) {
                out.push(format!("address {addr} on {name}"));
            }
        }
        for t in &self.nft_tables {
            if !baseline.nft_tables.contains(t) {
                out.push(format!("nft table {t}"));
            }
        }
        out
    }
}

/// One test's world: temp dirs for the journal, IPAM data, manifests and stand-in plugins,
/// and what the node held when it began.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub cni_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub manifests: PathBuf,
    pub bin: PathBuf,
    pub node_baseline: NodeState,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = World {
            cni_dir: tmp.path().join("state"),
            ipam_dir: tmp.path().join("ipam"),
            manifests: tmp.path().join("manifests"),
            bin: tmp.path().join("bin"),
            tmp,
            node_baseline: NodeState::capture(),
        };
        for d in [&w.manifests, &w.bin] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        w
    }

    pub fn cni_path(&self) -> String {
        format!("{}:{REFERENCE_PLUGINS}", self.bin.display())
    }

    /// A stand-in delegate: a shell script in this world's bin dir.
    ///
    /// Written by a child process: a file this test process holds open for writing would be
    /// inherited by any child another test thread forks at that moment, and exec'ing the
    /// script then fails with ETXTBSY until that child execs. Replaced by rename, so a
    /// script swapped mid-test never runs half-written.
    pub fn script(&self, name: &str, body: &str) {
        write_script(&self.bin, name, body);
    }

    pub fn manifest(&self, file: &str, yaml: &str) {
        std::fs::write(self.manifests.join(file), yaml).unwrap();
    }

    /// A NAD manifest for `ns/name` with the given spec.config JSON.
    pub fn nad(&self, ns: &str, name: &str, config: &Value) {
        let cfg = serde_json::to_string(config).unwrap();
        self.manifest(
            &format!("nad-{ns}-{name}.yaml"),
            &format!(
                "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  config: '{}'\n",
                cfg.replace('\'', "''")
            ),
        );
    }

    pub fn pod(&self, ns: &str, name: &str, networks: &str) {
        self.manifest(
            &format!("pod-{ns}-{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  uid: 0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c\n  annotations:\n    k8s.v1.cni.cncf.io/networks: '{}'\nspec:\n  containers: []\n",
                networks.replace('\'', "''")
            ),
        );
    }

    /// bridge + host-local on `subnet`, the cluster network of most tests.
    pub fn bridge_conf(&self, name: &str, bridge: &str, subnet: &str) -> Value {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
            "isGateway": true,
            "ipam": {"type": "host-local", "subnet": subnet,
                     "dataDir": self.ipam_dir.display().to_string(),
                     "routes": [{"dst": "0.0.0.0/0"}]}
        })
    }

    pub fn macvlan_conf(&self, name: &str, master: &str, subnet: &str) -> Value {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": master, "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": subnet,
                     "dataDir": self.ipam_dir.display().to_string()}
        })
    }

    /// The Plexus conf with the given cluster network inline and this world's dirs. Every
    /// delegate is exec'd from the plugin path (Debian's reference plugins); tests of the
    /// built-ins turn them on with `"builtins": true` in `extra`.
    pub fn plexus_conf(&self, cluster: &Value, extra: Value) -> Value {
        let mut c = serde_json::json!({
            "builtins": false,
            "cniVersion": "1.1.0", "name": "plexus", "type": "plexus",
            "manifests": self.manifests.display().to_string(),
            "cniDir": self.cni_dir.display().to_string(),
            "binDir": self.bin.display().to_string(),
            "delegates": [cluster],
            "timeout": 20,
            "ipamDataDirs": [self.ipam_dir.display().to_string()],
        });
        if let (Value::Object(m), Value::Object(e)) = (&mut c, extra) {
            m.extend(e);
        }
        c
    }

    /// Host-local reservations left (files named by an IP) in every network of the data dir.
    pub fn reservations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(nets) = std::fs::read_dir(&self.ipam_dir) {
            for n in nets.flatten() {
                for f in std::fs::read_dir(n.path()).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().to_string();
                    if name.parse::<std::net::IpAddr>().is_ok() {
                        out.push(format!("{}/{name}", n.file_name().to_string_lossy()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Everything left in the journal dir (empty when the dir is gone).
    pub fn journal_files(&self) -> Vec<String> {
        journal_files(&self.cni_dir)
    }

    /// The version in force of the (one) journal entry, as DEL reads it.
    pub fn journal_entry(&self) -> Value {
        let name = self
            .journal_files()
            .into_iter()
            .find(|f| f.ends_with(".json"))
            .expect("a journal entry");
        journal_record(&self.cni_dir.join(&name))
            .unwrap_or_else(|| panic!("no whole record in {name}"))
    }

    /// Processes this world started through plexus and that are still there: every process
    /// whose command line mentions this world's temp dir or whose environment carries its
    /// plugin path (a delegate and whatever it forked, even after an exec), then every
    /// process in the same process groups (a delegate leads its own group).
    pub fn stray_processes(&self) -> Vec<String> {
        let marker = self.tmp.path().display().to_string();
        let me = std::process::id().to_string();
        let mut procs = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let read = |f: &str| std::fs::read(e.path().join(f)).unwrap_or_default();
            let stat = String::from_utf8_lossy(&read("stat")).to_string();
            // After the ")" that ends the command name: state, ppid, pgrp. A zombie holds
            // nothing but its pid until its new parent reaps it.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let (Some(state), Some(pgid)) = (fields.first(), fields.get(2)) else {
                continue;
            };
            if *state == "Z" {
                continue;
            }
            let pgid = pgid.to_string();
            let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
            let environ = String::from_utf8_lossy(&read("environ")).to_string();
            let ours = cmdline.contains(&marker)
                || environ
                    .split('\0')
                    .any(|v| v.starts_with("CNI_PATH=") && v.contains(&marker));
            procs.push((pid, pgid, cmdline.trim().to_string(), ours));
        }
        // plexus itself runs in the test's own group; only the groups its delegates lead count.
        let own_group = nix::unistd::getpgrp().to_string();
        let groups: Vec<String> = procs
            .iter()
            .filter(|p| p.3 && p.1 != own_group)
            .map(|p| p.1.clone())
            .collect();
        procs
            .iter()
            .filter(|p| p.3 || groups.contains(&p.1))
            .map(|(pid, pgid, cmd, _)| format!("pid {pid} (group {pgid}): {cmd}"))
            .collect()
    }

    /// Kills what a SIGKILLed plexus left running (its delegates' process groups), as the
    /// runtime would when it tears the sandbox down, and waits until they are gone.
    pub fn kill_strays(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let strays = self.stray_processes();
            if strays.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "could not kill {strays:?}"
            );
            let own_group = nix::unistd::getpgrp().as_raw();
            for s in &strays {
                let num = |after: &str, until: char| {
                    s.split_once(after)
                        .and_then(|(_, rest)| rest.split_once(until))
                        .and_then(|(n, _)| n.parse::<i32>().ok())
                };
                let (Some(pid), Some(group)) = (num("pid ", ' '), num("(group ", ')')) else {
                    continue;
                };
                let kill = nix::sys::signal::Signal::SIGKILL;
                // Never the test's own group: a leftover plexus is killed alone.
                let _ = if group == own_group {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), kill)
                } else {
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), kill)
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The leak oracle: no reservation, journal file or stray process; only `lo` in the pod
    /// netns; and on the node (this thread's netns) nothing a pod's attachment leaves:
    /// see [`NodeState::leaks_since`]. The node check waits a moment for the kernel, which
    /// removes a vanished pod's veth asynchronously.
    pub fn assert_clean(&self, pod: Option<&PodNs>) {
        assert_eq!(
            self.reservations(),
            Vec::<String>::new(),
            "IP reservations left"
        );
        assert_eq!(
            self.journal_files(),
            Vec::<String>::new(),
            "journal files left"
        );
        // A process group killed a moment ago may still be on its way out (signalled, not
        // yet reaped): give it two seconds; a leaked `sleep 1000` is still there after them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut strays = self.stray_processes();
        while !strays.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            strays = self.stray_processes();
        }
        assert_eq!(strays, Vec::<String>::new(), "processes left");
        if let Some(p) = pod {
            assert_eq!(
                p.links(),
                vec!["lo".to_string()],
                "links left in the pod netns"
            );
        }
        self.assert_node_clean();
    }

    /// The node part of [`World::assert_clean`], for tests whose pod netns holds links of
    /// its own.
    pub fn assert_node_clean(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let leaks = NodeState::capture().leaks_since(&self.node_baseline);
            if leaks.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left on the node: {leaks:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// What one run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "expected success; stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a CNI error object with `code` and exit 1; returns the object.
    pub fn err(&self, code: u64) -> Value {
        assert_eq!(
            self.code, 1,
            "expected exit 1; stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        let v = self.json();
        assert_eq!(v["code"], code, "wrong error code: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error without msg: {v}"
        );
        v
    }
}

/// The CNI environment of one call.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub extra_env: Vec<(String, String)>,
    pub unset: Vec<String>,
    /// Another plexus binary than this build's (the bench's baseline build).
    pub program: Option<PathBuf>,
}

impl Call {
    pub fn new(command: &str, container_id: &str, netns: Option<&Path>, w: &World) -> Call {
        Call {
            command: command.into(),
            container_id: container_id.into(),
            netns: netns.map(Path::to_path_buf),
            ifname: "eth0".into(),
            args: format!(
                "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}"
            ),
            path: w.cni_path(),
            extra_env: Vec::new(),
            unset: Vec::new(),
            program: None,
        }
    }

    /// The same call with another CNI command (the DEL or CHECK that follows an ADD).
    pub fn with(&self, command: &str) -> Call {
        Call {
            command: command.into(),
            ..self.clone()
        }
    }

    pub fn pod(mut self, ns: &str, name: &str) -> Call {
        self.args = format!("IgnoreUnknown=true;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
        self
    }

    /// The plexus command with this call's environment, stdio not set yet.
    pub fn command(&self) -> Command {
        let program = self
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus")));
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", &self.args)
            .env("CNI_PATH", &self.path);
        if let Some(n) = &self.netns {
            cmd.env("CNI_NETNS", n);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        for k in &self.unset {
            cmd.env_remove(k);
        }
        cmd
    }

    /// Starts plexus with this call's environment and `stdin`, without waiting: for tests
    /// that run many at once or kill one midway. Spawned from the calling thread, so plexus
    /// runs in that thread's netns (the node's).
    pub fn spawn(&self, stdin: &[u8]) -> std::process::Child {
        let mut cmd = self.command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn plexus");
        {
            let mut stdin_pipe = child.stdin.take().expect("stdin");
            let _ = stdin_pipe.write_all(stdin);
        }
        child
    }

    pub fn run(&self, stdin: &[u8]) -> Run {
        let out = self.spawn(stdin).wait_with_output().expect("wait plexus");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    pub fn run_json(&self, conf: &Value) -> Run {
        self.run(serde_json::to_string(conf).unwrap().as_bytes())
    }
}

/// Writes an executable shell script `dir/name` the way [`World::script`] does.
pub fn write_script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.new"));
    let status = Command::new("sh")
            .args(["-c", "printf '#!/bin/sh\\n%s\\n' \"$1\" > \"$2\" && chmod 0755 \"$2\" && mv -f \"$2\" \"$3\"", "sh"])
            .arg(body)
            .arg(&tmp)
            .arg(&p)
            .status()
            .unwrap();
    assert!(status.success(), "write stand-in {name}");
}

/// Asserts that one CNI call answered the way the spec allows: it exited (never killed by a
/// signal) with 0 or 1; on 1, stdout is exactly one JSON object with a numeric `code` and a
/// `msg`; on 0, ADD and VERSION printed one object and every other command nothing. Returns
/// the error code, `None` on success.
pub fn assert_answered(command: &str, out: &Output) -> Option<u64> {
    use std::os::unix::process::ExitStatusExt;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "{command} killed by signal {:?}; stdout {stdout:?} stderr {stderr}",
            out.status.signal()
        )
    });
    let objects: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{command}: stdout is not JSON ({e}): {stdout:?}"));
    match (code, command) {
        (0, "DEL" | "GC" | "CHECK" | "STATUS") => {
            assert!(objects.is_empty(), "{command} printed {stdout:?}");
            None
        }
        (0, _) => {
            assert!(
                objects.len() == 1 && objects[0].is_object(),
                "{command} succeeded with {stdout:?}; stderr {stderr}"
            );
            None
        }
        (1, _) => {
            assert!(
                objects.len() == 1,
                "{command} failed with {} JSON documents on stdout: {stdout:?}; stderr {stderr}",
                objects.len()
            );
            let v = &objects[0];
            let msg = v["msg"].as_str().unwrap_or_default();
            assert!(!msg.is_empty(), "{command}: error without msg: {v}");
            Some(
                v["code"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{command}: error without code: {v}")),
            )
        }
        _ => panic!("{command} exited {code}; stdout {stdout:?} stderr {stderr}"),
    }
}

/// Waits for a call started with [`Call::spawn`] and checks its answer with
/// [`assert_answered`]: the error code (`None` on success) and stdout's JSON (`null` if none).
pub fn finish(command: &str, child: std::process::Child) -> (Option<u64>, Value) {
    let out = child.wait_with_output().expect("wait plexus");
    let code = assert_answered(command, &out);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, v)
}

/// Everything in a journal dir but the one lock file all containers share (`.locks`), which
/// is never removed; it counts too if anything was ever written into it (locks never write).
pub fn journal_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name() != plexus::journal::LOCK_FILE
                || e.metadata().map_or(true, |m| !m.is_file() || m.len() > 0)
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    out.sort();
    out
}

/// The version in force of a journal entry file, read as DEL reads it
/// (`plexus::journal::parse`), as JSON. `None` when the file is missing or holds no entry.
pub fn journal_record(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    match plexus::journal::parse(&bytes) {
        plexus::journal::Lookup::Found(entry) => serde_json::to_value(*entry).ok(),
        _ => None,
    }
}
