//! Request shapes and retry behaviour of the API store, against a scripted `tower_test` mock
//! of the API server (the binary-level tests use a real HTTPS fake: tests/kube_store.rs).

use super::*;
use ::kube::client::Body;
use std::sync::{Arc, Mutex};
use tower_test::mock;

type Handle = mock::Handle<http::Request<Body>, http::Response<Body>>;

/// What the scripted server answers to one request.
enum Reply {
    Json(u16, &'static str),
    WithRetryAfter(u16, &'static str),
    /// The connection fails (refused, reset).
    Transport,
    /// Never answers.
    Hang,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A store over a mock whose replies follow `script`, answering 500 past its end. The
/// returned log fills as requests arrive.
fn scripted(opts: KubeOptions, script: Vec<Reply>) -> (KubeStore, Arc<Mutex<Vec<Seen>>>) {
    let (svc, handle) = mock::pair::<http::Request<Body>, http::Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let server_log = log.clone();
    std::thread::spawn(move || serve(handle, script, server_log));
    let store = KubeStore::with_client(|| Client::new(svc, "default"), opts).unwrap();
    (store, log)
}

fn serve(mut handle: Handle, script: Vec<Reply>, log: Arc<Mutex<Vec<Seen>>>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut script = script.into_iter();
        let mut hung = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap().to_vec();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string()),
                body,
            });
            let response = |status: u16, body: &str| {
                {
                    http::Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "application/json")
                }
                .body(Body::from(body.as_bytes().to_vec()))
                .unwrap()
            };
            match script.next() {
                Some(Reply::Json(status, body)) => send.send_response(response(status, body)),
                Some(Reply::WithRetryAfter(secs, body)) => send.send_response(
                    http::Response::builder()
                        .status(429)
                        .header(http::header::RETRY_AFTER, secs.to_string())
                        .body(Body::from(body.as_bytes().to_vec()))
                        .unwrap(),
                ),
                Some(Reply::Transport) => send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )),
                Some(Reply::Hang) => hung.push(send),
                None => send.send_response(response(500, r#"{"message":"unscripted"}"#)),
            }
        }
    });
}

fn fast() -> KubeOptions {
    KubeOptions {
        connect_timeout: Duration::from_millis(100),
        read_timeout: Duration::from_millis(100),
        backoff: Duration::from_millis(10),
        retry_after_cap: Duration::from_millis(300),
        ..KubeOptions::default()
    }
}

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default",
  "uid":"0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c",
  "annotations":{"k8s.v1.cni.cncf.io/networks":"blue","other":"x"}},
  "spec":{"containers":[]},"status":{"phase":"Pending"}}"#;
const NAD: &str = r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
  "metadata":{"name":"blue","namespace":"team","annotations":{"k8s.v1.cni.cncf.io/resourceName":"intel.com/sriov"}},
  "spec":{"config":"{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}}"#;
const NOT_FOUND: &str =
    r#"{"kind":"Status","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#;
const CONFLICT: &str = r#"{"kind":"Status","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified"}"#;

#[test]
fn get_pod_reads_uid_and_annotations() {
    let (store, log) = scripted(fast(), vec![Reply::Json(200, POD)]);
    let pod = store.pod("default", "web").unwrap().unwrap();
    assert_eq!(
        pod.uid.as_deref(),
        Some("0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c")
    );
    assert_eq!(pod.annotations["k8s.v1.cni.cncf.io/networks"], "blue");
    assert_eq!(pod.annotations["other"], "x");
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("default", "web")
    );
    let seen = seen(&log);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].uri, "/api/v1/namespaces/default/pods/web");
}

#[test]
fn missing_pod_and_nad_are_none_without_retries() {
    let (store, log) = scripted(
        fast(),
        vec![Reply::Json(404, NOT_FOUND), Reply::Json(404, NOT_FOUND)],
    );
    assert_eq!(store.pod("default", "gone").unwrap(), None);
    assert_eq!(store.nad("team", "gone").unwrap(), None);
    assert_eq!(seen(&log).len(), 2);
}

#[test]
fn get_nad_reads_config_and_annotations() {
    let (store, log) = scripted(fast(), vec![Reply::Json(200, NAD)]);
    let nad = store.nad("team", "blue").unwrap().unwrap();
    assert_eq!(
        nad.config.as_deref(),
        Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#)
    );
    assert_eq!(
        nad.annotations["k8s.v1.cni.cncf.io/resourceName"],
        "intel.com/sriov"
    );
    assert_eq!(
        seen(&log)[0].uri,
        "/apis/k8s.cni.cncf.io/v1/namespaces/team/network-attachment-definitions/blue"
    );
}

