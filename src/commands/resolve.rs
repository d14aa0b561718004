//! Step 2 of the flow: from the conf, the pod and the store to the networks to attach —
//! the cluster network, `defaultNetworks`, and the pod's selections with their NADs.

use crate::conf::{ClusterNetwork, PlexusConf};
use crate::env::PodRef;
use crate::plan::ResolvedNetwork;
use crate::selection::{self, DEFAULT_NETWORK_ANNOTATION, NetworkSelection};
use crate::store::{ManifestStore, NetworkStore, Pod};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The capability under which containerd and CRI-O pass every pod annotation in
/// `runtimeConfig` to a plugin that declares it.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

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
        "pod {namespace}/{name} may not use network {network}: namespace isolation allows only its own namespace and {global:?}"
    )]
    Isolation {
        namespace: String,
        name: String,
        network: String,
        global: Vec<String>,
    },
    #[error("pod {namespace}/{name} has UID {actual}, not {expected} as K8S_POD_UID says")]
    UidMismatch {
        namespace: String,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("pod {namespace}/{name} not found on the API server")]
    PodNotFound { namespace: String, name: String },
    #[error("runtimeConfig {POD_ANNOTATIONS_CAPABILITY:?}: {0}")]
    BadRuntimeAnnotations(String),
}

impl ResolveError {
    pub fn code(&self) -> u32 {
        use cni::Code;
        match self {
            // A NAD that is not there yet may be created in a moment (DESIGN.md: code 11).
            ResolveError::NadNotFound(_) => Code::TryAgainLater.as_u32(),
            ResolveError::Isolation { .. } => Code::NamespaceIsolation.as_u32(),
            ResolveError::UidMismatch { .. } => Code::PodUidMismatch.as_u32(),
            ResolveError::PodNotFound { .. } => Code::UnknownContainer.as_u32(),
            ResolveError::BadFile { .. } => Code::InvalidConfig.as_u32(),
            _ => Code::InvalidConfig.as_u32(),
        }
    }
}

/// The store the conf asks for, if any.
pub fn open_store(conf: &PlexusConf) -> Result<Option<Box<dyn NetworkStore>>, crate::Error> {
    // A kubeconfig means a cluster: the API is the truth, a manifests folder only the
    // fallback for nodes without one.
    if let Some(path) = &conf.kubeconfig {
        let opts = match conf.api_timeout {
            Some(t) => crate::store::KubeOptions::with_read_timeout(t),
            None => crate::store::KubeOptions::default(),
        };
        let store = crate::store::KubeStore::connect(path, opts)?;
        return Ok(Some(Box::new(store)));
    }
    if let Some(dir) = &conf.manifests {
        return Ok(Some(Box::new(ManifestStore::open(dir)?)));
    }
    Ok(None)
}

/// Everything resolved for one ADD.
pub struct Resolved {
    pub cluster: ResolvedNetwork,
    pub defaults: Vec<ResolvedNetwork>,
    pub secondaries: Vec<ResolvedNetwork>,
    pub pod: Option<Pod>,
}

