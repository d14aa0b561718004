//! The built-in host-local on its own: allocation order, requested addresses, exhaustion,
//! release, CHECK, validation, and 64 concurrent ADDs on one small pool.
#![allow(clippy::unwrap_used)]

mod ipam_support;

use cni::args::CniArgs;
use cni::{Code, ErrorObject};
use delegates::ipam::{self, IpamError};
use ipam_support::{NETWORK, addrs, conf, host_local, req, reservations};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use tempfile::TempDir;

#[test]
fn allocates_in_order_after_the_gateway_and_writes_the_reference_format() {
    let dir = TempDir::new().unwrap();
    let c = conf(
        dir.path(),
        json!({"type": "host-local",
            "ranges": [[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00::/125"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd01::/64", "gw": "fd00::1"}]}),
    );
    let a = CniArgs::default();
    let r1 = ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    let r2 = ipam::add(&req("c2", "net1", &c, &a)).unwrap();
    assert_eq!(addrs(&r1), ["10.9.0.2/29", "fd00::2/125"]);
    assert_eq!(addrs(&r2), ["10.9.0.3/29", "fd00::3/125"]);
    assert!(r1.interfaces.is_empty());
    assert!(r1.ips.iter().all(|ip| ip.interface.is_none()));
    assert_eq!(r1.ips[0].gateway, Some("10.9.0.1".parse().unwrap()));
    assert_eq!(r1.ips[1].gateway, Some("fd00::1".parse().unwrap()));
    assert_eq!(r1.routes.len(), 2);
    assert_eq!(r1.routes[1].gw, Some("fd00::1".parse().unwrap()));

    assert_eq!(
        reservations(dir.path()),
        [
            ("10.9.0.2".into(), "c1\r\neth0".into()),
            ("10.9.0.3".into(), "c2\r\nnet1".into()),
            ("fd00::2".into(), "c1\r\neth0".into()),
            ("fd00::3".into(), "c2\r\nnet1".into()),
        ]
    );
    let net = dir.path().join(NETWORK);
    let read = |f: &str| std::fs::read_to_string(net.join(f)).unwrap();
    assert_eq!(read("last_reserved_ip.0"), "10.9.0.3");
    assert_eq!(read("last_reserved_ip.1"), "fd00::3");
    assert!(net.join("lock").exists());
}

#[test]
fn legacy_single_range_form_and_explicit_bounds() {
    let dir = TempDir::new().unwrap();
    let c = conf(
        dir.path(),
        json!({"type": "host-local", "subnet": "10.20.0.0/24",
            "rangeStart": "10.20.0.100", "rangeEnd": "10.20.0.101", "gateway": "10.20.0.254"}),
    );
    let a = CniArgs::default();
    let got: Vec<String> = ["a", "b"]
        .iter()
        .map(|id| addrs(&ipam::add(&req(id, "eth0", &c, &a)).unwrap())[0].clone())
        .collect();
    assert_eq!(got, ["10.20.0.100/24", "10.20.0.101/24"]);
    let e = ipam::add(&req("c", "eth0", &c, &a)).unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { .. }), "{e}");
}

#[test]
fn round_robin_continues_after_the_last_reserved_address() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/29");
    let a = CniArgs::default();
    assert_eq!(
        addrs(&ipam::add(&req("c1", "eth0", &c, &a)).unwrap()),
        ["10.9.0.2/29"]
    );
    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    // The freed .2 is not handed out again until the walk wraps.
    assert_eq!(
        addrs(&ipam::add(&req("c2", "eth0", &c, &a)).unwrap()),
        ["10.9.0.3/29"]
    );
}

/// `last_reserved_ip.N` is overwritten in place: a shorter address after a longer one must
/// leave exactly the new text, as the reference's truncate-and-write does.
#[test]
fn last_reserved_ip_holds_exactly_the_last_address() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let last = dir.path().join(NETWORK).join("last_reserved_ip.0");
    let mut c100 = c.clone();
    c100.set("args", json!({"cni": {"ips": ["10.9.0.100"]}}));
    ipam::add(&req("long", "eth0", &c100, &a)).unwrap();
    assert_eq!(std::fs::read_to_string(&last).unwrap(), "10.9.0.100");
    let mut c7 = c.clone();
    c7.set("args", json!({"cni": {"ips": ["10.9.0.7"]}}));
    ipam::add(&req("short", "eth0", &c7, &a)).unwrap();
    assert_eq!(std::fs::read_to_string(&last).unwrap(), "10.9.0.7");
    // The allocation that follows starts after it.
    assert_eq!(
        addrs(&ipam::add(&req("next", "eth0", &c, &a)).unwrap()),
        ["10.9.0.8/24"]
    );
}

