//! The built-in host-local and the reference `/usr/lib/cni/host-local` on one dataDir:
//! same order, no collisions, each releases and checks the other's reservations, and
//! their locks exclude each other under concurrency.
#![allow(clippy::unwrap_used)]

mod ipam_support;

use cni::args::CniArgs;
use delegates::ipam;
use ipam_support::{addrs, conf, host_local, reference, reference_addrs, req, reservations};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use tempfile::TempDir;

#[test]
fn alternating_allocations_continue_one_sequence() {
    let dir = TempDir::new().unwrap();
    let c = conf(
        dir.path(),
        json!({"type": "host-local",
            "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
    );
    let a = CniArgs::default();
    let mut got = Vec::new();
    for i in 0..8 {
        let id = format!("c{i}");
        let ips = if i % 2 == 0 {
            addrs(&ipam::add(&req(&id, "eth0", &c, &a)).unwrap())
        } else {
            reference_addrs(&reference("host-local", "ADD", &id, "eth0", &c, "").unwrap())
        };
        got.push(ips);
    }
    let want: Vec<Vec<String>> = (2..10)
        .map(|n| vec![format!("10.9.0.{n}/24"), format!("fd00::{n}/64")])
        .collect();
    assert_eq!(got, want);
    // Both wrote the same file format.
    for (i, (_, content)) in reservations(dir.path()).iter().take(8).enumerate() {
        assert_eq!(content, &format!("c{i}\r\neth0"));
    }
}

#[test]
fn each_side_releases_the_others_reservations() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    ipam::add(&req("ours", "eth0", &c, &a)).unwrap();
    reference("host-local", "ADD", "theirs", "eth0", &c, "").unwrap();
    assert_eq!(reservations(dir.path()).len(), 2);

    // Each CHECKs the other's reservation.
    ipam::check(&req("theirs", "eth0", &c, &a)).unwrap();
    reference("host-local", "CHECK", "ours", "eth0", &c, "").unwrap();

    ipam::del(&req("theirs", "eth0", &c, &a)).unwrap();
    let left: Vec<String> = reservations(dir.path())
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(left, ["ours\r\neth0"]);
    reference("host-local", "DEL", "ours", "eth0", &c, "").unwrap();
    assert!(reservations(dir.path()).is_empty());
    assert!(reference("host-local", "CHECK", "ours", "eth0", &c, "").is_err());
}

#[test]
fn requested_address_held_by_the_other_side_is_refused() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    reference("host-local", "ADD", "theirs", "eth0", &c, "IP=10.9.0.77").unwrap();
    let want = CniArgs::parse("IP=10.9.0.77").unwrap();
    let e = ipam::add(&req("ours", "eth0", &c, &want)).unwrap_err();
    assert!(e.to_string().contains("10.9.0.77 is not available"), "{e}");

    ipam::add(&req(
        "ours",
        "eth0",
        &c,
        &CniArgs::parse("IP=10.9.0.78").unwrap(),
    ))
    .unwrap();
    let err = reference("host-local", "ADD", "theirs2", "eth0", &c, "IP=10.9.0.78").unwrap_err();
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("not available")
            || err["details"]
                .as_str()
                .unwrap_or_default()
                .contains("not available"),
        "{err}"
    );
}

#[test]
fn exhaustion_message_matches_the_reference() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/30");
    ipam::add(&req("ours", "eth0", &c, &CniArgs::default())).unwrap();
    let theirs = reference("host-local", "ADD", "theirs", "eth0", &c, "").unwrap_err();
    let ours = ipam::add(&req("ours2", "eth0", &c, &CniArgs::default())).unwrap_err();
    let text = |v: &serde_json::Value| {
        format!(
            "{}: {}",
            v["msg"].as_str().unwrap_or_default(),
            v["details"].as_str().unwrap_or_default()
        )
    };
    assert!(
        text(&theirs).contains(&ours.to_string()),
        "reference said {theirs}, built-in said {ours}"
    );
}