pub fn resolve(
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    pod_ref: &PodRef,
    check_uid: bool,
) -> Result<Resolved, crate::Error> {
    let namespace = pod_ref.namespace.as_deref().unwrap_or("default");
    let pod = match (store, pod_ref.name.as_deref()) {
        (Some(s), Some(name)) => s.pod(namespace, name)?,
        _ => None,
    };
    // The API server is the truth about pods: one it does not have is gone, and ADD for it
    // must not attach anything (reliability matrix K5). A folder of manifests need not
    // describe every pod, so there a missing pod gets the cluster network only.
    if check_uid
        && pod.is_none()
        && let (Some(s), Some(name)) = (store, pod_ref.name.as_deref())
        && s.knows_every_pod()
    {
        return Err(ResolveError::PodNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
        .into());
    }
    if check_uid
        && let (Some(p), Some(expected)) = (&pod, pod_ref.uid.as_deref())
        && let Some(actual) = p.uid.as_deref()
        && actual != expected
    {
        return Err(ResolveError::UidMismatch {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
        .into());
    }

    // The runtime's copy of the pod's annotations, when it passes them, is what the pod asked
    // for when this sandbox was made: it wins over the store's, and stands in for a pod the
    // manifests folder does not describe. The store's pod still answers for the UID check
    // above, the pod's existence and network-status.
    let pod = match (pod, runtime_pod_annotations(conf)?, pod_ref.name.as_deref()) {
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
    };

    // `v1.multus-cni.io/default-network` replaces the cluster network for this pod. Bare
    // names resolve in multusNamespace, as Multus does; namespace isolation applies here too
    // (Multus skips it on this path).
    let overridden = if let (Some(p), Some(s)) = (&pod, store)
        && let Some(annotation) = p.annotations.get(DEFAULT_NETWORK_ANNOTATION)
        && !annotation.trim().is_empty()
    {
        let sel = selection::parse_default_network(annotation, &conf.multus_namespace)?;
        if sel.namespace != conf.multus_namespace {
            check_isolation(conf, p, &sel)?;
        }
        Some(nad_network(conf, s, sel)?.resolved)
    } else {
        None
    };

    let cluster = match overridden {
        Some(c) => c,
        None => match &conf.cluster_network {
            ClusterNetwork::Inline(m) => ResolvedNetwork {
                key: m
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("cluster")
                    .to_string(),
                config: m.clone(),
                selection: None,
                device_id: None,
            },
            ClusterNetwork::Reference(r) => network_by_reference(conf, store, r)?,
        },
    };

    // Every inline delegate after the first follows the cluster network, in every namespace
    // (Multus attaches all of `delegates`); then `defaultNetworks`, except in system
    // namespaces — compared by namespace, not pod name (Multus #1205 compares the name).
    let mut defaults: Vec<ResolvedNetwork> = conf
        .extra_delegates
        .iter()
        .enumerate()
        .map(|(i, m)| ResolvedNetwork {
            key: m
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("delegates-{}", i + 1), str::to_string),
            config: m.clone(),
            selection: None,
            device_id: None,
        })
        .collect();
    let system = conf.system_namespaces.iter().any(|n| n == namespace);
    if !system {
        for d in &conf.default_networks {
            defaults.push(network_by_reference(conf, store, d)?);
        }
    }

    let mut secondaries = Vec::new();
    if let (Some(p), Some(s)) = (&pod, store)
        && let Some(annotation) = p.annotations.get(NETWORKS_ANNOTATION)
    {
        let mut devices = Devices::default();
        let mut sels = selection::parse_networks(annotation, &p.namespace)?;
        // The NADs are read together (one round trip to the API server, not one per network),
        // up to the first selection that namespace isolation refuses: errors come in
        // annotation order, as if each NAD were read in turn.
        let refused = sels
            .iter()
            .position(|sel| check_isolation(conf, p, sel).is_err());
        let allowed = refused.unwrap_or(sels.len());
        let refs: Vec<(&str, &str)> = sels[..allowed]
            .iter()
            .map(|sel| (sel.namespace.as_str(), sel.name.as_str()))
            .collect();
        let nads = s.nads(&refs);
        let rest = sels.split_off(allowed);
        for (sel, nad) in sels.into_iter().zip(nads) {
            let mut network = nad_network_from(conf, sel, nad)?;
            if let Some(id) = devices.assign(conf, p, &network.nad_annotations)? {
                network.resolved.device_id = Some(id);
            }
            secondaries.push(network.resolved);
        }
        if let Some(sel) = rest.first() {
            check_isolation(conf, p, sel)?;
        }
    }
    Ok(Resolved {
        cluster,
        defaults,
        secondaries,
        pod,
    })
}

/// `runtimeConfig["io.kubernetes.cri.pod-annotations"]`: an object of strings, or `None`
/// when the runtime did not pass it.
fn runtime_pod_annotations(
    conf: &PlexusConf,
) -> Result<Option<std::collections::BTreeMap<String, String>>, ResolveError> {
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
    if !conf.namespace_isolation
        || sel.namespace == pod.namespace
        || conf.global_namespaces.contains(&sel.namespace)
    {
        return Ok(());
    }
    Err(ResolveError::Isolation {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        network: format!("{}/{}", sel.namespace, sel.name),
        global: conf.global_namespaces.clone(),
    })
}

/// A selection's network with the NAD annotations that matter later (the device resource).
struct NadNetwork {
    resolved: ResolvedNetwork,
    nad_annotations: std::collections::BTreeMap<String, String>,
}

fn nad_network(
    conf: &PlexusConf,
    store: &dyn NetworkStore,
    sel: NetworkSelection,
) -> Result<NadNetwork, crate::Error> {
    let nad = store.nad(&sel.namespace, &sel.name);
    nad_network_from(conf, sel, nad)
}

