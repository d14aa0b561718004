//! Hot-plug in the daemon: the pod watch hands every added or updated pod to a thread of its
//! own, which finds the pod's journal entries on this node (by namespace, name and UID) and,
//! when the networks annotation differs from the one it last handled for that entry, brings
//! the entry's attachments in line with it (`flow::hotplug`), with the same conf, journal
//! and cached store as the calls the shim forwards.
//!
//! An annotation that cannot be attached gets one Warning event per value and changes
//! nothing; a failed attachment is not retried until the annotation changes again (or the
//! daemon restarts), so the daemon's own status patches never start a retry loop.

use super::metrics::Metrics;
use super::store::DaemonStore;
use crate::annotations::NETWORKS;
use crate::conf::PlexusConf;
use crate::flow::{self, HotplugOutcome};
use crate::journal::{Journal, Lookup};
use crate::store::{Pod, PodEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Pods the watch changed since the hot-plug thread last looked: a set, so a busy pod is
/// one item and the set never outgrows the node's pods.
#[derive(Default)]
pub struct Pending {
    pods: Mutex<BTreeSet<(String, String)>>,
    wake: Condvar,
}

impl Pending {
    pub fn push(&self, namespace: &str, name: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.insert((namespace.to_string(), name.to_string()));
            self.wake.notify_one();
        }
    }

    /// Waits for changed pods and takes them all.
    fn take(&self) -> BTreeSet<(String, String)> {
        let Ok(mut pods) = self.pods.lock() else {
            return BTreeSet::new();
        };
        while pods.is_empty() {
            pods = match self.wake.wait(pods) {
                Ok(p) => p,
                Err(_) => return BTreeSet::new(),
            };
        }
        std::mem::take(&mut *pods)
    }
}

pub struct Hotplugger {
    pub daemon: Arc<DaemonStore>,
    pub metrics: Arc<Metrics>,
    pub pending: Arc<Pending>,
    /// The conf the daemon writes for the shim: the journal and timeouts of the pod's ADD.
    pub conf_file: PathBuf,
    pub cni_path: String,
}

/// Per (container, ifname): the pod UID and networks annotation last handled.
type Handled = BTreeMap<(String, String), (Option<String>, String)>;

impl Hotplugger {
    pub fn run(self) {
        let mut handled = Handled::new();
        loop {
            let pods = self.pending.take();
            // Until the pod cache has synced, every read would be a GET.
            while !self.daemon.pods_synced() {
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Err(e) = self.round(&pods, &mut handled) {
                tracing::warn!(error = %e, "hot-plug round skipped");
            }
        }
    }

    fn round(
        &self,
        pods: &BTreeSet<(String, String)>,
        handled: &mut Handled,
    ) -> Result<(), String> {
        let stdin = super::reconcile::conf_of(&self.conf_file)?;
        let conf = PlexusConf::parse(&stdin).map_err(|e| e.to_string())?;
        let journal = match Journal::open(&conf.cni_dir) {
            Ok(j) => j,
            // No pod has been added on this node yet.
            Err(_) if !conf.cni_dir.exists() => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let entries = journal.entries(Duration::MAX).map_err(|e| e.to_string())?;
        let mut seen = BTreeSet::new();
        for (_, path) in entries {
            let Ok(Lookup::Found(entry)) = journal.read_path(&path) else {
                continue;
            };
            let key = (entry.container_id.clone(), entry.ifname.clone());
            seen.insert(key.clone());
            let Some(name) = entry.pod.name.clone() else {
                continue;
            };
            let namespace = entry.pod.namespace().to_string();
            if !pods.contains(&(namespace.clone(), name.clone())) {
                continue;
            }
            let Some(pod) = self.daemon.cached_pod(&namespace, &name) else {
                continue;
            };
            if entry.pod.uid.is_some() && pod.uid != entry.pod.uid {
                continue;
            }
            let networks = pod.annotations.get(NETWORKS).cloned().unwrap_or_default();
            let now = (pod.uid.clone(), networks);
            if handled.get(&key) == Some(&now) {
                continue;
            }
            if self.one(&conf, &key, &pod) {
                handled.insert(key, now);
            }
        }
        handled.retain(|k, _| seen.contains(k));
        Ok(())
    }

    /// Hot-plugs one entry; whether the annotation counts as handled.
    fn one(&self, conf: &PlexusConf, (cid, ifname): &(String, String), pod: &Pod) -> bool {
        let store = self.daemon.for_uid(pod.uid.clone());
        let who = format!("{}/{}", pod.namespace, pod.name);
        match flow::hotplug(conf, &self.cni_path, &store, cid, ifname) {
            Ok(HotplugOutcome::Unchanged) => true,
            Ok(HotplugOutcome::Changed(done)) => {
                self.metrics
                    .hotplugged(done.added.len(), done.removed.len(), done.failed.len());
                tracing::info!(pod = %who, container = %cid, added = ?done.added, removed = ?done.removed, failed = ?done.failed, "hot-plug");
                true
            }
            Ok(HotplugOutcome::Skipped(why)) => {
                tracing::debug!(pod = %who, container = %cid, ?why, "hot-plug skipped");
                false
            }
            // Another call holds the container: its end is another pod event away at most,
            // so the next round retries.
            Err(flow::Error::Journal(e)) if e.code() == cni::Code::TryAgainLater => {
                tracing::warn!(pod = %who, error = %e, "hot-plug postponed");
                self.pending.push(&pod.namespace, &pod.name);
                false
            }
            Err(e) => {
                self.metrics.hotplugged(0, 0, 1);
                tracing::warn!(pod = %who, container = %cid, error = %e, "networks annotation refused; the pod keeps its attachments");
                self.daemon.event(
                    pod,
                    &PodEvent {
                        reason: "NetworksRefused".into(),
                        message: format!(
                            "plexus did not change the pod's networks, it keeps what it has: {e}"
                        ),
                        warning: true,
                    },
                );
                true
            }
        }
    }
}
