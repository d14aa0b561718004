//! The GC reconciler: what CNI GC does, driven by the API instead of the runtime. Every
//! `--gc-interval` it walks the journal; an attachment set whose pod has been gone from the
//! API (no pod of that namespace, name and UID) for longer than `--gc-grace` is DELed through
//! the same call path as a runtime's DEL, counted, and reported in an event on the pod.
//!
//! Gone means gone twice over: the synced pod cache lacks it *and* a GET says 404 or names
//! another UID, so a lagging watch never tears down a live pod. Entries without a pod name
//! (podman, `plexus exec`) are not Kubernetes pods and are left to the runtime's own GC.

use super::metrics::Metrics;
use super::store::DaemonStore;
use crate::conf::PlexusConf;
use crate::journal::{Entry, Journal, Lookup};
use crate::store::{NetworkStore, Pod, PodEvent};
use cni::Command;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Reconciler {
    pub daemon: Arc<DaemonStore>,
    pub metrics: Arc<Metrics>,
    /// The conf the daemon writes for the shim: DEL runs with it, as the runtime's would.
    pub conf_file: PathBuf,
    pub cni_path: String,
    pub interval: Duration,
    pub grace: Duration,
}

impl Reconciler {
    pub fn run(self) {
        // (container, ifname) -> when its pod was first seen gone.
        let mut missing: BTreeMap<(String, String), Instant> = BTreeMap::new();
        loop {
            std::thread::sleep(self.interval);
            if let Err(e) = self.sweep(&mut missing) {
                tracing::warn!(error = %e, "GC reconciler round skipped");
            }
        }
    }

    fn sweep(&self, missing: &mut BTreeMap<(String, String), Instant>) -> Result<(), String> {
        if !self.daemon.pods_synced() {
            return Ok(());
        }
        let stdin = conf_of(&self.conf_file)?;
        let conf = PlexusConf::parse(&stdin).map_err(|e| e.to_string())?;
        let journal = Journal::open(&conf.cni_dir).map_err(|e| e.to_string())?;
        let entries = journal.entries(conf.gc_grace).map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        for (_, path) in entries {
            let Ok(Lookup::Found(entry)) = journal.read_path(&path) else {
                continue;
            };
            let Some(name) = entry.pod.name.clone() else {
                continue;
            };
            let key = (entry.container_id.clone(), entry.ifname.clone());
            let pod = Pod {
                namespace: entry.pod.namespace().to_string(),
                name,
                uid: entry.pod.uid.clone(),
                annotations: Default::default(),
            };
            seen.push(key.clone());
            if self.present(&pod.namespace, &pod.name, pod.uid.as_deref()) {
                missing.remove(&key);
                continue;
            }
            let since = *missing.entry(key.clone()).or_insert_with(Instant::now);
            if since.elapsed() >= self.grace && self.collect(&conf, &entry, &pod) {
                missing.remove(&key);
            }
        }
        missing.retain(|k, _| seen.contains(k));
        Ok(())
    }

    /// DELs the entry of a pod gone from the API, as the runtime's DEL would; whether it is
    /// gone now.
    fn collect(&self, conf: &PlexusConf, entry: &Entry, pod: &Pod) -> bool {
        let mut args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            pod.namespace, pod.name
        );
        if let Some(uid) = &pod.uid {
            args.push_str(&format!(";K8S_POD_UID={uid}"));
        }
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(Command::Del.as_str().to_string()),
            "CNI_CONTAINERID" => Some(entry.container_id.clone()),
            "CNI_IFNAME" => Some(entry.ifname.clone()),
            "CNI_NETNS" => entry.netns.clone(),
            "CNI_ARGS" => Some(args.clone()),
            "CNI_PATH" => Some(self.cni_path.clone()),
            _ => None,
        };
        let answer = match crate::flow::Request::with_conf(env, conf.clone()) {
            Ok(req) => super::call::run(&req, &self.daemon, &self.metrics),
            Err(e) => crate::flow::refused(e),
        };
        let who = format!("{}/{}", pod.namespace, pod.name);
        if answer.exit_code != 0 {
            tracing::warn!(pod = %who, container = %entry.container_id, answer = %answer.stdout.unwrap_or_default(), "GC reconciler could not remove the attachments; retried next round");
            return false;
        }
        self.metrics.reconciled(1);
        tracing::info!(pod = %who, container = %entry.container_id, ifname = %entry.ifname, "GC reconciler removed the attachments of a pod gone from the API");
        self.daemon.event(
            pod,
            &PodEvent {
                reason: "AttachmentsCollected".into(),
                message: format!(
                    "plexus removed the networks of container {} ({}): the pod has been gone from the API for over {:?}",
                    entry.container_id, entry.ifname, self.grace
                ),
                warning: false,
            },
        );
        true
    }

    /// Whether the pod still exists with this UID. An API that cannot answer counts as
    /// present: nothing is torn down on a guess.
    fn present(&self, namespace: &str, name: &str, uid: Option<&str>) -> bool {
        let same = |p: &Pod| uid.is_none() || p.uid.as_deref() == uid;
        if self
            .daemon
            .cached_pod(namespace, name)
            .is_some_and(|p| same(&p))
        {
            return true;
        }
        let store = self.daemon.for_uid(uid.map(String::from));
        match store.pod(namespace, name) {
            Ok(Some(p)) => same(&p),
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

/// The plugin conf of the conflist the daemon wrote, with the list's name and version, as the
/// runtime hands it over.
pub(super) fn conf_of(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let list =
        cni::netconf::parse_object(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut plugin = list
        .get("plugins")
        .and_then(|p| p.as_array())
        .and_then(|p| p.first())
        .and_then(|p| p.as_object())
        .cloned()
        .ok_or_else(|| format!("{}: no plugin", path.display()))?;
    for key in ["name", "cniVersion"] {
        if let Some(v) = list.get(key) {
            plugin.insert(key.into(), v.clone());
        }
    }
    serde_json::to_vec(&plugin).map_err(|e| e.to_string())
}
