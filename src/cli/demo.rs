//! `plexus demo`: the main job on the embedded default, with no cluster and no external
//! plugins. A throwaway node namespace, two pods attached through the built-in delegates and
//! the manifests store (the example NADs and pods of config/examples, embedded in the
//! binary), a ping across every network, then DEL and proof that nothing is left.

use super::table;
use crate::conf::PlexusConf;
use crate::flow::{self, Request, Services};
use crate::report::Report;
use crate::store::ManifestStore;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const NADS: &str = include_str!("../../config/examples/nads.yaml");
const PODS: &str = include_str!("../../config/examples/pods.yaml");
const CONF: &str = include_str!("../../config/examples/plexus.conf");
const NODE_NS: &str = "plexus-demo-node";
const PODS_DEMO: [&str; 2] = ["web", "db"];
/// The example NADs keep their host-local reservations here.
const IPAM_DIR: &str = "/run/plexus-demo";

#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}")]
    Step(String),
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Plexus(#[from] crate::Error),
}

/// A line of the demo's report; a stdout nobody can read ends the demo (its namespaces are
/// still removed on the way out).
fn say(args: std::fmt::Arguments) -> Result<(), DemoError> {
    crate::output::stdout(args).map_err(|source| DemoError::Io {
        step: "write to stdout".into(),
        source,
    })
}

