//! Self-tests of the fake API server in tests/common/apiserver.rs, driven by the real kube-rs
//! client through the kubeconfig the fake writes: if these pass, the binary-level tests talk to
//! something that behaves like an apiserver on the paths Plexus uses.

mod common;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use common::apiserver::patch::{json_patch, merge_patch};
use common::apiserver::{FakeApi, FakeOptions, Fault, Route, nad_object, pod_object};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(f)
}

async fn config(kubeconfig: &Path) -> kube::Config {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read the fake's kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config from the fake's kubeconfig")
}

/// A client without kube's default retry layer (15 retries on 429/503/504), so each call is
/// one request and the tests see the fake's raw answers.
async fn client(kubeconfig: &Path) -> kube::Client {
    let mut cfg = config(kubeconfig).await;
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("kube client")
}

fn nad_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions");
    Api::namespaced_with(client, ns, &ar)
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A fake with pod team/web and NAD team/blue, a kubeconfig for it, and the temp dir holding it.
fn fixture(opts: FakeOptions) -> (FakeApi, tempfile::TempDir, std::path::PathBuf) {
    let fake = FakeApi::start(opts);
    fake.add_pod(pod_object(
        "team",
        "web",
        UID,
        &[("k8s.v1.cni.cncf.io/networks", "blue")],
    ));
    fake.add_nad(nad_object(
        "team",
        "blue",
        Some(&json!({"cniVersion": "1.0.0", "type": "bridge"})),
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let kc = fake.kubeconfig(dir.path());
    (fake, dir, kc)
}

#[test]
fn kube_client_gets_a_pod_over_tls_with_the_generated_kubeconfig() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    let pod = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await.unwrap()
    });
    assert_eq!(pod.metadata.uid.as_deref(), Some(UID));
    assert_eq!(
        pod.metadata.annotations.unwrap()["k8s.v1.cni.cncf.io/networks"],
        "blue"
    );
    let log = fake.requests();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/api/v1/namespaces/team/pods/web");
    assert_eq!(log[0].route, Route::GetPod);
    assert_eq!(log[0].status, Some(200));
    let mode = std::fs::metadata(&kc).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn missing_objects_are_kubernetes_not_found_statuses() {
    let (_fake, _dir, kc) = fixture(FakeOptions::default());
    let (pod, nad) = run(async {
        let c = client(&kc).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
        (pods.get("nope").await, nad_api(c, "team").get("red").await)
    });
    for e in [pod.unwrap_err(), nad.unwrap_err()] {
        let kube::Error::Api(s) = &e else {
            panic!("not an API status: {e:?}")
        };
        assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"), "{s:?}");
    }
}

#[test]
fn a_wrong_token_is_refused_with_401() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.set_token("rotated");
    let r = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await
    });
    assert_eq!(api_code(&r.unwrap_err()), Some(401));
}

#[test]
fn merge_patch_on_pod_status_keeps_other_fields_and_bumps_the_resource_version() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    let before = fake.pod("team", "web").unwrap();
    let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}},
                       "spec": {"nodeName": "elsewhere"}});
    let patched = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap()
    });
    let ann = patched.metadata.annotations.unwrap();
    assert_eq!(ann["k8s.v1.cni.cncf.io/network-status"], "[]");
    assert_eq!(
        ann["k8s.v1.cni.cncf.io/networks"], "blue",
        "other annotations kept"
    );
    let stored = fake.pod("team", "web").unwrap();
    assert_eq!(stored["status"], before["status"], "status fields kept");
    assert_eq!(
        stored["spec"]["nodeName"], "node-1",
        "pods/status cannot change the spec"
    );
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&stored) > rv(&before));
    let log = fake.requests();
    assert_eq!(log[0].method, "PATCH");
    assert_eq!(log[0].path, "/api/v1/namespaces/team/pods/web/status");
    assert_eq!(log[0].route, Route::PatchPodStatus);
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(serde_json::from_str::<Value>(&log[0].body).unwrap(), patch);
    assert!(fake.disallowed_requests().is_empty());
}

#[test]
fn a_patch_of_the_pod_itself_is_outside_the_allow_list() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        let p = json!({"metadata": {"annotations": {"a": "b"}}});
        pods.patch("web", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
    });
    let bad = fake.disallowed_requests();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].route, Route::PatchPod);
}

