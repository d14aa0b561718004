//! How an attachment is recorded: the entry of one ADD (container, `CNI_IFNAME`) and a
//! record per attachment, with the conf exactly as it ran, its result, and the identities of
//! the links it created, so DEL never has to re-resolve anything.

use crate::invoke::{Container, NsId, OwnedLink};
use crate::pod::PodRef;
use cni::CniResult;
use cni::netconf::NetConfList;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) const FORMAT: u32 = 1;

/// How far an attachment got. DEL undoes everything not `Removed`: a `Planned` attachment
/// may have been started by an ADD that was killed before it could record the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Planned,
    Added,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub network: String,
    pub ifname: String,
    pub is_default: bool,
    /// The delegate conflist exactly as it was run (lossless: DEL never re-resolves it).
    pub conf: Value,
    pub cni_args: String,
    pub state: State,
    /// The chain's result in 1.1.0 form, once added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_route: Vec<std::net::IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_error: Option<String>,
    /// The auxiliary chain (`auxiliaryCNIChainName`): runs on the cluster network's
    /// interface and result, and is no network of its own in network-status.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auxiliary: bool,
    /// The links the built-in delegates of this attachment created (namespace, ifindex,
    /// name, MAC): DEL removes a link only while it is still one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<OwnedLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub format: u32,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: Option<String>,
    /// The namespace `netns` named at ADD: a DEL whose netns path now names another one
    /// (another pod's, the node's) removes nothing in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_id: Option<NsId>,
    /// Seconds since the epoch when the ADD began (GC's grace period counts from here).
    pub created: u64,
    pub cni_version: String,
    #[serde(default)]
    pub pod: PodRef,
    pub attachments: Vec<Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_status: Option<Value>,
    /// DELs of this entry that failed, and when the first did: after enough of both, DEL
    /// answers success and leaves the entry as a tombstone for GC to retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_dels: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failed_del: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
}

impl Record {
    /// An attachment of the plan as the journal records it before anything runs.
    pub fn planned(a: &crate::plan::Attachment, auxiliary: bool) -> Record {
        Record {
            network: a.network.clone(),
            ifname: a.ifname.to_string(),
            is_default: a.is_default,
            conf: a.conf.to_value(),
            cni_args: a.cni_args.clone(),
            state: State::Planned,
            result: None,
            default_route: a.default_route.clone(),
            device_id: a.device_id.clone(),
            delegate_error: None,
            auxiliary,
            links: Vec::new(),
        }
    }

    /// The conflist and the cached result, as DEL and CHECK need them; `None` for what no
    /// longer reads.
    pub fn parts(&self) -> (Option<NetConfList>, Option<CniResult>) {
        let list = match &self.conf {
            Value::Object(m) => NetConfList::from_map(m.clone()).ok(),
            _ => None,
        };
        let result = self
            .result
            .as_ref()
            .and_then(|r| CniResult::parse(r, cni::Version::V1_1_0).ok());
        (list, result)
    }

    /// The attachment as the delegates see it: the container it belongs to, its interface,
    /// `CNI_ARGS` and the links its ADD made.
    pub fn container<'a>(
        &'a self,
        container_id: &'a str,
        netns: Option<&'a Path>,
    ) -> Container<'a> {
        Container {
            id: container_id,
            netns,
            ifname: &self.ifname,
            cni_args: &self.cni_args,
            owned: &self.links,
        }
    }

    /// The type of the chain's first plugin, the one that makes the pod's interface.
    pub fn first_plugin(&self) -> Option<&str> {
        self.first_plugin_conf()
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
    }

    /// The IPAM type of the chain's first plugin, if it has IPAM.
    pub fn first_plugin_ipam(&self) -> Option<&str> {
        self.first_plugin_conf()
            .and_then(|p| p.get("ipam"))
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
    }

    fn first_plugin_conf(&self) -> Option<&Value> {
        self.conf.get("plugins").and_then(|p| p.get(0))
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Entry {
    pub fn new(container_id: &str, ifname: &str, netns: Option<&Path>, cni_version: &str) -> Self {
        Entry {
            format: FORMAT,
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.map(|p| p.display().to_string()),
            netns_id: None,
            created: now_secs(),
            cni_version: cni_version.to_string(),
            pod: PodRef::default(),
            attachments: Vec::new(),
            network_status: None,
            failed_dels: 0,
            first_failed_del: None,
            tombstone: false,
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Entry {
    /// The entry of an ADD about to start: its container and netns (and the namespace that
    /// path names now, which DEL checks it against), the pod, and the plan.
    pub fn planned(
        env: &cni::env::Env,
        pod: &PodRef,
        cni_version: &str,
        ifname: &str,
        attachments: Vec<Record>,
    ) -> Entry {
        let mut entry = Entry::new(
            env.container_id(),
            ifname,
            env.netns.as_deref(),
            cni_version,
        );
        entry.netns_id = env.netns.as_deref().and_then(|p| NsId::of_path(p).ok());
        entry.pod = pod.clone();
        entry.attachments = attachments;
        entry
    }
}
