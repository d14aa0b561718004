//! podman as the caller: Debian's podman 4.3 with its CNI backend and runc, configured only
//! through a private `CONTAINERS_CONF` (and storage and registries files) in a temporary
//! directory, so the machine's own containers configuration and storage are never read or
//! written. Two containers on a Plexus conflist (the built-in bridge as cluster network and a
//! macvlan from the manifests store as `defaultNetworks`) get both interfaces and ping each
//! other on both; removing them leaves no reservation, journal entry or link.
//!
//! podman runs from the test's private node netns, so its CNI plugins (Plexus) create the
//! bridge and the macvlan uplink's children there. The containers run from a busybox rootfs
//! (`--rootfs`), so no image store or registry is involved.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where libcni (inside podman) caches results; not configurable in podman 4.3.
const LIBCNI_CACHE: &str = "/var/lib/cni";

struct Podman {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    /// libcni's cache dirs that podman creates when missing, removed again if left empty.
    created_cache: Vec<PathBuf>,
}

impl Podman {
    fn new(w: &World) -> Podman {
        for tool in ["podman", "runc", "busybox"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .unwrap()
                .success();
            assert!(
                found,
                "{tool} is missing: the README's test command installs it"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rootfs = d.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        let status = Command::new("sh")
            .args([
                "-c",
                "cp \"$(command -v busybox)\" \"$1/bin/busybox\" && for c in sh sleep ping ip; do ln -s busybox \"$1/bin/$c\"; done",
                "sh",
            ])
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(status.success(), "build the busybox rootfs");
        let p = |name: &str| d.join(name).display().to_string();
        // runc refuses podman's default rlimits where the hard limits are lower (as in CI
        // containers); these suit a sleeping busybox anywhere.
        let containers_conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{REFERENCE_PLUGINS}\"]\n\
             network_config_dir = \"{}\"\n\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{}\"\ntmp_dir = \"{}\"\n",
            w.bin.display(),
            p("net.d"),
            p("events.log"),
            p("tmp"),
        );
        std::fs::create_dir_all(d.join("net.d")).unwrap();
        std::fs::write(d.join("containers.conf"), containers_conf).unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p("graph"),
                p("run")
            ),
        )
        .unwrap();
        std::fs::write(d.join("registries.conf"), "").unwrap();
        let created_cache = [
            PathBuf::from(LIBCNI_CACHE),
            Path::new(LIBCNI_CACHE).join("results"),
        ]
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
        Podman {
            dir,
            rootfs,
            created_cache,
        }
    }

    /// Runs podman with the private configuration, from the calling thread's netns.
    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("podman")
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn start(&self, name: &str, network: &str) {
        let rootfs = self.rootfs.display().to_string();
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--rootfs",
            &rootfs,
            "sleep",
            "600",
        ]);
    }

    /// The container's IPv4 address on `ifname`.
    fn addr(&self, name: &str, ifname: &str) -> String {
        let out = self.ok(&[
            "exec", name, "ip", "-4", "-o", "addr", "show", "dev", ifname,
        ]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no IPv4 address on {name}/{ifname}: {out}"))
            .to_string()
    }

    fn links(&self, name: &str) -> Vec<String> {
        let out = self.ok(&["exec", name, "ip", "-o", "link"]);
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Podman {
    /// Removes every container even when the test failed, then anything podman mounted
    /// below the temporary directory, then libcni cache dirs it created and left empty.
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        let prefix = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        for dir in self.created_cache.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn ping(p: &Podman, from: &str, to: &str) {
    let out = p.run(&["exec", from, "ping", "-c", "1", "-W", "2", to]);
    assert!(
        out.status.success(),
        "{from} cannot ping {to}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn two_podman_containers_on_a_plexus_conflist_reach_each_other_on_both_networks() {
    enter_node_netns();
    sh("ip link add pxup0 type bridge && ip link set pxup0 up");
    let w = World::new();
    let status = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_plexus"))
        .arg(w.bin.join("plexus"))
        .status()
        .unwrap();
    assert!(status.success(), "install plexus in the plugin dir");
    let ipam = w.ipam_dir.display().to_string();
    w.nad(
        "default",
        "macvlan-a",
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "pxup0", "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": "10.99.1.0/24", "dataDir": ipam}}),
    );
    let podman = Podman::new(&w);
    // podman 4.3's libcni knows versions up to 1.0.0.
    let conflist = json!({"cniVersion": "1.0.0", "name": "plexusnet", "plugins": [{
        "type": "plexus",
        "cniDir": w.cni_dir.display().to_string(),
        "binDir": w.bin.display().to_string(),
        "manifests": w.manifests.display().to_string(),
        "defaultNetworks": ["default/macvlan-a"],
        "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge",
                       "bridge": "pxbr0", "isGateway": true,
                       "ipam": {"type": "host-local", "subnet": "10.99.0.0/24",
                                "dataDir": ipam}}]
    }]});
    std::fs::write(
        podman.dir.path().join("net.d/plexusnet.conflist"),
        serde_json::to_string_pretty(&conflist).unwrap(),
    )
    .unwrap();

    // podman validates the network (VERSION with placeholders) before it lists it.
    let networks = podman.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(networks.lines().any(|n| n == "plexusnet"), "{networks}");

    podman.start("pa", "plexusnet");
    podman.start("pb", "plexusnet");
    for c in ["pa", "pb"] {
        assert_eq!(podman.links(c), ["eth0", "lo", "net1"], "{c}");
    }
    let (a0, a1) = (podman.addr("pa", "eth0"), podman.addr("pa", "net1"));
    let (b0, b1) = (podman.addr("pb", "eth0"), podman.addr("pb", "net1"));
    assert!(a0.starts_with("10.99.0.") && b0.starts_with("10.99.0."));
    assert!(a1.starts_with("10.99.1.") && b1.starts_with("10.99.1."));
    ping(&podman, "pa", &b0);
    ping(&podman, "pa", &b1);
    ping(&podman, "pb", &a0);
    ping(&podman, "pb", &a1);
    assert_eq!(w.reservations().len(), 4, "{:?}", w.reservations());
    let sandboxes: Vec<String> = ["pa", "pb"]
        .iter()
        .map(|c| {
            podman
                .ok(&["inspect", c, "--format", "{{.NetworkSettings.SandboxKey}}"])
                .trim()
                .to_string()
        })
        .collect();
    assert!(
        sandboxes.iter().all(|s| Path::new(s).exists()),
        "{sandboxes:?}"
    );

    podman.ok(&["rm", "-f", "-t", "0", "pa", "pb"]);
    assert_eq!(w.reservations(), Vec::<String>::new(), "reservations left");
    assert_eq!(
        w.journal_files(),
        Vec::<String>::new(),
        "journal entries left"
    );
    assert_eq!(
        node_links(),
        ["lo", "pxbr0", "pxup0"],
        "only the bridge and the uplink stay on the node"
    );
    for s in &sandboxes {
        assert!(!Path::new(s).exists(), "podman's netns {s} left");
    }
}
