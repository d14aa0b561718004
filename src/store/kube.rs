//! The Kubernetes API store: pods and NetworkAttachmentDefinitions read from the API server,
//! network-status and events written back to the pod.
//!
//! The binary is one-shot, so every invocation reads the kubeconfig and its token (or
//! `tokenFile`) afresh: an expiring service-account token is never held past its life
//! (a long-lived copy fails once the kubelet rotates it). The one-shot store talks HTTP/1.1 itself (`wire`, set up from the
//! kubeconfig by `kubeconfig`); the node daemon's store goes through its kube-rs client
//! (`client`). Each call is bounded: client timeouts, a few attempts with backoff for what
//! may pass (refused connection, timeout, 429, 5xx), and a deadline over them all; then the
//! store answers `Unavailable` (CNI code 11). TLS is always verified, whatever the kubeconfig
//! says. Names are checked to be DNS-1123 before any URL is built from them.
//!
//! The one-shot store posts its events when it closes, all at once and bounded by
//! `apiTimeout`, after the network-status patch and before the process exits: an event is
//! worth less than the round trip it would add to the ADD's critical path for each
//! interface. Several NADs asked for together (`NetworkStore::nads`) are read at once.
//!
//! This module knows the API's URLs and wire shapes; it does not interpret annotations or NAD
//! configs (that is `selection`'s and `plan`'s job).

mod client;
mod event;
mod kubeconfig;
mod wire;

use super::{Nad, NetworkStore, Pod, PodEvent, StoreError};
use ::kube::client::Client;
use ::kube::config::{Config, KubeConfigOptions, Kubeconfig};
use ::kube::core::Request;
use ::kube::core::params::{GetParams, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const STORE: &str = "kubernetes";
// The NPWG annotation Plexus publishes on `pods/status`.
use crate::annotations::NETWORK_STATUS as NETWORK_STATUS_ANNOTATION;
/// Reporting component of the events Plexus records.
pub const COMPONENT: &str = "plexus";
/// A response body larger than this is not read: no pod or NAD is this big.
const MAX_BODY_BYTES: usize = 8 << 20;

/// Timeouts and retry bounds of one store. The defaults keep a failing call under ~15 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// TCP and TLS connect, per attempt.
    pub connect_timeout: Duration,
    /// Waiting for the response, per attempt (conf key `apiTimeout`).
    pub read_timeout: Duration,
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff: Duration,
    /// The longest `Retry-After` honoured; a server asking for more gets this.
    pub retry_after_cap: Duration,
    /// Bound over all attempts and waits of one call.
    pub deadline: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(200),
            retry_after_cap: Duration::from_secs(2),
            deadline: Duration::from_secs(15),
        }
    }
}

impl KubeOptions {
    /// The defaults with `read_timeout` per attempt (conf key `apiTimeout`), the deadline
    /// scaled with it (attempts × read timeout, 15 s for the default 5 s).
    pub fn with_read_timeout(read_timeout: Duration) -> KubeOptions {
        let defaults = KubeOptions::default();
        KubeOptions {
            read_timeout,
            deadline: read_timeout.saturating_mul(defaults.attempts),
            ..defaults
        }
    }
}

/// Whether a URL host names this machine: a loopback address or `localhost`.
fn is_loopback(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A `NetworkStore` over the Kubernetes API. The trait is synchronous: the one-shot binary's
/// store runs its own current-thread runtime and blocks on it for each call; the node daemon's
/// blocks on the daemon's runtime from its call threads.
pub struct KubeStore {
    // Declared before the runtime so it is dropped first, while the runtime still runs the
    // tasks that own its connections.
    transport: Box<dyn Transport>,
    /// Events to post when the store closes (the one-shot store's); `None` when each is
    /// posted as it comes (the daemon queues them on a thread of its own).
    deferred: Option<Mutex<Vec<(Pod, PodEvent)>>>,
    rt: Exec,
    opts: KubeOptions,
}

/// What one exchange with the API server gave.
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

type Sent<'a> = Pin<Box<dyn Future<Output = Result<Reply, Failure>> + 'a>>;

/// How requests reach the API server. A trait object, so that the binary that only ever
/// builds `wire::Wire` carries no kube-rs client code.
trait Transport: Send + Sync {
    fn send(&self, request: http::Request<Vec<u8>>) -> Sent<'_>;
}

impl Transport for wire::Wire {
    fn send(&self, request: http::Request<Vec<u8>>) -> Sent<'_> {
        Box::pin(self.exchange(request))
    }
}

