//! The plan: one [`Attachment`] per network, in the order they will be added, each with the
//! interface name, the exact delegate configuration and `CNI_ARGS` it will get.
//!
//! A pure function of already-resolved networks: no API calls, no files, no kernel. What it
//! decides, and why:
//! - The cluster network comes first as the runtime's `CNI_IFNAME` (NPWG §6); Multus's
//!   `defaultNetworks` and then the pod's selections follow as `net<N>`, N counting every
//!   non-cluster attachment from 1, unless the selection names its interface.
//! - `runtimeConfig` (CNI SPEC §3 "Deriving runtimeConfig") gets, per plugin, only the
//!   capabilities that plugin declares, and `capabilities` itself is removed. The pod-level
//!   `runtimeConfig` the runtime gave Plexus reaches the cluster network only (NPWG §7.5:
//!   a hostPort must not be opened on every secondary network too).
//! - What a selection asks for (`ips`, `mac`, `portMappings`, `bandwidth`, `infiniband-guid`,
//!   `deviceID`) must be declared as a capability by at least one plugin of its chain, or the
//!   plan fails (NPWG §4.1.2.1: "MUST fail"); Multus drops such requests silently.
//! - `cni-args` go into every plugin's `args.cni`, but only add keys: a key the NAD sets
//!   already may be repeated with the same value, never changed (a tenant must not rewrite
//!   the admin's config, e.g. host-local's `args.cni.ips`). A pod
//!   `cni-args.ips` also needs the `ips` capability, since host-local honours it the same way.
//! - `ipam-claim-reference` (NPWG v1.3 §8) travels as `args.cni["ipam-claim-reference"]`,
//!   which IPAM plugins that know IPAMClaims read and others ignore.
//! - A cluster network picked by `v1.multus-cni.io/default-network` carries a selection too:
//!   its requests are checked the same way and win over the runtime's value for the same
//!   capability; its `interface`, if any, must be the runtime's `CNI_IFNAME`.
//! - A `runtimeConfig` written in the NAD itself is replaced when there is something to
//!   inject and kept otherwise, as libcni does.
//! - Plugin `type`/`ipam.type` must be bare names and the network name must pass libcni's
//!   rule, so nothing from a NAD can become a path.
//! - A device ID from the NAD's resource (trusted: it comes from the device plugin) is set as
//!   `deviceID`/`pciBusID` on every plugin, as Multus does for SR-IOV, and offered as the
//!   `deviceID` capability; the selection's own `deviceID` is used only when there is none.

mod inject;
#[cfg(test)]
mod tests;

use crate::selection::NetworkSelection;
use cni::IfName;
use cni::netconf::{ConfError, NetConfList};
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Most attachments, the cluster network included, one pod may get.
pub const MAX_ATTACHMENTS: usize = 32;

/// A network whose configuration has been found (NAD `spec.config`, or a conf file).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNetwork {
    /// `namespace/name` for a NAD, the conf's name for a file.
    pub key: String,
    /// The configuration as stored: a conf (`type`) or a conflist (`plugins`).
    pub config: Map<String, Value>,
    /// What the pod asked for, when the pod asked for this network.
    pub selection: Option<NetworkSelection>,
    /// From the NAD's `k8s.v1.cni.cncf.io/resourceName` through the device plugin.
    pub device_id: Option<String>,
}

/// Who the attachments are for; absent outside Kubernetes (podman, plain containerd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
    pub infra_container_id: &'a str,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    pub cluster: &'a ResolvedNetwork,
    pub defaults: &'a [ResolvedNetwork],
    pub secondaries: &'a [ResolvedNetwork],
    pub runtime_ifname: &'a IfName,
    /// The `runtimeConfig` the runtime passed to Plexus itself.
    pub runtime_config: &'a Map<String, Value>,
    pub pod: Option<PodIdentity<'a>>,
}

/// One delegate invocation, ready to journal and run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: IfName,
    /// The cluster network (NPWG network-status `default`).
    pub is_default: bool,
    /// `runtimeConfig` and `args` are already set on each plugin; `name` and `cniVersion`
    /// are injected per plugin by [`NetConfList::plugin_conf`] at invocation.
    #[serde(serialize_with = "serialize_conf")]
    pub conf: NetConfList,
    /// The `CNI_ARGS` value for this delegate.
    pub cni_args: String,
    /// Gateways the pod wants its default routes through (applied by Plexus after ADD).
    pub default_route: Vec<IpAddr>,
    pub device_id: Option<String>,
}

fn serialize_conf<S: serde::Serializer>(conf: &NetConfList, s: S) -> Result<S::Ok, S::Error> {
    conf.to_value().serialize(s)
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("plan: {count} attachments, more than {MAX_ATTACHMENTS}")]
    TooMany { count: usize },
    /// The conf error is part of the message rather than a `source`: the CNI error `msg`
    /// is this error's text alone.
    #[error("network {network}: config: {error}")]
    Config { network: String, error: ConfError },
    #[error("network {network}: {field}: {reason}")]
    Invalid {
        network: String,
        field: String,
        reason: String,
    },
    #[error(
        "network {network}: the pod asks for {field} but no plugin of the chain declares the \
         {capability:?} capability"
    )]
    MissingCapability {
        network: String,
        field: &'static str,
        capability: &'static str,
    },
    #[error(
        "network {network} (attachment {index}): interface {ifname} is already used by \
         attachment {other_index} (network {other})"
    )]
    DuplicateIfName {
        network: String,
        index: usize,
        ifname: String,
        other: String,
        other_index: usize,
    },
    #[error("pod {key} {value:?} cannot be passed in CNI_ARGS")]
    PodArg { key: &'static str, value: String },
}

