//! Where pods and NetworkAttachmentDefinitions come from.
//!
//! `NetworkStore` is the one seam between the meta plugin and Kubernetes objects: the plan asks it
//! for a pod's annotations and for NADs by namespace/name, and never learns whether they came from
//! the API server or from a folder of manifests. This module owns the object shapes Plexus reads
//! (`Pod`, `Nad`), the store error and its CNI code, the choice of store a conf makes
//! ([`open`]), and two stores: `KubeStore` (the API) and `ManifestStore` (the embedded default,
//! the same YAML/JSON a user would `kubectl apply`). It does not interpret annotations or NAD
//! configs: that is `selection`'s and `plan`'s job.

pub mod devices;
mod kube;
mod manifest;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use self::kube::{
    COMPONENT, KubeOptions, KubeStore, checked_config, client_error, load_config,
};
pub use manifest::{MAX_MANIFEST_BYTES, ManifestStore};

/// The parts of a pod that network selection needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`; manifests usually leave it out, the API server always sets it.
    pub uid: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// A NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Nad {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    /// `spec.config`, the delegate's CNI conf or conflist as a JSON string, unparsed. `None` when
    /// the NAD has no spec or no config: the NPWG spec then looks the network up on disk by name.
    pub config: Option<String>,
}

/// Read access to pods and NADs by exact namespace and name.
///
/// Synchronous on purpose: the CNI binary is one-shot, and the Kubernetes store blocks on its
/// own runtime, so callers never need to be async to ask.
pub trait NetworkStore {
    /// `Ok(None)` when the pod does not exist; errors only when the store cannot answer.
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, StoreError>;
    /// `Ok(None)` when the NAD does not exist; errors only when the store cannot answer.
    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError>;
    /// Several NADs (`(namespace, name)`), answered in the order asked, each as `nad` would.
    /// One after the other here; a store whose every answer is a round trip (the API) asks
    /// for them all at once, so a pod with N networks waits for one round trip, not N.
    fn nads(&self, refs: &[(&str, &str)]) -> Vec<Result<Option<Nad>, StoreError>> {
        refs.iter().map(|(ns, name)| self.nad(ns, name)).collect()
    }
    /// Short name of the store for logs and error details ("manifests", "kubernetes").
    fn kind(&self) -> &'static str;
    /// Whether a pod this store does not find is gone (the API server) rather than merely
    /// not described (a folder of manifests): ADD then fails with code 3.
    fn knows_every_pod(&self) -> bool {
        false
    }
    /// Whether the store can answer now (CNI STATUS): the API store asks the API server.
    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Publishes the pod's `k8s.v1.cni.cncf.io/network-status` annotation (`status` is its JSON
    /// value). A store with nowhere to publish (a folder of manifests) does nothing; a pod that
    /// is gone is not an error (the runtime is tearing it down).
    fn publish_status(
        &self,
        _namespace: &str,
        _name: &str,
        _status: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Records an event on the pod (`AddedInterface`, or a warning naming the network that
    /// failed). Best effort: callers log and ignore errors.
    fn event(&self, _pod: &Pod, _event: &PodEvent) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An event about a pod's networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// `AddedInterface`, `NoNetworkFound`, `AttachFailed`, ...
    pub reason: String,
    pub message: String,
    pub warning: bool,
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("read manifests folder {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read manifest {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {} is {size} bytes, over the {limit}-byte limit", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("parse manifest {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    /// A Pod or NAD whose shape is wrong; `origin` names the file and document (or the API object).
    #[error("invalid {origin}: {reason}")]
    Malformed { origin: String, reason: String },
    #[error("duplicate {kind} {namespace}/{name} in {first} and {second}")]
    Duplicate {
        kind: &'static str,
        namespace: String,
        name: String,
        first: String,
        second: String,
    },
    /// The store exists but cannot answer now (API server down, timeout, throttled): try again.
    #[error("{store} store unavailable while {step}")]
    Unavailable {
        store: &'static str,
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    /// The CNI error code (SPEC: 5 I/O, 7 invalid config, 11 try again later).
    pub fn code(&self) -> cni::Code {
        match self {
            StoreError::ReadDir { .. } | StoreError::ReadFile { .. } => cni::Code::Io,
            StoreError::TooLarge { .. }
            | StoreError::Parse { .. }
            | StoreError::Malformed { .. }
            | StoreError::Duplicate { .. } => cni::Code::InvalidConfig,
            StoreError::Unavailable { .. } => cni::Code::TryAgainLater,
        }
    }
}

/// The store the conf asks for, if any. A kubeconfig means a cluster: the API is the truth,
/// a manifests folder only the fallback for nodes without one.
pub fn open(conf: &crate::conf::PlexusConf) -> Result<Option<Box<dyn NetworkStore>>, StoreError> {
    if let Some(path) = &conf.kubeconfig {
        let opts = match conf.api_timeout {
            Some(t) => KubeOptions::with_read_timeout(t),
            None => KubeOptions::default(),
        };
        return Ok(Some(Box::new(KubeStore::connect(path, opts)?)));
    }
    if let Some(dir) = &conf.manifests {
        return Ok(Some(Box::new(ManifestStore::open(dir)?)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_follow_the_cni_spec() {
        let io = || std::io::Error::other("boom");
        assert_eq!(
            StoreError::ReadDir {
                path: "x".into(),
                source: io()
            }
            .code(),
            5
        );
        assert_eq!(
            StoreError::Malformed {
                origin: "x".into(),
                reason: "y".into()
            }
            .code(),
            7
        );
        assert_eq!(
            StoreError::Unavailable {
                store: "kubernetes",
                step: "get pod".into(),
                source: Box::new(io())
            }
            .code(),
            11
        );
    }
}
