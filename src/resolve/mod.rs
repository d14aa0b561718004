//! Step 2 of the flow: from the conf, the pod and the store to the networks to attach — the
//! cluster network, `defaultNetworks`, the pod's selections with their NADs, and the
//! auxiliary chain. Every file and API read of an ADD happens here or before: planning and
//! what follows it read none.

mod auxiliary;
mod reference;

use crate::annotations::{self, POD_ANNOTATIONS_CAPABILITY};
use crate::conf::{ClusterNetwork, ConfError, PlexusConf};
use crate::plan::ResolvedNetwork;
use crate::pod::PodRef;
use crate::selection::{self, NetworkSelection, SelectionError};
use crate::store::{Nad, NetworkStore, Pod, StoreError};
use cni::netconf::NetConfList;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("network {0}: not found as a NAD, a conf in confDir, or a path")]
    NetworkNotFound(String),
    #[error("NetworkAttachmentDefinition {0} not found")]
    NadNotFound(String),
    #[error("NetworkAttachmentDefinition {key}: {reason}")]
    BadNad { key: String, reason: String },
    #[error("conf file {path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error(
        "pod {} may not use network {network}: namespace isolation allows only its own namespace and {global:?}",
        .pod
    )]
    Isolation {
        pod: Box<PodName>,
        network: String,
        global: Vec<String>,
    },
    #[error("pod {pod} has UID {actual}, not {expected} as K8S_POD_UID says")]
    UidMismatch {
        pod: Box<PodName>,
        expected: String,
        actual: String,
    },
    #[error("pod {0} not found on the API server")]
    PodNotFound(PodName),
    #[error("runtimeConfig {POD_ANNOTATIONS_CAPABILITY:?}: {0}")]
    BadRuntimeAnnotations(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error(transparent)]
    Conf(#[from] ConfError),
}

/// `namespace/name` of a pod, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ResolveError {
    pub fn code(&self) -> cni::Code {
        use cni::Code;
        match self {
            // A NAD that is not there yet may be created in a moment: the runtime retries.
            ResolveError::NadNotFound(_) => Code::TryAgainLater,
            ResolveError::Isolation { .. } => Code::NamespaceIsolation,
            ResolveError::UidMismatch { .. } => Code::PodUidMismatch,
            ResolveError::PodNotFound { .. } => Code::UnknownContainer,
            ResolveError::Store(e) => e.code(),
            ResolveError::Selection(e) => e.code(),
            ResolveError::Conf(e) => e.code(),
            ResolveError::NetworkNotFound(_)
            | ResolveError::BadNad { .. }
            | ResolveError::BadFile { .. }
            | ResolveError::BadRuntimeAnnotations(_) => Code::InvalidConfig,
        }
    }

    /// The network the error is about, when it names one.
    pub fn network(&self) -> Option<&str> {
        match self {
            ResolveError::NadNotFound(n) | ResolveError::NetworkNotFound(n) => Some(n),
            ResolveError::BadNad { key, .. } => Some(key),
            ResolveError::Isolation { network, .. } => Some(network),
            _ => None,
        }
    }
}

/// Why the networks are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// To attach them: the pod must exist (on the API) with the UID the runtime named, and
    /// the auxiliary chain is read too.
    Attach,
    /// To find what an ADD attached (DEL of an unreadable entry), or the cluster network (GC,
    /// STATUS): nothing about the pod is checked.
    Lookup,
}

/// Everything resolved for one call.
pub struct Resolved {
    pub cluster: ResolvedNetwork,
    pub defaults: Vec<ResolvedNetwork>,
    pub secondaries: Vec<ResolvedNetwork>,
    /// The auxiliary chain (`auxiliaryCNIChainName`), when attaching.
    pub auxiliary: Option<NetConfList>,
    pub pod: Option<Pod>,
}

pub fn resolve(
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    pod_ref: &PodRef,
    purpose: Purpose,
) -> Result<Resolved, ResolveError> {
    let pod = pod(conf, store, pod_ref, purpose)?;
    let cluster = cluster(conf, store, pod.as_ref())?;
    let defaults = defaults(conf, store, pod_ref.namespace())?;
    let secondaries = match (&pod, store) {
        (Some(p), Some(s)) => secondaries(conf, s, p)?,
        _ => Vec::new(),
    };
    // A cluster conf without a usable version fails planning, which names the problem.
    let auxiliary = match cni::netconf::negotiate_version(&cluster.config) {
        Ok(version) if purpose == Purpose::Attach => auxiliary::chain(conf, version)?,
        _ => None,
    };
    Ok(Resolved {
        cluster,
        defaults,
        secondaries,
        auxiliary,
        pod,
    })
}