struct KubeClient(Client);

impl Transport for KubeClient {
    fn send(&self, request: http::Request<Vec<u8>>) -> Sent<'_> {
        Box::pin(client::send(&self.0, request))
    }
}

/// Where a store's requests run.
enum Exec {
    Own(tokio::runtime::Runtime),
    /// A runtime driven elsewhere (the daemon's main thread); only blocked on from threads
    /// outside it.
    Shared(tokio::runtime::Handle),
}

impl Exec {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Exec::Own(rt) => rt.block_on(f),
            Exec::Shared(h) => h.block_on(f),
        }
    }
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Reads `kubeconfig` (its current context), or without one the pod's service account
/// (`KUBERNETES_SERVICE_HOST`, the mounted token and CA). Returns the config and where it
/// came from, for error messages.
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<(Config, String), StoreError> {
    let Some(kubeconfig) = kubeconfig else {
        let origin = "in-cluster service account".to_string();
        let config = Config::incluster().map_err(|e| StoreError::Unavailable {
            store: STORE,
            step: format!("load {origin}: {e}"),
            source: Box::new(e),
        })?;
        return Ok((config, origin));
    };
    let origin = format!("kubeconfig {}", kubeconfig.display());
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| match e {
        // Not there (yet): the DaemonSet may be about to write it.
        ::kube::config::KubeconfigError::ReadConfig(source, _) => StoreError::Unavailable {
            store: STORE,
            step: format!("read {origin}: {source}"),
            source: Box::new(source),
        },
        other => StoreError::Malformed {
            origin: origin.clone(),
            reason: other.to_string(),
        },
    })?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| StoreError::Malformed {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
    Ok((config, origin))
}

/// The store's rules applied to a client config: https (or http on loopback only), the
/// certificate always verified, no retry layer of kube's own, and `opts`' timeouts.
pub fn checked_config(
    mut config: Config,
    origin: &str,
    opts: &KubeOptions,
) -> Result<Config, StoreError> {
    match config.cluster_url.scheme_str() {
        Some("https") => {}
        // `kubectl proxy` on the node serves plain HTTP on loopback and adds the
        // credentials itself; nothing leaves the machine.
        Some("http") if is_loopback(config.cluster_url.host()) => {}
        _ => {
            return Err(StoreError::Malformed {
                origin: origin.to_string(),
                reason: format!(
                    "server {} is not https: plain http is accepted only for a loopback \
                     server (127.0.0.0/8, ::1, localhost, e.g. kubectl proxy), because the \
                     bearer token and pod data would otherwise cross the network in clear text",
                    config.cluster_url
                ),
            });
        }
    }
    if config.accept_invalid_certs {
        tracing::warn!(%origin, "insecure-skip-tls-verify is ignored: the API server's certificate is always verified");
    }
    config.accept_invalid_certs = false;
    // kube's own retry layer allows 15 tries and waits of minutes; ours is bounded.
    config.default_retry = false;
    config.connect_timeout = Some(opts.connect_timeout);
    config.read_timeout = Some(opts.read_timeout);
    config.write_timeout = Some(opts.read_timeout);
    config.reset_reader_on_write = true;
    Ok(config)
}