#[test]
fn concurrent_mixed_adds_never_collide() {
    let dir = TempDir::new().unwrap();
    // 10.9.0.0/27: .2 ..= .30 are 29 addresses for 32 contenders.
    let c = Arc::new(host_local(dir.path(), "10.9.0.0/27"));
    let start = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (c, start) = (Arc::clone(&c), Arc::clone(&start));
            std::thread::spawn(move || {
                let id = format!("c{i}");
                start.wait();
                if i % 2 == 0 {
                    ipam::add(&req(&id, "eth0", &c, &CniArgs::default()))
                        .map(|r| addrs(&r)[0].clone())
                        .map_err(|e| e.to_string())
                } else {
                    reference("host-local", "ADD", &id, "eth0", &c, "")
                        .map(|v| reference_addrs(&v)[0].clone())
                        .map_err(|e| e.to_string())
                }
            })
        })
        .collect();
    let mut got = HashSet::new();
    let mut failures = Vec::new();
    for h in handles {
        match h.join().unwrap() {
            Ok(a) => assert!(got.insert(a.clone()), "address {a} handed out twice"),
            Err(e) => failures.push(e),
        }
    }
    assert_eq!(got.len(), 29, "failures: {failures:?}");
    assert_eq!(failures.len(), 3);
    for f in &failures {
        assert!(f.contains("no IP addresses available"), "{f}");
    }
    assert_eq!(reservations(dir.path()).len(), 29);
}

/// The spares the built-in keeps are invisible to the reference: its CHECK of a released
/// container fails, its ADD continues the sequence, and its DEL releases a reservation that
/// was a spare.
#[test]
fn the_reference_ignores_the_built_ins_spares() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let net = dir.path().join(ipam_support::NETWORK);
    ipam::add(&req("gone", "eth0", &c, &a)).unwrap();
    ipam::del(&req("gone", "eth0", &c, &a)).unwrap();
    assert!(net.join(".spare.0").exists());

    assert!(reference("host-local", "CHECK", "gone", "eth0", &c, "").is_err());
    let theirs = reference("host-local", "ADD", "theirs", "eth0", &c, "").unwrap();
    assert_eq!(reference_addrs(&theirs), ["10.9.0.3/24"]);
    assert!(net.join(".spare.0").exists());

    let ours = ipam::add(&req("ours", "eth0", &c, &a)).unwrap();
    assert_eq!(addrs(&ours), ["10.9.0.4/24"]);
    assert!(!net.join(".spare.0").exists(), "the spare was not used");
    reference("host-local", "CHECK", "ours", "eth0", &c, "").unwrap();
    reference("host-local", "DEL", "ours", "eth0", &c, "").unwrap();
    let left: Vec<String> = reservations(dir.path())
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(left, ["theirs\r\neth0"]);
    reference("host-local", "DEL", "theirs", "eth0", &c, "").unwrap();
    assert!(reservations(dir.path()).is_empty());
}

/// A file the reference created (mode 0644) and the built-in released becomes, as a spare,
/// the built-in's next reservation: exact content, mode 0600, the same inode.
#[test]
fn a_reference_file_released_by_the_built_in_is_reused_as_ours() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let net = dir.path().join(ipam_support::NETWORK);
    reference("host-local", "ADD", "theirs-long-id", "eth0", &c, "").unwrap();
    let theirs = std::fs::metadata(net.join("10.9.0.2")).unwrap();
    assert_eq!(theirs.mode() & 0o7777, 0o644);
    ipam::del(&req("theirs-long-id", "eth0", &c, &a)).unwrap();
    assert_eq!(
        std::fs::metadata(net.join(".spare.0")).unwrap().ino(),
        theirs.ino()
    );

    ipam::add(&req("ours", "net1", &c, &a)).unwrap();
    let ours = std::fs::metadata(net.join("10.9.0.3")).unwrap();
    assert_eq!(ours.ino(), theirs.ino(), "the spare was not reused");
    assert_eq!(ours.mode() & 0o7777, 0o600);
    assert_eq!(
        reservations(dir.path()),
        [("10.9.0.3".to_string(), "ours\r\nnet1".to_string())]
    );
    reference("host-local", "CHECK", "ours", "net1", &c, "").unwrap();
}

/// A spare still naming an owner (what a crash between a release's rename and its blank
/// leaves) is blanked by that owner's next DEL, so the reference's CHECK no longer finds it.
#[test]
fn del_blanks_a_spare_that_still_names_its_owner() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let net = dir.path().join(ipam_support::NETWORK);
    ipam::add(&req("other", "eth0", &c, &a)).unwrap();
    let spare = net.join(".spare.3");
    std::fs::write(&spare, "gone\r\neth0").unwrap();
    reference("host-local", "CHECK", "gone", "eth0", &c, "").unwrap();

    ipam::del(&req("gone", "eth0", &c, &a)).unwrap();
    assert_eq!(std::fs::read_to_string(&spare).unwrap(), " ".repeat(10));
    assert!(reference("host-local", "CHECK", "gone", "eth0", &c, "").is_err());
    assert_eq!(
        reservations(dir.path()),
        [("10.9.0.2".to_string(), "other\r\neth0".to_string())]
    );
}