/// The pod, from the store and the runtime's copy of its annotations.
fn pod(
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    pod_ref: &PodRef,
    purpose: Purpose,
) -> Result<Option<Pod>, ResolveError> {
    let namespace = pod_ref.namespace();
    let pod = match (store, pod_ref.name.as_deref()) {
        (Some(s), Some(name)) => s.pod(namespace, name)?,
        _ => None,
    };
    if purpose == Purpose::Attach {
        check_pod(store, pod_ref, pod.as_ref())?;
    }
    // The runtime's copy of the pod's annotations, when it passes them, is what the pod asked
    // for when this sandbox was made: it wins over the store's, and stands in for a pod the
    // manifests folder does not describe. The store's pod still answers for the UID check,
    // the pod's existence and network-status.
    Ok(
        match (pod, runtime_pod_annotations(conf)?, pod_ref.name.as_deref()) {
            (Some(mut p), Some(annotations), _) => {
                p.annotations = annotations;
                Some(p)
            }
            (None, Some(annotations), Some(name)) => Some(Pod {
                namespace: namespace.to_string(),
                name: name.to_string(),
                uid: pod_ref.uid.clone(),
                annotations,
            }),
            (p, _, _) => p,
        },
    )
}

/// The API server is the truth about pods: one it does not have is gone, and ADD for it must
/// not attach anything; one of another UID is a newer pod of the same name. A folder of
/// manifests need not describe every pod, so there a missing pod gets the cluster network
/// only.
fn check_pod(
    store: Option<&dyn NetworkStore>,
    pod_ref: &PodRef,
    pod: Option<&Pod>,
) -> Result<(), ResolveError> {
    if pod.is_none()
        && let (Some(s), Some(name)) = (store, pod_ref.name.as_deref())
        && s.knows_every_pod()
    {
        return Err(ResolveError::PodNotFound(PodName {
            namespace: pod_ref.namespace().to_string(),
            name: name.to_string(),
        }));
    }
    if let (Some(p), Some(expected)) = (pod, pod_ref.uid.as_deref())
        && let Some(actual) = p.uid.as_deref()
        && actual != expected
    {
        return Err(ResolveError::UidMismatch {
            pod: Box::new(PodName {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            }),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// The cluster network: the pod's `v1.multus-cni.io/default-network` when it sets one (bare
/// names in multusNamespace, as Multus resolves them; namespace isolation applies here too,
/// where Multus skips it), else the conf's.
fn cluster(
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    pod: Option<&Pod>,
) -> Result<ResolvedNetwork, ResolveError> {
    if let (Some(p), Some(s)) = (pod, store)
        && let Some(annotation) = p.annotations.get(annotations::DEFAULT_NETWORK)
        && !annotation.trim().is_empty()
    {
        let sel = selection::parse_default_network(annotation, &conf.multus_namespace)?;
        if sel.namespace != conf.multus_namespace {
            check_isolation(conf, p, &sel)?;
        }
        let nad = s.nad(&sel.namespace, &sel.name);
        return Ok(nad_network(conf, sel, nad)?.resolved);
    }
    match &conf.cluster_network {
        ClusterNetwork::Inline(m) => Ok(inline(m, || "cluster".to_string())),
        ClusterNetwork::Reference(r) => reference::network_by_reference(conf, store, r),
    }
}

/// Every inline delegate after the first follows the cluster network, in every namespace
/// (Multus attaches all of `delegates`); then `defaultNetworks`, except in system
/// namespaces — compared by namespace, not pod name: a pod *named* like a system namespace elsewhere
/// is an ordinary pod.
fn defaults(
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    namespace: &str,
) -> Result<Vec<ResolvedNetwork>, ResolveError> {
    let mut defaults: Vec<ResolvedNetwork> = conf
        .extra_delegates
        .iter()
        .enumerate()
        .map(|(i, m)| inline(m, || format!("delegates-{}", i + 1)))
        .collect();
    if !conf.system_namespaces.iter().any(|n| n == namespace) {
        for d in &conf.default_networks {
            defaults.push(reference::network_by_reference(conf, store, d)?);
        }
    }
    Ok(defaults)
}

/// An inline conf of the Plexus conf, known by its `name`.
fn inline(m: &serde_json::Map<String, Value>, unnamed: impl FnOnce() -> String) -> ResolvedNetwork {
    ResolvedNetwork {
        key: m
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(unnamed, str::to_string),
        config: m.clone(),
        selection: None,
        device_id: None,
    }
}

/// The networks of the pod's `k8s.v1.cni.cncf.io/networks`, each with its NAD.
fn secondaries(
    conf: &PlexusConf,
    store: &dyn NetworkStore,
    pod: &Pod,
) -> Result<Vec<ResolvedNetwork>, ResolveError> {
    let Some(annotation) = pod.annotations.get(annotations::NETWORKS) else {
        return Ok(Vec::new());
    };
    let mut devices = Devices::default();
    let mut out = Vec::new();
    let mut sels = selection::parse_networks(annotation, &pod.namespace)?;
    // The NADs are read together (one round trip to the API server, not one per network),
    // up to the first selection that namespace isolation refuses: errors come in
    // annotation order, as if each NAD were read in turn.
    let allowed = sels
        .iter()
        .position(|sel| check_isolation(conf, pod, sel).is_err())
        .unwrap_or(sels.len());
    let refused = sels.split_off(allowed);
    let refs: Vec<(&str, &str)> = sels
        .iter()
        .map(|sel| (sel.namespace.as_str(), sel.name.as_str()))
        .collect();
    let nads = store.nads(&refs);
    for (sel, nad) in sels.into_iter().zip(nads) {
        let mut network = nad_network(conf, sel, nad)?;
        if let Some(id) = devices.assign(conf, pod, &network.nad_annotations)? {
            network.resolved.device_id = Some(id);
        }
        out.push(network.resolved);
    }
    if let Some(sel) = refused.first() {
        check_isolation(conf, pod, sel)?;
    }
    Ok(out)
}

/// `runtimeConfig["io.kubernetes.cri.pod-annotations"]`: an object of strings, or `None`
/// when the runtime did not pass it.
fn runtime_pod_annotations(
    conf: &PlexusConf,
) -> Result<Option<BTreeMap<String, String>>, ResolveError> {
    let Some(value) = conf.runtime_config.get(POD_ANNOTATIONS_CAPABILITY) else {
        return Ok(None);
    };
    let bad = || ResolveError::BadRuntimeAnnotations("must be an object of strings".into());
    let Value::Object(m) = value else {
        return Err(bad());
    };
    m.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(bad)?.to_string())))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn check_isolation(
    conf: &PlexusConf,
    pod: &Pod,
    sel: &NetworkSelection,
) -> Result<(), ResolveError> {
    if !conf.isolation.enabled
        || sel.namespace == pod.namespace
        || conf.isolation.global.contains(&sel.namespace)
    {
        return Ok(());
    }
    Err(ResolveError::Isolation {
        pod: Box::new(PodName {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        }),
        network: format!("{}/{}", sel.namespace, sel.name),
        global: conf.isolation.global.clone(),
    })
}

/// A selection's network with the NAD annotations that matter later (the device resource).
struct NadNetwork {
    resolved: ResolvedNetwork,
    nad_annotations: BTreeMap<String, String>,
}

/// A selection's network, given the store's answer for its NAD.
fn nad_network(
    conf: &PlexusConf,
    sel: NetworkSelection,
    nad: Result<Option<Nad>, StoreError>,
) -> Result<NadNetwork, ResolveError> {
    let key = format!("{}/{}", sel.namespace, sel.name);
    let nad = nad?.ok_or_else(|| ResolveError::NadNotFound(key.clone()))?;
    let config = reference::nad_or_disk_config(conf, &key, &sel.name, nad.config.as_deref())?;
    Ok(NadNetwork {
        resolved: ResolvedNetwork {
            key,
            config,
            device_id: sel.device_id.clone(),
            selection: Some(sel),
        },
        nad_annotations: nad.annotations,
    })
}

/// Device-plugin devices the kubelet gave the pod, handed out one per selection of the same
/// resource in annotation order (what Multus does), so two networks on one SR-IOV resource
/// get two different VFs.
#[derive(Default)]
struct Devices {
    by_resource: BTreeMap<String, (Vec<String>, usize)>,
}

impl Devices {
    fn assign(
        &mut self,
        conf: &PlexusConf,
        pod: &Pod,
        nad_annotations: &BTreeMap<String, String>,
    ) -> Result<Option<String>, ResolveError> {
        let Some(resource) = nad_annotations.get(annotations::RESOURCE_NAME) else {
            return Ok(None);
        };
        let Some(uid) = pod.uid.as_deref() else {
            return Ok(None);
        };
        if !self.by_resource.contains_key(resource) {
            let ids = crate::store::devices::device_ids(&conf.device_checkpoint, uid, resource)?;
            self.by_resource.insert(resource.clone(), (ids, 0));
        }
        let Some((ids, next)) = self.by_resource.get_mut(resource) else {
            return Ok(None);
        };
        let id = ids.get(*next).cloned();
        *next += 1;
        Ok(id)
    }
}