#[test]
fn nad_without_spec_has_no_config() {
    let (store, _log) = scripted(
        fast(),
        vec![Reply::Json(
            200,
            r#"{"metadata":{"name":"blue","namespace":"team"}}"#,
        )],
    );
    let nad = store.nad("team", "blue").unwrap().unwrap();
    assert_eq!(nad.config, None);
    assert!(nad.annotations.is_empty());
}

#[test]
fn publish_status_is_a_merge_patch_of_one_annotation_on_the_status_subresource() {
    let (store, log) = scripted(fast(), vec![Reply::Json(200, POD)]);
    let status = r#"[{"name":"cluster","interface":"eth0","ips":["10.0.0.5"],"default":true}]"#;
    store.publish_status("default", "web", status).unwrap();
    let seen = seen(&log);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(
        seen[0].uri.trim_end_matches('?'),
        "/api/v1/namespaces/default/pods/web/status"
    );
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    // Exactly one key in the whole document: no spec, no status, no resourceVersion.
    assert_eq!(
        seen[0].json(),
        serde_json::json!({"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status": status}}})
    );
}

#[test]
fn publish_status_retries_a_conflict() {
    let (store, log) = scripted(
        fast(),
        vec![Reply::Json(409, CONFLICT), Reply::Json(200, POD)],
    );
    store.publish_status("default", "web", "[]").unwrap();
    let seen = seen(&log);
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.method == "PATCH"));
    assert_eq!(seen[0].body, seen[1].body);
}

#[test]
fn publish_status_gives_up_after_persistent_conflicts() {
    let (store, log) = scripted(
        fast(),
        vec![
            Reply::Json(409, CONFLICT),
            Reply::Json(409, CONFLICT),
            Reply::Json(409, CONFLICT),
        ],
    );
    let e = store.publish_status("default", "web", "[]").unwrap_err();
    assert_eq!(e.code(), 11);
    assert!(e.to_string().contains("409"), "{e}");
    assert_eq!(seen(&log).len(), 3);
}

#[test]
fn publish_status_tolerates_a_pod_that_is_gone() {
    let (store, log) = scripted(fast(), vec![Reply::Json(404, NOT_FOUND)]);
    store.publish_status("default", "web", "[]").unwrap();
    assert_eq!(seen(&log).len(), 1);
}

#[test]
fn publish_status_fails_on_forbidden_without_retrying() {
    let (store, log) = scripted(
        fast(),
        vec![Reply::Json(
            403,
            r#"{"kind":"Status","code":403,"message":"pods \"web\" is forbidden"}"#,
        )],
    );
    let e = store.publish_status("default", "web", "[]").unwrap_err();
    assert_eq!(e.code(), 11);
    assert!(
        e.to_string()
            .contains("HTTP 403: pods \"web\" is forbidden"),
        "{e}"
    );
    assert_eq!(seen(&log).len(), 1);
}

#[test]
fn server_errors_and_refused_connections_are_retried() {
    let (store, log) = scripted(
        fast(),
        vec![
            Reply::Json(503, r#"{"message":"etcd leader changed"}"#),
            Reply::Transport,
            Reply::Json(200, POD),
        ],
    );
    assert!(store.pod("default", "web").unwrap().is_some());
    assert_eq!(seen(&log).len(), 3);
}

#[test]
fn retries_are_bounded_and_end_in_code_11() {
    let (store, log) = scripted(
        fast(),
        vec![
            Reply::Json(500, "{}"),
            Reply::Json(502, "{}"),
            Reply::Json(503, r#"{"message":"still down"}"#),
            Reply::Json(200, POD),
        ],
    );
    let e = store.pod("default", "web").unwrap_err();
    assert_eq!(e.code(), 11);
    let msg = e.to_string();
    assert!(msg.contains("GET pod default/web"), "{msg}");
    assert!(msg.contains("HTTP 503: still down"), "{msg}");
    assert!(msg.contains("3 attempt"), "{msg}");
    assert_eq!(seen(&log).len(), 3);
}

#[test]
fn retry_after_is_honoured_up_to_the_cap() {
    let opts = KubeOptions {
        retry_after_cap: Duration::from_millis(400),
        ..fast()
    };
    let (store, log) = scripted(
        opts,
        vec![Reply::WithRetryAfter(1, "{}"), Reply::Json(200, POD)],
    );
    let started = Instant::now();
    assert!(store.pod("default", "web").unwrap().is_some());
    let took = started.elapsed();
    // Retry-After: 1 s asked, capped at 400 ms; the plain backoff would be 10 ms.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert_eq!(seen(&log).len(), 2);
}

#[test]
fn a_hanging_server_times_out_within_the_bound() {
    let (store, log) = scripted(fast(), vec![Reply::Hang, Reply::Hang, Reply::Hang]);
    let started = Instant::now();
    let e = store.nad("team", "blue").unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), 11);
    assert!(e.to_string().contains("no answer"), "{e}");
    // 3 × (100 + 100) ms per attempt plus 10 + 20 ms of backoff.
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(seen(&log).len(), 3);
}

