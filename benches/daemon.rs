//! Thick mode against thin mode: the same pod (a built-in bridge cluster network and N macvlan
//! networks from NADs, built-in delegates) ADDed and DELed by the `plexus` shim forwarding to
//! a warm `plexus daemon`, and by the one-shot `plexus` binary, both against the fake API
//! server over HTTPS (tests/common/apiserver.rs: real TLS, a bearer token, list/watch).
//!
//! Reported, in one run:
//!
//! - ADD, DEL and cycle medians at N = 1, 4, 16, rounds interleaved (each round starts with
//!   the other variant), a fresh pod netns per cycle;
//! - the API requests of one ADD at N = 4 by kind, split into those that arrived before the
//!   ADD answered (its critical path) and after;
//! - for the one-shot binary, the time from spawning it to its first API request arriving at
//!   the server, and its peak RSS on the ADD path (N = 16);
//! - p50 and p99 of 64 pods (N = 4) ADDed at once, then DELed at once;
//! - the daemon's RSS after 100 ADD/DEL cycles and after `PLEXUS_BENCH_CHURN` (1000).
//!
//! `cargo bench --bench daemon` (as root). `PLEXUS_BENCH_ROUNDS` sets the rounds (15),
//! `PLEXUS_BENCH_N` the attachment counts (`1,4,16`), `PLEXUS_BENCH_BURSTS` the rounds of 64
//! concurrent pods (2), `PLEXUS_BENCH_CHURN` the daemon's ADD/DEL cycles for the RSS figure
//! (1000; `10000` for the figure in docs/daemon.md, about two more minutes),
//! `PLEXUS_BENCH_PAUSE_MS` the pause after each cycle (50), `PLEXUS_BENCH_DAEMON_LOG` the
//! daemon's log level (`warn`), `PLEXUS_BENCH_BASELINE` the path of another plexus build:
//! its daemon and shim become a third variant of the timed rounds (before/after in one run,
//! which this machine's run-to-run spread makes the only fair comparison).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/stats.rs"]
mod stats;

use common::apiserver::{FakeApi, FakeOptions, Logged, Route, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};
use stats::{env_or, median, percentile};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const METRICS: &str = "127.0.0.1:9091";
const BASELINE_METRICS: &str = "127.0.0.1:9092";
/// Pods ADDed at once in the burst.
const BURST: usize = 64;
/// Networks of each burst pod.
const BURST_N: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Shim,
    OneShot,
    /// `PLEXUS_BENCH_BASELINE`'s shim and daemon; only in the timed rounds.
    BaselineShim,
}

const VARIANTS: [Variant; 2] = [Variant::Shim, Variant::OneShot];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Shim => "shim + warm daemon",
            Variant::OneShot => "one-shot binary",
            Variant::BaselineShim => "baseline shim + daemon",
        }
    }
}

struct Bench {
    w: World,
    api: FakeApi,
    shim: Value,
    oneshot: Value,
    socket_dir: PathBuf,
    baseline: Option<PathBuf>,
    baseline_shim: Value,
}