#[test]
fn requested_addresses_from_runtime_config_args_and_cni_args() {
    let dir = TempDir::new().unwrap();
    let base = host_local(dir.path(), "10.9.0.0/24");
    let none = CniArgs::default();

    let mut c = base.clone();
    c.set("runtimeConfig", json!({"ips": ["10.9.0.50/24"]}));
    assert_eq!(
        addrs(&ipam::add(&req("rc", "eth0", &c, &none)).unwrap()),
        ["10.9.0.50/24"]
    );

    let mut c = base.clone();
    c.set("args", json!({"cni": {"ips": ["10.9.0.51"]}}));
    assert_eq!(
        addrs(&ipam::add(&req("args", "eth0", &c, &none)).unwrap()),
        ["10.9.0.51/24"]
    );

    let env = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.9.0.52").unwrap();
    assert_eq!(
        addrs(&ipam::add(&req("env", "eth0", &base, &env)).unwrap()),
        ["10.9.0.52/24"]
    );

    // Taken, the gateway, or outside every range: refused, and nothing left reserved.
    let before = reservations(dir.path());
    let taken = CniArgs::parse("IP=10.9.0.50").unwrap();
    let e = ipam::add(&req("x", "eth0", &base, &taken)).unwrap_err();
    assert!(matches!(e, IpamError::RequestedTaken { .. }), "{e}");
    assert_eq!(e.code(), Code::DelegateFailed);
    assert!(
        e.to_string()
            .contains("requested IP address 10.9.0.50 is not available")
    );

    let gw = CniArgs::parse("IP=10.9.0.1").unwrap();
    let e = ipam::add(&req("x", "eth0", &base, &gw)).unwrap_err();
    assert!(matches!(e, IpamError::RequestedGateway { .. }), "{e}");
    assert_eq!(e.code(), Code::InvalidConfig);

    let outside = CniArgs::parse("IP=192.168.7.7").unwrap();
    let e = ipam::add(&req("x", "eth0", &base, &outside)).unwrap_err();
    assert!(matches!(e, IpamError::RequestedOutside(_)), "{e}");
    assert_eq!(e.code(), Code::InvalidConfig);

    let bad = CniArgs::parse("IP=10.9.0.300").unwrap();
    let e = ipam::add(&req("x", "eth0", &base, &bad)).unwrap_err();
    assert!(
        matches!(e, IpamError::InvalidConfig { ref key, .. } if key == "CNI_ARGS IP"),
        "{e}"
    );
    assert_eq!(reservations(dir.path()), before);
}

#[test]
fn exhaustion_says_no_addresses_available_and_reserves_nothing() {
    let dir = TempDir::new().unwrap();
    // A /30 has .1 (gateway) and .2 usable.
    let c = host_local(dir.path(), "10.9.0.0/30");
    let a = CniArgs::default();
    assert_eq!(
        addrs(&ipam::add(&req("c1", "eth0", &c, &a)).unwrap()),
        ["10.9.0.2/30"]
    );
    let e = ipam::add(&req("c2", "eth0", &c, &a)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.2"
    );
    let obj = ErrorObject::from(&e);
    assert_eq!(obj.code, Code::DelegateFailed.as_u32());
    assert_eq!(obj.msg, e.to_string());
    assert_eq!(reservations(dir.path()).len(), 1);
}

#[test]
fn second_range_set_failing_releases_the_first() {
    let dir = TempDir::new().unwrap();
    let c = conf(
        dir.path(),
        json!({"type": "host-local",
            "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.10.0.0/30"}]]}),
    );
    let a = CniArgs::default();
    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    let e = ipam::add(&req("c2", "eth0", &c, &a)).unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { index: 1, .. }), "{e}");
    let owners: HashSet<String> = reservations(dir.path())
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(owners, HashSet::from(["c1\r\neth0".to_string()]));
}

#[test]
fn del_releases_only_the_matching_container_and_interface() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    ipam::add(&req("c1", "net1", &c, &a)).unwrap();
    ipam::add(&req("c2", "eth0", &c, &a)).unwrap();

    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    let left: Vec<String> = reservations(dir.path())
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(left, ["c1\r\nnet1", "c2\r\neth0"]);
    // Idempotent: again, and for IDs never seen.
    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    ipam::del(&req("unknown", "eth0", &c, &a)).unwrap();
    assert_eq!(reservations(dir.path()).len(), 2);
}