#[test]
fn a_patch_with_a_stale_resource_version_or_other_uid_is_a_409_conflict() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    let current = fake.pod("team", "web").unwrap()["metadata"]["resourceVersion"].clone();
    let codes = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        let mut codes = Vec::new();
        for meta in [
            json!({"resourceVersion": "1"}),
            json!({"uid": "someone-else"}),
            json!({"resourceVersion": current, "uid": UID, "labels": {"a": "b"}}),
        ] {
            let p = json!({"metadata": meta});
            let r = pods
                .patch_status("web", &PatchParams::default(), &Patch::Merge(&p))
                .await;
            codes.push(r.err().and_then(|e| api_code(&e)).unwrap_or(200));
        }
        codes
    });
    assert_eq!(codes, vec![409, 409, 200]);
    assert_eq!(
        fake.pod("team", "web").unwrap()["metadata"]["labels"]["a"],
        "b"
    );
}

#[test]
fn json_and_strategic_patches_are_applied_and_logged_with_their_content_type() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    run(async {
        let c = client(&kc).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
        let sp = json!({"metadata": {"labels": {"s": "1"}}});
        pods.patch_status("web", &PatchParams::default(), &Patch::Strategic(&sp))
            .await
            .unwrap();
        let req = hyper::Request::patch("/api/v1/namespaces/team/pods/web/status")
            .header("content-type", "application/json-patch+json")
            .body(
                serde_json::to_vec(
                    &json!([{"op": "add", "path": "/metadata/labels/j", "value": "2"}]),
                )
                .unwrap(),
            )
            .unwrap();
        c.request_text(req).await.unwrap();
    });
    let labels = &fake.pod("team", "web").unwrap()["metadata"]["labels"];
    assert_eq!(labels, &json!({"s": "1", "j": "2"}));
    let cts: Vec<_> = fake
        .requests()
        .into_iter()
        .map(|l| l.content_type.unwrap())
        .collect();
    assert_eq!(
        cts,
        vec![
            "application/strategic-merge-patch+json",
            "application/json-patch+json"
        ]
    );
}

#[test]
fn a_full_update_is_recorded_as_put() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        let mut p = pods.get("web").await.unwrap();
        p.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        pods.replace_status("web", &PostParams::default(), &p)
            .await
            .unwrap();
    });
    let puts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|l| l.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].route, Route::PutPod);
    assert_eq!(puts[0].path, "/api/v1/namespaces/team/pods/web/status");
    let bad: Vec<_> = fake
        .disallowed_requests()
        .into_iter()
        .map(|l| l.method)
        .collect();
    assert_eq!(bad, vec!["PUT"], "the GET before it is allowed");
    assert_eq!(fake.requests_for(Route::GetPod).len(), 1);
}

#[test]
fn nad_get_list_and_watch_follow_the_store() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    let seen = run(async {
        let nads = nad_api(client(&kc).await, "team");
        let got = nads.get("blue").await.unwrap();
        assert_eq!(
            got.data["spec"]["config"],
            r#"{"cniVersion":"1.0.0","type":"bridge"}"#
        );
        let listed = nads.list(&Default::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        let stream = nads.watch(&WatchParams::default(), "0").await.unwrap();
        let mut stream = stream.boxed();
        let mut seen = Vec::new();
        let first = stream.try_next().await.unwrap().unwrap();
        seen.push(first);
        fake.update_nad(nad_object(
            "team",
            "blue",
            Some(&json!({"type": "macvlan"})),
        ));
        fake.add_nad(nad_object("other", "green", None));
        fake.delete_nad("team", "blue");
        for _ in 0..2 {
            seen.push(stream.try_next().await.unwrap().unwrap());
        }
        seen
    });
    let summary: Vec<String> = seen
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.as_deref().unwrap()),
            WatchEvent::Modified(o) => format!(
                "MODIFIED {} {}",
                o.metadata.name.as_deref().unwrap(),
                o.data["spec"]["config"]
            ),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.as_deref().unwrap()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "ADDED blue".to_string(),
            r#"MODIFIED blue "{\"type\":\"macvlan\"}""#.to_string(),
            "DELETED blue".to_string()
        ],
        "the NAD in another namespace must not appear"
    );
    let routes: Vec<Route> = fake.requests().iter().map(|l| l.route).collect();
    assert_eq!(
        routes,
        vec![Route::GetNad, Route::ListNads, Route::WatchNads]
    );
}

#[test]
fn a_watch_from_a_resource_version_replays_only_later_changes() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    let rv = fake.nad("team", "blue").unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    fake.add_nad(nad_object("team", "red", None));
    let first = run(async {
        let nads = nad_api(client(&kc).await, "team");
        let wp = WatchParams::default().timeout(2);
        let events: Vec<_> = nads.watch(&wp, &rv).await.unwrap().collect().await;
        events.into_iter().map(|e| e.unwrap()).collect::<Vec<_>>()
    });
    assert_eq!(first.len(), 1, "{first:?}");
    let WatchEvent::Added(o) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(o.metadata.name.as_deref(), Some("red"));
}