/// `plexus daemon` for the whole run; killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Bench {
    fn new() -> Bench {
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        let w = World::new();
        let api = FakeApi::start(FakeOptions::default());
        let kubeconfig = api.kubeconfig(w.tmp.path());
        for i in 1..=16 {
            let conf = w.macvlan_conf(&format!("m{i}"), "upl0", &format!("10.{}.0.0/16", 100 + i));
            api.add_nad(nad_object("default", &format!("m{i}"), Some(&conf)));
        }
        let networks = |n: usize| {
            (1..=n)
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        for n in 1..=16 {
            api.add_pod(pod_object(
                "default",
                &format!("p{n}"),
                UID,
                &[(NETWORKS, &networks(n))],
            ));
        }
        for i in 0..BURST {
            let name = format!("b{i}");
            api.add_pod(pod_object(
                "default",
                &name,
                UID,
                &[(NETWORKS, &networks(BURST_N))],
            ));
        }
        let socket_dir = w.tmp.path().join("run");
        let mut oneshot = w.plexus_conf(
            &w.bridge_conf("cluster", "cni-bench", "10.88.0.0/16"),
            json!({"builtins": true, "kubeconfig": kubeconfig.display().to_string()}),
        );
        oneshot.as_object_mut().unwrap().remove("manifests");
        let mut shim = oneshot.clone();
        shim["daemonSocketDir"] = json!(socket_dir.display().to_string());
        let mut baseline_shim = oneshot.clone();
        baseline_shim["daemonSocketDir"] =
            json!(w.tmp.path().join("run-baseline").display().to_string());
        Bench {
            w,
            api,
            shim,
            oneshot,
            socket_dir,
            baseline: std::env::var_os("PLEXUS_BENCH_BASELINE").map(PathBuf::from),
            baseline_shim,
        }
    }

    fn daemon(&self) -> Daemon {
        self.daemon_of(
            Path::new(env!("CARGO_BIN_EXE_plexus")),
            &self.socket_dir,
            METRICS,
            "daemon.log",
        )
    }

    /// The baseline build's daemon, on a socket and a metrics address of its own.
    fn baseline_daemon(&self) -> Option<Daemon> {
        let program = self.baseline.as_ref()?;
        let dir = self.baseline_shim["daemonSocketDir"].as_str().unwrap();
        Some(self.daemon_of(
            program,
            Path::new(dir),
            BASELINE_METRICS,
            "baseline-daemon.log",
        ))
    }

    fn daemon_of(&self, program: &Path, socket_dir: &Path, metrics: &str, log: &str) -> Daemon {
        let log = self.w.tmp.path().join(log);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .arg("daemon")
            .args(["--node-name", "node-1", "--metrics-address", metrics])
            // `PLEXUS_BENCH_DAEMON_LOG=debug`: a timestamp per step in `daemon.log` of the
            // bench's temporary directory (kept with `PLEXUS_BENCH_SERVE`); not for figures.
            .args([
                "--log-level",
                &env_or("PLEXUS_BENCH_DAEMON_LOG", "warn".to_string()),
            ])
            .args(["--no-conf", "--max-calls", "16"])
            .arg("--api-kubeconfig")
            .arg(self.w.tmp.path().join("kubeconfig"))
            .arg("--daemon-socket-dir")
            .arg(socket_dir)
            .arg("--cni-dir")
            .arg(&self.w.cni_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(metrics, "/readyz"), Some(200)) {
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn call(&self, command: &str, cid: &str, pod: &Path, name: &str) -> Call {
        let mut c = Call::new(command, cid, Some(pod), &self.w).pod("default", name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    }

    fn call_as(&self, v: Variant, command: &str, cid: &str, pod: &Path, name: &str) -> Call {
        let mut c = self.call(command, cid, pod, name);
        if v == Variant::BaselineShim {
            c.program = self.baseline.clone();
        }
        c
    }

    fn conf(&self, v: Variant) -> &Value {
        match v {
            Variant::Shim => &self.shim,
            Variant::OneShot => &self.oneshot,
            Variant::BaselineShim => &self.baseline_shim,
        }
    }

    /// One call; panics unless it succeeded.
    fn run(&self, v: Variant, command: &str, cid: &str, pod: &Path, name: &str) {
        let run = self
            .call_as(v, command, cid, pod, name)
            .run_json(self.conf(v));
        assert_eq!(
            run.code,
            0,
            "{} {command}: {} {}",
            v.name(),
            run.stdout,
            run.stderr
        );
    }

    /// One ADD and one DEL in a fresh pod netns, each timed; the netns is gone afterwards.
    fn cycle(&self, v: Variant, n: usize, cid: &str) -> (Duration, Duration) {
        let pod = PodNs::new();
        let name = format!("p{n}");
        let started = Instant::now();
        self.run(v, "ADD", cid, &pod.path, &name);
        let add = started.elapsed();
        assert_eq!(pod.links().len(), n + 2, "{} ADD at N={n}", v.name());
        let started = Instant::now();
        self.run(v, "DEL", cid, &pod.path, &name);
        let del = started.elapsed();
        assert_eq!(pod.links(), vec!["lo".to_string()], "{} DEL", v.name());
        (add, del)
    }

    /// The API requests of one ADD at N = 4: those that arrived before it answered, and
    /// those after (within a second, when the daemon's event queue has drained).
    fn requests_of_add(&self, v: Variant) -> (Vec<Logged>, Vec<Logged>) {
        let pod = PodNs::new();
        self.api.clear_requests();
        self.run(v, "ADD", "count", &pod.path, "p4");
        let answered = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let (before, after) = self
            .api
            .requests()
            .into_iter()
            .partition(|r| r.at <= answered);
        self.run(v, "DEL", "count", &pod.path, "p4");
        (before, after)
    }

    /// Spawn to the first API request's arrival, for the one-shot binary's ADD at N = 1.
    fn time_to_first_request(&self) -> Duration {
        let pod = PodNs::new();
        self.api.clear_requests();
        let input = serde_json::to_vec(&self.oneshot).unwrap();
        let call = self.call("ADD", "first", &pod.path, "p1");
        let started = Instant::now();
        let out = call.spawn(&input).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let first = self.api.requests().iter().map(|r| r.at).min().unwrap();
        self.run(Variant::OneShot, "DEL", "first", &pod.path, "p1");
        first - started
    }

    /// `BURST` pods ADDed at once, then DELed at once: each call's latency.
    fn burst(&self, v: Variant, round: usize) -> (Vec<Duration>, Vec<Duration>) {
        let pods: Vec<PodNs> = (0..BURST).map(|_| PodNs::new()).collect();
        let input = serde_json::to_vec(self.conf(v)).unwrap();
        let all = |command: &str| -> Vec<Duration> {
            let calls: Vec<(Instant, Child)> = pods
                .iter()
                .enumerate()
                .map(|(i, pod)| {
                    let call = self.call(
                        command,
                        &format!("b{round}-{i}"),
                        &pod.path,
                        &format!("b{i}"),
                    );
                    (Instant::now(), call.spawn(&input))
                })
                .collect();
            // Reaped in order: a call that ended earlier is timed by its own exit, read from
            // a thread per call so that a slow reap does not inflate another's figure.
            std::thread::scope(|s| {
                let waits: Vec<_> = calls
                    .into_iter()
                    .map(|(started, child)| {
                        s.spawn(move || {
                            let out = child.wait_with_output().unwrap();
                            assert!(
                                out.status.success(),
                                "{} {command}: {}",
                                v.name(),
                                String::from_utf8_lossy(&out.stdout)
                            );
                            started.elapsed()
                        })
                    })
                    .collect();
                waits.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        let add = all("ADD");
        for pod in &pods {
            assert_eq!(pod.links().len(), BURST_N + 2, "{} burst ADD", v.name());
        }
        let del = all("DEL");
        for pod in &pods {
            assert_eq!(
                pod.links(),
                vec!["lo".to_string()],
                "{} burst DEL",
                v.name()
            );
        }
        (add, del)
    }
}

/// Keeps the fake API server and the confs up for profiling by hand: prints how to run one
/// one-shot ADD at N = 16 (under `strace`, `/usr/bin/time`, `perf`) in this bench's network
/// namespace, where the fake listens.
fn serve(b: &Bench, wait: Duration) {
    let conf = b.w.tmp.path().join("oneshot.json");
    std::fs::write(&conf, serde_json::to_vec(&b.oneshot).unwrap()).unwrap();
    let pod = PodNs::new();
    let call = b.call("ADD", "serve", &pod.path, "p16");
    println!(
        "nsenter --net=/proc/{}/task/{}/ns/net env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \\",
        std::process::id(),
        nix::unistd::gettid()
    );
    println!(
        "  CNI_COMMAND=ADD CNI_CONTAINERID=serve CNI_IFNAME=eth0 CNI_NETNS={} CNI_PATH={} \\",
        pod.path.display(),
        call.path
    );
    println!(
        "  CNI_ARGS='{}' {} < {}",
        call.args,
        env!("CARGO_BIN_EXE_plexus"),
        conf.display()
    );
    println!("(then the same with CNI_COMMAND=DEL); serving for {wait:?}");
    std::thread::sleep(wait);
}

fn http_get(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: plexus\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// Requests by kind, as `GET pod 1, GET NAD 4, PATCH status 1, POST event 5`.
fn tally(requests: &[Logged]) -> String {
    let kinds = [
        (Route::GetPod, "GET pod"),
        (Route::GetNad, "GET NAD"),
        (Route::PatchPodStatus, "PATCH status"),
        (Route::CreateEvent, "POST event"),
    ];
    let mut parts: Vec<String> = kinds
        .iter()
        .map(|(route, name)| {
            let n = requests.iter().filter(|r| r.route == *route).count();
            format!("{name} {n}")
        })
        .collect();
    let other = requests
        .iter()
        .filter(|r| !kinds.iter().any(|(route, _)| r.route == *route))
        .count();
    if other > 0 {
        parts.push(format!("other {other}"));
    }
    parts.join(", ")
}

fn main() {
    enter_node_netns();
    let rounds: usize = env_or("PLEXUS_BENCH_ROUNDS", 15);
    let bursts: usize = env_or("PLEXUS_BENCH_BURSTS", 2);
    let churn: usize = env_or("PLEXUS_BENCH_CHURN", 1000);
    let pause = Duration::from_millis(env_or("PLEXUS_BENCH_PAUSE_MS", 50));
    let counts = stats::counts();
    let b = Bench::new();
    if let Some(secs) = std::env::var("PLEXUS_BENCH_SERVE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        serve(&b, Duration::from_secs(secs));
        return;
    }

    // Peak RSS of the one-shot binary on the ADD path (N=16, with its DEL), read before
    // anything else is spawned: the largest child reaped so far.
    b.cycle(Variant::OneShot, 16, "rss");
    let oneshot_rss_kib =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
            .map(|u| u.max_rss())
            .unwrap_or(0);

    let daemon = b.daemon();
    let baseline_daemon = b.baseline_daemon();
    let mut timed = VARIANTS.to_vec();
    if baseline_daemon.is_some() {
        timed.push(Variant::BaselineShim);
    }
    // Warm-up: the first call through a daemon opens its connections.
    for &v in &timed {
        b.cycle(v, 1, "warm");
    }

    let first: Vec<Duration> = (0..rounds).map(|_| b.time_to_first_request()).collect();

    println!("median of {rounds} interleaved rounds, ms; fresh pod netns per cycle");
    for &n in &counts {
        let mut add = vec![Vec::new(); timed.len()];
        let mut del = vec![Vec::new(); timed.len()];
        let mut cycle = vec![Vec::new(); timed.len()];
        for round in 0..rounds {
            for k in 0..timed.len() {
                let i = (round + k) % timed.len();
                let (a, d) = b.cycle(timed[i], n, &format!("c-{n}-{round}-{i}"));
                add[i].push(a);
                del[i].push(d);
                cycle[i].push(a + d);
                std::thread::sleep(pause);
            }
        }
        println!("\nN = {n}");
        println!("{:<24}{:>8}{:>8}{:>8}", "", "ADD", "DEL", "cycle");
        for (i, v) in timed.iter().enumerate() {
            println!(
                "{:<24}{:>8.1}{:>8.1}{:>8.1}",
                v.name(),
                median(&add[i]),
                median(&del[i]),
                median(&cycle[i])
            );
        }
        if let Some(j) = timed.iter().position(|v| *v == Variant::BaselineShim) {
            println!(
                "  shim vs baseline shim: ADD {:.2} / DEL {:.2} / cycle {:.2}",
                median(&add[0]) / median(&add[j]),
                median(&del[0]) / median(&del[j]),
                median(&cycle[0]) / median(&cycle[j])
            );
        }
    }

    println!("\nAPI requests of one ADD at N = 4 (before the answer | after it):");
    for v in VARIANTS {
        let (before, after) = b.requests_of_add(v);
        println!("  {:<22}{} | {}", v.name(), tally(&before), tally(&after));
    }
    println!(
        "one-shot binary, spawn to its first API request at the server (TLS and request included): median {:.2} ms, min {:.2} ms",
        median(&first),
        percentile(&first, 0.0)
    );

    let mut burst_add = vec![Vec::new(); VARIANTS.len()];
    let mut burst_del = vec![Vec::new(); VARIANTS.len()];
    for round in 0..bursts {
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let (a, d) = b.burst(VARIANTS[i], round * VARIANTS.len() + k);
            burst_add[i].extend(a);
            burst_del[i].extend(d);
        }
    }
    println!(
        "\n{BURST} pods (N = {BURST_N}) at once, {bursts} round(s), ms: ADD p50 / p99, DEL p50 / p99"
    );
    for (i, v) in VARIANTS.iter().enumerate() {
        println!(
            "  {:<22}{:>7.1} / {:>7.1}   {:>7.1} / {:>7.1}",
            v.name(),
            percentile(&burst_add[i], 0.5),
            percentile(&burst_add[i], 0.99),
            percentile(&burst_del[i], 0.5),
            percentile(&burst_del[i], 0.99)
        );
    }

    // The daemon's memory under churn: one pod netns, ADD and DEL of a one-network pod.
    let pod = PodNs::new();
    let mut after_100 = 0;
    let started = Instant::now();
    for i in 1..=churn.max(100) {
        b.run(Variant::Shim, "ADD", "churn", &pod.path, "p1");
        b.run(Variant::Shim, "DEL", "churn", &pod.path, "p1");
        if i % 500 == 0 {
            // The fake logs every request; its log is not what is measured.
            b.api.clear_requests();
        }
        if i == 100 {
            after_100 = daemon.rss_kib();
        }
    }
    let after_all = daemon.rss_kib();
    println!(
        "\ndaemon RSS after 100 ADD/DEL cycles: {:.1} MiB; after {}: {:.1} MiB ({:.1} s)",
        after_100 as f64 / 1024.0,
        churn.max(100),
        after_all as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    println!(
        "peak RSS of the one-shot binary (ADD and DEL, N = 16, API store): {:.1} MiB",
        oneshot_rss_kib as f64 / 1024.0
    );
    drop(pod);
    drop(daemon);
    drop(baseline_daemon);
    b.w.assert_clean(None);
}
