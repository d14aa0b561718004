//! ADD+DEL cycle of one pod with a cluster network (bridge + host-local) and N secondary
//! macvlan + host-local networks (N = 1, 4, 16), through the real `plexus` binary, against a
//! baseline measured in the same run: the same reference plugins exec'd in sequence directly,
//! as a runtime without a meta plugin would. Rounds are interleaved so drift hits both alike.
//!
//! Each measured cycle starts on a settled kernel: destroying the previous pod's namespace
//! runs asynchronously in the kernel and would otherwise contend (RCU, rtnl) with whichever
//! variant happens to run next.
//!
//! `cargo bench --bench cycle` (as root). `PLEXUS_BENCH_ROUNDS` sets the rounds (default 15).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn exec_plugin(plugin: &str, command: &str, cid: &str, netns: &str, ifname: &str, conf: &Value) {
    let mut child = Command::new(format!("{REFERENCE_PLUGINS}/{plugin}"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", REFERENCE_PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn reference plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(conf).expect("json"))
        .expect("write conf");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{plugin} {command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// One ADD+DEL of pod `p<n>` through plexus with `conf`, in a fresh pod netns.
const SETTLE: Duration = Duration::from_millis(150);

fn plexus_cycle(w: &World, conf: &Value, n: usize, cid: &str) -> Duration {
    let pod = PodNs::new();
    std::thread::sleep(SETTLE);
    let add = Call::new("ADD", cid, Some(&pod.path), w).pod("default", &format!("p{n}"));
    let started = Instant::now();
    add.run_json(conf).ok();
    add.with("DEL").run_json(conf).ok();
    started.elapsed()
}

/// The same attachments made by exec'ing the reference plugins one after another.
fn direct_cycle(cluster: &Value, secondaries: &[Value], n: usize, cid: &str) -> Duration {
    let pod = PodNs::new();
    std::thread::sleep(SETTLE);
    let ns = pod.path.display().to_string();
    let started = Instant::now();
    exec_plugin("bridge", "ADD", cid, &ns, "eth0", cluster);
    for (i, c) in secondaries.iter().take(n).enumerate() {
        exec_plugin("macvlan", "ADD", cid, &ns, &format!("net{}", i + 1), c);
    }
    for (i, c) in secondaries.iter().take(n).enumerate().rev() {
        exec_plugin("macvlan", "DEL", cid, &ns, &format!("net{}", i + 1), c);
    }
    exec_plugin("bridge", "DEL", cid, &ns, "eth0", cluster);
    started.elapsed()
}

fn main() {
    enter_node_netns();
    let rounds: usize = std::env::var("PLEXUS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let cluster = w.bridge_conf("cluster", "cni-bench", "10.88.0.0/16");
    let exec_conf = w.plexus_conf(&cluster, json!({}));
    let builtin_conf = w.plexus_conf(&cluster, json!({"builtins": true}));
    let secondaries: Vec<Value> = (1..=16)
        .map(|i| w.macvlan_conf(&format!("m{i}"), "upl0", &format!("10.{}.0.0/16", 100 + i)))
        .collect();
    for (i, c) in secondaries.iter().enumerate() {
        w.nad("default", &format!("m{}", i + 1), c);
    }
    for n in [1usize, 4, 16] {
        let networks: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
        w.pod("default", &format!("p{n}"), &networks.join(","));
    }

    // Peak RSS of plexus itself: the largest child reaped so far, read before any reference
    // plugin runs (with built-ins, plexus forks nothing; the fixtures' `ip` is smaller).
    plexus_cycle(&w, &builtin_conf, 16, "rss");
    let rss_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0);

    println!(
        "ADD+DEL cycle of 1 cluster + N secondary networks, median of {rounds} interleaved rounds (ms)"
    );
    println!(
        "{:>3}  {:>16}  {:>16}  {:>18}  {:>14}  {:>14}",
        "N", "plexus built-in", "plexus exec", "reference direct", "built-in/ref", "exec/ref"
    );
    for n in [1usize, 4, 16] {
        let (mut builtin, mut exec, mut direct) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            builtin.push(plexus_cycle(
                &w,
                &builtin_conf,
                n,
                &format!("b-{n}-{round}"),
            ));
            exec.push(plexus_cycle(&w, &exec_conf, n, &format!("e-{n}-{round}")));
            direct.push(direct_cycle(
                &cluster,
                &secondaries,
                n,
                &format!("d-{n}-{round}"),
            ));
        }
        let (b, e, d) = (median(builtin), median(exec), median(direct));
        println!(
            "{n:>3}  {b:>16.1}  {e:>16.1}  {d:>18.1}  {:>14.2}  {:>14.2}",
            b / d,
            e / d
        );
    }
    println!(
        "peak RSS of plexus (built-in, N=16): {:.1} MiB",
        rss_kib as f64 / 1024.0
    );
    w.assert_clean(None);
}