#[test]
fn del_releases_files_written_before_ifname_was_recorded() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let net = dir.path().join(NETWORK);
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("10.9.0.7"), "old-id\n").unwrap();
    let a = CniArgs::default();
    ipam::check(&req("old-id", "eth0", &c, &a)).unwrap();
    ipam::del(&req("old-id", "eth0", &c, &a)).unwrap();
    assert!(reservations(dir.path()).is_empty());
}

#[test]
fn del_of_a_network_never_used_succeeds_and_creates_nothing() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    ipam::del(&req("c1", "eth0", &c, &CniArgs::default())).unwrap();
    assert!(!dir.path().join(NETWORK).exists());
}

#[test]
fn del_works_when_the_ranges_no_longer_validate() {
    let dir = TempDir::new().unwrap();
    let a = CniArgs::default();
    let good = host_local(dir.path(), "10.9.0.0/24");
    ipam::add(&req("c1", "eth0", &good, &a)).unwrap();
    let broken = host_local(dir.path(), "10.9.0.0/33");
    ipam::del(&req("c1", "eth0", &broken, &a)).unwrap();
    assert!(reservations(dir.path()).is_empty());
}

#[test]
fn check_finds_the_reservation_until_del() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    assert!(matches!(
        ipam::check(&req("c1", "eth0", &c, &a)),
        Err(IpamError::NotFound(_))
    ));
    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    ipam::check(&req("c1", "eth0", &c, &a)).unwrap();
    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    let e = ipam::check(&req("c1", "eth0", &c, &a)).unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to find address added by container c1")
    );
}

#[test]
fn second_add_for_the_same_interface_is_refused() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    let e = ipam::add(&req("c1", "eth0", &c, &a)).unwrap_err();
    assert!(matches!(e, IpamError::Duplicate { .. }), "{e}");
    assert_eq!(reservations(dir.path()).len(), 1);
}

#[test]
fn invalid_confs_are_code_7_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let a = CniArgs::default();
    let key_of = |ipam: serde_json::Value| {
        let c = conf(dir.path(), ipam);
        let e = ipam::add(&req("c1", "eth0", &c, &a)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidConfig, "{e}");
        match e {
            IpamError::InvalidConfig { key, .. } => key,
            other => panic!("expected invalid config, got {other}"),
        }
    };
    let hl = |ranges: serde_json::Value| json!({"type": "host-local", "ranges": ranges});
    assert_eq!(
        key_of(hl(json!([[{"subnet": "10.0.0.0/33"}]]))),
        "ipam.ranges[0][0].subnet"
    );
    assert_eq!(
        key_of(hl(json!([[{"subnet": "10.0.0.0/31"}]]))),
        "ipam.ranges[0][0].subnet"
    );
    assert_eq!(
        key_of(hl(
            json!([[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]])
        )),
        "ipam.ranges[0][0].gateway"
    );
    assert_eq!(
        key_of(hl(
            json!([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.20", "rangeEnd": "10.0.0.10"}]])
        )),
        "ipam.ranges[0][0].rangeStart"
    );
    assert_eq!(
        key_of(hl(
            json!([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.5.20"}]])
        )),
        "ipam.ranges[0][0].rangeStart"
    );
    assert_eq!(
        key_of(hl(
            json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]])
        )),
        "ipam.ranges[1]"
    );
    assert_eq!(
        key_of(hl(
            json!([[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]])
        )),
        "ipam.ranges[0][1]"
    );
    assert_eq!(
        key_of(hl(
            json!([[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]])
        )),
        "ipam.ranges[0][1]"
    );
    assert_eq!(key_of(hl(json!([[]]))), "ipam.ranges[0]");
    assert_eq!(key_of(json!({"type": "host-local"})), "ipam.ranges");
    assert_eq!(
        key_of(
            json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"gw": "10.0.0.1"}]})
        ),
        "ipam.routes[0].dst"
    );
    // No dataDir entry was created for any of them.
    assert!(!dir.path().join(NETWORK).exists());
}

#[test]
fn unknown_type_and_builtin_names() {
    assert!(ipam::is_builtin("host-local"));
    assert!(ipam::is_builtin("static"));
    assert!(!ipam::is_builtin("dhcp"));
    let dir = TempDir::new().unwrap();
    let c = conf(dir.path(), json!({"type": "dhcp"}));
    let e = ipam::add(&req("c1", "eth0", &c, &CniArgs::default())).unwrap_err();
    assert!(matches!(e, IpamError::UnknownType(ref t) if t == "dhcp"));
    assert_eq!(e.code(), Code::InvalidConfig);
}

