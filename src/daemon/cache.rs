//! The daemon's caches: kube-runtime reflectors of this node's pods (metadata only, field
//! selector `spec.nodeName`) and of every NAD, each object cut down to what Plexus reads
//! (namespace, name, UID, annotations; a NAD's `spec.config`), and whether each has synced.
//!
//! A reflector that loses its watch re-lists with backoff and keeps serving what it had; the
//! store falls back to a GET for anything the cache does not hold.

use super::metrics::Metrics;
use crate::crd::NetworkAttachmentDefinition;
use crate::store::{Nad, Pod};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod as ApiPod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Never read by Plexus and often the largest thing on an object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub struct Caches {
    pods: Store<PartialObjectMeta<ApiPod>>,
    nads: Store<NetworkAttachmentDefinition>,
    pods_synced: Arc<AtomicBool>,
    nads_synced: Arc<AtomicBool>,
}

/// The kinds the daemon caches, as metric labels name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Nad,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Nad => "nad",
        }
    }
}

/// One small list before the reflectors start, so that their requests find an open
/// connection: started together, each would open its own while the first is still
/// negotiating HTTP/2. A failure here is only logged; the reflectors retry with backoff.
pub async fn first_contact(client: &kube::Client) {
    let api: Api<NetworkAttachmentDefinition> = Api::all(client.clone());
    if let Err(e) = api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        tracing::warn!(error = %e, "first request to the API server failed");
    }
}

impl Caches {
    /// Starts both reflectors on the current runtime; they run until the runtime stops.
    /// `changed` hears of every pod the watch adds or updates, once the cache holds it.
    pub fn start(
        client: kube::Client,
        node: &str,
        metrics: &Arc<Metrics>,
        changed: Option<Arc<super::hotplug::Pending>>,
    ) -> Caches {
        let (pods, pod_writer) = reflector::store();
        let (nads, nad_writer) = reflector::store();
        let pods_synced = Arc::new(AtomicBool::new(false));
        let nads_synced = Arc::new(AtomicBool::new(false));

        // An Api of PartialObjectMeta asks for metadata only: pod specs never cross the wire.
        let pod_api: Api<PartialObjectMeta<ApiPod>> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let pod_stream = watcher(pod_api, config)
            .default_backoff()
            .modify(|p| p.metadata = trim(&p.metadata))
            .reflect(pod_writer);
        tokio::spawn(follow(
            pod_stream,
            Kind::Pod,
            pods_synced.clone(),
            metrics.clone(),
            move |p: &PartialObjectMeta<ApiPod>| {
                if let (Some(changed), Some(ns), Some(name)) =
                    (&changed, &p.metadata.namespace, &p.metadata.name)
                {
                    changed.push(ns, name);
                }
            },
        ));

        let nad_api: Api<NetworkAttachmentDefinition> = Api::all(client);
        let nad_stream = watcher(nad_api, watcher::Config::default())
            .default_backoff()
            .modify(|n| n.metadata = trim(&n.metadata))
            .reflect(nad_writer);
        tokio::spawn(follow(
            nad_stream,
            Kind::Nad,
            nads_synced.clone(),
            metrics.clone(),
            |_: &NetworkAttachmentDefinition| {},
        ));

        Caches {
            pods,
            nads,
            pods_synced,
            nads_synced,
        }
    }

    pub fn synced(&self, kind: Kind) -> bool {
        match kind {
            Kind::Pod => self.pods_synced.load(Ordering::Relaxed),
            Kind::Nad => self.nads_synced.load(Ordering::Relaxed),
        }
    }

    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Pod => self.pods.state().len(),
            Kind::Nad => self.nads.state().len(),
        }
    }

    /// The cached pod, `None` when the cache has not synced or does not hold it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        if !self.synced(Kind::Pod) {
            return None;
        }
        let p = self.pods.get(&ObjectRef::new(name).within(namespace))?;
        Some(Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: p.metadata.uid.clone(),
            annotations: p.metadata.annotations.clone().unwrap_or_default(),
        })
    }

    pub fn nad(&self, namespace: &str, name: &str) -> Option<Nad> {
        if !self.synced(Kind::Nad) {
            return None;
        }
        let n = self.nads.get(&ObjectRef::new(name).within(namespace))?;
        Some(Nad {
            namespace: namespace.to_string(),
            name: name.to_string(),
            annotations: n.metadata.annotations.clone().unwrap_or_default(),
            config: n.spec.config.clone(),
        })
    }
}

/// What Plexus reads of an object's metadata; the rest (managed fields, labels, owners...)
/// would only take memory on a busy node.
fn trim(meta: &ObjectMeta) -> ObjectMeta {
    let annotations = meta.annotations.as_ref().map(|a| {
        a.iter()
            .filter(|(k, _)| k.as_str() != LAST_APPLIED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        annotations,
        ..ObjectMeta::default()
    }
}

async fn follow<K, S>(
    stream: S,
    kind: Kind,
    synced: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    applied: impl Fn(&K),
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                if !synced.swap(true, Ordering::Relaxed) {
                    tracing::info!(kind = kind.label(), "cache synced");
                }
            }
            Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k)) => applied(&k),
            Ok(_) => {}
            Err(e) => {
                metrics.watch_error(kind);
                tracing::warn!(kind = kind.label(), error = %e, "watch failed; re-listing with backoff");
            }
        }
    }
}