/// A client error as a store error: credentials that may appear in a moment are worth
/// another try, anything else is the config's fault.
pub fn client_error(e: ::kube::Error, origin: &str) -> StoreError {
    match e {
        // A projected token being rotated may be missing for a moment.
        ::kube::Error::Auth(a) => StoreError::Unavailable {
            store: STORE,
            step: format!("load credentials from {origin}: {a}"),
            source: Box::new(a),
        },
        other => StoreError::Malformed {
            origin: origin.to_string(),
            reason: other.to_string(),
        },
    }
}

impl KubeStore {
    /// Reads `kubeconfig` (its current context) and its credentials. Nothing is sent to the
    /// API server yet, so DEL and GC can open the store with the server down.
    pub fn connect(kubeconfig: &Path, opts: KubeOptions) -> Result<KubeStore, StoreError> {
        let origin = format!("kubeconfig {}", kubeconfig.display());
        let endpoint = kubeconfig::endpoint(kubeconfig, &origin)?;
        Ok(KubeStore {
            transport: Box::new(wire::Wire::new(endpoint, opts.connect_timeout)),
            deferred: Some(Mutex::new(Vec::new())),
            rt: Exec::Own(runtime()?),
            opts,
        })
    }

    /// A store over a client that lives on a runtime driven elsewhere (the node daemon's):
    /// its calls block on `handle`, so they must come from threads outside that runtime.
    pub fn shared(client: Client, handle: tokio::runtime::Handle, opts: KubeOptions) -> KubeStore {
        KubeStore {
            transport: Box::new(KubeClient(client)),
            deferred: None,
            rt: Exec::Shared(handle),
            opts,
        }
    }

    /// A store over any client: tests hand in a `tower_test` mock.
    #[cfg(test)]
    fn with_client(
        make: impl FnOnce() -> Client,
        opts: KubeOptions,
    ) -> Result<KubeStore, StoreError> {
        let rt = runtime()?;
        let client = {
            let _guard = rt.enter();
            make()
        };
        Ok(KubeStore {
            transport: Box::new(KubeClient(client)),
            deferred: None,
            rt: Exec::Own(rt),
            opts,
        })
    }

    /// Sends one request with the store's timeouts and retries. `build` makes a fresh request
    /// for each attempt; `conflict_retries` says whether a 409 is worth another attempt.
    async fn call(
        &self,
        what: &str,
        conflict_retries: bool,
        build: &dyn Fn() -> Result<http::Request<Vec<u8>>, ::kube::core::request::Error>,
    ) -> Result<Answer, StoreError> {
        let started = Instant::now();
        let attempts = self.opts.attempts.max(1);
        let per_attempt = self.opts.connect_timeout + self.opts.read_timeout;
        let mut backoff = self.opts.backoff;
        let mut last = String::new();
        let mut made = 0;
        for attempt in 1..=attempts {
            let left = self.opts.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let request = build().map_err(|e| StoreError::Malformed {
                origin: format!("request to {what}"),
                reason: e.to_string(),
            })?;
            made = attempt;
            let outcome =
                tokio::time::timeout(per_attempt.min(left), self.transport.send(request)).await;
            let mut wait = backoff;
            match outcome {
                Err(_) => last = format!("no answer within {:?}", per_attempt.min(left)),
                Ok(Err(Failure::Fatal(reason))) => {
                    return Err(unavailable(what, reason, attempt));
                }
                Ok(Err(Failure::Transient(reason))) => last = reason,
                Ok(Ok(Reply {
                    status,
                    retry_after,
                    body,
                })) => match status {
                    200..=299 => return Ok(Answer::Found(body)),
                    404 => return Ok(Answer::NotFound),
                    409 if conflict_retries => last = api_reason(status, &body),
                    429 | 500..=599 => {
                        last = api_reason(status, &body);
                        if let Some(after) = retry_after {
                            wait = after.min(self.opts.retry_after_cap);
                        }
                    }
                    _ => return Err(unavailable(what, api_reason(status, &body), attempt)),
                },
            }
            tracing::debug!(%what, attempt, reason = %last, "API request failed");
            if attempt == attempts || started.elapsed() + wait >= self.opts.deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
        Err(unavailable(what, last, made))
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        path: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let build = || Request::new(path).get(name, &GetParams::default());
        let body = match self.call(what, false, &build).await? {
            Answer::NotFound => return Ok(None),
            Answer::Found(body) => body,
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| StoreError::Malformed {
                origin: format!("{what} from the API server"),
                reason: e.to_string(),
            })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Unavailable {
            store: STORE,
            step: format!("start the API client runtime: {e}"),
            source: Box::new(e),
        })
}

/// What a successful exchange gave.
enum Answer {
    Found(Vec<u8>),
    NotFound,
}

/// Why an attempt failed: worth another try, or not.
enum Failure {
    Transient(String),
    Fatal(String),
}

fn too_large(len: usize) -> Failure {
    Failure::Fatal(format!(
        "response of {len} bytes is over the {MAX_BODY_BYTES}-byte limit"
    ))
}

/// What both clients read from a response's headers before its body: the server's
/// `Retry-After` (seconds), and a refusal when `Content-Length` announces more than the cap.
fn response_head(headers: &http::HeaderMap) -> Result<Option<Duration>, Failure> {
    let value = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    if let Some(len) = value(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(too_large(len));
    }
    Ok(value(http::header::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs))
}

fn unavailable(what: &str, reason: String, attempts: u32) -> StoreError {
    let step = format!("{what}: {reason} (after {attempts} attempt(s))");
    StoreError::Unavailable {
        store: STORE,
        source: Box::new(std::io::Error::other(reason)),
        step,
    }
}

/// The error and its sources on one line, each message once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The API server's own words for a failed request (`Status.message`), with the HTTP code.
fn api_reason(status: u16, body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from));
    match message {
        Some(m) if !m.is_empty() => format!("HTTP {status}: {m}"),
        _ => format!("HTTP {status}"),
    }
}