#[test]
fn pods_can_be_listed_and_watched_across_namespaces() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.add_pod(pod_object("other", "db", UID, &[]));
    let (names, watched) = run(async {
        let pods: Api<Pod> = Api::all(client(&kc).await);
        let names: Vec<String> = pods
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect();
        let wp = WatchParams::default().fields("metadata.name=db");
        let mut stream = pods.watch(&wp, "0").await.unwrap().boxed();
        let first = stream.try_next().await.unwrap().unwrap();
        fake.delete_pod("other", "db");
        let second = stream.try_next().await.unwrap().unwrap();
        (names, [first, second])
    });
    assert_eq!(names, vec!["db", "web"]);
    assert!(
        matches!(&watched[0], WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("db"))
    );
    assert!(
        matches!(&watched[1], WatchEvent::Deleted(p) if p.metadata.name.as_deref() == Some("db"))
    );
    assert!(fake.pod("other", "db").is_none());
}

#[test]
fn events_from_both_api_groups_are_stored() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    run(async {
        let c = client(&kc).await;
        let events: Api<Event> = Api::namespaced(c.clone(), "team");
        let ev: Event = serde_json::from_value(json!({
            "metadata": {"generateName": "web."},
            "involvedObject": {"kind": "Pod", "namespace": "team", "name": "web", "uid": UID},
            "reason": "AddedInterface", "message": "Add net1 [10.1.0.5/24] from team/blue",
            "type": "Normal"
        }))
        .unwrap();
        let created = events.create(&PostParams::default(), &ev).await.unwrap();
        assert!(created.metadata.name.unwrap().starts_with("web."));
        let req = hyper::Request::post("/apis/events.k8s.io/v1/namespaces/team/events")
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(&json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                    "metadata": {"name": "web.2"}, "reason": "Failed", "type": "Warning"}))
                .unwrap(),
            )
            .unwrap();
        c.request_text(req).await.unwrap();
    });
    let evs = fake.events();
    let reasons: Vec<_> = evs.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["AddedInterface", "Failed"]);
    assert!(evs.iter().all(|e| e["metadata"]["namespace"] == "team"));
    assert!(
        fake.requests()
            .iter()
            .all(|l| l.route == Route::CreateEvent && l.status == Some(201))
    );
}

#[test]
fn suspicious_paths_are_logged_raw_and_refused() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    let status = run(async {
        let c = client(&kc).await;
        let req = hyper::Request::get("/api/v1/namespaces/team/pods/a%2Fb")
            .body(kube::client::Body::from(Vec::new()))
            .unwrap();
        c.send(req).await.unwrap().status()
    });
    assert_eq!(status, 400);
    assert_eq!(
        fake.requests()[0].path,
        "/api/v1/namespaces/team/pods/a%2Fb"
    );
    assert_eq!(fake.disallowed_requests().len(), 1);
}

#[test]
fn scripted_statuses_apply_to_the_next_requests_of_their_route() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.fault_next(Route::PatchPodStatus, 1, Fault::Status(409));
    fake.fault_next(Route::GetPod, 2, Fault::Status(429));
    let (codes, retry_after) = run(async {
        let c = client(&kc).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
        let mut codes = Vec::new();
        // The NAD GET does not match either queued route.
        codes.push(
            nad_api(c.clone(), "team")
                .get("blue")
                .await
                .map(|_| 200)
                .unwrap_or_else(|e| api_code(&e).unwrap()),
        );
        let p = json!({"metadata": {"annotations": {"a": "b"}}});
        for _ in 0..2 {
            let r = pods
                .patch_status("web", &PatchParams::default(), &Patch::Merge(&p))
                .await;
            codes.push(r.map(|_| 200).unwrap_or_else(|e| api_code(&e).unwrap()));
        }
        let req = hyper::Request::get("/api/v1/namespaces/team/pods/web")
            .body(kube::client::Body::from(Vec::new()))
            .unwrap();
        let resp = c.send(req).await.unwrap();
        codes.push(resp.status().as_u16());
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        codes.push(
            pods.get("web")
                .await
                .map(|_| 200)
                .unwrap_or_else(|e| api_code(&e).unwrap()),
        );
        codes.push(
            pods.get("web")
                .await
                .map(|_| 200)
                .unwrap_or_else(|e| api_code(&e).unwrap()),
        );
        (codes, retry)
    });
    assert_eq!(codes, vec![200, 409, 200, 429, 429, 200]);
    assert_eq!(retry_after.as_deref(), Some("1"));
}