#[test]
fn resolv_conf_becomes_the_dns_of_the_result() {
    let dir = TempDir::new().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "# comment\nnameserver 10.0.0.53\nnameserver 10.0.0.54\ndomain example.org\nsearch a.example b.example\noptions ndots:2\n",
    )
    .unwrap();
    let c = conf(
        dir.path(),
        json!({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]], "resolvConf": resolv}),
    );
    let r = ipam::add(&req("c1", "eth0", &c, &CniArgs::default())).unwrap();
    assert_eq!(r.dns.nameservers, ["10.0.0.53", "10.0.0.54"]);
    assert_eq!(r.dns.domain.as_deref(), Some("example.org"));
    assert_eq!(r.dns.search, ["a.example", "b.example"]);
    assert_eq!(r.dns.options, ["ndots:2"]);

    let missing = conf(
        dir.path(),
        json!({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]], "resolvConf": "/nonexistent/resolv.conf"}),
    );
    let e = ipam::add(&req("c2", "eth0", &missing, &CniArgs::default())).unwrap_err();
    assert_eq!(e.code(), Code::Io);
    assert!(!ErrorObject::from(&e).details.is_empty());
}

#[test]
fn resolv_conf_must_be_a_small_regular_file_and_never_blocks() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'#'; 65 << 10]).unwrap();
    for path in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        dir.path(),
        &big,
    ] {
        let c = conf(
            dir.path(),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]], "resolvConf": path}),
        );
        let started = std::time::Instant::now();
        let e = ipam::add(&req("c1", "eth0", &c, &CniArgs::default())).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{path:?}"
        );
        assert_eq!(e.code(), Code::InvalidConfig, "{path:?}: {e}");
        assert!(e.to_string().contains("ipam.resolvConf"), "{e}");
        assert!(reservations(dir.path()).is_empty(), "{path:?}");
    }
}

#[test]
fn data_dir_must_be_absolute_and_in_an_allowed_folder_and_del_never_refuses() {
    let dir = TempDir::new().unwrap();
    let allowed = vec![dir.path().join("ok")];
    let a = CniArgs::default();
    let outside = TempDir::new().unwrap();
    let cases = [
        "relative/ipam".to_string(),
        outside.path().display().to_string(),
        format!("{}/../escape", allowed[0].display()),
        "/".to_string(),
    ];
    for data_dir in &cases {
        let c = conf(
            std::path::Path::new(data_dir),
            json!({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}),
        );
        let mut r = req("c1", "eth0", &c, &a);
        r.data_dirs = &allowed;
        for outcome in [ipam::add(&r).map(drop), ipam::check(&r)] {
            let e = outcome.unwrap_err();
            assert_eq!(e.code(), Code::InvalidConfig, "{data_dir}: {e}");
            assert!(e.to_string().contains("ipam.dataDir"), "{data_dir}: {e}");
        }
        // ADD refused the conf before reserving anything: DEL has nothing to do and does
        // not keep failing, and touches nothing there either.
        ipam::del(&r).unwrap();
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!dir.path().join("escape").exists() && !allowed[0].exists());
    // In the allowed folder, or below it, works.
    for data_dir in [allowed[0].clone(), allowed[0].join("sub")] {
        let c = conf(
            &data_dir,
            json!({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}),
        );
        let mut r = req("c1", "eth0", &c, &a);
        r.data_dirs = &allowed;
        ipam::add(&r).unwrap();
        ipam::del(&r).unwrap();
    }
}

#[test]
fn a_held_pool_lock_costs_at_most_the_timeout_then_code_11() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    ipam::add(&req("c0", "eth0", &c, &a)).unwrap();
    let held = std::fs::File::open(dir.path().join(NETWORK).join("lock")).unwrap();
    held.lock().unwrap();
    let mut r = req("c1", "eth0", &c, &a);
    r.timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let e = ipam::add(&r).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(e.code(), Code::TryAgainLater, "{e}");
    assert!(
        waited >= r.timeout && waited < std::time::Duration::from_secs(2),
        "{waited:?}"
    );
    let mut del = req("c0", "eth0", &c, &a);
    del.timeout = r.timeout;
    assert_eq!(ipam::del(&del).unwrap_err().code(), Code::TryAgainLater);
    drop(held);
    ipam::del(&del).unwrap();
    assert!(reservations(dir.path()).is_empty());
}