/// Namespaces are DNS-1123 labels, pod and NAD names DNS-1123 subdomains: nothing else may
/// reach a URL (no `..`, no `%2F`, no `/`).
fn check_names(kind: &str, namespace: &str, name: &str) -> Result<(), StoreError> {
    if !crate::pod::is_dns1123_label(namespace) {
        return Err(StoreError::Malformed {
            origin: format!("{kind} namespace {namespace:?}"),
            reason: "not a DNS-1123 label".into(),
        });
    }
    if !crate::pod::is_dns1123_subdomain(name) {
        return Err(StoreError::Malformed {
            origin: format!("{kind} name {name:?}"),
            reason: "not a DNS-1123 subdomain".into(),
        });
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct Meta {
    uid: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct PodObject {
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize)]
struct NadObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Option<NadSpec>,
}

#[derive(Deserialize)]
struct NadSpec {
    #[serde(default)]
    config: Option<String>,
}

impl NetworkStore for KubeStore {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, StoreError> {
        check_names("pod", namespace, name)?;
        let path = format!("/api/v1/namespaces/{namespace}/pods");
        let what = format!("GET pod {namespace}/{name}");
        let pod = self
            .rt
            .block_on(self.get::<PodObject>(&what, &path, name))?;
        Ok(pod.map(|p| Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: p.metadata.uid,
            annotations: p.metadata.annotations.unwrap_or_default(),
        }))
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        self.rt.block_on(self.get_nad(namespace, name))
    }

    /// Every NAD at once: one request each, all in flight together.
    fn nads(&self, refs: &[(&str, &str)]) -> Vec<Result<Option<Nad>, StoreError>> {
        let gets = refs.iter().map(|(ns, name)| self.get_nad(ns, name));
        self.rt.block_on(futures::future::join_all(gets))
    }

    fn kind(&self) -> &'static str {
        STORE
    }

    fn knows_every_pod(&self) -> bool {
        true
    }

    /// One NAD listed cluster-wide: reachable, trusted, authorised, and the CRD installed.
    fn ready(&self) -> Result<(), StoreError> {
        let path = "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions";
        let what = "LIST NetworkAttachmentDefinitions";
        let build = || Request::new(path).list(&ListParams::default().limit(1));
        match self.rt.block_on(self.call(what, false, &build))? {
            Answer::Found(_) => Ok(()),
            // No such resource: the NAD CRD is not installed.
            Answer::NotFound => Err(unavailable(
                what,
                "the NetworkAttachmentDefinition CRD is not installed".into(),
                1,
            )),
        }
    }

    /// A merge patch of one annotation on `pods/status`: a full update would wipe the status
    /// fields kubelet owns (nad-client #84), and a merge patch leaves other annotations alone.
    fn publish_status(&self, namespace: &str, name: &str, status: &str) -> Result<(), StoreError> {
        check_names("pod", namespace, name)?;
        let path = format!("/api/v1/namespaces/{namespace}/pods");
        let what = format!("PATCH pods/status {namespace}/{name}");
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: status}}
        }));
        let build = || {
            Request::new(&path).patch_subresource("status", name, &PatchParams::default(), &patch)
        };
        match self.rt.block_on(self.call(&what, true, &build))? {
            Answer::Found(_) => Ok(()),
            Answer::NotFound => {
                // The pod is being deleted: nobody will read its status (Multus PR #583).
                tracing::info!(pod = %format!("{namespace}/{name}"), "pod gone; network-status not published");
                Ok(())
            }
        }
    }

    /// The one-shot store keeps the event for `Drop`; the daemon's posts it now.
    fn event(&self, pod: &Pod, event: &PodEvent) -> Result<(), StoreError> {
        check_names("pod", &pod.namespace, &pod.name)?;
        if let Some(deferred) = &self.deferred {
            deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((pod.clone(), event.clone()));
            return Ok(());
        }
        self.rt.block_on(self.post_event(pod, event))
    }
}

