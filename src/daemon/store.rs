//! The daemon's `NetworkStore`: pods and NADs from the caches once they have synced, a GET
//! for what they do not hold (a pod created a moment ago, a pod recreated under the same name
//! whose new UID the cache has not seen, a NAD just applied), the network-status patch sent
//! synchronously (the runtime's result and the annotation must agree), and events handed to a
//! bounded queue that a thread of its own posts, off the ADD's critical path.

use super::cache::{Caches, Kind};
use super::metrics::Metrics;
use crate::store::{KubeStore, Nad, NetworkStore, Pod, PodEvent, StoreError};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

pub struct DaemonStore {
    caches: Arc<Caches>,
    api: Arc<KubeStore>,
    events: EventQueue,
    metrics: Arc<Metrics>,
}

impl DaemonStore {
    pub fn new(
        caches: Arc<Caches>,
        api: KubeStore,
        events: EventQueue,
        metrics: Arc<Metrics>,
    ) -> DaemonStore {
        let api = Arc::new(api);
        events.attach(api.clone());
        DaemonStore {
            caches,
            api,
            events,
            metrics,
        }
    }

    /// The store one call sees: it knows the pod UID the runtime named, so a cached pod of
    /// another UID (deleted and recreated under the same name) is read afresh.
    pub fn for_uid(&self, expected_uid: Option<String>) -> CallStore<'_> {
        CallStore {
            daemon: self,
            expected_uid,
        }
    }

    pub fn pods_synced(&self) -> bool {
        self.caches.synced(Kind::Pod)
    }

    /// The pod as the cache holds it, without falling back to the API.
    pub fn cached_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.caches.pod(namespace, name)
    }

    /// Queues an event, as a call's events are.
    pub fn event(&self, pod: &Pod, event: &PodEvent) {
        self.events.push(pod, event);
    }
}

pub struct CallStore<'a> {
    daemon: &'a DaemonStore,
    expected_uid: Option<String>,
}

impl NetworkStore for CallStore<'_> {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, StoreError> {
        let d = self.daemon;
        if let Some(p) = d.caches.pod(namespace, name)
            && (self.expected_uid.is_none() || p.uid == self.expected_uid)
        {
            d.metrics.cache_hit(Kind::Pod);
            return Ok(Some(p));
        }
        d.metrics.cache_miss(Kind::Pod);
        d.api.pod(namespace, name)
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        let d = self.daemon;
        if let Some(n) = d.caches.nad(namespace, name) {
            d.metrics.cache_hit(Kind::Nad);
            return Ok(Some(n));
        }
        d.metrics.cache_miss(Kind::Nad);
        d.api.nad(namespace, name)
    }

    /// Cached NADs at once, the others by GETs sent together.
    fn nads(&self, refs: &[(&str, &str)]) -> Vec<Result<Option<Nad>, StoreError>> {
        let d = self.daemon;
        let mut answers: Vec<Option<Result<Option<Nad>, StoreError>>> = refs
            .iter()
            .map(|(ns, name)| d.caches.nad(ns, name).map(|n| Ok(Some(n))))
            .collect();
        let missing: Vec<(&str, &str)> = refs
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(r, _)| *r)
            .collect();
        for _ in 0..refs.len() - missing.len() {
            d.metrics.cache_hit(Kind::Nad);
        }
        for _ in &missing {
            d.metrics.cache_miss(Kind::Nad);
        }
        let fetched = if missing.is_empty() {
            Vec::new()
        } else {
            d.api.nads(&missing)
        };
        let mut fetched = fetched.into_iter();
        for answer in answers.iter_mut().filter(|a| a.is_none()) {
            *answer = fetched.next();
        }
        answers.into_iter().map(|a| a.unwrap_or(Ok(None))).collect()
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn knows_every_pod(&self) -> bool {
        true
    }

    /// Ready once both caches have synced: nothing is asked of the API server for it.
    fn ready(&self) -> Result<(), StoreError> {
        for kind in [Kind::Pod, Kind::Nad] {
            if !self.daemon.caches.synced(kind) {
                return Err(StoreError::Unavailable {
                    store: "kubernetes",
                    step: format!("the daemon's {} cache has not synced yet", kind.label()),
                    source: Box::new(std::io::Error::other("cache not synced")),
                });
            }
        }
        Ok(())
    }

    fn publish_status(&self, namespace: &str, name: &str, status: &str) -> Result<(), StoreError> {
        self.daemon.api.publish_status(namespace, name, status)
    }

    fn event(&self, pod: &Pod, event: &PodEvent) -> Result<(), StoreError> {
        self.daemon.events.push(pod, event);
        Ok(())
    }
}

/// A bounded queue of events and the thread that posts them. When it is full, a new event is
/// dropped and counted: an event is worth less than the ADD it describes.
pub struct EventQueue {
    tx: SyncSender<(Pod, PodEvent)>,
    rx: std::sync::Mutex<Option<Receiver<(Pod, PodEvent)>>>,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    pub fn start(capacity: usize, metrics: Arc<Metrics>) -> EventQueue {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        EventQueue {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            metrics,
        }
    }

    /// Starts the posting thread over `api`.
    fn attach(&self, api: Arc<KubeStore>) {
        let Some(rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let metrics = self.metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (pod, event) in rx {
                    metrics.event_dequeued();
                    if let Err(e) = api.event(&pod, &event) {
                        metrics.event_failed();
                        tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), reason = %event.reason, error = %e, "event not recorded");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the event thread; events are dropped");
        }
    }

    fn push(&self, pod: &Pod, event: &PodEvent) {
        match self.tx.try_send((pod.clone(), event.clone())) {
            Ok(()) => self.metrics.event_queued(),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.event_dropped();
                tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), reason = %event.reason, "event queue full; event dropped");
            }
        }
    }
}
