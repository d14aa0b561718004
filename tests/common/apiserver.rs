//! A fake Kubernetes API server for the binary-level tests: real HTTP/1.1 over TLS (a CA and a
//! server certificate made at start), bearer-token auth, an object store for pods, NADs and
//! events, merge-patch semantics on `pods/status`, NAD/pod watches, scriptable faults and a log of
//! every request as received.
//!
//! The server listens on 127.0.0.1 of the network namespace of the thread that calls
//! [`FakeApi::start`]: its serving thread is spawned from there and threads inherit the creating
//! thread's netns. A test that entered its own "node" netns therefore gets a private server that
//! the `plexus` binary, spawned from the same thread, can reach.
//!
//! It is not an apiserver: only the routes Plexus needs exist, label selectors are ignored, and
//! field selectors are read on any dotted path (`metadata.name`, `spec.nodeName`).
//!
//! ```text
//! common::enter_node_netns();
//! let fake = FakeApi::start(FakeOptions::default());
//! fake.add_pod(pod_object("team", "web", UID, &[("k8s.v1.cni.cncf.io/networks", "blue")]));
//! fake.add_nad(nad_object("team", "blue", Some(&conf)));
//! let kubeconfig = fake.kubeconfig(world.tmp.path());     // "kubeconfig" key of the conf
//! fake.fault_next(Route::PatchPodStatus, 1, Fault::Status(409));
//! ... run plexus ...
//! assert!(fake.disallowed_requests().is_empty());
//! assert_eq!(fake.requests_for(Route::PatchPodStatus).len(), 2);
//! ```
//!
//! kube-client 5 retries 429/503/504 by itself unless `Config::default_retry` is false (up to
//! 15 times, honouring `Retry-After`); the request log shows every attempt.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, oneshot, watch};

mod fields;
pub mod patch;
mod routes;
mod serve;
mod tls;

use serve::{accept_loop, bind};
use tls::{Pki, kubeconfig_text, write_private};

const NAD_API: &str = "k8s.cni.cncf.io/v1";
const NAD_PLURAL: &str = "network-attachment-definitions";

/// How the fake starts.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The bearer token every request must carry; changeable later with [`FakeApi::set_token`].
    pub token: String,
    /// HTTPS when true (the default), plain HTTP otherwise.
    pub tls: bool,
}

impl Default for FakeOptions {
    fn default() -> FakeOptions {
        FakeOptions {
            token: "plexus-fake-token".into(),
            tls: true,
        }
    }
}

/// A misbehaviour, either for every request ([`FakeApi::set_fault`]) or for the next few
/// requests of one route ([`FakeApi::fault_next`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Stop listening: connections are refused, open ones are closed. Per request: like `Drop`.
    ClosedPort,
    /// Accept TCP connections and never start TLS or read them. Per request: like `Hang`.
    HangAccept,
    /// Read the request and never answer.
    Hang,
    /// Read the request and close the connection without an answer.
    Drop,
    /// Answer with a Kubernetes `Status` of this code (429 carries `Retry-After: 1`).
    Status(u16),
    /// Answer with a `Status` of this code and `Retry-After: <seconds>`.
    StatusRetryAfter(u16, u64),
    /// Wait this long, then answer normally.
    Latency(Duration),
    /// Answer normally with this many bytes of padding added to the JSON body.
    HugeBody(usize),
}

/// What a request asked for, as far as faults and assertions care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Matches every request (only meaningful in [`FakeApi::fault_next`]).
    Any,
    GetPod,
    ListPods,
    WatchPods,
    /// PATCH on `pods/{name}/status`.
    PatchPodStatus,
    /// PATCH on `pods/{name}` itself.
    PatchPod,
    /// PUT on `pods/{name}` or `pods/{name}/status`: a full update, which Plexus must never do.
    PutPod,
    GetNad,
    ListNads,
    WatchNads,
    /// POST of a core/v1 or events.k8s.io/v1 event.
    CreateEvent,
    PatchEvent,
    Version,
    Other,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// The path exactly as it came on the wire, percent-encoding intact.
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    pub route: Route,
    /// The status answered; `None` while pending, and for hung or dropped requests.
    pub status: Option<u16>,
    /// When the request arrived (to check backoff and Retry-After spacing).
    pub at: std::time::Instant,
}