impl KubeStore {
    async fn get_nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        check_names("NetworkAttachmentDefinition", namespace, name)?;
        let path = format!(
            "/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions"
        );
        let what = format!("GET NetworkAttachmentDefinition {namespace}/{name}");
        let nad = self.get::<NadObject>(&what, &path, name).await?;
        Ok(nad.map(|n| Nad {
            namespace: namespace.to_string(),
            name: name.to_string(),
            annotations: n.metadata.annotations.unwrap_or_default(),
            config: n.spec.and_then(|s| s.config),
        }))
    }

    async fn post_event(&self, pod: &Pod, event: &PodEvent) -> Result<(), StoreError> {
        let object = event::event_object(pod, event, &event::host_name());
        let body = serde_json::to_vec(&object).map_err(|e| StoreError::Malformed {
            origin: format!("event for pod {}/{}", pod.namespace, pod.name),
            reason: e.to_string(),
        })?;
        let path = format!("/api/v1/namespaces/{}/events", pod.namespace);
        let what = format!("POST event on pod {}/{}", pod.namespace, pod.name);
        let build = || Request::new(&path).create(&PostParams::default(), body.clone());
        self.call(&what, false, &build).await.map(|_| ())
    }

    /// Posts the deferred events all at once, within one `apiTimeout` from now; any not
    /// recorded by then is logged, never dropped silently.
    fn post_deferred(&mut self) {
        let events = match self.deferred.take() {
            Some(d) => d.into_inner().unwrap_or_else(|e| e.into_inner()),
            None => return,
        };
        if events.is_empty() {
            return;
        }
        let bound = self.opts.read_timeout;
        let outcomes = self.rt.block_on(async {
            // Timers belong to the runtime: made inside it.
            let deadline = tokio::time::Instant::now() + bound;
            let posts = events
                .iter()
                .map(|(pod, event)| tokio::time::timeout_at(deadline, self.post_event(pod, event)));
            futures::future::join_all(posts).await
        });
        for ((pod, event), outcome) in events.iter().zip(outcomes) {
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("not posted within apiTimeout ({bound:?})"),
            };
            tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), reason = %event.reason, %error, "event not recorded");
        }
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        self.post_deferred();
    }
}

#[cfg(test)]
mod tests;
