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
fn batched_removal_deletes_all_named_links_and_tolerates_missing_ones() {
    let pod = TestNs::new();
    pod.sh("ip link add a0 type bridge && ip link add b0 type veth peer name b1 && ip link add keep0 type bridge");
    delegates::remove_links_batched(pod.path(), &["a0", "b0", "missing0"]).unwrap();
    let names = pod.sh("ip -o link show | awk -F': ' '{print $2}'");
    assert!(!names.contains("a0"), "{names}");
    assert!(
        !names.contains("b0") && !names.contains("b1"),
        "veth pair must go: {names}"
    );
    assert!(names.contains("keep0"), "unnamed links stay: {names}");
    // Nothing left to remove, and a netns that is gone, are both success.
    delegates::remove_links_batched(pod.path(), &["a0"]).unwrap();
    let path = pod.path().to_path_buf();
    pod.close();
    delegates::remove_links_batched(&path, &["a0"]).unwrap();
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
