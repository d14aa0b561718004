//! The node daemon through the real binary: `plexus daemon` against the fake API server
//! (real HTTPS, list/watch), the `plexus` shim forwarding calls to its socket, real network
//! namespaces, built-in and stand-in delegates. Each test has its own node netns, so the
//! daemon's metrics port and the fake's are private to it.
#![allow(clippy::unwrap_used)]

mod common;

use common::apiserver::{FakeApi, FakeOptions, Route, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus::daemon::protocol;

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const METRICS: &str = "127.0.0.1:9091";

/// A node: its netns, an uplink bridge for macvlan, the fake API with NAD `default/blue`.
struct Node {
    w: World,
    api: FakeApi,
    kubeconfig: PathBuf,
    socket_dir: PathBuf,
}

impl Node {
    fn new() -> Node {
        enter_node_netns();
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        let w = World::new();
        let api = FakeApi::start(FakeOptions::default());
        let kubeconfig = api.kubeconfig(w.tmp.path());
        let conf = w.macvlan_conf("blue", "upl0", "10.89.2.0/24");
        api.add_nad(nad_object("default", "blue", Some(&conf)));
        let socket_dir = w.tmp.path().join("run");
        Node {
            w,
            api,
            kubeconfig,
            socket_dir,
        }
    }

    fn pod(&self, name: &str, networks: &str) {
        self.api
            .add_pod(pod_object("default", name, UID, &[(NETWORKS, networks)]));
    }

    /// The shim's conf: built-ins on, the cluster network a bridge, the fake's kubeconfig
    /// (for the in-process fallback) and the daemon's socket dir.
    fn conf(&self, extra: Value) -> Value {
        let mut c = self.w.plexus_conf(
            &self.w.bridge_conf("cluster", "cni-d0", "10.88.0.0/24"),
            json!({
                "builtins": true,
                "kubeconfig": self.kubeconfig.display().to_string(),
                "daemonSocketDir": self.socket_dir.display().to_string(),
            }),
        );
        let m = c.as_object_mut().unwrap();
        m.remove("manifests");
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        c
    }

    fn call(&self, command: &str, cid: &str, pod: &PodNs, name: &str) -> Call {
        let mut c = Call::new(command, cid, Some(&pod.path), &self.w).pod("default", name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    }

    fn daemon(&self, args: &[&str]) -> Daemon {
        Daemon::start(self, args)
    }
}

/// A running `plexus daemon`; killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(n: &Node, args: &[&str]) -> Daemon {
        let log = n.w.tmp.path().join(format!(
            "daemon-{}.log",
            Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id())
        ));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .arg("daemon")
            .args(["--node-name", "node-1", "--metrics-address", METRICS])
            .args(["--log-level", "debug"])
            .arg("--api-kubeconfig")
            .arg(&n.kubeconfig)
            .arg("--daemon-socket-dir")
            .arg(&n.socket_dir)
            .arg("--cni-dir")
            .arg(&n.w.cni_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz` to answer 200.
    fn ready(self) -> Daemon {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(get(METRICS, "/readyz"), Some((200, _))) {
                return self;
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (by its pid) and returns once it has exited.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET: (status, body), `None` when nothing answers.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: plexus\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

fn scrape() -> String {
    let (code, body) = get(METRICS, "/metrics").expect("metrics endpoint answers");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of one sample, `name{labels}` exactly as exposed.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stand-in delegate that writes `ready` and sleeps `secs` on ADD, then reports an
/// interface; every other command succeeds at once.
fn slow(w: &World, secs: u32) -> PathBuf {
    let ready = w.tmp.path().join("slow-started");
    w.script(
        "slow",
        &format!(
            r#"[ "$CNI_COMMAND" = ADD ] || exit 0
touch {}
sleep {secs}
echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"'$CNI_IFNAME'"}}]}}'"#,
            ready.display()
        ),
    );
    ready
}

fn wait_for_file(p: &Path) {
    wait_until(&format!("{}", p.display()), || p.exists());
}

#[test]
fn add_and_del_read_the_caches_write_status_and_move_the_metrics() {
    let n = Node::new();
    n.pod("web", "blue");
    let d = n.daemon(&["--no-conf"]).ready();
    n.api.clear_requests();
    let pod = PodNs::new();
    let conf = n.conf(json!({}));
    let run = n
        .call("ADD", "c-cache", &pod, "web")
        .run_json(&conf)
        .ok()
        .json();
    assert!(run["interfaces"].is_array(), "{run}");
    assert_eq!(pod.links(), ["eth0", "lo", "net1"], "{}", d.log());
    // Warm caches: no read reaches the API; the status patch is the one synchronous write.
    let log = n.api.requests();
    let reads: Vec<_> = log
        .iter()
        .filter(|l| matches!(l.route, Route::GetPod | Route::GetNad))
        .collect();
    assert!(reads.is_empty(), "{reads:?}");
    assert_eq!(n.api.requests_for(Route::PatchPodStatus).len(), 1);
    let status = n.api.pod("default", "web").unwrap()["metadata"]["annotations"]
        ["k8s.v1.cni.cncf.io/network-status"]
        .as_str()
        .map(String::from)
        .unwrap();
    assert!(status.contains("default/blue"), "{status}");
    // Events go out from the queue after the answer.
    wait_until("the AddedInterface events", || {
        n.api
            .events()
            .iter()
            .any(|e| e["reason"] == "AddedInterface")
    });

    // Built-ins entered the pod's netns on threads of their own that ended there: every
    // thread left in the daemon is in the node's netns.
    let node_ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.child.id())).unwrap();
    for t in tasks {
        let ns = std::fs::read_link(t.unwrap().path().join("ns/net")).unwrap();
        assert_eq!(ns, node_ns, "a daemon thread stayed in another netns");
    }

    // A pod the cache has not seen (the fake lists only node-1's pods to it): one GET.
    let mut other = pod_object("default", "elsewhere", UID, &[(NETWORKS, "blue")]);
    other["spec"]["nodeName"] = json!("node-2");
    n.api.add_pod(other);
    let pod2 = PodNs::new();
    n.call("ADD", "c-miss", &pod2, "elsewhere")
        .run_json(&conf)
        .ok();
    assert_eq!(n.api.requests_for(Route::GetPod).len(), 1);

    // A NAD nobody defined: code 11, counted by code and by network.
    n.pod("lost", "missing");
    wait_until("the cache to see pod lost", || {
        sample(&scrape(), "plexus_cache_objects{kind=\"pod\"}") >= 2.0
    });
    let pod3 = PodNs::new();
    n.call("ADD", "c-lost", &pod3, "lost")
        .run_json(&conf)
        .err(11);

    let m = scrape();
    assert_eq!(sample(&m, "plexus_cache_synced{kind=\"pod\"}"), 1.0);
    assert_eq!(sample(&m, "plexus_cache_synced{kind=\"nad\"}"), 1.0);
    assert_eq!(sample(&m, "plexus_cache_objects{kind=\"nad\"}"), 1.0);
    assert_eq!(
        sample(&m, "plexus_command_duration_seconds_count{command=\"ADD\"}"),
        3.0
    );
    assert_eq!(
        sample(
            &m,
            "plexus_command_errors_total{command=\"ADD\",code=\"11\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "plexus_network_errors_total{network=\"default/missing\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "plexus_delegate_duration_seconds_count{delegate=\"macvlan\"}"
        ),
        2.0
    );
    assert_eq!(sample(&m, "plexus_cache_misses_total{kind=\"pod\"}"), 1.0);
    assert_eq!(sample(&m, "plexus_api_requests_total{verb=\"get\"}"), 2.0);
    assert_eq!(sample(&m, "plexus_api_requests_total{verb=\"patch\"}"), 2.0);
    assert!(sample(&m, "plexus_api_requests_total{verb=\"list\"}") >= 2.0);
    assert!(sample(&m, "plexus_api_requests_total{verb=\"watch\"}") >= 2.0);
    assert_eq!(sample(&m, "plexus_journal_entries"), 2.0);

    for (cid, p, name) in [("c-cache", &pod, "web"), ("c-miss", &pod2, "elsewhere")] {
        n.call("DEL", cid, p, name).run_json(&conf).ok();
    }
    n.call("DEL", "c-lost", &pod3, "lost").run_json(&conf).ok();
    let m = scrape();
    assert_eq!(
        sample(&m, "plexus_command_duration_seconds_count{command=\"DEL\"}"),
        3.0
    );
    assert_eq!(sample(&m, "plexus_journal_entries"), 0.0);
    // Only what the thick ClusterRole grants.
    let allowed = [
        Route::GetPod,
        Route::ListPods,
        Route::WatchPods,
        Route::PatchPodStatus,
        Route::GetNad,
        Route::ListNads,
        Route::WatchNads,
        Route::CreateEvent,
        Route::PatchEvent,
    ];
    let other: Vec<_> = n
        .api
        .requests()
        .into_iter()
        .filter(|l| !allowed.contains(&l.route))
        .collect();
    assert!(other.is_empty(), "{other:?}");
    // Every request above went over one HTTP/2 connection.
    assert_eq!(n.api.connections(), (1, 1));
    // The daemon's command line names this test's temp dir: the leak check would see it.
    drop(d);
    n.w.assert_clean(Some(&pod));
}

#[test]
fn with_the_daemon_down_del_runs_in_process_and_add_follows_daemon_fallback() {
    let n = Node::new();
    n.pod("web", "blue");
    let mut d = n.daemon(&["--no-conf"]).ready();
    let pod = PodNs::new();
    let conf = n.conf(json!({}));
    n.call("ADD", "c-down", &pod, "web").run_json(&conf).ok();
    assert!(d.terminate().success(), "{}", d.log());
    let socket = n.socket_dir.join(protocol::SOCKET_NAME);
    assert!(!socket.exists(), "socket left after exit");

    // DEL always runs in-process; fallback false or not.
    let strict = n.conf(json!({"daemonFallback": false, "logLevel": "warning"}));
    let del = n.call("DEL", "c-down", &pod, "web").run_json(&strict);
    del.ok();
    assert!(del.stderr.contains("in-process"), "{}", del.stderr);
    n.w.assert_clean(Some(&pod));

    // ADD with fallback off: code 11 naming the socket, nothing created.
    let err = n
        .call("ADD", "c-strict", &pod, "web")
        .run_json(&strict)
        .err(11);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&socket.display().to_string()),
        "{err}"
    );
    n.w.assert_clean(Some(&pod));
    // STATUS answers in its own code.
    let mut status = Call::new("STATUS", "", None, &n.w);
    status.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    status.run_json(&strict).err(50);

    // ADD with the default fallback runs in-process, and so does its DEL.
    n.call("ADD", "c-fallback", &pod, "web")
        .run_json(&conf)
        .ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    n.call("DEL", "c-fallback", &pod, "web")
        .run_json(&conf)
        .ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn a_full_daemon_answers_code_11_after_the_queue_wait() {
    let n = Node::new();
    let started = slow(&n.w, 3);
    let cluster = json!({"cniVersion": "1.0.0", "name": "cluster", "type": "slow"});
    let mut conf = n.conf(json!({}));
    conf["delegates"] = json!([cluster]);
    n.pod("a", "");
    n.pod("b", "");
    let d = n
        .daemon(&["--no-conf", "--max-calls", "1", "--queue-wait", "1"])
        .ready();
    let (pa, pb) = (PodNs::new(), PodNs::new());
    let first = n
        .call("ADD", "c-first", &pa, "a")
        .spawn(&serde_json::to_vec(&conf).unwrap());
    wait_for_file(&started);
    let t = Instant::now();
    let err = n.call("ADD", "c-second", &pb, "b").run_json(&conf).err(11);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(err["msg"].as_str().unwrap().contains("busy"), "{err}");
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let m = scrape();
    assert_eq!(sample(&m, "plexus_calls_busy_total"), 1.0);
    // The refused call created nothing; the first one is undone by its DEL.
    n.call("DEL", "c-second", &pb, "b").run_json(&conf).ok();
    n.call("DEL", "c-first", &pa, "a").run_json(&conf).ok();
    drop(d);
    n.w.assert_clean(None);
}

#[test]
fn a_peer_that_is_not_root_is_refused_even_through_loose_permissions() {
    let n = Node::new();
    n.pod("web", "blue");
    let d = n.daemon(&["--no-conf"]).ready();
    // Made 0700/0600 by the daemon; loosened here as a careless admin might.
    let mode = std::fs::metadata(&n.socket_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let socket = n.socket_dir.join(protocol::SOCKET_NAME);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    for (p, m) in [(&n.socket_dir, 0o755), (&socket, 0o777)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let pod = PodNs::new();
    let conf = n.conf(json!({"daemonFallback": false}));
    // The shim itself, run as nobody (GC: it names no netns nobody could open).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plexus"));
    cmd.env_clear()
        .env("CNI_COMMAND", "GC")
        .env("CNI_PATH", n.w.cni_path())
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&conf).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout["code"], 11, "{stdout}");
    let msg = stdout["msg"].as_str().unwrap();
    assert!(msg.contains("uid 65534 is not root"), "{msg}");
    assert_eq!(
        sample(&scrape(), "plexus_calls_refused_total{reason=\"peer\"}"),
        1.0,
        "{}",
        d.log()
    );
    drop(d);
    n.w.assert_clean(Some(&pod));
}

/// Sends raw bytes to the socket and reads the answer.
fn exchange(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn shim_and_daemon_of_other_versions_refuse_each_other() {
    let n = Node::new();
    n.pod("web", "blue");
    let d = n.daemon(&["--no-conf"]).ready();
    let socket = n.socket_dir.join(protocol::SOCKET_NAME);
    let conf = serde_json::to_vec(&n.conf(json!({}))).unwrap();
    let request = |version: &str| protocol::Request {
        version: version.into(),
        env: [("CNI_COMMAND".to_string(), "STATUS".to_string())].into(),
        deadline_ms: 5000,
        stdin: conf.clone(),
    };
    // Same protocol, another package version: a refusal naming it.
    let answer = exchange(&socket, &protocol::encode_request(&request("0.0.0-old")));
    match protocol::decode_response(&answer).unwrap().outcome {
        protocol::Outcome::Refused { reason } => assert!(reason.contains("0.0.0-old"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Another protocol: the daemon answers its own prefix only, which any version can read.
    let mut bytes = protocol::encode_request(&request(protocol::VERSION));
    bytes[5] ^= 0x40;
    let answer = exchange(&socket, &bytes);
    assert_eq!(answer, protocol::encode_prefix());
    assert_eq!(
        sample(&scrape(), "plexus_calls_refused_total{reason=\"version\"}"),
        2.0,
        "{}",
        d.log()
    );
    drop(d);

    // A daemon of another version, as the shim meets it: ADD with fallback off is refused
    // naming both versions; DEL runs in-process.
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let impostor = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let _ = s.read_to_end(&mut req);
            let mut resp = protocol::Response::answered(0, Some("{}".into()));
            resp.version = "9.9.9".into();
            let _ = s.write_all(&protocol::encode_response(&resp));
        }
    });
    let pod = PodNs::new();
    let strict = n.conf(json!({"daemonFallback": false}));
    let err = n
        .call("ADD", "c-skew", &pod, "web")
        .run_json(&strict)
        .err(11);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("9.9.9") && msg.contains(protocol::VERSION),
        "{msg}"
    );
    n.call("DEL", "c-skew", &pod, "web").run_json(&strict).ok();
    impostor.join().unwrap();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn the_conf_is_written_for_the_shim_kept_in_step_and_stays_after_the_daemon_exits() {
    let n = Node::new();
    let started = slow(&n.w, 2);
    let conf_dir = n.w.tmp.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let primary = json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
        {"type": "slow"}
    ]});
    std::fs::write(conf_dir.join("10-slow.conflist"), primary.to_string()).unwrap();
    let kubeconfig = n.kubeconfig.display().to_string();
    let mut d = n
        .daemon(&[
            "--conf-dir",
            conf_dir.to_str().unwrap(),
            "--kubeconfig",
            &kubeconfig,
        ])
        .ready();
    let written = conf_dir.join("00-plexus.conflist");
    let list: Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    let plugin = &list["plugins"][0];
    assert_eq!(plugin["type"], "plexus");
    assert_eq!(
        plugin["daemonSocketDir"],
        json!(n.socket_dir.display().to_string())
    );
    // Kept in step with the folder: put back when deleted, rewritten when the primary changes.
    std::fs::remove_file(&written).unwrap();
    wait_until("the conf to be written again", || written.exists());
    let mut changed = primary.clone();
    changed["plugins"][0]["tag"] = json!("rewritten");
    std::fs::write(conf_dir.join("10-slow.conflist"), changed.to_string()).unwrap();
    wait_until("the conf to follow the primary", || {
        std::fs::read_to_string(&written).is_ok_and(|t| t.contains("rewritten"))
    });
    // The runtime's view of it: the list's name and version on the plugin.
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["binDir"] = json!(n.w.bin.display().to_string());
    n.pod("web", "");
    let pod = PodNs::new();
    let add = n
        .call("ADD", "c-conf", &pod, "web")
        .spawn(&serde_json::to_vec(&conf).unwrap());
    wait_for_file(&started);
    // SIGTERM with a call in flight: not ready while it drains, the call still answered.
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_until(
        "readyz to say shutting down",
        || matches!(get(METRICS, "/readyz"), Some((503, b)) if b.contains("shutting down")),
    );
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    assert!(d.child.wait().unwrap().success(), "{}", d.log());
    assert!(written.exists(), "the conf was removed on exit");
    n.call("DEL", "c-conf", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn a_daemon_killed_mid_add_leaves_a_journal_that_del_through_a_new_daemon_undoes() {
    let n = Node::new();
    let started = slow(&n.w, 4);
    n.api.add_nad(nad_object(
        "default",
        "sluggish",
        Some(&json!({"cniVersion": "1.0.0", "name": "sluggish", "type": "slow"})),
    ));
    n.pod("web", "blue, sluggish");
    let mut d = n.daemon(&["--no-conf"]).ready();
    let pod = PodNs::new();
    let conf = n.conf(json!({}));
    let add = n
        .call("ADD", "c-killed", &pod, "web")
        .spawn(&serde_json::to_vec(&conf).unwrap());
    wait_for_file(&started);
    d.kill();
    let out = add.wait_with_output().unwrap();
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 11, "{err}");
    assert!(
        pod.links().contains(&"net1".to_string()),
        "the first attachments were made: {:?}",
        pod.links()
    );
    wait_until("the orphaned stand-in to end", || {
        n.w.stray_processes().is_empty()
    });
    let d = n.daemon(&["--no-conf"]).ready();
    n.call("DEL", "c-killed", &pod, "web").run_json(&conf).ok();
    drop(d);
    n.w.assert_clean(Some(&pod));
}

/// A daemon that writes its conf into a conf dir next to a primary bridge conf on `bridge`,
/// and the conf a plugin call gets from that conflist (its first plugin with the list's name
/// and version), as a runtime would read it.
fn daemon_writing_conf(n: &Node, bridge: &str, extra: &[&str]) -> (Daemon, Value) {
    let conf_dir = n.w.tmp.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let primary = n.w.bridge_conf("cluster", bridge, "10.88.0.0/24");
    std::fs::write(conf_dir.join("10-bridge.conf"), primary.to_string()).unwrap();
    let kubeconfig = n.kubeconfig.display().to_string();
    let mut args = vec![
        "--conf-dir",
        conf_dir.to_str().unwrap(),
        "--kubeconfig",
        &kubeconfig,
    ];
    args.extend_from_slice(extra);
    let d = n.daemon(&args).ready();
    let list: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("00-plexus.conflist")).unwrap())
            .unwrap();
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    (d, conf)
}

#[test]
fn the_gc_reconciler_removes_the_attachments_of_a_pod_gone_from_the_api() {
    let n = Node::new();
    n.pod("gone", "blue");
    n.pod("stays", "blue");
    let (d, conf) = daemon_writing_conf(&n, "cni-g0", &["--gc-interval", "1", "--gc-grace", "1"]);
    let (gone, stays) = (PodNs::new(), PodNs::new());
    n.call("ADD", "c-gone", &gone, "gone").run_json(&conf).ok();
    n.call("ADD", "c-stays", &stays, "stays")
        .run_json(&conf)
        .ok();
    n.api.delete_pod("default", "gone");
    wait_until("the reconciler to remove the gone pod's links", || {
        gone.links() == ["lo"]
    });
    wait_until("its event", || {
        n.api
            .events()
            .iter()
            .any(|e| e["reason"] == "AttachmentsCollected" && e["involvedObject"]["name"] == "gone")
    });
    assert_eq!(
        sample(&scrape(), "plexus_gc_reclaimed_total{by=\"reconciler\"}"),
        1.0,
        "{}",
        d.log()
    );
    // The pod still in the API keeps everything; only its journal entry is left.
    assert_eq!(stays.links(), ["eth0", "lo", "net1"]);
    let left = n.w.journal_files();
    assert!(
        !left.is_empty() && left.iter().all(|f| f.starts_with("c-stays")),
        "{left:?}"
    );
    n.call("DEL", "c-stays", &stays, "stays")
        .run_json(&conf)
        .ok();
    drop(d);
    n.w.assert_clean(Some(&stays));
}

/// The pod's network-status as the API server holds it.
fn network_status(n: &Node, pod: &str) -> Value {
    n.api
        .pod("default", pod)
        .and_then(|p| {
            p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
                .as_str()
                .map(String::from)
        })
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// (network, interface) of each entry of the pod's network-status.
fn status_interfaces(n: &Node, pod: &str) -> Vec<(String, String)> {
    network_status(n, pod)
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["interface"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// (network, ifname, state) of each attachment the container's journal entry records.
fn journaled(n: &Node, cid: &str) -> Vec<(String, String, String)> {
    let file =
        n.w.journal_files()
            .into_iter()
            .find(|f| f.starts_with(cid) && f.ends_with(".json"))
            .unwrap_or_default();
    let Some(entry) = common::journal_record(&n.w.cni_dir.join(file)) else {
        return Vec::new();
    };
    entry["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["network"].as_str().unwrap().to_string(),
                a["ifname"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Sets the pod's networks annotation as a user's `kubectl annotate` would: the rest of the
/// pod (its network-status) stays.
fn annotate(n: &Node, pod: &str, networks: &str) {
    let mut p = n.api.pod("default", pod).unwrap();
    p["metadata"]["annotations"][NETWORKS] = json!(networks);
    n.api.update_pod(p);
}

#[test]
fn hotplug_attaches_and_detaches_networks_of_a_running_pod_and_refuses_a_bad_annotation() {
    let n = Node::new();
    let green = n.w.macvlan_conf("green", "upl0", "10.89.3.0/24");
    n.api.add_nad(nad_object("default", "green", Some(&green)));
    n.pod("hp", "blue");
    let (d, conf) = daemon_writing_conf(&n, "cni-h0", &["--gc-interval", "0"]);
    let pod = PodNs::new();
    n.call("ADD", "c-hp", &pod, "hp").run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);

    // Added: the interface with its address, the status, the journal.
    annotate(&n, "hp", "blue,green");
    wait_until("net2 in the pod", || pod.links().len() == 4);
    assert_eq!(pod.links(), ["eth0", "lo", "net1", "net2"], "{}", d.log());
    let addrs = pod.addrs("net2");
    assert!(addrs.iter().any(|a| a.starts_with("10.89.3.")), "{addrs:?}");
    wait_until("green in network-status", || {
        status_interfaces(&n, "hp").len() == 3
    });
    assert_eq!(
        status_interfaces(&n, "hp"),
        [
            ("cluster".to_string(), "eth0".to_string()),
            ("default/blue".into(), "net1".into()),
            ("default/green".into(), "net2".into()),
        ]
    );
    assert_eq!(
        journaled(&n, "c-hp"),
        [
            (
                "cluster".to_string(),
                "eth0".to_string(),
                "added".to_string()
            ),
            ("default/blue".into(), "net1".into(), "added".into()),
            ("default/green".into(), "net2".into(), "added".into()),
        ]
    );
    wait_until("the hot-plug event", || {
        n.api.events().iter().any(|e| {
            e["reason"] == "AddedInterface"
                && e["message"].as_str().unwrap_or_default().contains("green")
        })
    });

    // Removed: the interface and its address reservation go, the status follows.
    let blue_reserved = |r: &Vec<String>| r.iter().any(|f| f.starts_with("blue/"));
    assert!(
        blue_reserved(&n.w.reservations()),
        "{:?}",
        n.w.reservations()
    );
    annotate(&n, "hp", "green");
    wait_until("net1 gone from the pod", || pod.links().len() == 3);
    assert_eq!(pod.links(), ["eth0", "lo", "net2"], "{}", d.log());
    assert!(
        !blue_reserved(&n.w.reservations()),
        "{:?}",
        n.w.reservations()
    );
    wait_until("blue gone from network-status", || {
        status_interfaces(&n, "hp").len() == 2
    });
    assert_eq!(
        status_interfaces(&n, "hp"),
        [
            ("cluster".to_string(), "eth0".to_string()),
            ("default/green".into(), "net2".into()),
        ]
    );
    assert_eq!(journaled(&n, "c-hp").len(), 2);

    // Invalid: a Warning event, and the pod keeps what it has.
    annotate(&n, "hp", r#"[{"name": "green""#);
    wait_until("the Warning event", || {
        n.api
            .events()
            .iter()
            .any(|e| e["reason"] == "NetworksRefused" && e["type"] == "Warning")
    });
    assert_eq!(pod.links(), ["eth0", "lo", "net2"]);
    assert_eq!(pod.addrs("net2"), addrs);
    assert_eq!(journaled(&n, "c-hp").len(), 2);
    assert_eq!(status_interfaces(&n, "hp").len(), 2);
    assert_eq!(
        sample(
            &scrape(),
            "plexus_hotplug_attachments_total{outcome=\"added\"}"
        ),
        1.0
    );

    // A network whose ADD fails (its only address is taken) leaves nothing behind, and the
    // pod keeps the rest.
    let mut tiny = n.w.macvlan_conf("tiny", "upl0", "10.89.4.0/24");
    tiny["ipam"]["rangeStart"] = json!("10.89.4.10");
    tiny["ipam"]["rangeEnd"] = json!("10.89.4.10");
    n.api.add_nad(nad_object("default", "tiny", Some(&tiny)));
    let taken = n.w.ipam_dir.join("tiny");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("10.89.4.10"), "someone-else\r\neth0").unwrap();
    annotate(&n, "hp", "green,tiny");
    wait_until("the AttachFailed event", || {
        n.api.events().iter().any(|e| {
            e["reason"] == "AttachFailed"
                && e["type"] == "Warning"
                && e["message"].as_str().unwrap_or_default().contains("tiny")
        })
    });
    assert_eq!(pod.links(), ["eth0", "lo", "net2"], "{}", d.log());
    assert_eq!(journaled(&n, "c-hp").len(), 2);
    std::fs::remove_dir_all(&taken).unwrap();

    // The runtime's DEL removes the hot-plugged attachment with the rest.
    n.call("DEL", "c-hp", &pod, "hp").run_json(&conf).ok();
    drop(d);
    n.w.assert_clean(Some(&pod));
}

#[test]
fn a_daemon_killed_mid_hotplug_leaves_a_journal_that_the_pods_del_undoes() {
    let n = Node::new();
    let green = n.w.macvlan_conf("green", "upl0", "10.89.3.0/24");
    n.api.add_nad(nad_object("default", "green", Some(&green)));
    let started = slow(&n.w, 4);
    n.api.add_nad(nad_object(
        "default",
        "sluggish",
        Some(&json!({"cniVersion": "1.0.0", "name": "sluggish", "type": "slow"})),
    ));
    n.pod("hk", "blue");
    let (mut d, conf) = daemon_writing_conf(
        &n,
        "cni-k0",
        &[
            "--gc-cni-path",
            n.w.bin.to_str().unwrap(),
            "--gc-interval",
            "0",
        ],
    );
    let pod = PodNs::new();
    n.call("ADD", "c-hk", &pod, "hk").run_json(&conf).ok();

    annotate(&n, "hk", "blue,green,sluggish");
    wait_for_file(&started);
    d.kill();
    // Both new attachments were journaled before either ran; the first one is in the pod.
    let states: Vec<String> = journaled(&n, "c-hk").into_iter().map(|a| a.2).collect();
    assert_eq!(states, ["added", "added", "planned", "planned"]);
    assert_eq!(pod.links(), ["eth0", "lo", "net1", "net2"]);
    wait_until("the orphaned stand-in to end", || {
        n.w.stray_processes().is_empty()
    });
    // With the daemon down the shim runs the DEL in-process, from the journal.
    n.call("DEL", "c-hk", &pod, "hk").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}