fn ip(args: &[&str]) -> Result<String, DemoError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| DemoError::Io {
            step: format!("ip {}", args.join(" ")),
            source,
        })?;
    if !out.status.success() {
        return Err(DemoError::Step(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn pod_ns(pod: &str) -> String {
    format!("plexus-demo-{pod}")
}

/// Removes the demo's namespaces and IPAM folder, whatever state they are in.
fn teardown_namespaces() {
    for name in PODS_DEMO
        .iter()
        .map(|p| pod_ns(p))
        .chain([NODE_NS.to_string()])
    {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
    }
    let _ = std::fs::remove_dir_all(IPAM_DIR);
}

struct Demo {
    work: PathBuf,
    conf: PlexusConf,
    store: ManifestStore,
    empty_bin: PathBuf,
}

impl Demo {
    fn request(&self, command: cni::Command, pod: &str) -> Result<Request, DemoError> {
        let netns = format!("/run/netns/{}", pod_ns(pod));
        let args = format!("IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
        let cni_path = self.empty_bin.display().to_string();
        let container = format!("plexus-demo-{pod}");
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(command.as_str().to_string()),
            "CNI_CONTAINERID" => Some(container.clone()),
            "CNI_NETNS" => Some(netns.clone()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            "CNI_ARGS" => Some(args.clone()),
            "CNI_PATH" => Some(cni_path.clone()),
            _ => None,
        };
        Request::with_conf(env, self.conf.clone()).map_err(|e| DemoError::Plexus(e.into()))
    }

    fn run(&self, command: cni::Command, pod: &str) -> Result<Report, DemoError> {
        let req = self.request(command, pod)?;
        let services = Services {
            store: Some(&self.store),
        };
        Ok(flow::run(&req, &services)?)
    }
}

pub fn run(keep: bool) -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        crate::output::stderr(format_args!(
            "plexus demo: run as root (it creates network namespaces)\n"
        ));
        return ExitCode::from(1);
    }
    // Leftovers of an earlier `--keep` run.
    teardown_namespaces();
    let outcome = demo(keep);
    if !keep {
        teardown_namespaces();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::output::stderr(format_args!("plexus demo: {e}\n"));
            ExitCode::from(1)
        }
    }
}

fn demo(keep: bool) -> Result<(), DemoError> {
    enter_node()?;
    let demo = Demo::prepare()?;
    say(format_args!(
        "plexus demo: node netns {NODE_NS}, pods {}, plugin path {} (empty: built-ins only)\n\n",
        PODS_DEMO.map(pod_ns).join(", "),
        demo.empty_bin.display()
    ))?;

    let mut statuses = Vec::new();
    for pod in PODS_DEMO {
        say(format_args!("== ADD default/{pod}\n"))?;
        let report = demo.run(cni::Command::Add, pod)?;
        say(format_args!(
            "{}\n",
            table::render(cni::Command::Add, &format!("plexus-demo-{pod}"), &report)
        ))?;
        statuses.push(report.network_status.unwrap_or_default());
    }

    let failures = ping_every_network(&statuses)?;

    if keep {
        say(format_args!(
            "\n--keep: left in place. Look with `ip netns exec plexus-demo-web ip addr`;\n"
        ))?;
        say(format_args!(
            "remove with `ip netns del plexus-demo-web plexus-demo-db {NODE_NS}; rm -rf {IPAM_DIR} {}`\n",
            demo.work.display()
        ))?;
        return if failures == 0 {
            Ok(())
        } else {
            Err(DemoError::Step(format!("{failures} ping(s) failed")))
        };
    }

    for pod in PODS_DEMO {
        say(format_args!("== DEL default/{pod}\n"))?;
        demo.run(cni::Command::Del, pod)?;
    }
    // Lets a test look at what the DELs left before anything below removes it.
    cni::fault::point("demo-after-del");
    let left = leftovers(&demo)?;
    let _ = std::fs::remove_dir_all(&demo.work);
    if !left.is_empty() {
        return Err(DemoError::Step(format!("left behind: {}", left.join("; "))));
    }
    say(format_args!(
        "== nothing left: no pod interface, no IP reservation, no journal entry, no overlay device\n"
    ))?;
    if failures > 0 {
        return Err(DemoError::Step(format!("{failures} ping(s) failed")));
    }
    Ok(())
}

/// The node: a namespace of its own, entered by this (still single-threaded) process, so
/// the machine's own network is never touched; its uplink, and the pods' namespaces.
fn enter_node() -> Result<(), DemoError> {
    let io = |step: &str| {
        let step = step.to_string();
        move |source| DemoError::Io { step, source }
    };
    ip(&["netns", "add", NODE_NS])?;
    let node =
        std::fs::File::open(format!("/run/netns/{NODE_NS}")).map_err(io("open node netns"))?;
    nix::sched::setns(&node, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| DemoError::Step(format!("enter the node netns: {e}")))?;
    ip(&["link", "set", "lo", "up"])?;
    // The uplink: macvlan-a's master and vxlan-d's underlay.
    ip(&["link", "add", "plexus-ul0", "type", "bridge"])?;
    ip(&["addr", "add", "192.0.2.1/24", "dev", "plexus-ul0"])?;
    ip(&["link", "set", "plexus-ul0", "up"])?;
    for pod in PODS_DEMO {
        ip(&["netns", "add", &pod_ns(pod)])?;
    }
    Ok(())
}

impl Demo {
    /// The demo's folders, manifests and conf, under a fresh temporary folder.
    fn prepare() -> Result<Demo, DemoError> {
        let io = |step: &str| {
            let step = step.to_string();
            move |source| DemoError::Io { step, source }
        };
        let work = std::env::temp_dir().join(format!("plexus-demo-{}", std::process::id()));
        let manifests = work.join("manifests");
        let empty_bin = work.join("bin");
        for d in [&manifests, &empty_bin] {
            std::fs::create_dir_all(d).map_err(io("create the demo folders"))?;
        }
        std::fs::write(manifests.join("nads.yaml"), NADS).map_err(io("write nads.yaml"))?;
        std::fs::write(manifests.join("pods.yaml"), PODS).map_err(io("write pods.yaml"))?;
        let mut raw = cni::netconf::parse_object(CONF.as_bytes())
            .map_err(|e| DemoError::Step(format!("embedded plexus.conf: {e}")))?;
        raw.insert("manifests".into(), manifests.display().to_string().into());
        raw.insert(
            "cniDir".into(),
            work.join("state").display().to_string().into(),
        );
        raw.insert("builtins".into(), true.into());
        raw.insert("logLevel".into(), "error".into());
        let conf = PlexusConf::from_map(raw).map_err(|e| DemoError::Plexus(e.into()))?;
        let store = ManifestStore::open(&manifests).map_err(|e| DemoError::Plexus(e.into()))?;
        Ok(Demo {
            work,
            conf,
            store,
            empty_bin,
        })
    }
}

/// Pings from web to db's address on each network they share.
fn ping_every_network(statuses: &[serde_json::Value]) -> Result<usize, DemoError> {
    let entries = |v: &serde_json::Value| -> Vec<(String, Vec<String>)> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let ips = e["ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.as_str().map(String::from))
                    .filter(|i| !i.contains(':'))
                    .collect();
                (e["name"].as_str().unwrap_or_default().to_string(), ips)
            })
            .collect()
    };
    let (web, db) = match statuses {
        [web, db] => (entries(web), entries(db)),
        _ => return Ok(0),
    };
    let mut failures = 0;
    say(format_args!(
        "== ping from web to db on every network they share\n"
    ))?;
    for (network, _) in &web {
        let Some((_, db_ips)) = db.iter().find(|(n, _)| n == network) else {
            continue;
        };
        let Some(target) = db_ips
            .first()
            .and_then(|t| t.parse::<std::net::IpAddr>().ok())
        else {
            continue;
        };
        let from = PathBuf::from(format!("/run/netns/{}", pod_ns("web")));
        let ok = reaches(&from, target);
        say(format_args!(
            "   {network:<18} {target:<14} {}\n",
            if ok { "ok" } else { "FAILED" }
        ))?;
        if !ok {
            failures += 1;
        }
    }
    Ok(failures)
}