impl PlanError {
    /// Every planning problem is a configuration error (CNI code 7).
    pub fn code(&self) -> cni::Code {
        cni::Code::InvalidConfig
    }
}

/// Turns resolved networks into the ordered attachments of one pod.
pub fn plan(req: &PlanRequest) -> Result<Vec<Attachment>, PlanError> {
    let count = 1 + req.defaults.len() + req.secondaries.len();
    if count > MAX_ATTACHMENTS {
        return Err(PlanError::TooMany { count });
    }
    let base_args = pod_args(req.pod)?;

    let mut used: Vec<(IfName, &str)> = Vec::with_capacity(count);
    let mut out = Vec::with_capacity(count);

    let cluster = req.cluster;
    if let Some(asked) = cluster
        .selection
        .as_ref()
        .and_then(|s| s.interface.as_ref())
        && asked != req.runtime_ifname
    {
        return Err(PlanError::Invalid {
            network: cluster.key.clone(),
            field: "interface".into(),
            reason: format!(
                "the cluster network always uses the runtime's interface {}, not {asked}",
                req.runtime_ifname
            ),
        });
    }
    used.push((req.runtime_ifname.clone(), &cluster.key));
    out.push(attach(
        cluster,
        req.runtime_ifname.clone(),
        true,
        req.runtime_config,
        &base_args,
    )?);

    let no_pod_runtime = Map::new();
    for (i, net) in req.defaults.iter().chain(req.secondaries).enumerate() {
        let ifname = match net.selection.as_ref().and_then(|s| s.interface.clone()) {
            Some(asked) => asked,
            None => IfName::parse(&format!("net{}", i + 1)).map_err(|e| PlanError::Invalid {
                network: net.key.clone(),
                field: "interface".into(),
                reason: e.to_string(),
            })?,
        };
        if let Some(other_index) = used.iter().position(|(n, _)| *n == ifname) {
            return Err(PlanError::DuplicateIfName {
                network: net.key.clone(),
                index: i + 1,
                ifname: ifname.to_string(),
                other: used[other_index].1.to_string(),
                other_index,
            });
        }
        used.push((ifname.clone(), &net.key));
        out.push(attach(net, ifname, false, &no_pod_runtime, &base_args)?);
    }
    Ok(out)
}

/// The auxiliary chain (`auxiliaryCNIChainName`) as an attachment: it runs on the cluster
/// network's interface with its `CNI_ARGS`, after it and from its result, and is no network
/// of its own in network-status.
pub fn auxiliary(cluster: &Attachment, list: &NetConfList) -> Attachment {
    Attachment {
        network: list.name.clone(),
        conf: list.clone(),
        default_route: Vec::new(),
        device_id: None,
        ..cluster.clone()
    }
}

fn attach(
    net: &ResolvedNetwork,
    ifname: IfName,
    is_default: bool,
    pod_runtime: &Map<String, Value>,
    base_args: &[(&'static str, String)],
) -> Result<Attachment, PlanError> {
    let conf = inject::delegate_conf(net, pod_runtime)?;
    let mut args: Vec<(&str, String)> = base_args.to_vec();
    if let Some(sel) = &net.selection {
        // Multus compat: old IPAM plugins (static) read the request from CNI_ARGS, and
        // `IgnoreUnknown=true` keeps the rest from failing on it.
        if !sel.ips.is_empty() {
            args.push(("IP", sel.ips.join(",")));
        }
        if let Some(mac) = &sel.mac {
            args.push(("MAC", mac.clone()));
        }
    }
    let cni_args = args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    Ok(Attachment {
        network: net.key.clone(),
        ifname,
        is_default,
        conf,
        cni_args,
        default_route: net
            .selection
            .as_ref()
            .map(|s| s.default_route.clone())
            .unwrap_or_default(),
        device_id: inject::device_id(net).map(str::to_string),
    })
}

/// The Kubernetes keys every delegate gets, in the order Multus sends them.
fn pod_args(pod: Option<PodIdentity>) -> Result<Vec<(&'static str, String)>, PlanError> {
    let mut args = vec![("IgnoreUnknown", "true".to_string())];
    let Some(pod) = pod else {
        return Ok(args);
    };
    let mut fields = vec![
        ("K8S_POD_NAMESPACE", pod.namespace),
        ("K8S_POD_NAME", pod.name),
        ("K8S_POD_INFRA_CONTAINER_ID", pod.infra_container_id),
    ];
    if let Some(uid) = pod.uid {
        fields.push(("K8S_POD_UID", uid));
    }
    for (key, value) in fields {
        // A `;` would split the value into a second, forged argument.
        if value.contains(';') || value.chars().any(char::is_control) {
            return Err(PlanError::PodArg {
                key,
                value: value.to_string(),
            });
        }
        args.push((key, value.to_string()));
    }
    Ok(args)
}