impl Logged {
    /// `path?query`, as received.
    pub fn url(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// What a queued fault applies to.
enum FaultTarget {
    Route(Route),
    Path(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Pod,
    Nad,
}

#[derive(Clone, Debug)]
struct Change {
    kind: Kind,
    rv: u64,
    kind_of_change: &'static str,
    object: Value,
}

struct State {
    token: String,
    rv: u64,
    seq: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Change>,
    events: Vec<Value>,
    log: Vec<Logged>,
    fault: Option<Fault>,
    queue: VecDeque<(FaultTarget, Fault, usize)>,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    /// Whether the port should be open (tests set it)...
    listening: watch::Sender<bool>,
    /// ...and whether it is (the accept loop reports it).
    bound: watch::Sender<bool>,
    /// TLS connections accepted, and how many of them speak HTTP/2.
    connections: std::sync::atomic::AtomicUsize,
    h2_connections: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn count_connection(&self, h2: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.connections.fetch_add(1, Relaxed);
        if h2 {
            self.h2_connections.fetch_add(1, Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake; dropping it stops the server and every connection and watch.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    ca_pem: String,
    other_ca_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    pub fn start(opts: FakeOptions) -> FakeApi {
        let pki = Pki::generate();
        let other_ca_pem = Pki::generate().ca_pem;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token: opts.token,
                rv: 1000,
                seq: 0,
                objects: BTreeMap::new(),
                history: Vec::new(),
                events: Vec::new(),
                log: Vec::new(),
                fault: None,
                queue: VecDeque::new(),
            }),
            changes: broadcast::channel(1024).0,
            listening: watch::channel(true).0,
            bound: watch::channel(true).0,
            connections: Default::default(),
            h2_connections: Default::default(),
        });
        let acceptor = opts.tls.then(|| pki.acceptor());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake apiserver runtime");
                rt.block_on(async move {
                    let listener = bind("127.0.0.1:0".parse().expect("loopback address"))
                        .expect("bind the fake apiserver on 127.0.0.1");
                    let addr = listener.local_addr().expect("fake apiserver address");
                    let _ = addr_tx.send(addr);
                    tokio::select! {
                        _ = accept_loop(listener, addr, server_shared, acceptor) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .expect("spawn the fake apiserver thread");
        let addr = addr_rx.recv().expect("fake apiserver started");
        FakeApi {
            shared,
            addr,
            tls: opts.tls,
            ca_pem: pki.ca_pem,
            other_ca_pem,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>` (or `http://` without TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A URL on 127.0.0.1 where nothing listens (bound then released, in the calling thread's
    /// netns; nothing else binds ports in a test's private netns).
    pub fn closed_port_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let addr = l.local_addr().expect("probe port address");
        drop(l);
        format!("https://{addr}")
    }

    pub fn token(&self) -> String {
        self.shared.lock().token.clone()
    }

    /// From now on only `token` is accepted (token rotation).
    pub fn set_token(&self, token: &str) {
        self.shared.lock().token = token.to_string();
    }

    /// Stores a pod (JSON of a v1 Pod); fills in resourceVersion, uid and creationTimestamp and
    /// returns what is stored. Replaces a pod of the same name.
    pub fn add_pod(&self, pod: Value) -> Value {
        self.put_object(Kind::Pod, pod)
    }

    /// Replaces a stored pod (watchers see MODIFIED).
    pub fn update_pod(&self, pod: Value) -> Value {
        self.put_object(Kind::Pod, pod)
    }

    pub fn delete_pod(&self, ns: &str, name: &str) -> bool {
        self.remove_object(Kind::Pod, ns, name)
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(Kind::Pod, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Stores a NetworkAttachmentDefinition (watchers see ADDED or MODIFIED).
    pub fn add_nad(&self, nad: Value) -> Value {
        self.put_object(Kind::Nad, nad)
    }

    pub fn update_nad(&self, nad: Value) -> Value {
        self.put_object(Kind::Nad, nad)
    }

    pub fn delete_nad(&self, ns: &str, name: &str) -> bool {
        self.remove_object(Kind::Nad, ns, name)
    }

    pub fn nad(&self, ns: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&(Kind::Nad, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every event created so far (either API group), as stored.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// TLS connections accepted so far: (all, those that negotiated HTTP/2).
    pub fn connections(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.connections.load(Relaxed),
            self.shared.h2_connections.load(Relaxed),
        )
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    pub fn requests_for(&self, route: Route) -> Vec<Logged> {
        let log = self.shared.lock().log.clone();
        log.into_iter().filter(|l| l.route == route).collect()
    }

    /// Requests outside the least-privilege ClusterRole (pods get, pods/status patch, NADs
    /// get/list/watch, events create/patch) or with a path a careful URL builder never makes
    /// (`..`, `.`, an empty segment, percent-encoding, `%2F` included).
    pub fn disallowed_requests(&self) -> Vec<Logged> {
        const ALLOWED: [Route; 7] = [
            Route::GetPod,
            Route::PatchPodStatus,
            Route::GetNad,
            Route::ListNads,
            Route::WatchNads,
            Route::CreateEvent,
            Route::PatchEvent,
        ];
        let suspicious = |p: &str| {
            p.contains('%')
                || p.trim_start_matches('/')
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
        };
        let log = self.shared.lock().log.clone();
        log.into_iter()
            .filter(|l| !ALLOWED.contains(&l.route) || suspicious(&l.path))
            .collect()
    }

    /// Applies `fault` to every request (and, for `ClosedPort`/`HangAccept`, to the listener)
    /// until [`FakeApi::clear_faults`]. Queued faults take precedence.
    pub fn set_fault(&self, fault: Fault) {
        let closed = fault == Fault::ClosedPort;
        self.shared.lock().fault = Some(fault);
        self.shared.listening.send_replace(!closed);
        self.await_bound(!closed);
    }

    /// Applies `fault` to the next `n` requests matching `route`, after faults queued earlier.
    pub fn fault_next(&self, route: Route, n: usize, fault: Fault) {
        if n > 0 {
            let t = FaultTarget::Route(route);
            self.shared.lock().queue.push_back((t, fault, n));
        }
    }

    /// Applies `fault` to the next `n` requests whose raw path is exactly `path` (one NAD out
    /// of several, say).
    pub fn fault_next_path(&self, path: &str, n: usize, fault: Fault) {
        if n > 0 {
            let t = FaultTarget::Path(path.to_string());
            self.shared.lock().queue.push_back((t, fault, n));
        }
    }

    /// Removes every fault; a closed port listens again on the same port.
    pub fn clear_faults(&self) {
        {
            let mut st = self.shared.lock();
            st.fault = None;
            st.queue.clear();
        }
        self.shared.listening.send_replace(true);
        self.await_bound(true);
    }

    // So that a test's next step already meets a closed (or reopened) port.
    fn await_bound(&self, want: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let bound = self.shared.bound.subscribe();
        while *bound.borrow() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "the fake apiserver did not {} its port",
                if want { "reopen" } else { "close" }
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Writes `dir/kubeconfig` (mode 0600): this server, its CA and the token inline.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let user = format!("token: {}", self.token());
        write_private(
            &dir.join("kubeconfig"),
            &kubeconfig_text(&self.url(), &self.ca_pem, &user),
        )
    }

    /// Writes `dir/token` and `dir/kubeconfig-tokenfile` naming it with `tokenFile`; returns
    /// `(kubeconfig, token_file)`. Rotate by rewriting the file and calling `set_token`.
    pub fn kubeconfig_with_token_file(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let token_file = write_private(&dir.join("token"), &self.token());
        let user = format!("tokenFile: {}", token_file.display());
        let kc = write_private(
            &dir.join("kubeconfig-tokenfile"),
            &kubeconfig_text(&self.url(), &self.ca_pem, &user),
        );
        (kc, token_file)
    }

    /// Writes `dir/<file>` like [`FakeApi::kubeconfig`] but naming `server` (for instance
    /// [`FakeApi::closed_port_url`], or `https://localhost:<port>`).
    pub fn kubeconfig_for(&self, dir: &Path, file: &str, server: &str) -> PathBuf {
        let user = format!("token: {}", self.token());
        write_private(
            &dir.join(file),
            &kubeconfig_text(server, &self.ca_pem, &user),
        )
    }

    /// Writes `dir/kubeconfig-untrusted`: right server and token, but a CA that did not sign
    /// the server certificate.
    pub fn kubeconfig_untrusted(&self, dir: &Path) -> PathBuf {
        let user = format!("token: {}", self.token());
        write_private(
            &dir.join("kubeconfig-untrusted"),
            &kubeconfig_text(&self.url(), &self.other_ca_pem, &user),
        )
    }

    fn put_object(&self, kind: Kind, mut obj: Value) -> Value {
        let (ns, name) = ns_name(&obj);
        let mut st = self.shared.lock();
        let existed = st.objects.contains_key(&(kind, ns.clone(), name.clone()));
        let rv = st.next_rv();
        let uid = st.next_uid();
        let meta = obj
            .as_object_mut()
            .expect("a stored object is a JSON object")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if let Value::Object(m) = meta {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            m.entry("uid").or_insert(json!(uid));
            m.entry("creationTimestamp")
                .or_insert(json!("2026-01-01T00:00:00Z"));
        }
        let (api, k) = match kind {
            Kind::Pod => ("v1", "Pod"),
            Kind::Nad => (NAD_API, "NetworkAttachmentDefinition"),
        };
        if let Value::Object(m) = &mut obj {
            m.entry("apiVersion").or_insert(json!(api));
            m.entry("kind").or_insert(json!(k));
        }
        let change = if existed { "MODIFIED" } else { "ADDED" };
        st.store(&self.shared, kind, ns, name, obj.clone(), rv, change);
        obj
    }

    fn remove_object(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let mut st = self.shared.lock();
        let Some(mut obj) = st.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            return false;
        };
        let rv = st.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.record_change(&self.shared, kind, rv, "DELETED", obj);
        true
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A v1 Pod with the given uid and annotations, for [`FakeApi::add_pod`].
pub fn pod_object(ns: &str, name: &str, uid: &str, annotations: &[(&str, &str)]) -> Value {
    let ann: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": ann},
        "spec": {"containers": [{"name": "c", "image": "pause"}], "nodeName": "node-1"},
        "status": {"phase": "Pending", "podIP": "10.0.0.9", "hostIP": "192.168.0.1"}
    })
}

/// A NetworkAttachmentDefinition whose `spec.config` is `config` serialised; `None` gives an
/// empty spec.
pub fn nad_object(ns: &str, name: &str, config: Option<&Value>) -> Value {
    let spec = match config {
        Some(c) => json!({"config": c.to_string()}),
        None => json!({}),
    };
    json!({
        "apiVersion": NAD_API, "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    })
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn next_uid(&mut self) -> String {
        self.seq += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.seq)
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        shared: &Shared,
        kind: Kind,
        ns: String,
        name: String,
        obj: Value,
        rv: u64,
        change: &'static str,
    ) {
        self.objects.insert((kind, ns, name), obj.clone());
        self.record_change(shared, kind, rv, change, obj);
    }

    // Sent under the state lock so that a watch which snapshots and subscribes under the same
    // lock sees every change exactly once.
    fn record_change(
        &mut self,
        shared: &Shared,
        kind: Kind,
        rv: u64,
        what: &'static str,
        obj: Value,
    ) {
        let c = Change {
            kind,
            rv,
            kind_of_change: what,
            object: obj,
        };
        self.history.push(c.clone());
        let _ = shared.changes.send(c);
    }

    fn take_fault(&mut self, route: Route, path: &str) -> Option<Fault> {
        let i = self.queue.iter().position(|(t, _, _)| match t {
            FaultTarget::Route(r) => *r == Route::Any || *r == route,
            FaultTarget::Path(p) => p == path,
        });
        if let Some(i) = i {
            let fault = self.queue[i].1.clone();
            self.queue[i].2 -= 1;
            if self.queue[i].2 == 0 {
                self.queue.remove(i);
            }
            return Some(fault);
        }
        self.fault.clone()
    }
}

fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("default").to_string(),
        m["name"]
            .as_str()
            .expect("a stored object has metadata.name")
            .to_string(),
    )
}
