//! The Kubernetes API store through the real binary: a kubeconfig pointing at the fake API
//! server (real HTTPS, bearer token), real network namespaces and Debian's reference plugins.
//! One test per row K1–K14 of the reliability matrix (§6), plus the status-patch failure of
//! P11, the token-file rotation and the name check of S8.
#![allow(clippy::unwrap_used)]

mod common;

use common::apiserver::{FakeApi, FakeOptions, Fault, Logged, Route, nad_object, pod_object};
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";
const OTHER_UID: &str = "99999999-8888-4777-8666-555555555555";
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// One test's node: its own netns, a fake API server in it, a world of temp dirs, an uplink
/// bridge for macvlan NADs, and NAD `default/blue` (macvlan on 10.89.2.0/24).
struct Node {
    w: World,
    api: FakeApi,
}

impl Node {
    fn new() -> Node {
        enter_node_netns();
        sh("ip link add upl0 type bridge && ip link set upl0 up");
        let w = World::new();
        let api = FakeApi::start(FakeOptions::default());
        let node = Node { w, api };
        node.nad("blue", "10.89.2.0/24");
        node
    }

    fn nad(&self, name: &str, subnet: &str) {
        let conf = self.w.macvlan_conf(name, "upl0", subnet);
        self.api.add_nad(nad_object("default", name, Some(&conf)));
    }

    fn pod(&self, name: &str, networks: Option<&str>) {
        let ann: Vec<(&str, &str)> = networks.map(|n| (NETWORKS, n)).into_iter().collect();
        self.api.add_pod(pod_object("default", name, UID, &ann));
    }

    /// The Plexus conf: cluster network inline (bridge + host-local), the store the fake's
    /// kubeconfig; no `manifests`.
    fn conf_with(&self, kubeconfig: &Path) -> Value {
        let mut c = self.w.plexus_conf(
            &self.w.bridge_conf("cluster", "cni-k0", "10.88.0.0/24"),
            json!({"kubeconfig": kubeconfig.display().to_string()}),
        );
        c.as_object_mut().unwrap().remove("manifests");
        c
    }

    fn conf(&self) -> Value {
        self.conf_with(&self.api.kubeconfig(self.w.tmp.path()))
    }

    fn call(&self, command: &str, cid: &str, pod: &PodNs, name: &str) -> Call {
        let mut c = Call::new(command, cid, Some(&pod.path), &self.w).pod("default", name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    }
}

fn routes(log: &[Logged]) -> Vec<Route> {
    log.iter().map(|l| l.route).collect()
}

fn count(log: &[Logged], route: Route) -> usize {
    log.iter().filter(|l| l.route == route).count()
}

/// Nothing of the ADD is left: no link in the pod, no IP reserved, no journal, no process.
fn assert_nothing_created(n: &Node, pod: &PodNs) {
    n.w.assert_clean(Some(pod));
}

#[test]
fn k1_closed_port_is_code_11_quickly_and_creates_nothing() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api.set_fault(Fault::ClosedPort);
    let pod = PodNs::new();
    let started = Instant::now();
    let err = n.call("ADD", "c-k1", &pod, "web").run_json(&conf).err(11);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err["msg"].as_str().unwrap().contains("GET pod default/web"),
        "{err}"
    );
    assert_nothing_created(&n, &pod);
}

#[test]
fn k2_a_server_that_never_answers_is_code_11_within_timeout_times_attempts() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api.set_fault(Fault::Hang);
    let pod = PodNs::new();
    let started = Instant::now();
    n.call("ADD", "c-k2", &pod, "web").run_json(&conf).err(11);
    let took = started.elapsed();
    // Default bound: 3 attempts × 5 s read timeout, 15 s deadline over all.
    assert!(took >= Duration::from_secs(5), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_nothing_created(&n, &pod);
}

#[test]
fn k2_a_server_that_accepts_but_never_speaks_tls_is_code_11_within_the_connect_bound() {
    let n = Node::new();
    n.pod("web", None);
    let conf = n.conf();
    n.api.set_fault(Fault::HangAccept);
    let pod = PodNs::new();
    let started = Instant::now();
    n.call("ADD", "c-k2b", &pod, "web").run_json(&conf).err(11);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_created(&n, &pod);
}