#[test]
fn kube_default_retry_waits_for_retry_after() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.fault_next(Route::GetPod, 2, Fault::StatusRetryAfter(503, 1));
    run(async {
        let pods: Api<Pod> =
            Api::namespaced(kube::Client::try_from(config(&kc).await).unwrap(), "team");
        pods.get("web").await.unwrap();
    });
    let log = fake.requests();
    let statuses: Vec<_> = log.iter().map(|l| l.status).collect();
    assert_eq!(statuses, vec![Some(503), Some(503), Some(200)]);
    for w in log.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    }
}

#[test]
fn a_fault_can_target_one_path() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.add_nad(nad_object("team", "red", None));
    let red = "/apis/k8s.cni.cncf.io/v1/namespaces/team/network-attachment-definitions/red";
    fake.fault_next_path(red, 1, Fault::Status(500));
    let codes = run(async {
        let nads = nad_api(client(&kc).await, "team");
        let mut codes = Vec::new();
        for name in ["blue", "red", "red"] {
            let r = nads.get(name).await;
            codes.push(r.map(|_| 200).unwrap_or_else(|e| api_code(&e).unwrap()));
        }
        codes
    });
    assert_eq!(codes, vec![200, 500, 200]);
}

#[test]
fn a_global_fault_lasts_until_cleared() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.set_fault(Fault::Status(503));
    let codes = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        let mut codes = Vec::new();
        for i in 0..3 {
            if i == 2 {
                fake.clear_faults();
            }
            codes.push(
                pods.get("web")
                    .await
                    .map(|_| 200)
                    .unwrap_or_else(|e| api_code(&e).unwrap()),
            );
        }
        codes
    });
    assert_eq!(codes, vec![503, 503, 200]);
}

#[test]
fn a_closed_port_refuses_connections_and_reopens_on_the_same_port() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await.unwrap();
        fake.set_fault(Fault::ClosedPort);
        let e = pods.get("web").await.unwrap_err();
        assert_eq!(
            api_code(&e),
            None,
            "a refused connection, not an API status: {e:?}"
        );
        let direct = std::net::TcpStream::connect(fake.addr());
        assert_eq!(
            direct.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        fake.clear_faults();
        pods.get("web").await.unwrap();
    });
}

#[test]
fn a_kubeconfig_naming_a_closed_port_fails_fast_without_a_status() {
    let (fake, dir, _kc) = fixture(FakeOptions::default());
    let kc = fake.kubeconfig_for(dir.path(), "kubeconfig-closed", &FakeApi::closed_port_url());
    let (r, took) = run(timed_get(&kc, Duration::from_secs(5)));
    let e = r.unwrap_err();
    assert_eq!(api_code(&e), None, "{e:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(fake.requests().is_empty());
}

#[test]
fn the_certificate_is_valid_for_localhost_too() {
    let (fake, dir, _kc) = fixture(FakeOptions::default());
    let url = format!("https://localhost:{}", fake.addr().port());
    let kc = fake.kubeconfig_for(dir.path(), "kubeconfig-localhost", &url);
    let (r, _) = run(timed_get(&kc, Duration::from_secs(5)));
    r.unwrap();
}

#[test]
fn closed_port_url_refuses_connections() {
    let url = FakeApi::closed_port_url();
    let addr = url.strip_prefix("https://").unwrap();
    let e = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

async fn timed_get(kc: &Path, read_timeout: Duration) -> (Result<Pod, kube::Error>, Duration) {
    let mut cfg = config(kc).await;
    cfg.default_retry = false;
    cfg.read_timeout = Some(read_timeout);
    cfg.connect_timeout = Some(read_timeout);
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg).expect("kube client"), "team");
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), pods.get("web"))
        .await
        .expect("the client's own timeout fires first");
    (r, t.elapsed())
}

#[test]
fn a_hung_request_runs_into_the_client_read_timeout() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.set_fault(Fault::Hang);
    let (r, took) = run(timed_get(&kc, Duration::from_millis(500)));
    assert!(r.is_err());
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        fake.requests()[0].status,
        None,
        "a hung request is never answered"
    );
}

#[test]
fn a_hung_accept_never_completes_the_tls_handshake() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.set_fault(Fault::HangAccept);
    let (r, _) = run(async {
        let mut cfg = config(&kc).await;
        cfg.default_retry = false;
        cfg.read_timeout = Some(Duration::from_millis(500));
        let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "team");
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), pods.get("web")).await;
        (r, t.elapsed())
    });
    assert!(
        matches!(r, Err(_) | Ok(Err(_))),
        "no answer expected: {r:?}"
    );
    assert!(fake.requests().is_empty(), "no HTTP request gets through");
}

