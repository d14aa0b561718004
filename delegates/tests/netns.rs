#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
mod common;

use common::TestNs;
use delegates::netns::NetNs;

#[test]
fn run_sees_the_target_netns_and_leaves_the_caller_alone() {
    let node = TestNs::new();
    let pod = TestNs::new();
    pod.sh("ip link add probe0 type bridge");
    let (in_pod, in_node) = node.enter(|| {
        let ns = NetNs::open(pod.path()).unwrap();
        let in_pod = ns
            .run(|h| async move {
                delegates::link::by_name(&h, "probe0")
                    .await
                    .unwrap()
                    .is_some()
            })
            .unwrap();
        // The calling thread is still in the node netns afterwards.
        let here = NetNs::current().unwrap();
        let in_node = here
            .run(|h| async move {
                delegates::link::by_name(&h, "probe0")
                    .await
                    .unwrap()
                    .is_some()
            })
            .unwrap();
        (in_pod, in_node)
    });
    assert!(
        in_pod,
        "probe0 must be visible from a handle in the pod netns"
    );
    assert!(!in_node, "probe0 must not be visible in the node netns");
}

#[test]
fn run_with_host_gives_one_handle_per_side() {
    let node = TestNs::new();
    let pod = TestNs::new();
    node.sh("ip link add hostbr0 type bridge");
    let seen = node.enter(|| {
        NetNs::open(pod.path())
            .unwrap()
            .run_with_host(|host, pod| async move {
                let a = delegates::link::by_name(&host, "hostbr0")
                    .await
                    .unwrap()
                    .is_some();
                let b = delegates::link::by_name(&pod, "hostbr0")
                    .await
                    .unwrap()
                    .is_some();
                (a, b)
            })
            .unwrap()
    });
    assert_eq!(seen, (true, false));
}

#[test]
fn opening_a_gone_netns_is_reported_as_gone() {
    let pod = TestNs::new();
    let path = pod.path().to_path_buf();
    pod.close();
    let err = NetNs::open(&path).unwrap_err();
    assert!(err.is_gone(), "{err}");
}

#[test]
fn batched_removal_deletes_only_links_that_are_still_ours() {
    use delegates::owned::Expected;
    use std::time::Duration;
    let pod = TestNs::new();
    pod.sh(
        "ip link add a0 type bridge && ip link set a0 alias plexus:c/a0 && \
         ip link add b0 type veth peer name b1 && ip link set b0 alias plexus:c/b0 && \
         ip link add c0 type bridge && \
         ip link add d0 type bridge && ip link set d0 alias plexus:other/d0 && \
         ip link add keep0 type bridge",
    );
    let tagged = |name: &'static str, tag: &'static str| Expected {
        name,
        tag: Some(tag),
        journaled: None,
        mac: None,
    };
    let wanted = [
        tagged("a0", "plexus:c/a0"),
        tagged("b0", "plexus:c/b0"),
        // Untagged, or tagged for another container: not ours, whatever its name.
        tagged("c0", "plexus:c/c0"),
        tagged("d0", "plexus:c/d0"),
        // A name alone identifies nothing.
        Expected {
            name: "keep0",
            tag: None,
            journaled: None,
            mac: None,
        },
        tagged("missing0", "plexus:c/missing0"),
    ];
    let t = Duration::from_secs(5);
    // In a namespace other than the one expected, nothing is touched.
    let elsewhere = delegates::netns::NsId { dev: 0, ino: 1 };
    delegates::remove_links_batched(pod.path(), Some(elsewhere), &wanted, t).unwrap();
    let names = pod.sh("ip -o link show | awk -F': ' '{print $2}'");
    assert!(names.contains("a0") && names.contains("b0"), "{names}");

    let id = delegates::netns::NsId::of_path(pod.path()).unwrap();
    delegates::remove_links_batched(pod.path(), Some(id), &wanted, t).unwrap();
    let names = pod.sh("ip -o link show | awk -F': ' '{print $2}'");
    assert!(!names.contains("a0"), "{names}");
    assert!(
        !names.contains("b0") && !names.contains("b1"),
        "veth pair must go: {names}"
    );
    for kept in ["c0", "d0", "keep0"] {
        assert!(names.contains(kept), "{kept} is not ours: {names}");
    }
    // Nothing left to remove, and a netns that is gone, are both success.
    delegates::remove_links_batched(pod.path(), None, &wanted[..1], t).unwrap();
    let path = pod.path().to_path_buf();
    pod.close();
    delegates::remove_links_batched(&path, None, &wanted[..1], t).unwrap();
}

#[test]
fn no_residue_in_run_netns() {
    let before = std::fs::read_dir("/run/netns")
        .map(|d| d.count())
        .unwrap_or(0);
    let pod = TestNs::new();
    pod.close();
    let after = std::fs::read_dir("/run/netns")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(before, after);
}

#[test]
fn a_bounded_job_that_does_not_finish_gives_up_with_code_11() {
    use std::time::{Duration, Instant};
    let pod = TestNs::new();
    let ns = NetNs::open(pod.path())
        .unwrap()
        .bounded(Duration::from_millis(200));
    let started = Instant::now();
    // A netlink answer that never comes looks like this to the job: a future that waits.
    let err = ns
        .run(|_h| async move { tokio::time::sleep(Duration::from_secs(30)).await })
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("unanswered"), "{err}");
    assert_eq!(delegates::DelegateError::from(err).code(), 11);
    // Work that finishes in time is unaffected.
    assert_eq!(ns.run(|_h| async move { 7 }).unwrap(), 7);
}

/// The rtnetlink sockets user space holds in `ns` now (the kernel's own has port 0).
fn route_sockets(ns: &common::TestNs) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{}/net/netlink", ns.tid())).unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(1) == Some(&"0") && f.get(2) != Some(&"0"))
        .count()
}

/// A session (one CNI call) drives every job over one connection per namespace, and its
/// sockets go when it ends: in the daemon, a socket left in a deleted pod's netns would keep
/// that namespace alive.
#[test]
fn a_session_keeps_one_connection_per_netns_and_closes_them_at_its_end() {
    let node = TestNs::new();
    let pod = TestNs::new();
    pod.sh("ip link add probe0 type bridge");
    let (seen, inside, after) = node.enter(|| {
        let (seen, inside) = delegates::netns::session(|| {
            let ns = NetNs::open(pod.path()).unwrap();
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(
                    ns.run_with_host(|host, pod| async move {
                        let on = |h: rtnetlink::Handle| async move {
                            delegates::link::by_name(&h, "probe0")
                                .await
                                .unwrap()
                                .is_some()
                        };
                        (on(host).await, on(pod).await)
                    })
                    .unwrap(),
                );
            }
            (seen, (route_sockets(&node), route_sockets(&pod)))
        });
        // Still on the thread that ran the session: its thread-locals are alive.
        (seen, inside, (route_sockets(&node), route_sockets(&pod)))
    });
    assert_eq!(
        seen,
        vec![(false, true); 3],
        "each side's handle in its own netns"
    );
    assert_eq!(inside, (1, 1), "three jobs, one connection per netns");
    assert_eq!(after, (0, 0), "sockets left after the session");
}