#[test]
fn the_deadline_bounds_all_attempts() {
    // Without the deadline: 3 × (500 + 500) ms.
    let opts = KubeOptions {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        deadline: Duration::from_millis(250),
        ..fast()
    };
    let (store, log) = scripted(opts, vec![Reply::Hang, Reply::Hang, Reply::Hang]);
    let started = Instant::now();
    assert_eq!(store.pod("default", "web").unwrap_err().code(), 11);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // The first attempt used the whole deadline: no second one.
    assert_eq!(seen(&log).len(), 1);
}

#[test]
fn names_that_are_not_dns_1123_never_reach_a_url() {
    let (store, log) = scripted(fast(), vec![]);
    let long = "a".repeat(254);
    for (ns, name) in [
        ("default", "../x"),
        ("default", "a%2Fb"),
        ("default", "a/b"),
        ("default", "A_b"),
        ("default", ""),
        ("default", long.as_str()),
        ("..", "web"),
        ("a.b", "web"),
        ("kube-system/..", "web"),
    ] {
        assert_eq!(store.pod(ns, name).unwrap_err().code(), 7, "{ns}/{name}");
        assert_eq!(store.nad(ns, name).unwrap_err().code(), 7, "{ns}/{name}");
        assert_eq!(
            store.publish_status(ns, name, "[]").unwrap_err().code(),
            7,
            "{ns}/{name}"
        );
        let pod = Pod {
            namespace: ns.into(),
            name: name.into(),
            ..Pod::default()
        };
        let event = PodEvent {
            reason: "r".into(),
            message: "m".into(),
            warning: false,
        };
        assert_eq!(store.event(&pod, &event).unwrap_err().code(), 7);
    }
    drop(store);
    assert!(seen(&log).is_empty());
}

#[test]
fn events_are_posted_about_the_pod() {
    let (store, log) = scripted(fast(), vec![Reply::Json(201, "{}")]);
    let pod = Pod {
        namespace: "default".into(),
        name: "web".into(),
        uid: Some("0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c".into()),
        annotations: BTreeMap::new(),
    };
    store
        .event(
            &pod,
            &PodEvent {
                reason: "AttachFailed".into(),
                message: "network team/blue on net1: boom".into(),
                warning: true,
            },
        )
        .unwrap();
    let seen = seen(&log);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].uri.trim_end_matches('?'),
        "/api/v1/namespaces/default/events"
    );
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    let e = seen[0].json();
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["kind"], "Event");
    assert_eq!(e["involvedObject"]["kind"], "Pod");
    assert_eq!(e["involvedObject"]["name"], "web");
    assert_eq!(e["involvedObject"]["namespace"], "default");
    assert_eq!(
        e["involvedObject"]["uid"],
        "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c"
    );
    assert_eq!(e["reason"], "AttachFailed");
    assert_eq!(e["message"], "network team/blue on net1: boom");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["source"]["component"], "plexus");
    assert_eq!(e["reportingComponent"], "plexus");
    assert_eq!(e["count"], 1);
    assert_eq!(e["metadata"]["namespace"], "default");
    let name = e["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web."), "{name}");
    assert!(crate::pod::is_dns1123_subdomain(name), "{name}");
}

