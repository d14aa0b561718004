#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
//! The reference `dhcp` IPAM under the built-in bridge and macvlan, against a real DHCP
//! server: dnsmasq on a bridge of the test's node netns, and the reference plugin's own
//! daemon (`/usr/lib/cni/dhcp daemon`), which runs the DHCP client inside the pod's netns on
//! the interface the delegate made. The built-ins must hand it that interface, up, before it
//! runs (as the reference plugins do), and their result must be the reference plugins' own
//! for the same conf, the leased address aside. DEL releases the lease at the server.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dnsmasq and the dhcp daemon of one test; killed when dropped, also when the test fails.
struct Servers {
    dnsmasq: Child,
    daemon: Child,
    socket: PathBuf,
    leases: PathBuf,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in [&mut self.dnsmasq, &mut self.daemon] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Servers {
    /// Both in the calling thread's (the node's) netns: children inherit it.
    fn start(w: &World) -> Servers {
        let leases = w.tmp.path().join("dnsmasq.leases");
        let socket = w.tmp.path().join("dhcp.sock");
        let dnsmasq = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--interface=dhcpbr0",
                "--bind-interfaces",
                "--except-interface=lo",
                "--port=0",
                "--no-resolv",
                "--no-hosts",
                "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h",
                "--dhcp-authoritative",
                "--user=root",
            ])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!(
                "--pid-file={}",
                w.tmp.path().join("dnsmasq.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (the README's test command installs dnsmasq-base)");
        let daemon = Command::new(format!("{REFERENCE_PLUGINS}/dhcp"))
            .arg("daemon")
            .arg("-socketpath")
            .arg(&socket)
            .args(["-timeout", "5s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Servers {
            dnsmasq,
            daemon,
            socket,
            leases,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.socket.exists() {
            assert!(Instant::now() < deadline, "the dhcp daemon made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// The MACs dnsmasq holds a lease for (its lease file: `expiry mac ip host client-id`).
    fn leased_macs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.leases)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    fn ipam(&self) -> Value {
        json!({"type": "dhcp", "daemonSocketPath": self.socket.display().to_string()})
    }
}

/// The node: dnsmasq's bridge with the server's address, and an uplink veth bridged into it
/// for macvlan (a macvlan on the bridge itself would send past dnsmasq's socket).
fn node() {
    sh(
        "ip link add dhcpbr0 type bridge && ip addr add 10.77.0.1/24 dev dhcpbr0 \
        && ip link add dup0 type veth peer name dup0p && ip link set dup0p master dhcpbr0 \
        && ip link set dhcpbr0 up && ip link set dup0p up && ip link set dup0 up",
    );
}

/// The MAC of the result's interface in the pod.
fn pod_mac(result: &Value) -> String {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_some())
        .and_then(|i| i["mac"].as_str())
        .unwrap()
        .to_string()
}

/// What must match between two results for one conf: everything but the leased address's
/// host part, MACs, veth names and sandbox paths.
fn shape(result: &Value) -> Value {
    let mut r = result.clone();
    // The reference's Go types print an empty `dns` object; Plexus omits it. Both read as
    // "no DNS" to a runtime.
    if let Some(m) = r.as_object_mut()
        && m.get("dns").is_some_and(|d| d == &json!({}))
    {
        m.remove("dns");
    }
    for i in r["interfaces"].as_array_mut().into_iter().flatten() {
        i["mac"] = json!("<mac>");
        if i.get("sandbox").is_some() {
            i["sandbox"] = json!("<netns>");
        }
        if i["name"].as_str().is_some_and(|n| n.starts_with("veth")) {
            i["name"] = json!("<veth>");
        }
    }
    for ip in r["ips"].as_array_mut().into_iter().flatten() {
        let addr = ip["address"].as_str().unwrap().to_string();
        let (host, prefix) = addr.split_once('/').unwrap();
        let host: std::net::Ipv4Addr = host.parse().unwrap();
        let last = host.octets()[3];
        assert!(
            host.octets()[..3] == [10, 77, 0] && (50..=99).contains(&last),
            "{addr} is not from dnsmasq's range"
        );
        ip["address"] = json!(format!("<leased>/{prefix}"));
    }
    r
}

/// The reference plugin run directly: ADD or DEL, its stdout as JSON.
fn reference(plugin: &str, command: &str, conf: &Value, cid: &str, pod: &Path) -> Value {
    let mut cmd = Command::new(format!("{REFERENCE_PLUGINS}/{plugin}"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", pod)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGINS);
    let out = run_with_input(cmd, &serde_json::to_vec(conf).unwrap(), plugin);
    assert!(
        out.status.success(),
        "reference {plugin} {command}: {out:?}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `reference_releases`: whether the reference plugin's DEL releases the lease. The
/// reference bridge (1.1.1) deletes the pod's link before its IPAM DEL, so its DHCPRELEASE
/// cannot leave and dnsmasq keeps the lease until it expires; the built-in bridge runs IPAM's
/// DEL first, as the reference macvlan does.
fn leases_and_releases_as_the_reference(delegate: Value, reference_releases: bool) {
    enter_node_netns();
    node();
    let w = World::new();
    let servers = Servers::start(&w);
    let mut delegate = delegate;
    delegate["ipam"] = servers.ipam();
    let kind = delegate["type"].as_str().unwrap().to_string();
    // The runtime asks for the delegate's version, so both results are in one version.
    let conf = w.plexus_conf(&delegate, json!({"builtins": true, "cniVersion": "1.0.0"}));

    let ours = PodNs::new();
    let call = Call::new("ADD", "c-dhcp-ours", Some(&ours.path), &w);
    let result = call.run_json(&conf).ok().json();
    let theirs = PodNs::new();
    let reference_result = reference(&kind, "ADD", &delegate, "c-dhcp-ref", &theirs.path);

    assert_eq!(
        shape(&result),
        shape(&reference_result),
        "built-in {kind} + dhcp against the reference {kind} + dhcp"
    );
    let leased = result["ips"][0]["address"].as_str().unwrap();
    assert_eq!(ours.addrs("eth0"), [leased], "the pod holds its lease");
    let our_mac = pod_mac(&result);
    let their_mac = pod_mac(&reference_result);
    let leased_macs = servers.leased_macs();
    assert!(
        leased_macs.contains(&our_mac) && leased_macs.contains(&their_mac),
        "dnsmasq leased to both pods: {leased_macs:?} ({our_mac}, {their_mac})"
    );

    call.with("DEL").run_json(&conf).ok();
    reference(&kind, "DEL", &delegate, "c-dhcp-ref", &theirs.path);
    // dnsmasq rewrites its lease file when a DHCPRELEASE arrives.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = servers.leased_macs();
        let theirs_left = reference_releases && left.contains(&their_mac);
        if !left.contains(&our_mac) && !theirs_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a DEL did not release its lease: {left:?} (ours {our_mac}, the reference's {their_mac})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(servers);
    drop(theirs);
    w.assert_clean(Some(&ours));
}

#[test]
fn builtin_bridge_leases_from_a_real_dhcp_server_as_the_reference_bridge_does() {
    leases_and_releases_as_the_reference(
        json!({
            "cniVersion": "1.0.0", "name": "lan", "type": "bridge", "bridge": "dhcpbr0"
        }),
        false,
    );
}

#[test]
fn builtin_macvlan_leases_from_a_real_dhcp_server_as_the_reference_macvlan_does() {
    leases_and_releases_as_the_reference(
        json!({
            "cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": "dup0",
            "mode": "bridge"
        }),
        true,
    );
}

/// Plexus removes a pod's virtual links in one request before the delegates' DELs run (it
/// saves ~20 ms a link); an attachment whose IPAM is dhcp must not join, or its release
/// finds no interface to send from and the server keeps the lease until it expires.
#[test]
fn a_dhcp_lease_is_released_when_the_pod_has_other_networks_too() {
    enter_node_netns();
    node();
    let w = World::new();
    let servers = Servers::start(&w);
    let mut lan = json!({
        "cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": "dup0",
        "mode": "bridge"
    });
    lan["ipam"] = servers.ipam();
    w.nad("default", "lan", &lan);
    w.nad(
        "default",
        "other",
        &w.macvlan_conf("other", "dup0", "10.78.0.0/24"),
    );
    w.pod("default", "p", "lan,other");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "dhcpcl0", "10.79.0.0/24"),
        json!({"builtins": true}),
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-dhcp-three", Some(&pod.path), &w).pod("default", "p");
    call.run_json(&conf).ok();
    // The runtime's result is the cluster network's, as Multus's is; net1 is in the
    // network-status.
    let status = w.journal_entry()["networkStatus"].clone();
    let net1 = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["interface"] == "net1")
        .unwrap_or_else(|| panic!("no net1 in {status}"));
    let mac = net1["mac"].as_str().unwrap().to_string();
    assert!(servers.leased_macs().contains(&mac), "net1 holds a lease");
    assert_eq!(pod.links(), ["eth0", "lo", "net1", "net2"]);

    call.with("DEL").run_json(&conf).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while servers.leased_macs().contains(&mac) {
        assert!(
            Instant::now() < deadline,
            "the DEL did not release net1's lease: {:?}",
            servers.leased_macs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(servers);
    sh("ip link del dhcpcl0");
    w.assert_clean(Some(&pod));
}
