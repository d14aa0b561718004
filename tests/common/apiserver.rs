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
//! the only field selector understood is `metadata.name=<name>`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, oneshot, watch};

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
    queue: VecDeque<(Route, Fault, usize)>,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    listening: watch::Sender<bool>,
}

impl Shared {
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

    pub fn requests(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// Applies `fault` to every request (and, for `ClosedPort`/`HangAccept`, to the listener)
    /// until [`FakeApi::clear_faults`]. Queued faults take precedence.
    pub fn set_fault(&self, fault: Fault) {
        let closed = fault == Fault::ClosedPort;
        self.shared.lock().fault = Some(fault);
        self.shared.listening.send_replace(!closed);
    }

    /// Applies `fault` to the next `n` requests matching `route`, after faults queued earlier.
    pub fn fault_next(&self, route: Route, n: usize, fault: Fault) {
        if n > 0 {
            self.shared.lock().queue.push_back((route, fault, n));
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

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.shift_remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902 JSON patch, the `add`, `remove`, `replace` and `test` operations.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a json patch is an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without path")?;
        let (parent, last) = match path.rfind('/') {
            Some(i) => (&path[..i], unescape_pointer(&path[i + 1..])),
            None => return Err(format!("bad pointer {path:?}")),
        };
        let value = op.get("value").cloned();
        match op["op"].as_str() {
            Some("test") => {
                if target.pointer(path) != value.as_ref() {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some(kind @ ("add" | "replace" | "remove")) => {
                let exists = target.pointer(path).is_some();
                if kind != "add" && !exists {
                    return Err(format!("{kind}: nothing at {path}"));
                }
                let p = target
                    .pointer_mut(parent)
                    .ok_or(format!("no parent for {path}"))?;
                match (p, kind) {
                    (Value::Object(m), "remove") => {
                        m.shift_remove(&last);
                    }
                    (Value::Object(m), _) => {
                        m.insert(last, value.ok_or("operation without value")?);
                    }
                    (Value::Array(a), _) => {
                        let i = if last == "-" {
                            a.len()
                        } else {
                            last.parse::<usize>().map_err(|e| e.to_string())?
                        };
                        if i > a.len() || (kind != "add" && i >= a.len()) {
                            return Err(format!("index out of range at {path}"));
                        }
                        if kind != "add" {
                            a.remove(i);
                        }
                        if kind != "remove" {
                            a.insert(i, value.ok_or("operation without value")?);
                        }
                    }
                    _ => return Err(format!("parent of {path} is not a container")),
                }
            }
            other => return Err(format!("unsupported json patch op {other:?}")),
        }
    }
    Ok(())
}

fn unescape_pointer(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
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

    fn take_fault(&mut self, route: Route) -> Option<Fault> {
        let i = self
            .queue
            .iter()
            .position(|(r, _, _)| *r == Route::Any || *r == route);
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

fn kubeconfig_text(server: &str, ca_pem: &str, user: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
         user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    {user}\n"
    )
}

fn write_private(path: &Path, text: &str) -> PathBuf {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("create a kubeconfig file");
    f.write_all(text.as_bytes())
        .expect("write a kubeconfig file");
    path.to_path_buf()
}

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn generate() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "plexus fake apiserver ca");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the ca");

        let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("server cert params");
        leaf.distinguished_name
            .push(DnType::CommonName, "plexus fake apiserver");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("server key");
        let issuer = Issuer::new(ca, ca_key);
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("sign the server cert");
        Pki {
            ca_pem: ca_cert.pem(),
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .expect("server tls config");
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }
}

// SO_REUSEADDR lets a closed port be bound again while old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

async fn accept_loop(
    first: tokio::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut open = shared.listening.subscribe();
    let mut listener = Some(first);
    loop {
        if !*open.borrow_and_update() {
            listener = None;
            if open.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                acc = l.accept() => {
                    let Ok((stream, _)) = acc else { continue };
                    let hang = shared.lock().fault == Some(Fault::HangAccept);
                    let closed = shared.listening.subscribe();
                    tokio::spawn(serve_conn(stream, tls.clone(), shared.clone(), closed, hang));
                }
                r = open.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if !*open.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut open: watch::Receiver<bool>,
    hang: bool,
) {
    let conn = async move {
        if hang {
            // Held, never read: the client's TLS handshake waits forever.
            let _held = &stream;
            std::future::pending::<()>().await;
        }
        let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
        let http = hyper::server::conn::http1::Builder::new();
        match tls {
            Some(acceptor) => {
                if let Ok(s) = acceptor.accept(stream).await {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                }
            }
            None => {
                let _ = http
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            }
        }
    };
    // A closed port must not keep serving over connections a client pooled earlier.
    tokio::select! {
        _ = conn => {}
        _ = open.wait_for(|o| !*o) => {}
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a scripted fault")
    }
}

impl std::error::Error for Dropped {}

type Body = Either<Full<Bytes>, Channel<Bytes, Infallible>>;

struct Reply {
    code: u16,
    retry_after: Option<u64>,
    body: ReplyBody,
}

enum ReplyBody {
    Json(Value),
    Stream(Channel<Bytes, Infallible>),
}

impl Reply {
    fn json(code: u16, v: Value) -> Reply {
        Reply {
            code,
            retry_after: None,
            body: ReplyBody::Json(v),
        }
    }
}

fn status(code: u16, message: impl Into<String>) -> Reply {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        504 => "Timeout",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    Reply::json(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message.into(), "reason": reason, "code": code
        }),
    )
}

fn not_found(what: &str, name: &str) -> Reply {
    let mut r = status(404, format!("{what} \"{name}\" not found"));
    if let ReplyBody::Json(v) = &mut r.body {
        v["details"] = json!({"name": name, "kind": what});
    }
    r
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(String::from);
    let params = parse_query(query.as_deref().unwrap_or(""));
    let method = parts.method.as_str().to_string();
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let authorization = header(hyper::header::AUTHORIZATION);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let target = Target::parse(&segs);
    let route = target.route(
        &method,
        params.get("watch").is_some_and(|w| w == "true" || w == "1"),
    );

    let (idx, fault, token) = {
        let mut st = shared.lock();
        st.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: String::from_utf8_lossy(&body).to_string(),
            route,
            status: None,
            at: std::time::Instant::now(),
        });
        (st.log.len() - 1, st.take_fault(route), st.token.clone())
    };

    let mut padding = None;
    let reply = match fault {
        Some(Fault::Hang | Fault::HangAccept) => std::future::pending().await,
        Some(Fault::Drop | Fault::ClosedPort) => return Err(Dropped),
        Some(Fault::Status(code)) => {
            let mut r = status(code, format!("scripted fault {code}"));
            r.retry_after = (code == 429).then_some(1);
            Some(r)
        }
        Some(Fault::StatusRetryAfter(code, secs)) => {
            let mut r = status(code, format!("scripted fault {code}"));
            r.retry_after = Some(secs);
            Some(r)
        }
        Some(Fault::Latency(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(Fault::HugeBody(n)) => {
            padding = Some(n);
            None
        }
        None => None,
    };
    let mut reply = match reply {
        Some(r) => r,
        None if authorization.as_deref() != Some(&format!("Bearer {token}")) => {
            status(401, "Unauthorized")
        }
        None => {
            let ct = content_type.as_deref().unwrap_or("");
            dispatch(&shared, &target, &method, &params, ct, &body)
        }
    };
    if let (Some(n), ReplyBody::Json(Value::Object(m))) = (padding, &mut reply.body) {
        m.insert("padding".into(), json!("x".repeat(n)));
    }
    if let Some(entry) = shared.lock().log.get_mut(idx) {
        entry.status = Some(reply.code);
    }
    let mut resp = Response::builder()
        .status(reply.code)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(s) = reply.retry_after {
        resp = resp.header(hyper::header::RETRY_AFTER, s.to_string());
    }
    let body = match reply.body {
        ReplyBody::Json(v) => Either::Left(Full::new(Bytes::from(v.to_string()))),
        ReplyBody::Stream(c) => Either::Right(c),
    };
    resp.body(body).map_err(|_| Dropped)
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The resource a path names.
enum Target {
    Version,
    /// A collection of pods or NADs; `None` namespace means all namespaces.
    Collection(Kind, Option<String>),
    Item(Kind, String, String),
    PodStatus(String, String),
    Events(String),
    Event(String, String),
    /// A path segment that a client building URLs safely would never send.
    Suspicious,
    Unknown,
}

impl Target {
    fn parse(segs: &[&str]) -> Target {
        if segs
            .iter()
            .any(|s| s.contains('%') || *s == ".." || *s == ".")
        {
            return Target::Suspicious;
        }
        let s = |x: &str| x.to_string();
        match segs {
            ["version"] => Target::Version,
            ["api", "v1", "pods"] => Target::Collection(Kind::Pod, None),
            ["api", "v1", "namespaces", ns, "pods"] => Target::Collection(Kind::Pod, Some(s(ns))),
            ["api", "v1", "namespaces", ns, "pods", n] => Target::Item(Kind::Pod, s(ns), s(n)),
            ["api", "v1", "namespaces", ns, "pods", n, "status"] => Target::PodStatus(s(ns), s(n)),
            ["apis", "k8s.cni.cncf.io", "v1", NAD_PLURAL] => Target::Collection(Kind::Nad, None),
            [
                "apis",
                "k8s.cni.cncf.io",
                "v1",
                "namespaces",
                ns,
                NAD_PLURAL,
            ] => Target::Collection(Kind::Nad, Some(s(ns))),
            [
                "apis",
                "k8s.cni.cncf.io",
                "v1",
                "namespaces",
                ns,
                NAD_PLURAL,
                n,
            ] => Target::Item(Kind::Nad, s(ns), s(n)),
            ["api", "v1", "namespaces", ns, "events"]
            | ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => Target::Events(s(ns)),
            ["api", "v1", "namespaces", ns, "events", n]
            | ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", n] => {
                Target::Event(s(ns), s(n))
            }
            _ => Target::Unknown,
        }
    }

    fn route(&self, method: &str, watch: bool) -> Route {
        match (self, method) {
            (Target::Version, "GET") => Route::Version,
            (Target::Collection(Kind::Pod, _), "GET") if watch => Route::WatchPods,
            (Target::Collection(Kind::Pod, _), "GET") => Route::ListPods,
            (Target::Collection(Kind::Nad, _), "GET") if watch => Route::WatchNads,
            (Target::Collection(Kind::Nad, _), "GET") => Route::ListNads,
            (Target::Item(Kind::Pod, ..), "GET") => Route::GetPod,
            (Target::Item(Kind::Pod, ..), "PATCH") => Route::PatchPod,
            (Target::Item(Kind::Pod, ..) | Target::PodStatus(..), "PUT") => Route::PutPod,
            (Target::PodStatus(..), "PATCH") => Route::PatchPodStatus,
            (Target::PodStatus(..), "GET") => Route::GetPod,
            (Target::Item(Kind::Nad, ..), "GET") => Route::GetNad,
            (Target::Events(_), "POST") => Route::CreateEvent,
            (Target::Event(..), "PATCH") => Route::PatchEvent,
            _ => Route::Other,
        }
    }
}

fn dispatch(
    shared: &Shared,
    target: &Target,
    method: &str,
    params: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Reply {
    let plural = |k: Kind| match k {
        Kind::Pod => "pods",
        Kind::Nad => NAD_PLURAL,
    };
    match (target, method) {
        (Target::Suspicious, _) => status(400, "fake apiserver: suspicious path segment"),
        (Target::Version, "GET") => Reply::json(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        ),
        (Target::Collection(kind, ns), "GET") => {
            let name = params
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name="))
                .map(String::from);
            let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                let since = params
                    .get("resourceVersion")
                    .and_then(|r| r.parse::<u64>().ok())
                    .filter(|r| *r > 0);
                let timeout = params
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok());
                watch_reply(shared, *kind, ns.clone(), name, since, timeout)
            } else {
                list(shared, *kind, ns.as_deref(), name.as_deref())
            }
        }
        (Target::Item(kind, ns, name), "GET") => {
            match shared
                .lock()
                .objects
                .get(&(*kind, ns.clone(), name.clone()))
            {
                Some(o) => Reply::json(200, o.clone()),
                None => not_found(plural(*kind), name),
            }
        }
        (Target::PodStatus(ns, name), "GET") => {
            match shared
                .lock()
                .objects
                .get(&(Kind::Pod, ns.clone(), name.clone()))
            {
                Some(o) => Reply::json(200, o.clone()),
                None => not_found("pods", name),
            }
        }
        (Target::Item(Kind::Pod, ns, name), "PATCH") => {
            patch_pod(shared, ns, name, content_type, body, false)
        }
        (Target::PodStatus(ns, name), "PATCH") => {
            patch_pod(shared, ns, name, content_type, body, true)
        }
        (Target::Item(Kind::Pod, ns, name), "PUT") => put_pod(shared, ns, name, body, false),
        (Target::PodStatus(ns, name), "PUT") => put_pod(shared, ns, name, body, true),
        (Target::Events(ns), "POST") => create_event(shared, ns, body),
        (Target::Event(ns, name), "PATCH") => patch_event(shared, ns, name, content_type, body),
        (Target::Unknown, _) => status(404, "the server could not find the requested resource"),
        _ => status(405, format!("method {method} is not allowed here")),
    }
}

fn list(shared: &Shared, kind: Kind, ns: Option<&str>, name: Option<&str>) -> Reply {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((k, n, m), _)| {
            *k == kind && ns.is_none_or(|ns| ns == n) && name.is_none_or(|name| name == m)
        })
        .map(|(_, v)| v.clone())
        .collect();
    let (api, list_kind) = match kind {
        Kind::Pod => ("v1", "PodList"),
        Kind::Nad => (NAD_API, "NetworkAttachmentDefinitionList"),
    };
    Reply::json(
        200,
        json!({"apiVersion": api, "kind": list_kind,
               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    )
}

fn matches(c: &Change, kind: Kind, ns: Option<&str>, name: Option<&str>) -> bool {
    let m = &c.object["metadata"];
    c.kind == kind
        && ns.is_none_or(|ns| m["namespace"] == ns)
        && name.is_none_or(|name| m["name"] == name)
}

/// A watch stream: the history after `since`, or ADDED for every current object when there is
/// no `since`, then live changes, one JSON event per line, until `timeout` or the server stops.
fn watch_reply(
    shared: &Shared,
    kind: Kind,
    ns: Option<String>,
    name: Option<String>,
    since: Option<u64>,
    timeout: Option<u64>,
) -> Reply {
    let (initial, mut live) = {
        let st = shared.lock();
        let initial: Vec<Change> = match since {
            Some(rv) => st.history.iter().filter(|c| c.rv > rv).cloned().collect(),
            None => st
                .objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(_, o)| Change {
                    kind,
                    rv: 0,
                    kind_of_change: "ADDED",
                    object: o.clone(),
                })
                .collect(),
        };
        (initial, shared.changes.subscribe())
    };
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(16);
    tokio::spawn(async move {
        let line = |c: &Change| {
            let mut s = json!({"type": c.kind_of_change, "object": c.object}).to_string();
            s.push('\n');
            Bytes::from(s)
        };
        let (ns, name) = (ns.as_deref(), name.as_deref());
        for c in initial.iter().filter(|c| matches(c, kind, ns, name)) {
            if tx.send_data(line(c)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout.unwrap_or(3600)));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(c) if matches(&c, kind, ns, name) => {
                        if tx.send_data(line(&c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut deadline => return,
            }
        }
    });
    Reply {
        code: 200,
        retry_after: None,
        body: ReplyBody::Stream(body),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| status(400, format!("body is not JSON: {e}")))
}

/// Applies a patch by content type; `None` content types the fake does not implement.
fn apply_patch(obj: &mut Value, content_type: &str, patch: &Value) -> Result<(), Reply> {
    match content_type.split(';').next().unwrap_or("").trim() {
        // A strategic merge patch of maps (annotations, labels, status fields) behaves as a
        // merge patch; lists with patch strategies are not something Plexus sends.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(obj, patch);
            Ok(())
        }
        "application/json-patch+json" => json_patch(obj, patch).map_err(|e| status(422, e)),
        other => Err(status(
            415,
            format!("unsupported patch content type {other:?}"),
        )),
    }
}

/// The preconditions an object carries in its metadata, as the apiserver checks them.
fn check_preconditions(
    stored: &Value,
    incoming: &Value,
    what: &str,
    name: &str,
) -> Result<(), Reply> {
    for key in ["resourceVersion", "uid"] {
        if let Some(want) = incoming["metadata"][key].as_str()
            && stored["metadata"][key].as_str() != Some(want)
        {
            return Err(status(
                409,
                format!(
                    "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again"
                ),
            ));
        }
    }
    Ok(())
}

/// Keeps what the write may not change. Through `pods/status` the spec and ownerReferences are
/// kept as well (the pod status strategy), while annotations and labels may change: that is how
/// network-status gets written.
fn restore_fixed(new: &mut Value, old: &Value, status_only: bool) {
    for key in ["name", "namespace", "uid", "creationTimestamp"] {
        new["metadata"][key] = old["metadata"][key].clone();
    }
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    if status_only {
        new["spec"] = old["spec"].clone();
        match old["metadata"].get("ownerReferences") {
            Some(o) => new["metadata"]["ownerReferences"] = o.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.shift_remove("ownerReferences");
                }
            }
        }
    }
}