#[test]
fn event_names_and_messages_stay_within_api_limits() {
    // A valid pod name of the full 253 characters.
    let long_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
    assert!(crate::pod::is_dns1123_subdomain(&long_name));
    let pod = Pod {
        namespace: "default".into(),
        name: long_name,
        ..Pod::default()
    };
    let event = PodEvent {
        reason: "AddedInterface".into(),
        message: "é".repeat(2000),
        warning: false,
    };
    let e = event::event_object(&pod, &event, "node-1");
    let name = e.metadata.name.unwrap();
    assert!(name.len() <= 253, "{}", name.len());
    assert!(crate::pod::is_dns1123_subdomain(&name), "{name}");
    let message = e.message.unwrap();
    assert!(message.len() <= event::EVENT_MESSAGE_LIMIT);
    assert!(message.len() > event::EVENT_MESSAGE_LIMIT - 2);
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(e.source.unwrap().host.as_deref(), Some("node-1"));
}

#[test]
fn store_kind_and_pod_authority() {
    let (store, _log) = scripted(fast(), vec![]);
    let dynamic: &dyn NetworkStore = &store;
    assert_eq!(dynamic.kind(), "kubernetes");
    assert!(dynamic.knows_every_pod());
}

#[test]
fn a_kubeconfig_that_is_missing_is_11_and_one_that_is_bad_is_7() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    assert_eq!(
        KubeStore::connect(&missing, KubeOptions::default())
            .unwrap_err()
            .code(),
        11
    );
    let bad = dir.path().join("bad.kubeconfig");
    std::fs::write(&bad, "clusters: [oops").unwrap();
    assert_eq!(
        KubeStore::connect(&bad, KubeOptions::default())
            .unwrap_err()
            .code(),
        7
    );
    // No current context: nothing to connect to.
    std::fs::write(&bad, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
    assert_eq!(
        KubeStore::connect(&bad, KubeOptions::default())
            .unwrap_err()
            .code(),
        7
    );
}

fn kubeconfig(dir: &Path, server: &str, user: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n{user}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn plain_http_servers_are_refused_unless_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), "http://10.0.0.1:8001", "    token: abc");
    let e = KubeStore::connect(&path, KubeOptions::default()).unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(e.to_string().contains("not https"), "{e}");
    assert!(e.to_string().contains("loopback"), "{e}");
    let path = kubeconfig(dir.path(), "http://127.0.0.1:8001", "    token: abc");
    assert!(KubeStore::connect(&path, KubeOptions::default()).is_ok());
}

#[test]
fn a_token_file_that_is_missing_is_11_and_connect_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), "https://127.0.0.1:1", "    tokenFile: token");
    assert_eq!(
        KubeStore::connect(&path, KubeOptions::default())
            .unwrap_err()
            .code(),
        11
    );
    // With the token there, connecting needs no server (port 1 refuses everything).
    std::fs::write(dir.path().join("token"), "abc").unwrap();
    KubeStore::connect(&path, KubeOptions::default()).unwrap();
}

#[test]
fn a_refused_connection_ends_in_code_11_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), "https://127.0.0.1:1", "    token: abc");
    let store = KubeStore::connect(&path, fast()).unwrap();
    let started = Instant::now();
    let e = store.pod("default", "web").unwrap_err();
    assert_eq!(e.code(), 11);
    assert!(e.to_string().contains("3 attempt"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn ready_lists_one_nad_cluster_wide() {
    let (store, log) = scripted(
        fast(),
        vec![
            Reply::Json(200, r#"{"kind":"List","items":[]}"#),
            Reply::Json(404, NOT_FOUND),
        ],
    );
    store.ready().unwrap();
    let e = store.ready().unwrap_err();
    assert_eq!(e.code(), 11);
    assert!(e.to_string().contains("CRD is not installed"), "{e}");
    let seen = seen(&log);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions?&limit=1"
    );
}

#[test]
fn options_scale_the_deadline_with_the_read_timeout() {
    assert_eq!(
        KubeOptions::with_read_timeout(Duration::from_secs(5)),
        KubeOptions::default()
    );
    let o = KubeOptions::with_read_timeout(Duration::from_secs(10));
    assert_eq!(o.read_timeout, Duration::from_secs(10));
    assert_eq!(o.deadline, Duration::from_secs(30));
    assert_eq!(o.attempts, 3);
}

#[test]
fn only_loopback_hosts_count_as_this_machine() {
    for host in [
        "127.0.0.1",
        "127.1.2.3",
        "[::1]",
        "::1",
        "localhost",
        "LocalHost",
    ] {
        assert!(is_loopback(Some(host)), "{host}");
    }
    for host in [
        "10.0.0.1",
        "[fd00::1]",
        "localhost.example.com",
        "0.0.0.0",
        "",
    ] {
        assert!(!is_loopback(Some(host)), "{host}");
    }
    assert!(!is_loopback(None));
}