/// `nad_network` with the store's answer for the selection's NAD already in hand.
fn nad_network_from(
    conf: &PlexusConf,
    sel: NetworkSelection,
    nad: Result<Option<crate::store::Nad>, crate::store::StoreError>,
) -> Result<NadNetwork, crate::Error> {
    let key = format!("{}/{}", sel.namespace, sel.name);
    let nad = nad?.ok_or_else(|| ResolveError::NadNotFound(key.clone()))?;
    let config = nad_or_disk_config(conf, &key, &sel.name, nad.config.as_deref())?;
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

pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// Device-plugin devices the kubelet gave the pod, handed out one per selection of the same
/// resource in annotation order (what Multus does), so two networks on one SR-IOV resource
/// get two different VFs.
#[derive(Default)]
struct Devices {
    by_resource: std::collections::BTreeMap<String, (Vec<String>, usize)>,
}

impl Devices {
    fn assign(
        &mut self,
        conf: &PlexusConf,
        pod: &Pod,
        nad_annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, crate::Error> {
        let Some(resource) = nad_annotations.get(RESOURCE_NAME_ANNOTATION) else {
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

/// A NAD's conf; for an empty spec, the conf file of the same name in `confDir` (NPWG §3.4.1)
/// — only when the conf opts in with `nadConfFromConfDir`: otherwise a tenant's empty NAD
/// could reach networks the node admin meant for the host only (reliability-matrix §2).
fn nad_or_disk_config(
    conf: &PlexusConf,
    key: &str,
    name: &str,
    config: Option<&str>,
) -> Result<Map<String, Value>, crate::Error> {
    let empty = config.is_none_or(|c| c.trim().is_empty());
    if empty && conf.nad_conf_from_conf_dir {
        return conf_by_name(&conf.conf_dir, name)?.ok_or_else(|| {
            ResolveError::BadNad {
                key: key.to_string(),
                reason: format!(
                    "spec.config is empty and no conf named {name:?} is in {}",
                    conf.conf_dir.display()
                ),
            }
            .into()
        });
    }
    Ok(nad_config(key, config)?)
}

fn nad_config(key: &str, config: Option<&str>) -> Result<Map<String, Value>, ResolveError> {
    let bad = |reason: String| ResolveError::BadNad {
        key: key.to_string(),
        reason,
    };
    let text = config
        .filter(|c| !c.trim().is_empty())
        // Reading a host conf for an empty spec lets a tenant reach admin-only networks
        // (reliability-matrix §2), so it is not done.
        .ok_or_else(|| {
            bad("spec.config is empty (set nadConfFromConfDir to read a conf of the same name from confDir)".into())
        })?;
    cni::netconf::parse_object(text.as_bytes()).map_err(|e| bad(format!("spec.config: {e}")))
}

/// `clusterNetwork` / `defaultNetworks` entries, as Multus resolves them: a NAD (`[ns/]name`,
/// bare names in `multusNamespace`), else a conf in `confDir` whose `name` matches, else a
/// directory (its first conf file) or a conf file path.
pub fn network_by_reference(
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
    reference: &str,
) -> Result<ResolvedNetwork, crate::Error> {
    let path = Path::new(reference);
    if path.is_absolute() {
        let file = if path.is_dir() {
            first_conf_file(path)?.ok_or_else(|| ResolveError::NetworkNotFound(reference.into()))?
        } else {
            path.to_path_buf()
        };
        let config = read_conf_file(&file)?;
        return Ok(file_network(config, reference));
    }
    let (ns, name) = match reference.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (conf.multus_namespace.as_str(), reference),
    };
    if let Some(s) = store
        && crate::env::is_dns1123_label(ns)
        && crate::env::is_dns1123_subdomain(name)
        && let Some(nad) = s.nad(ns, name)?
    {
        let key = format!("{ns}/{name}");
        let config = nad_or_disk_config(conf, &key, name, nad.config.as_deref())?;
        return Ok(ResolvedNetwork {
            key,
            config,
            selection: None,
            device_id: None,
        });
    }
    if let Some(config) = conf_by_name(&conf.conf_dir, reference)? {
        return Ok(file_network(config, reference));
    }
    Err(ResolveError::NetworkNotFound(reference.into()).into())
}

fn file_network(config: Map<String, Value>, reference: &str) -> ResolvedNetwork {
    let key = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(reference)
        .to_string();
    ResolvedNetwork {
        key,
        config,
        selection: None,
        device_id: None,
    }
}

fn is_conf_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("conf" | "conflist" | "json")
    )
}

fn sorted_conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| is_conf_file(p))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn first_conf_file(dir: &Path) -> Result<Option<PathBuf>, ResolveError> {
    Ok(sorted_conf_files(dir).into_iter().next())
}

fn conf_by_name(dir: &Path, name: &str) -> Result<Option<Map<String, Value>>, ResolveError> {
    for file in sorted_conf_files(dir) {
        // Unreadable neighbours are not this network's problem.
        let Ok(config) = read_conf_file(&file) else {
            continue;
        };
        if config.get("name").and_then(Value::as_str) == Some(name) {
            return Ok(Some(config));
        }
    }
    Ok(None)
}

fn read_conf_file(path: &Path) -> Result<Map<String, Value>, ResolveError> {
    let bad = |reason: String| ResolveError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    cni::netconf::parse_object(&bytes).map_err(|e| bad(e.to_string()))
}