fn write_pod(
    shared: &Shared,
    ns: &str,
    name: &str,
    f: impl FnOnce(&Value) -> Result<Value, Reply>,
    status_only: bool,
) -> Reply {
    let mut st = shared.lock();
    let key = (Kind::Pod, ns.to_string(), name.to_string());
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found("pods", name);
    };
    let mut new = match f(&old) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if !new["metadata"].is_object() {
        return status(422, "metadata must be an object");
    }
    restore_fixed(&mut new, &old, status_only);
    let rv = st.next_rv();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.store(shared, Kind::Pod, key.1, key.2, new.clone(), rv, "MODIFIED");
    Reply::json(200, new)
}

fn patch_pod(
    shared: &Shared,
    ns: &str,
    name: &str,
    ct: &str,
    body: &[u8],
    status_only: bool,
) -> Reply {
    let patch = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    write_pod(
        shared,
        ns,
        name,
        |old| {
            if patch.is_object() {
                check_preconditions(old, &patch, "pods", name)?;
            }
            let mut new = old.clone();
            apply_patch(&mut new, ct, &patch)?;
            Ok(new)
        },
        status_only,
    )
}

fn put_pod(shared: &Shared, ns: &str, name: &str, body: &[u8], status_only: bool) -> Reply {
    let new = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    write_pod(
        shared,
        ns,
        name,
        |old| {
            check_preconditions(old, &new, "pods", name)?;
            Ok(new.clone())
        },
        status_only,
    )
}