#[test]
fn concurrent_adds_fill_the_pool_exactly_once() {
    let dir = TempDir::new().unwrap();
    // 10.9.0.0/26: .1 is the gateway, .63 broadcast, so .2 ..= .62 are 61 addresses.
    let c = Arc::new(host_local(dir.path(), "10.9.0.0/26"));
    let start = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (c, start) = (Arc::clone(&c), Arc::clone(&start));
            std::thread::spawn(move || {
                let id = format!("container-{i}");
                let a = CniArgs::default();
                start.wait();
                ipam::add(&req(&id, "eth0", &c, &a)).map(|r| addrs(&r))
            })
        })
        .collect();
    let mut got = HashSet::new();
    let mut failures = 0;
    for h in handles {
        match h.join().unwrap() {
            Ok(a) => assert!(
                got.insert(a[0].clone()),
                "address {} handed out twice",
                a[0]
            ),
            Err(e) => {
                assert!(
                    e.to_string()
                        .contains("no IP addresses available in range set"),
                    "{e}"
                );
                failures += 1;
            }
        }
    }
    assert_eq!(got.len(), 61);
    assert_eq!(failures, 3);
    assert_eq!(reservations(dir.path()).len(), 61);
}

#[test]
fn lock_is_a_flock_that_other_processes_respect() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    ipam::add(&req("c0", "eth0", &c, &a)).unwrap();
    let lock = dir.path().join(NETWORK).join("lock");
    // util-linux flock(1) takes flock(2), the call Go's go-filemutex makes.
    let held = dir.path().join("held");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "touch \"$0\"; sleep 0.6"])
        .arg(&held)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !held.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let t = std::time::Instant::now();
    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    let waited = t.elapsed();
    holder.wait().unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "ADD did not wait for the lock: {waited:?}"
    );
}

/// containerd spells runtime ranges as Go field names and writes "" for unset fields; the
/// reference host-local reads that (Go's decoder ignores case), and so does the built-in.
#[test]
fn runtime_ip_ranges_in_go_spelling() {
    let dir = TempDir::new().unwrap();
    let mut c = conf(dir.path(), json!({"type": "host-local"}));
    c.0.insert(
        "runtimeConfig".into(),
        json!({"ipRanges": [[{"Subnet": "10.21.0.0/24", "RangeStart": "10.21.0.50",
                              "RangeEnd": "", "Gateway": ""}]]}),
    );
    let a = CniArgs::default();
    let r = ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    assert_eq!(addrs(&r), ["10.21.0.50/24"]);
    assert_eq!(r.ips[0].gateway, Some("10.21.0.1".parse().unwrap()));
}

/// The spares a release keeps in the network's directory, by name.
fn spares(data_dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir.join(NETWORK))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".spare."))
        .collect();
    v.sort();
    v
}

/// A release keeps the file as a spare, blanked, and the next reservation renames it onto its
/// address: the same inode, no file created, the reference's content cut to length and mode.
#[test]
fn a_released_file_is_kept_blank_and_becomes_the_next_reservation() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let net = dir.path().join(NETWORK);
    ipam::add(&req("a-longer-container-id", "eth0", &c, &a)).unwrap();
    let inode = std::fs::metadata(net.join("10.9.0.2")).unwrap().ino();
    ipam::del(&req("a-longer-container-id", "eth0", &c, &a)).unwrap();

    assert!(reservations(dir.path()).is_empty());
    assert_eq!(spares(dir.path()), [".spare.0"]);
    let spare = net.join(".spare.0");
    let blank = std::fs::read_to_string(&spare).unwrap();
    assert_eq!(blank, " ".repeat("a-longer-container-id\r\neth0".len()));
    assert_eq!(std::fs::metadata(&spare).unwrap().ino(), inode);
    // Blank owns nothing: CHECK of the released container fails.
    assert!(ipam::check(&req("a-longer-container-id", "eth0", &c, &a)).is_err());

    let r = ipam::add(&req("c2", "net1", &c, &a)).unwrap();
    assert_eq!(addrs(&r), ["10.9.0.3/24"]);
    let held = std::fs::symlink_metadata(net.join("10.9.0.3")).unwrap();
    assert_eq!(held.ino(), inode, "the spare was not reused");
    assert!(held.is_file());
    assert_eq!(held.mode() & 0o7777, 0o600);
    assert_eq!(
        reservations(dir.path()),
        [("10.9.0.3".into(), "c2\r\nnet1".into())]
    );
    assert!(spares(dir.path()).is_empty());
    assert_eq!(
        std::fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(),
        "10.9.0.3"
    );
}