/// An ICMP echo from a thread in netns `from` to `target` (a raw socket: the demo runs as
/// root), so the demo needs no `ping` binary. True when the matching reply comes back.
fn reaches(from: &Path, target: std::net::IpAddr) -> bool {
    let std::net::IpAddr::V4(target) = target else {
        return false;
    };
    let from = from.to_path_buf();
    std::thread::spawn(move || icmp_echo(&from, target).unwrap_or(false))
        .join()
        .unwrap_or(false)
}

fn icmp_echo(netns: &Path, target: std::net::Ipv4Addr) -> nix::Result<bool> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recvfrom, sendto,
        setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(netns).map_err(|_| nix::errno::Errno::ENOENT)?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    setsockopt(
        &sock,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut packet = [0u8; 16];
    packet[0] = 8; // echo request
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    packet[6..8].copy_from_slice(&1u16.to_be_bytes());
    packet[8..16].copy_from_slice(b"plexus!!");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let dest = SockaddrIn::from(std::net::SocketAddrV4::new(target, 0));
    sendto(sock.as_raw_fd(), &packet, &dest, MsgFlags::empty())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline {
        let Ok((n, Some(src))) = recvfrom::<SockaddrIn>(sock.as_raw_fd(), &mut buf) else {
            continue;
        };
        // A raw IPv4 socket hands over the IP header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if n < ihl + 8 || src.ip() != target {
            continue;
        }
        let icmp = &buf[ihl..n];
        if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The Internet checksum (RFC 1071) of an ICMP message.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a clean teardown must not leave: pod links, reservations, journal entries, and the
/// host veth ends and the per-VNI overlay on the node.
fn leftovers(demo: &Demo) -> Result<Vec<String>, DemoError> {
    let mut left = Vec::new();
    for pod in PODS_DEMO {
        let links = ip(&["-n", &pod_ns(pod), "-o", "link", "show"])?;
        for l in links.lines().filter(|l| !l.contains(" lo:")) {
            left.push(format!(
                "{pod}: {}",
                l.split(':').nth(1).unwrap_or(l).trim()
            ));
        }
    }
    let node = ip(&["-d", "-o", "link", "show"])?;
    for l in node
        .lines()
        .filter(|l| l.contains(" vxlan ") || l.contains(" veth ") || l.contains("plexus-vx"))
    {
        left.push(format!("node: {}", l.split(':').nth(1).unwrap_or(l).trim()));
    }
    let reservations = walk(Path::new(IPAM_DIR))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .map(|p| format!("reservation {}", p.display()));
    left.extend(reservations);
    if let Ok(rd) = std::fs::read_dir(demo.work.join("state")) {
        left.extend(
            rd.flatten()
                .filter(|e| e.file_name() != crate::journal::LOCK_FILE)
                .map(|e| format!("journal {}", e.file_name().to_string_lossy())),
        );
    }
    Ok(left)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_a_known_echo_request() {
        // Echo request, id 1, seq 1, no payload: checksum 0xf7fd.
        let packet = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&packet), 0xf7fd);
    }

    #[test]
    fn an_unreachable_address_does_not_answer() {
        // A fresh namespace whose loopback is down answers nothing, not even 127.0.0.1.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let path = format!(
                "/proc/{}/task/{}/ns/net",
                std::process::id(),
                nix::unistd::gettid()
            );
            tx.send(PathBuf::from(path)).unwrap();
            let _ = stop_rx.recv();
        });
        let ns = rx.recv().unwrap();
        assert!(!reaches(&ns, std::net::Ipv4Addr::LOCALHOST.into()));
        stop_tx.send(()).unwrap();
        holder.join().unwrap();
    }
}
