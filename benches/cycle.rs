//! ADD and DEL of one pod with a cluster network (bridge) and N secondary macvlan networks
//! (N = 1, 4, 16), timed separately, for Plexus and its baselines in one run:
//!
//! - `plexus built-in`: the real `plexus` binary, delegates and host-local in-process;
//! - `plexus exec`: the same binary exec'ing Debian's reference plugins;
//! - `reference direct`: those plugins exec'd one after another, as a runtime without a meta
//!   plugin would;
//! - `netavark`: podman's network stack, `netavark setup|teardown` with static addresses;
//! - `+masq`: Plexus with `ipMasq` on the cluster bridge, netavark with its NAT rules.
//!
//! Every cycle gets a fresh pod netns, checked after ADD (N+1 interfaces) and after DEL (only
//! `lo`). The netns is dropped right after the DEL and the next cycle starts after a short
//! pause (`PLEXUS_BENCH_PAUSE_MS`, 50): the kernel destroys a network namespace
//! asynchronously, and that clean-up may still run into the next cycle, as it does on a node
//! whose pods come and go. Rounds are interleaved and each round starts with another variant,
//! so that spill-over and any drift of the machine hit every variant alike; the ratios are of
//! medians of the same run.
//!
//! A resident pod stays on each cluster bridge for the whole run, as on a node with running
//! pods: netavark deletes its bridge (and NAT chains) with its last container and Plexus its
//! masquerade table with its last rule, which a busy node rarely sees.
//!
//! `cargo bench --bench cycle` (as root, with netavark installed). `PLEXUS_BENCH_ROUNDS` sets
//! the rounds (15), `PLEXUS_BENCH_N` the attachment counts (`1,4,16`), `PLEXUS_BENCH_ONLY` a
//! comma-separated subset of the variants (for profiling), `PLEXUS_BENCH_LOG_DIR` a folder for
//! each Plexus variant's debug log, `PLEXUS_BENCH_BASELINE` the path of another plexus build
//! to run as a seventh variant (`baseline built-in`, the built-in conf) for a before/after
//! comparison in one run.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/netavark.rs"]
mod netavark;
#[path = "support/stats.rs"]
mod stats;

use common::*;
use netavark::Netavark;
use serde_json::{Value, json};
use stats::{env_or, median};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Builtin,
    BuiltinMasq,
    Exec,
    Direct,
    Netavark,
    NetavarkMasq,
    Baseline,
}

const VARIANTS: [Variant; 7] = [
    Variant::Builtin,
    Variant::BuiltinMasq,
    Variant::Exec,
    Variant::Direct,
    Variant::Netavark,
    Variant::NetavarkMasq,
    Variant::Baseline,
];

impl Variant {
    fn key(self) -> &'static str {
        match self {
            Variant::Builtin => "builtin",
            Variant::BuiltinMasq => "builtin-masq",
            Variant::Exec => "exec",
            Variant::Direct => "direct",
            Variant::Netavark => "netavark",
            Variant::NetavarkMasq => "netavark-masq",
            Variant::Baseline => "baseline",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Builtin => "plexus built-in",
            Variant::BuiltinMasq => "plexus built-in +masq",
            Variant::Exec => "plexus exec",
            Variant::Direct => "reference direct",
            Variant::Netavark => "netavark",
            Variant::NetavarkMasq => "netavark +masq",
            Variant::Baseline => "baseline built-in",
        }
    }
}

struct Bench {
    w: World,
    cluster: Value,
    secondaries: Vec<Value>,
    builtin: Value,
    builtin_masq: Value,
    exec: Value,
    netavark: Netavark,
    /// `PLEXUS_BENCH_BASELINE`: another build of plexus, run like `plexus built-in`, to
    /// compare two builds in one run.
    baseline: Option<PathBuf>,
}