/// A node releasing many addresses at once keeps `SPARE_SLOTS` spares and removes the rest,
/// as the reference does; the next ADDs use the spares first and create the others.
#[test]
fn spares_are_bounded_and_every_later_add_still_gets_its_own_address() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let many = ipam::SPARE_SLOTS + 4;
    let ids: Vec<String> = (0..many).map(|i| format!("c{i}")).collect();
    for id in &ids {
        ipam::add(&req(id, "eth0", &c, &a)).unwrap();
    }
    for id in &ids {
        ipam::del(&req(id, "eth0", &c, &a)).unwrap();
    }
    assert!(reservations(dir.path()).is_empty());
    assert_eq!(spares(dir.path()).len(), ipam::SPARE_SLOTS);

    let mut got = HashSet::new();
    for id in &ids {
        let r = ipam::add(&req(id, "net1", &c, &a)).unwrap();
        assert!(got.insert(addrs(&r)[0].clone()), "{r:?}");
    }
    assert!(spares(dir.path()).is_empty());
    let held = reservations(dir.path());
    assert_eq!(held.len(), many);
    let owners: HashSet<String> = held.into_iter().map(|(_, o)| o).collect();
    let want: HashSet<String> = ids.iter().map(|id| format!("{id}\r\nnet1")).collect();
    assert_eq!(owners, want);
}

/// A spare never takes an address someone holds, and stays blank when it was not used.
#[test]
fn a_spare_never_takes_a_held_address() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    ipam::add(&req("c2", "eth0", &c, &a)).unwrap();
    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    let want = CniArgs::parse("IP=10.9.0.3").unwrap();
    let e = ipam::add(&req("c3", "eth0", &c, &want)).unwrap_err();
    assert!(matches!(e, IpamError::RequestedTaken { .. }), "{e}");
    assert_eq!(
        reservations(dir.path()),
        [("10.9.0.3".into(), "c2\r\neth0".into())]
    );
    let net = dir.path().join(NETWORK);
    assert_eq!(
        std::fs::read_to_string(net.join(".spare.0")).unwrap(),
        " ".repeat("c1\r\neth0".len())
    );
}

/// A slot holding a symlink or a directory is skipped both ways: a reservation is never a
/// link and a link's target is never written.
#[test]
fn a_slot_that_is_not_a_plain_file_is_left_alone() {
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let a = CniArgs::default();
    let net = dir.path().join(NETWORK);
    std::fs::create_dir_all(&net).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, net.join(".spare.0")).unwrap();
    std::fs::create_dir(net.join(".spare.1")).unwrap();

    ipam::add(&req("c1", "eth0", &c, &a)).unwrap();
    assert!(
        std::fs::symlink_metadata(net.join("10.9.0.2"))
            .unwrap()
            .is_file()
    );
    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    assert!(
        net.join(".spare.2").is_file(),
        "the release skipped no slot"
    );
    ipam::add(&req("c2", "eth0", &c, &a)).unwrap();
    assert!(
        !net.join(".spare.2").exists(),
        "the free spare was not used"
    );
    assert!(
        std::fs::symlink_metadata(net.join("10.9.0.3"))
            .unwrap()
            .is_file()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(
        std::fs::symlink_metadata(net.join(".spare.0"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(net.join(".spare.1").is_dir());
    assert_eq!(
        reservations(dir.path()),
        [("10.9.0.3".into(), "c2\r\neth0".into())]
    );
}

/// A FIFO planted in a slot is skipped at once: opening it must not wait, with the pool's
/// lock held, for a reader that never comes.
#[test]
fn a_fifo_in_a_slot_does_not_hang_the_pool() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new().unwrap();
    let c = host_local(dir.path(), "10.9.0.0/24");
    let net = dir.path().join(NETWORK);
    std::fs::create_dir_all(&net).unwrap();
    let fifo = net.join(".spare.0");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let data = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = host_local(&data, "10.9.0.0/24");
        let a = CniArgs::default();
        let r = ipam::add(&req("c1", "eth0", &c, &a)).map(|r| addrs(&r));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("ADD hung on a FIFO in a spare slot");
    assert_eq!(got.unwrap(), ["10.9.0.2/24"]);
    ipam::del(&req("c1", "eth0", &c, &CniArgs::default())).unwrap();
    assert!(reservations(dir.path()).is_empty());
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}