#[test]
fn a_dropped_request_closes_the_connection_without_an_answer() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.fault_next(Route::GetPod, 1, Fault::Drop);
    let (r, _) = run(timed_get(&kc, Duration::from_secs(5)));
    let e = r.unwrap_err();
    assert_eq!(api_code(&e), None, "{e:?}");
    assert_eq!(fake.requests()[0].status, None);
}

#[test]
fn latency_delays_the_answer() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.fault_next(Route::Any, 1, Fault::Latency(Duration::from_millis(700)));
    let (r, took) = run(timed_get(&kc, Duration::from_secs(5)));
    r.unwrap();
    assert!(took >= Duration::from_millis(700), "{took:?}");
}

#[test]
fn a_huge_body_carries_the_padding() {
    let (fake, _dir, kc) = fixture(FakeOptions::default());
    fake.fault_next(Route::GetPod, 1, Fault::HugeBody(8 << 20));
    let len = run(async {
        let c = client(&kc).await;
        let req = hyper::Request::get("/api/v1/namespaces/team/pods/web")
            .body(Vec::new())
            .unwrap();
        c.request_text(req).await.unwrap().len()
    });
    assert!(len > 8 << 20, "{len}");
}

#[test]
fn a_kubeconfig_with_the_wrong_ca_fails_the_tls_handshake() {
    let (fake, dir, _kc) = fixture(FakeOptions::default());
    let bad = fake.kubeconfig_untrusted(dir.path());
    let r = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&bad).await, "team");
        pods.get("web").await
    });
    let e = r.unwrap_err();
    assert_eq!(api_code(&e), None, "{e:?}");
    assert!(
        fake.requests().is_empty(),
        "nothing reaches HTTP over an untrusted connection"
    );
}

#[test]
fn a_token_file_is_read_and_can_be_rotated() {
    let (fake, dir, _kc) = fixture(FakeOptions::default());
    let (kc, token_file) = fake.kubeconfig_with_token_file(dir.path());
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await.unwrap();
    });
    fake.set_token("second-token");
    std::fs::write(&token_file, "second-token").unwrap();
    // A fresh client, like a fresh plexus invocation, reads the new token.
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await.unwrap();
    });
    let statuses: Vec<_> = fake.requests().iter().map(|l| l.status).collect();
    assert_eq!(statuses, vec![Some(200), Some(200)]);
}

#[test]
fn plain_http_mode_serves_the_same_api() {
    let (fake, _dir, kc) = fixture(FakeOptions {
        tls: false,
        ..FakeOptions::default()
    });
    assert!(fake.url().starts_with("http://127.0.0.1:"));
    let pod = run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await.unwrap()
    });
    assert_eq!(pod.metadata.name.as_deref(), Some("web"));
}

#[test]
fn the_fake_serves_inside_a_node_netns() {
    common::enter_node_netns();
    let (fake, dir, kc) = fixture(FakeOptions::default());
    let out = std::process::Command::new("ss")
        .args(["-Hltn"])
        .output()
        .unwrap();
    let listening = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listening.contains(&fake.addr().to_string()), "{listening}");
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&kc).await, "team");
        pods.get("web").await.unwrap();
    });
    // A child process, as plexus will be, reaches it too, with the CA from the fake.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", fake.token()))
        .arg(format!("{}/api/v1/namespaces/team/pods/web", fake.url()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pod["metadata"]["uid"], UID);
}

#[test]
fn merge_patch_follows_rfc_7386() {
    // The examples of RFC 7386 appendix A.
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (mut target, patch, want) in cases {
        let before = target.clone();
        merge_patch(&mut target, &patch);
        assert_eq!(target, want, "{before} + {patch}");
    }
}

#[test]
fn json_patch_applies_add_remove_replace_and_test() {
    let mut v = json!({"metadata": {"annotations": {"a/b": "1"}}, "list": [1, 2]});
    json_patch(
        &mut v,
        &json!([
            {"op": "test", "path": "/metadata/annotations/a~1b", "value": "1"},
            {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "remove", "path": "/list/0"}
        ]),
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"metadata": {"annotations": {"a/b": "2"}}, "list": [2, 3]})
    );
    let err = json_patch(
        &mut v,
        &json!([{"op": "test", "path": "/list/0", "value": 9}]),
    );
    assert!(err.is_err());
}
