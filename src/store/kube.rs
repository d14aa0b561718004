//! The Kubernetes API store: pods and NetworkAttachmentDefinitions read from the API server,
//! network-status and events written back to the pod.
//!
//! The binary is one-shot, so every invocation reads the kubeconfig and its token (or
//! `tokenFile`) afresh: an expiring service-account token is never held past its life
//! (a long-lived copy fails once the kubelet rotates it). Each call is bounded: client timeouts, a few attempts with backoff for what
//! may pass (refused connection, timeout, 429, 5xx), and a deadline over them all; then the
//! store answers `Unavailable` (CNI code 11). TLS is always verified, whatever the kubeconfig
//! says. Names are checked to be DNS-1123 before any URL is built from them.
//!
//! This module knows the API's URLs and wire shapes; it does not interpret annotations or NAD
//! configs (that is `selection`'s and `plan`'s job).

use super::{Nad, NetworkStore, Pod, PodEvent, StoreError};
use ::kube::client::{Body, Client};
use ::kube::config::{Config, KubeConfigOptions, Kubeconfig};
use ::kube::core::Request;
use ::kube::core::params::{GetParams, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const STORE: &str = "kubernetes";
// The NPWG annotation Plexus publishes on `pods/status`.
use crate::annotations::NETWORK_STATUS as NETWORK_STATUS_ANNOTATION;
/// Reporting component of the events Plexus records.
pub const COMPONENT: &str = "plexus";
/// An event message longer than this is cut: the events API rejects longer ones.
const EVENT_MESSAGE_LIMIT: usize = 1024;
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
    client: Client,
    rt: Exec,
    opts: KubeOptions,
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
    /// Reads `kubeconfig` (its current context) and builds a client. Nothing is sent to the
    /// API server yet, so DEL and GC can open the store with the server down.
    pub fn connect(kubeconfig: &Path, opts: KubeOptions) -> Result<KubeStore, StoreError> {
        let rt = runtime()?;
        let (config, origin) = rt.block_on(load_config(Some(kubeconfig)))?;
        let config = checked_config(config, &origin, &opts)?;
        // The client spawns its buffer worker, so it is built inside the runtime.
        let client = {
            let _guard = rt.enter();
            Client::try_from(config)
        }
        .map_err(|e| client_error(e, &origin))?;
        Ok(KubeStore {
            client,
            rt: Exec::Own(rt),
            opts,
        })
    }

    /// A store over a client that lives on a runtime driven elsewhere (the node daemon's):
    /// its calls block on `handle`, so they must come from threads outside that runtime.
    pub fn shared(client: Client, handle: tokio::runtime::Handle, opts: KubeOptions) -> KubeStore {
        KubeStore {
            client,
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
            client,
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
                tokio::time::timeout(per_attempt.min(left), self.send(request.map(Body::from)))
                    .await;
            let mut wait = backoff;
            match outcome {
                Err(_) => last = format!("no answer within {:?}", per_attempt.min(left)),
                Ok(Err(Failure::Fatal(reason))) => {
                    return Err(unavailable(what, reason, attempt));
                }
                Ok(Err(Failure::Transient(reason))) => last = reason,
                Ok(Ok((status, retry_after, body))) => match status {
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

    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), Failure> {
        let response = self.client.send(request).await.map_err(transport_failure)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if let Some(len) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            && len > MAX_BODY_BYTES
        {
            return Err(Failure::Fatal(format!(
                "response of {len} bytes is over the {MAX_BODY_BYTES}-byte limit"
            )));
        }
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| Failure::Transient(format!("read response: {}", chain(&e))))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(Failure::Fatal(format!(
                "response of {} bytes is over the {MAX_BODY_BYTES}-byte limit",
                body.len()
            )));
        }
        Ok((status, retry_after, body.to_vec()))
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        path: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let build = || Request::new(path).get(name, &GetParams::default());
        let body = match self.rt.block_on(self.call(what, false, &build))? {
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

fn unavailable(what: &str, reason: String, attempts: u32) -> StoreError {
    let step = format!("{what}: {reason} (after {attempts} attempt(s))");
    StoreError::Unavailable {
        store: STORE,
        source: Box::new(std::io::Error::other(reason)),
        step,
    }
}

/// A refused or reset connection may pass; a certificate the client does not trust will not.
fn transport_failure(e: ::kube::Error) -> Failure {
    let text = chain(&e);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        source = match s.downcast_ref::<std::io::Error>() {
            // tokio-rustls reports a rejected handshake as InvalidData; hyper-rustls wraps
            // that in another io::Error, whose `source()` skips the wrapped error itself.
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                return Failure::Fatal(format!("TLS handshake failed: {text}"));
            }
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => s.source(),
        };
    }
    Failure::Transient(text)
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
        Ok(self.get::<PodObject>(&what, &path, name)?.map(|p| Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: p.metadata.uid,
            annotations: p.metadata.annotations.unwrap_or_default(),
        }))
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        check_names("NetworkAttachmentDefinition", namespace, name)?;
        let path = format!(
            "/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions"
        );
        let what = format!("GET NetworkAttachmentDefinition {namespace}/{name}");
        Ok(self.get::<NadObject>(&what, &path, name)?.map(|n| Nad {
            namespace: namespace.to_string(),
            name: name.to_string(),
            annotations: n.metadata.annotations.unwrap_or_default(),
            config: n.spec.and_then(|s| s.config),
        }))
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

    fn event(&self, pod: &Pod, event: &PodEvent) -> Result<(), StoreError> {
        check_names("pod", &pod.namespace, &pod.name)?;
        let body = serde_json::to_vec(&event_object(pod, event, &host_name())).map_err(|e| {
            StoreError::Malformed {
                origin: format!("event for pod {}/{}", pod.namespace, pod.name),
                reason: e.to_string(),
            }
        })?;
        let path = format!("/api/v1/namespaces/{}/events", pod.namespace);
        let what = format!("POST event on pod {}/{}", pod.namespace, pod.name);
        let build = || Request::new(&path).create(&PostParams::default(), body.clone());
        self.rt
            .block_on(self.call(&what, false, &build))
            .map(|_| ())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A core/v1 Event about `pod`, named as kubelet's recorder names them (`<pod>.<nanos hex>`).
fn event_object(pod: &Pod, event: &PodEvent, host: &str) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let now = k8s_openapi::jiff::Timestamp::now();
    let suffix = format!(".{:x}", now.as_nanosecond());
    let mut stem: String = pod.name.chars().take(253 - suffix.len()).collect();
    while stem.ends_with(['.', '-']) {
        stem.pop();
    }
    let mut message = event.message.clone();
    if message.len() > EVENT_MESSAGE_LIMIT {
        let mut cut = EVENT_MESSAGE_LIMIT;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let host = (!host.is_empty()).then(|| host.to_string());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{stem}{suffix}")),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: pod.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.clone()),
        message: Some(message),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: host.clone(),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: host,
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests;