#[test]
fn k3_server_errors_and_throttling_are_retried_then_succeed() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api.fault_next(Route::GetPod, 1, Fault::Status(500));
    n.api.fault_next(Route::GetNad, 1, Fault::Status(503));
    // 429 with Retry-After: 1.
    n.api
        .fault_next(Route::PatchPodStatus, 1, Fault::Status(429));
    let pod = PodNs::new();
    let started = Instant::now();
    n.call("ADD", "c-k3", &pod, "web").run_json(&conf).ok();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    let log = n.api.requests();
    assert_eq!(count(&log, Route::GetPod), 2, "{:?}", routes(&log));
    assert_eq!(count(&log, Route::GetNad), 2, "{:?}", routes(&log));
    assert_eq!(count(&log, Route::PatchPodStatus), 2, "{:?}", routes(&log));
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    n.call("DEL", "c-k3", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k3_a_long_retry_after_is_capped() {
    let n = Node::new();
    n.pod("web", None);
    let conf = n.conf();
    n.api
        .fault_next(Route::GetPod, 1, Fault::StatusRetryAfter(429, 60));
    let pod = PodNs::new();
    let started = Instant::now();
    n.call("ADD", "c-k3b", &pod, "web").run_json(&conf).ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    n.call("DEL", "c-k3b", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k4_del_with_the_api_down_works_from_the_journal_without_a_request() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    let pod = PodNs::new();
    n.call("ADD", "c-k4", &pod, "web").run_json(&conf).ok();
    assert_eq!(n.w.reservations().len(), 2);
    // Every request would be answered 503 and logged: none may be made.
    n.api.set_fault(Fault::Status(503));
    n.api.clear_requests();
    n.call("DEL", "c-k4", &pod, "web").run_json(&conf).ok();
    assert_eq!(routes(&n.api.requests()), vec![]);
    n.w.assert_clean(Some(&pod));

    // And with the port closed altogether.
    n.api.clear_faults();
    n.call("ADD", "c-k4b", &pod, "web").run_json(&conf).ok();
    n.api.set_fault(Fault::ClosedPort);
    n.call("DEL", "c-k4b", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k5_add_for_a_pod_the_api_server_does_not_have_is_code_3() {
    let n = Node::new();
    let conf = n.conf();
    let pod = PodNs::new();
    let err = n.call("ADD", "c-k5", &pod, "ghost").run_json(&conf).err(3);
    assert!(
        err["msg"].as_str().unwrap().contains("default/ghost"),
        "{err}"
    );
    assert_nothing_created(&n, &pod);
    assert_eq!(count(&n.api.requests(), Route::GetNad), 0);
}

#[test]
fn k6_pod_deleted_between_add_and_del() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    let pod = PodNs::new();
    n.call("ADD", "c-k6", &pod, "web").run_json(&conf).ok();
    assert!(n.api.delete_pod("default", "web"));
    n.call("DEL", "c-k6", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k7_uid_mismatch_fails_add_with_102_and_del_ignores_it() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    let pod = PodNs::new();
    let mut stale = n.call("ADD", "c-k7", &pod, "web");
    stale.args = stale.args.replace(UID, OTHER_UID);
    let err = stale.run_json(&conf).err(102);
    assert!(err["msg"].as_str().unwrap().contains(OTHER_UID), "{err}");
    assert_nothing_created(&n, &pod);

    n.call("ADD", "c-k7", &pod, "web").run_json(&conf).ok();
    let mut del = n.call("DEL", "c-k7", &pod, "web");
    del.args = del.args.replace(UID, OTHER_UID);
    del.run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k8_missing_nad_is_code_11_naming_it_and_no_delegate_runs() {
    let n = Node::new();
    n.pod("web", Some("blue,red"));
    let conf = n.conf();
    let pod = PodNs::new();
    let err = n.call("ADD", "c-k8", &pod, "web").run_json(&conf).err(11);
    assert!(
        err["msg"].as_str().unwrap().contains("default/red"),
        "{err}"
    );
    assert_nothing_created(&n, &pod);
}

#[test]
fn k9_del_uses_the_nad_as_it_was_at_add() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    let pod = PodNs::new();
    n.call("ADD", "c-k9", &pod, "web").run_json(&conf).ok();
    assert_eq!(pod.addrs("net1"), ["10.89.2.2/24"]);
    // The NAD changes where its addresses live: another network name and dataDir (host-local
    // keeps reservations under <dataDir>/<name>/ and releases by container ID, so a change of
    // range alone would be released either way). A DEL that used the NAD as it is now would
    // look in the new place and leave 10.89.2.2 reserved in the old one.
    let mut moved = n.w.macvlan_conf("blue-v2", "upl0", "10.77.0.0/24");
    moved["ipam"]["dataDir"] = json!(n.w.tmp.path().join("ipam-v2").display().to_string());
    n.api.add_nad(nad_object("default", "blue", Some(&moved)));
    assert_eq!(n.w.reservations(), ["blue/10.89.2.2", "cluster/10.88.0.2"]);
    n.call("DEL", "c-k9", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
    // Then it goes away entirely.

    n.nad("blue", "10.89.2.0/24");
    n.call("ADD", "c-k9b", &pod, "web").run_json(&conf).ok();
    assert!(n.api.delete_nad("default", "blue"));
    n.call("DEL", "c-k9b", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k10_status_patch_conflict_is_retried_with_a_merge_patch_of_the_annotation_only() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api
        .fault_next(Route::PatchPodStatus, 1, Fault::Status(409));
    let pod = PodNs::new();
    n.call("ADD", "c-k10", &pod, "web").run_json(&conf).ok();

    let log = n.api.requests();
    let patches: Vec<&Logged> = log
        .iter()
        .filter(|l| l.route == Route::PatchPodStatus)
        .collect();
    assert_eq!(patches.len(), 2, "{:?}", routes(&log));
    assert_eq!(patches[0].status, Some(409));
    assert_eq!(patches[1].status, Some(200));
    for p in &patches {
        assert_eq!(p.path, "/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            p.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let body: Value = serde_json::from_str(&p.body).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metadata"], "{body}");
        let meta: Vec<&String> = body["metadata"].as_object().unwrap().keys().collect();
        assert_eq!(meta, ["annotations"], "{body}");
        let ann = body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(ann.keys().collect::<Vec<_>>(), [NETWORK_STATUS], "{body}");
    }

    // The annotation is set; the pod's other annotations and its status survive.
    let stored = n.api.pod("default", "web").unwrap();
    let status: Value = serde_json::from_str(
        stored["metadata"]["annotations"][NETWORK_STATUS]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cluster", "default/blue"]);
    assert_eq!(status[0]["interface"], "eth0");
    assert_eq!(status[0]["ips"], json!(["10.88.0.2"]));
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[1]["interface"], "net1");
    assert_eq!(status[1]["ips"], json!(["10.89.2.2"]));
    assert_eq!(stored["metadata"]["annotations"][NETWORKS], "blue");
    assert_eq!(stored["status"]["phase"], "Pending");
    assert_eq!(stored["status"]["podIP"], "10.0.0.9");

    n.call("DEL", "c-k10", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k11_status_patch_404_is_tolerated() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api
        .fault_next(Route::PatchPodStatus, 1, Fault::Status(404));
    let pod = PodNs::new();
    n.call("ADD", "c-k11", &pod, "web").run_json(&conf).ok();
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    assert_eq!(count(&n.api.requests(), Route::PatchPodStatus), 1);
    n.call("DEL", "c-k11", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn p11_status_patch_that_keeps_failing_rolls_the_add_back() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api
        .fault_next(Route::PatchPodStatus, 5, Fault::Status(500));
    let pod = PodNs::new();
    let err = n.call("ADD", "c-p11", &pod, "web").run_json(&conf).err(11);
    assert!(
        err["msg"].as_str().unwrap().contains("pods/status"),
        "{err}"
    );
    n.w.assert_clean(Some(&pod));

    n.api.clear_faults();
    n.api
        .fault_next(Route::PatchPodStatus, 1, Fault::Status(403));
    let err = n.call("ADD", "c-p11", &pod, "web").run_json(&conf).err(11);
    assert!(err["msg"].as_str().unwrap().contains("403"), "{err}");
    n.w.assert_clean(Some(&pod));
}

#[test]
fn k12_untrusted_certificate_fails_closed() {
    let n = Node::new();
    n.pod("web", None);
    let kubeconfig = n.api.kubeconfig_untrusted(n.w.tmp.path());
    let conf = n.conf_with(&kubeconfig);
    let pod = PodNs::new();
    let started = Instant::now();
    let err = n.call("ADD", "c-k12", &pod, "web").run_json(&conf).err(11);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("TLS handshake failed"), "{err}");
    assert!(msg.contains("after 1 attempt"), "not retried: {err}");
    assert_nothing_created(&n, &pod);
    // The handshake failed: no request reached the server.
    assert_eq!(routes(&n.api.requests()), vec![]);

    // STATUS asks the store whether it can answer, and it cannot.
    let status = Call::new("STATUS", "", None, &n.w).run_json(&conf);
    let err = status.err(50);
    assert!(err["msg"].as_str().unwrap().contains("TLS"), "{err}");
}

#[test]
fn status_is_ready_only_while_the_api_server_answers() {
    let n = Node::new();
    let conf = n.conf();
    let status = || Call::new("STATUS", "", None, &n.w).run_json(&conf);
    status().ok();
    assert_eq!(routes(&n.api.requests()), vec![Route::ListNads]);
    n.api.set_fault(Fault::ClosedPort);
    status().err(50);
    n.api.clear_faults();
    n.api.set_fault(Fault::Status(403));
    status().err(50);
    n.api.clear_faults();
    status().ok();
}

#[test]
fn k12_insecure_skip_tls_verify_is_ignored() {
    let n = Node::new();
    n.pod("web", None);
    let untrusted = n.api.kubeconfig_untrusted(n.w.tmp.path());
    let text = std::fs::read_to_string(&untrusted).unwrap();
    let insecure = text.replace(
        "  cluster:\n",
        "  cluster:\n    insecure-skip-tls-verify: true\n",
    );
    assert_ne!(insecure, text);
    // The wrong CA, and no CA at all (the system's roots do not know the fake's).
    let no_ca: String = insecure
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    for (file, kubeconfig) in [("insecure", &insecure), ("insecure-no-ca", &no_ca)] {
        let path = n.w.tmp.path().join(file);
        std::fs::write(&path, kubeconfig).unwrap();
        let conf = n.conf_with(&path);
        let pod = PodNs::new();
        let err = n.call("ADD", "c-k12i", &pod, "web").run_json(&conf).err(11);
        assert!(
            err["msg"].as_str().unwrap().contains("TLS"),
            "{file}: {err}"
        );
        assert_nothing_created(&n, &pod);
    }
    assert_eq!(routes(&n.api.requests()), vec![]);
}

#[test]
fn k12_a_bad_kubeconfig_is_code_7() {
    let n = Node::new();
    let bad = n.w.tmp.path().join("bad.kubeconfig");
    std::fs::write(&bad, "apiVersion: v1\nclusters: [ {").unwrap();
    let conf = n.conf_with(&bad);
    let pod = PodNs::new();
    n.call("ADD", "c-k12b", &pod, "web").run_json(&conf).err(7);
    assert_nothing_created(&n, &pod);
    Call::new("STATUS", "", None, &n.w).run_json(&conf).err(50);
}

#[test]
fn credentials_that_would_run_a_command_or_use_a_proxy_are_code_7_naming_the_key() {
    let n = Node::new();
    let pod = PodNs::new();
    let cases = [
        (
            "exec",
            "exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/true\n      interactiveMode: Never",
        ),
        ("auth-provider", "auth-provider:\n      name: oidc"),
        ("username/password", "username: admin\n    password: secret"),
        ("as (impersonation)", "as: admin\n    token: t"),
    ];
    for (key, user) in cases {
        let kc = n.w.tmp.path().join("refused.kubeconfig");
        let text = std::fs::read_to_string(n.api.kubeconfig(n.w.tmp.path()))
            .unwrap()
            .replace(&format!("token: {}", n.api.token()), user);
        std::fs::write(&kc, text).unwrap();
        n.pod("web", Some("blue"));
        let err = n
            .call("ADD", "c-cred", &pod, "web")
            .run_json(&n.conf_with(&kc))
            .err(7);
        let text = err.to_string();
        assert!(text.contains(key), "{key}: {text}");
        assert_nothing_created(&n, &pod);
    }
    assert_eq!(routes(&n.api.requests()), vec![]);
}

#[test]
fn the_nads_of_a_pod_are_read_together() {
    let n = Node::new();
    for (name, subnet) in [
        ("red", "10.89.3.0/24"),
        ("green", "10.89.4.0/24"),
        ("white", "10.89.5.0/24"),
    ] {
        n.nad(name, subnet);
    }
    n.pod("web", Some("blue,red,green,white"));
    // Each NAD GET waits 300 ms: read one after the other they would take 1.2 s.
    n.api
        .fault_next(Route::GetNad, 4, Fault::Latency(Duration::from_millis(300)));
    let pod = PodNs::new();
    let conf = n.conf();
    n.call("ADD", "c-nads", &pod, "web").run_json(&conf).ok();
    let gets = n.api.requests_for(Route::GetNad);
    assert_eq!(gets.len(), 4);
    let first = gets.iter().map(|r| r.at).min().unwrap();
    let last = gets.iter().map(|r| r.at).max().unwrap();
    assert!(
        last - first < Duration::from_millis(250),
        "the last NAD GET arrived {:?} after the first",
        last - first
    );
    n.call("DEL", "c-nads", &pod, "web").run_json(&conf).ok();
}

#[test]
fn k13_a_pod_without_networks_gets_the_cluster_network_only() {
    let n = Node::new();
    n.pod("plain", None);
    n.api
        .add_pod(pod_object("default", "empty", UID, &[(NETWORKS, "")]));
    let conf = n.conf();
    for name in ["plain", "empty"] {
        let pod = PodNs::new();
        n.call("ADD", &format!("c-{name}"), &pod, name)
            .run_json(&conf)
            .ok();
        assert_eq!(pod.links(), ["eth0", "lo"], "{name}");
        assert_eq!(count(&n.api.requests(), Route::GetNad), 0);
        n.call("DEL", &format!("c-{name}"), &pod, name)
            .run_json(&conf)
            .ok();
        n.w.assert_clean(Some(&pod));
    }
}

#[test]
fn k14_only_allowed_verbs_and_clean_urls_reach_the_server() {
    let n = Node::new();
    n.nad("green", "10.89.4.0/24");
    n.pod("web", Some("blue,green"));
    let conf = n.conf();
    let pod = PodNs::new();
    n.call("ADD", "c-k14", &pod, "web").run_json(&conf).ok();
    n.call("CHECK", "c-k14", &pod, "web").run_json(&conf).ok();
    n.call("DEL", "c-k14", &pod, "web").run_json(&conf).ok();
    Call::new("STATUS", "", None, &n.w).run_json(&conf).ok();
    // A failing ADD too: its warning event is part of the traffic.
    n.pod("bad", Some("blue,missing"));
    n.call("ADD", "c-k14b", &pod, "bad").run_json(&conf).err(11);

    let log = n.api.requests();
    assert!(!log.is_empty());
    for l in &log {
        let allowed = matches!(
            (l.method.as_str(), l.route),
            ("GET", Route::GetPod | Route::GetNad | Route::ListNads)
                | ("PATCH", Route::PatchPodStatus)
                | ("POST", Route::CreateEvent)
        );
        assert!(allowed, "{} {} is not allowed", l.method, l.url());
        assert!(!l.url().contains(".."), "{}", l.url());
        assert!(!l.url().to_ascii_lowercase().contains("%2f"), "{}", l.url());
    }
    assert_eq!(count(&log, Route::PutPod), 0);

    // AddedInterface for each attachment of the good ADD, about the pod, with its UID.
    let events = n.api.events();
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "AddedInterface")
        .collect();
    assert_eq!(added.len(), 3, "{events:?}");
    for e in &added {
        assert_eq!(e["involvedObject"]["kind"], "Pod");
        assert_eq!(e["involvedObject"]["name"], "web");
        assert_eq!(e["involvedObject"]["uid"], UID);
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["source"]["component"], "plexus");
    }
    n.w.assert_clean(Some(&pod));
}

#[test]
fn s8_names_that_are_not_dns_1123_never_reach_the_server() {
    let n = Node::new();
    n.pod("web", Some("a%2Fb"));
    n.api
        .add_pod(pod_object("default", "dots", UID, &[(NETWORKS, "../x")]));
    let conf = n.conf();
    for name in ["web", "dots"] {
        let pod = PodNs::new();
        n.api.clear_requests();
        n.call("ADD", "c-s8", &pod, name).run_json(&conf).err(7);
        assert_eq!(routes(&n.api.requests()), vec![Route::GetPod], "{name}");
        assert_nothing_created(&n, &pod);
    }
}

#[test]
fn a_rotated_token_file_is_read_on_every_invocation() {
    let n = Node::new();
    n.pod("web", None);
    let (kubeconfig, token_file) = n.api.kubeconfig_with_token_file(n.w.tmp.path());
    let conf = n.conf_with(&kubeconfig);
    let pod = PodNs::new();
    n.call("ADD", "c-t1", &pod, "web").run_json(&conf).ok();
    n.call("DEL", "c-t1", &pod, "web").run_json(&conf).ok();

    // The old token is now refused; the file holds the new one.
    n.api.set_token("rotated-token");
    let err = n.call("ADD", "c-t2", &pod, "web").run_json(&conf).err(11);
    assert!(err["msg"].as_str().unwrap().contains("401"), "{err}");
    n.w.assert_clean(Some(&pod));
    std::fs::write(&token_file, "rotated-token").unwrap();
    n.call("ADD", "c-t2", &pod, "web").run_json(&conf).ok();
    n.call("DEL", "c-t2", &pod, "web").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

#[test]
fn a_failing_attachment_records_a_warning_naming_the_network() {
    let n = Node::new();
    n.api.add_nad(nad_object(
        "default",
        "broken",
        Some(&json!({"cniVersion": "1.0.0", "name": "broken", "type": "no-such-plugin"})),
    ));
    n.pod("web", Some("blue,broken"));
    let conf = n.conf();
    let pod = PodNs::new();
    let e = n.call("ADD", "c-warn", &pod, "web").run_json(&conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains("no-such-plugin"), "{e}");
    n.w.assert_clean(Some(&pod));
    let events = n.api.events();
    let warnings: Vec<&Value> = events.iter().filter(|e| e["type"] == "Warning").collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert_eq!(warnings[0]["involvedObject"]["name"], "web");
    assert_eq!(warnings[0]["involvedObject"]["uid"], UID);
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(message.contains("default/broken"), "{message}");
    // Nothing was published for a pod whose ADD failed.
    let stored = n.api.pod("default", "web").unwrap();
    assert!(
        stored["metadata"]["annotations"]
            .get(NETWORK_STATUS)
            .is_none()
    );
}

#[test]
fn network_status_of_a_rich_pod() {
    let n = Node::new();
    n.api.add_nad(nad_object(
        "default",
        "chain",
        Some(&json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [
            {"type": "macvlan", "master": "upl0", "mode": "bridge",
             "ipam": {"type": "host-local", "subnet": "10.89.5.0/24",
                      "dataDir": n.w.ipam_dir.display().to_string()}},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}
        ]})),
    ));
    n.api.add_nad(nad_object(
        "default",
        "fixed",
        Some(
            &json!({"cniVersion": "1.0.0", "name": "fixed", "type": "macvlan",
                     "master": "upl0", "capabilities": {"ips": true, "mac": true},
                     "ipam": {"type": "static"}}),
        ),
    ));
    n.pod(
        "rich",
        Some(
            r#"[{"name":"blue"},{"name":"chain","interface":"data0"},
                {"name":"fixed","ips":["10.89.6.7/24"],"mac":"02:23:45:67:89:01"}]"#,
        ),
    );
    let conf = n.conf();
    let pod = PodNs::new();
    n.call("ADD", "c-rich", &pod, "rich").run_json(&conf).ok();
    let stored = n.api.pod("default", "rich").unwrap();
    let status: Value = serde_json::from_str(
        stored["metadata"]["annotations"][NETWORK_STATUS]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    // Kernel-chosen MACs vary from run to run; the one the pod asked for does not.
    assert_eq!(status[3]["mac"], "02:23:45:67:89:01");
    snapshots().bind(|| {
        insta::assert_json_snapshot!("kube__network_status_rich_pod", status, {
            "[0].mac" => "[mac]", "[1].mac" => "[mac]", "[2].mac" => "[mac]"
        });
    });
    n.call("DEL", "c-rich", &pod, "rich").run_json(&conf).ok();
    n.w.assert_clean(Some(&pod));
}

/// A response announcing more than the body cap is refused from its headers, once (not
/// retried: a bigger answer will not shrink), as code 11 naming the cap; nothing is created.
#[test]
fn a_response_over_the_body_cap_is_refused_without_a_retry() {
    let n = Node::new();
    n.pod("web", Some("blue"));
    let conf = n.conf();
    n.api.fault_next(Route::GetPod, 1, Fault::HugeBody(9 << 20));
    let pod = PodNs::new();
    let err = n.call("ADD", "c-huge", &pod, "web").run_json(&conf).err(11);
    assert!(
        err.to_string().contains("byte limit"),
        "the error does not name the cap: {err}"
    );
    assert_eq!(count(&n.api.requests(), Route::GetPod), 1, "retried");
    assert_nothing_created(&n, &pod);
}
