#![allow(clippy::unwrap_used)]
//! Masquerade rules written over netlink, checked with the `nft` CLI: the same bytecode nft
//! itself writes for the same rule text, and ADD/DEL changing exactly their own rules.

mod common;

use cni::result::IpConfig;
use common::TestNs;
use delegates::masq;
use serde_json::{Value, json};

/// The bound on each masquerade step (the call's `timeout`).
const T: std::time::Duration = std::time::Duration::from_secs(5);

fn ip(s: &str) -> IpConfig {
    IpConfig {
        address: s.parse().unwrap(),
        gateway: None,
        interface: None,
    }
}

/// What Plexus wrote with `nft -f` before the rules went over netlink: the oracle.
fn nft_script(network: &str, container_id: &str, ifname: &str, ips: &[IpConfig]) -> String {
    let table = masq::table_name(network);
    let tag = masq::tag(container_id, ifname);
    let mut s = format!(
        "add table inet {table}\nadd chain inet {table} postrouting {{ type nat hook postrouting priority srcnat; }}\n"
    );
    for ip in ips {
        let (fam, mcast) = if ip.address.addr().is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        s.push_str(&format!(
            "add rule inet {table} postrouting {fam} saddr {} {fam} daddr != {} {fam} daddr != {mcast} masquerade comment \"{tag}\"\n",
            ip.address.addr(),
            ip.address.trunc()
        ));
    }
    s
}

fn nft_apply(ns: &TestNs, script: &str) {
    let path = std::env::temp_dir().join(format!("masq-{}.nft", nix::unistd::gettid()));
    std::fs::write(&path, script).unwrap();
    ns.sh(&format!("nft -f {}", path.display()));
    let _ = std::fs::remove_file(path);
}

/// `nft -j list ruleset` without the metainfo line (nft's version).
fn ruleset(ns: &TestNs) -> Vec<Value> {
    let v = ns.json("nft -j list ruleset");
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("metainfo").is_none())
        .cloned()
        .collect()
}

fn comment_is(o: &Value, tag: &str) -> bool {
    o["rule"]["comment"] == tag
}

#[test]
fn netlink_rules_are_the_bytecode_nft_writes_for_the_same_text() {
    let ours = TestNs::new();
    let oracle = TestNs::new();
    // Prefixes on and off byte boundaries, both families, several addresses in one ADD.
    let ips = [
        ip("10.77.0.2/24"),
        ip("10.77.16.5/20"),
        ip("172.16.0.9/32"),
        ip("fd00::2/64"),
        ip("fd00:0:0:a::7/52"),
    ];
    ours.enter(|| masq::add("net-a", "c1", "eth0", &ips, T).unwrap());
    nft_apply(&oracle, &nft_script("net-a", "c1", "eth0", &ips));
    let table = masq::table_name("net-a");
    let bytecode = format!("nft --debug=netlink list table inet {table}");
    assert_eq!(ours.sh(&bytecode), oracle.sh(&bytecode));
    assert_eq!(ruleset(&ours), ruleset(&oracle));
    assert!(ours.sh(&bytecode).contains("[ masq ]"));
}