fn exec_plugin(plugin: &str, command: &str, cid: &str, netns: &Path, ifname: &str, conf: &Value) {
    let mut cmd = Command::new(format!("{REFERENCE_PLUGINS}/{plugin}"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", REFERENCE_PLUGINS);
    let input = serde_json::to_vec(conf).expect("json");
    run_with_input(cmd, &input, &format!("{plugin} {command}"));
}

impl Bench {
    fn new() -> Bench {
        let w = World::new();
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        let cluster = w.bridge_conf("cluster", "cni-bench", "10.88.0.0/16");
        let mut masq_cluster = w.bridge_conf("cluster-masq", "cni-masq", "10.89.0.0/16");
        masq_cluster["ipMasq"] = json!(true);
        let secondaries: Vec<Value> = (1..=16)
            .map(|i| w.macvlan_conf(&format!("m{i}"), "upl0", &format!("10.{}.0.0/16", 100 + i)))
            .collect();
        for (i, c) in secondaries.iter().enumerate() {
            w.nad("default", &format!("m{}", i + 1), c);
        }
        for n in 1..=16 {
            let networks: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
            w.pod("default", &format!("p{n}"), &networks.join(","));
        }
        // A per-step breakdown: each Plexus variant's debug log, with a timestamp per step,
        // in a file of its own. Logging costs time, so the medians of such a run are not the
        // ones to report.
        let log = |name: &str| match std::env::var("PLEXUS_BENCH_LOG_DIR") {
            Ok(dir) => json!({"logLevel": "debug", "logFile": format!("{dir}/{name}.log")}),
            Err(_) => json!({}),
        };
        let with = |a: Value, b: Value| match (a, b) {
            (Value::Object(mut a), Value::Object(b)) => {
                a.extend(b);
                Value::Object(a)
            }
            (a, _) => a,
        };
        Bench {
            builtin: w.plexus_conf(&cluster, with(json!({"builtins": true}), log("builtin"))),
            builtin_masq: w.plexus_conf(
                &masq_cluster,
                with(json!({"builtins": true}), log("builtin-masq")),
            ),
            exec: w.plexus_conf(&cluster, log("exec")),
            netavark: Netavark::new(w.tmp.path()),
            baseline: std::env::var_os("PLEXUS_BENCH_BASELINE").map(PathBuf::from),
            cluster,
            secondaries,
            w,
        }
    }

    fn plexus_call(&self, command: &str, pod: &Path, n: usize, cid: &str) -> Call {
        Call::new(command, cid, Some(pod), &self.w).pod("default", &format!("p{n}"))
    }

    fn run(&self, v: Variant, command: &str, pod: &Path, n: usize, cid: &str) {
        let plexus = |conf: &Value| {
            self.plexus_call(command, pod, n, cid).run_json(conf).ok();
        };
        match v {
            Variant::Builtin => plexus(&self.builtin),
            Variant::Baseline => {
                let mut call = self.plexus_call(command, pod, n, cid);
                call.program = self.baseline.clone();
                call.run_json(&self.builtin).ok();
            }
            Variant::BuiltinMasq => plexus(&self.builtin_masq),
            Variant::Exec => plexus(&self.exec),
            Variant::Direct => {
                let secondaries = self.secondaries.iter().take(n).enumerate();
                if command == "ADD" {
                    exec_plugin("bridge", "ADD", cid, pod, "eth0", &self.cluster);
                    for (i, c) in secondaries {
                        exec_plugin("macvlan", "ADD", cid, pod, &format!("net{}", i + 1), c);
                    }
                } else {
                    for (i, c) in secondaries.rev() {
                        exec_plugin("macvlan", "DEL", cid, pod, &format!("net{}", i + 1), c);
                    }
                    exec_plugin("bridge", "DEL", cid, pod, "eth0", &self.cluster);
                }
            }
            Variant::Netavark | Variant::NetavarkMasq => {
                let opts = Netavark::options(cid, n, v == Variant::NetavarkMasq, "upl0", 2);
                if command == "ADD" {
                    self.netavark.setup(pod, &opts);
                } else {
                    self.netavark.teardown(pod, &opts);
                }
            }
        }
    }

    /// ADD or DEL of the resident pod of `v`'s cluster bridge (cluster network only).
    fn resident(&self, v: Variant, command: &str, pod: &Path) {
        if v == Variant::BuiltinMasq {
            Call::new(command, "resident", Some(pod), &self.w)
                .run_json(&self.builtin_masq)
                .ok();
            return;
        }
        let opts = Netavark::options("resident", 0, v == Variant::NetavarkMasq, "upl0", 254);
        if command == "ADD" {
            self.netavark.setup(pod, &opts);
        } else {
            self.netavark.teardown(pod, &opts);
        }
    }

    /// One ADD and one DEL in a fresh pod netns, each timed; the netns is gone afterwards.
    fn cycle(&self, v: Variant, n: usize, cid: &str) -> (Duration, Duration) {
        let pod = PodNs::new();
        let started = Instant::now();
        self.run(v, "ADD", &pod.path, n, cid);
        let add = started.elapsed();
        assert_eq!(pod.links().len(), n + 2, "{} ADD at N={n}", v.name());
        let started = Instant::now();
        self.run(v, "DEL", &pod.path, n, cid);
        let del = started.elapsed();
        assert_eq!(pod.links(), vec!["lo".to_string()], "{} DEL", v.name());
        (add, del)
    }
}

fn main() {
    enter_node_netns();
    let rounds: usize = env_or("PLEXUS_BENCH_ROUNDS", 15);
    let pause = Duration::from_millis(env_or("PLEXUS_BENCH_PAUSE_MS", 50));
    let counts = stats::counts();
    // For a profile of one variant: `PLEXUS_BENCH_ONLY=builtin` (the keys below); the
    // ratios of such a run are NaN.
    let only_var = std::env::var("PLEXUS_BENCH_ONLY").unwrap_or_default();
    let only: Vec<&str> = only_var.split(',').filter(|k| !k.is_empty()).collect();
    let b = Bench::new();

    // Peak RSS of plexus itself: the largest child reaped so far, read before anything else
    // runs (with built-ins, plexus forks nothing; the fixtures' `ip` is smaller).
    b.cycle(Variant::Builtin, 16, "rss");
    let rss_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0);

    // Residents: one pod on each cluster bridge for the whole run.
    let residents: Vec<(PodNs, Variant)> = [
        Variant::BuiltinMasq,
        Variant::Netavark,
        Variant::NetavarkMasq,
    ]
    .into_iter()
    .map(|v| {
        let pod = PodNs::new();
        b.resident(v, "ADD", &pod.path);
        (pod, v)
    })
    .collect();

    println!(
        "median of {rounds} interleaved rounds, ms; fresh pod netns per cycle, {} ms pause after its destruction",
        pause.as_millis()
    );
    for &n in &counts {
        let mut add = vec![Vec::new(); VARIANTS.len()];
        let mut del = vec![Vec::new(); VARIANTS.len()];
        let mut cycle = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            for k in 0..VARIANTS.len() {
                let i = (round + k) % VARIANTS.len();
                let skip = (!only.is_empty() && !only.contains(&VARIANTS[i].key()))
                    || (VARIANTS[i] == Variant::Baseline && b.baseline.is_none());
                if skip {
                    continue;
                }
                let (a, d) = b.cycle(VARIANTS[i], n, &format!("c-{n}-{round}-{i}"));
                add[i].push(a);
                del[i].push(d);
                cycle[i].push(a + d);
                std::thread::sleep(pause);
            }
        }
        let med = |v: &Vec<Vec<Duration>>| -> Vec<f64> { v.iter().map(|s| median(s)).collect() };
        let (add, del, cycle) = (med(&add), med(&del), med(&cycle));
        println!("\nN = {n}");
        println!("{:<24}{:>8}{:>8}{:>8}", "", "ADD", "DEL", "cycle");
        for (i, v) in VARIANTS.iter().enumerate() {
            if add[i].is_nan() {
                continue;
            }
            println!(
                "{:<24}{:>8.1}{:>8.1}{:>8.1}",
                v.name(),
                add[i],
                del[i],
                cycle[i]
            );
        }
        let idx = |v: Variant| VARIANTS.iter().position(|&x| x == v).unwrap();
        let ratio = |a: Variant, b: Variant| {
            let (a, b) = (idx(a), idx(b));
            format!(
                "{:.2} / {:.2} / {:.2}",
                add[a] / add[b],
                del[a] / del[b],
                cycle[a] / cycle[b]
            )
        };
        println!("ratios ADD / DEL / cycle:");
        println!(
            "  plexus built-in vs netavark (no firewall): {}",
            ratio(Variant::Builtin, Variant::Netavark)
        );
        println!(
            "  plexus built-in +masq vs netavark +masq:   {}",
            ratio(Variant::BuiltinMasq, Variant::NetavarkMasq)
        );
        println!(
            "  plexus built-in vs reference direct:       {}",
            ratio(Variant::Builtin, Variant::Direct)
        );
        println!(
            "  plexus exec vs reference direct:           {}",
            ratio(Variant::Exec, Variant::Direct)
        );
        let (m, p) = (idx(Variant::BuiltinMasq), idx(Variant::Builtin));
        println!(
            "  masquerade costs plexus {:+.1} ms on ADD, {:+.1} ms on DEL",
            add[m] - add[p],
            del[m] - del[p]
        );
        if b.baseline.is_some() {
            println!(
                "  plexus built-in vs baseline built-in:      {}",
                ratio(Variant::Builtin, Variant::Baseline)
            );
        }
    }
    println!(
        "\npeak RSS of plexus (built-in, N=16): {:.1} MiB",
        rss_kib as f64 / 1024.0
    );

    for (pod, v) in residents {
        b.resident(v, "DEL", &pod.path);
    }
    // netavark's iptables driver leaves the (empty) `ip filter` and `ip nat` tables it made
    // through iptables-nft; they are not Plexus's, and the check below is about Plexus.
    sh("nft delete table ip filter 2>/dev/null; nft delete table ip nat 2>/dev/null; true");
    b.w.assert_clean(None);
}
