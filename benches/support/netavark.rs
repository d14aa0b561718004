//! netavark, podman's network stack (Debian package `netavark`, installed as
//! `/usr/lib/podman/netavark`), as a baseline: `netavark setup|teardown <netns>` with the
//! bridge + N macvlan shape of the Plexus bench, static addresses (podman allocates them, so
//! netavark has no IPAM of its own to run).
//!
//! netavark 1.4 has no "no firewall" driver; an `internal` network is the one it sets up
//! without any firewall rule (and without a default route). With masquerade, the bridge
//! network is not internal and netavark's default iptables driver writes its NAT rules.

use crate::common::run_with_input;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const NETAVARK: &str = "/usr/lib/podman/netavark";

pub struct Netavark {
    config: PathBuf,
}

impl Netavark {
    pub fn new(dir: &Path) -> Netavark {
        assert!(
            Path::new(NETAVARK).exists(),
            "the netavark baseline needs {NETAVARK}: apt-get install --no-install-recommends netavark"
        );
        let config = dir.join("netavark");
        std::fs::create_dir_all(&config).expect("netavark config dir");
        Netavark { config }
    }

    /// The options podman would send for a container on the cluster bridge (`masq`: the
    /// bridge with NAT rules) and the first `n` macvlan networks on `master`, with host
    /// address `.host` in every subnet.
    pub fn options(cid: &str, n: usize, masq: bool, master: &str, host: u8) -> Value {
        let (bridge, third) = if masq { ("nvmasq0", 91) } else { ("nv0", 90) };
        let mut networks = serde_json::Map::new();
        let mut info = serde_json::Map::new();
        networks.insert(
            "cluster".into(),
            json!({"interface_name": "eth0", "static_ips": [format!("10.{third}.0.{host}")]}),
        );
        info.insert(
            "cluster".into(),
            json!({
                "name": "cluster", "id": format!("{bridge:0>64}"), "driver": "bridge",
                "network_interface": bridge, "internal": !masq, "dns_enabled": false,
                "ipv6_enabled": false,
                "subnets": [{"subnet": format!("10.{third}.0.0/16"), "gateway": format!("10.{third}.0.1")}]
            }),
        );
        for i in 1..=n {
            let name = format!("m{i}");
            let subnet = 100 + i;
            networks.insert(
                name.clone(),
                json!({"interface_name": format!("net{i}"), "static_ips": [format!("10.{subnet}.0.{host}")]}),
            );
            info.insert(
                name.clone(),
                json!({
                    "name": name, "id": format!("{i:0>64}"), "driver": "macvlan",
                    "network_interface": master, "internal": true, "dns_enabled": false,
                    "ipv6_enabled": false, "ipam_options": {"driver": "host-local"},
                    "subnets": [{"subnet": format!("10.{subnet}.0.0/16"), "gateway": format!("10.{subnet}.0.1")}]
                }),
            );
        }
        json!({"container_id": cid, "container_name": cid, "networks": networks, "network_info": info})
    }

    pub fn setup(&self, netns: &Path, options: &Value) {
        self.run("setup", netns, options);
    }

    pub fn teardown(&self, netns: &Path, options: &Value) {
        self.run("teardown", netns, options);
    }

    fn run(&self, command: &str, netns: &Path, options: &Value) {
        let mut cmd = Command::new(NETAVARK);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("--config")
            .arg(&self.config)
            .arg(command)
            .arg(netns);
        let input = serde_json::to_vec(options).expect("json");
        run_with_input(cmd, &input, &format!("netavark {command}"));
    }
}