#[test]
fn add_and_del_change_exactly_their_own_rules_and_the_last_del_drops_the_table() {
    let node = TestNs::new();
    let oracle = TestNs::new();
    // Somebody else's table must come through untouched.
    let theirs = "add table inet filter\nadd chain inet filter input { type filter hook input priority 0; }\nadd rule inet filter input tcp dport 22 accept\n";
    nft_apply(&node, theirs);
    nft_apply(&oracle, theirs);
    let a = [ip("10.77.0.2/24"), ip("fd00::2/64")];
    let b = [ip("10.77.0.3/24")];
    let (tag_a, tag_b) = (masq::tag("c-a", "eth0"), masq::tag("c-b", "net1"));

    let s0 = ruleset(&node);
    node.enter(|| masq::add("shared", "c-a", "eth0", &a, T).unwrap());
    nft_apply(&oracle, &nft_script("shared", "c-a", "eth0", &a));
    let s1 = ruleset(&node);
    assert_eq!(
        s1,
        ruleset(&oracle),
        "first pod: table, chain and its rules"
    );
    assert_eq!(s1.iter().filter(|o| comment_is(o, &tag_a)).count(), 2);

    node.enter(|| masq::add("shared", "c-b", "net1", &b, T).unwrap());
    nft_apply(&oracle, &nft_script("shared", "c-b", "net1", &b));
    let s2 = ruleset(&node);
    assert_eq!(s2, ruleset(&oracle), "second pod appends to the same table");

    node.enter(|| masq::remove("shared", "c-a", "eth0", T).unwrap());
    let without_a: Vec<Value> = s2
        .iter()
        .filter(|o| !comment_is(o, &tag_a))
        .cloned()
        .collect();
    assert_eq!(ruleset(&node), without_a, "DEL of a removes a's rules only");
    assert!(without_a.iter().any(|o| comment_is(o, &tag_b)));

    // DEL again: nothing of a's left, nothing else touched.
    node.enter(|| masq::remove("shared", "c-a", "eth0", T).unwrap());
    assert_eq!(ruleset(&node), without_a);

    node.enter(|| masq::remove("shared", "c-b", "net1", T).unwrap());
    assert_eq!(ruleset(&node), s0, "the last DEL removes the table");
    node.enter(|| masq::remove("shared", "c-b", "net1", T).unwrap());
    assert_eq!(ruleset(&node), s0, "DEL with the table gone succeeds");
}

#[test]
fn a_refused_add_changes_nothing() {
    let node = TestNs::new();
    let table = masq::table_name("clash");
    // The chain exists as a filter chain on another hook: the kernel refuses a masquerade
    // rule there, and nothing of the transaction stays.
    nft_apply(
        &node,
        &format!(
            "add table inet {table}\nadd chain inet {table} postrouting {{ type filter hook input priority 0; }}\n"
        ),
    );
    let before = ruleset(&node);
    let e = node
        .enter(|| masq::add("clash", "c1", "eth0", &[ip("10.9.0.2/24")], T))
        .unwrap_err();
    assert_eq!(e.code(), 100, "{e}");
    let obj = e.to_error_object();
    assert!(
        obj.msg.contains(&table) && obj.details.contains("kernel refused"),
        "{obj:?}"
    );
    assert_eq!(ruleset(&node), before);
}

#[test]
fn concurrent_adds_never_lose_a_rule_to_the_last_del() {
    // Each pod adds, checks its rule is there, and removes it, over and over: without the
    // per-network lock a DEL that found itself last deletes the table under another pod's
    // fresh rule.
    let node = TestNs::new();
    let table = masq::table_name("busy");
    std::thread::scope(|s| {
        for p in 0..4u8 {
            let node = &node;
            let table = &table;
            s.spawn(move || {
                node.enter(|| {
                    let cid = format!("c{p}");
                    let tag = masq::tag(&cid, "eth0");
                    for _ in 0..25 {
                        masq::add(
                            "busy",
                            &cid,
                            "eth0",
                            &[ip(&format!("10.8.0.{}/24", p + 2))],
                            T,
                        )
                        .unwrap();
                        let rules = delegates::nftables::Nft::open()
                            .unwrap()
                            .rules(delegates::nftables::FAMILY_INET, table)
                            .unwrap();
                        assert!(
                            rules
                                .iter()
                                .any(|r| r.comment.as_deref() == Some(tag.as_str())),
                            "rule of {cid} lost: {rules:?}"
                        );
                        masq::remove("busy", &cid, "eth0", T).unwrap();
                    }
                })
            });
        }
    });
    assert!(!node.sh("nft list tables").contains(&table));
    assert_eq!(json!(ruleset(&node)), json!([]));
}