fn create_event(shared: &Shared, ns: &str, body: &[u8]) -> Reply {
    let mut ev = match parse_body(body) {
        Ok(v) if v["metadata"].is_object() => v,
        Ok(_) => return status(422, "an event needs metadata"),
        Err(r) => return r,
    };
    if ev["metadata"]["namespace"]
        .as_str()
        .is_some_and(|n| n != ns)
    {
        return status(
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let mut st = shared.lock();
    let name = match (
        ev["metadata"]["name"].as_str(),
        ev["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) => n.to_string(),
        (None, Some(g)) => {
            st.seq += 1;
            format!("{g}{:05x}", st.seq)
        }
        (None, None) => return status(422, "name or generateName is required"),
    };
    let taken = st
        .events
        .iter()
        .any(|e| e["metadata"]["namespace"] == ns && e["metadata"]["name"] == name.as_str());
    if taken {
        return status(409, format!("events \"{name}\" already exists"));
    }
    let rv = st.next_rv();
    let uid = st.next_uid();
    let m = &mut ev["metadata"];
    m["name"] = json!(name);
    m["namespace"] = json!(ns);
    m["uid"] = json!(uid);
    m["resourceVersion"] = json!(rv.to_string());
    m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    st.events.push(ev.clone());
    Reply::json(201, ev)
}

fn patch_event(shared: &Shared, ns: &str, name: &str, ct: &str, body: &[u8]) -> Reply {
    let patch = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = shared.lock();
    let rv = st.next_rv();
    let Some(ev) = st
        .events
        .iter_mut()
        .find(|e| e["metadata"]["namespace"] == ns && e["metadata"]["name"] == name)
    else {
        return not_found("events", name);
    };
    let mut new = ev.clone();
    if let Err(r) = apply_patch(&mut new, ct, &patch) {
        return r;
    }
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    *ev = new.clone();
    Reply::json(200, new)
}
