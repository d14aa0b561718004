//! The CNI commands: ADD, DEL, CHECK, GC, STATUS, VERSION. Each takes the validated
//! invocation, the Plexus conf and the store, and returns what goes on stdout. The CLI's
//! `plexus exec` calls the same functions as the runtime's exec of the binary.

mod add;
mod del;
mod maintenance;
mod resolve;

pub use resolve::{ResolveError, Resolved, network_by_reference, open_store, resolve};

use crate::cache::{Journal, JournaledAttachment};
use crate::conf::PlexusConf;
use crate::env::{Command, Invocation};
use crate::invoke::Runner;
use crate::store::NetworkStore;
use cni::CniResult;
use cni::netconf::NetConfList;
use serde_json::Value;
use std::time::Duration;

/// Longest wait for another operation on the same container to finish, and never longer
/// than the call's `timeout`: a lock someone holds forever costs no more than a delegate
/// that never answers.
fn lock_wait(conf: &PlexusConf) -> Duration {
    Duration::from_secs(30).min(conf.timeout)
}

/// What one attachment ended up as, for the CLI's summary table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachmentReport {
    pub network: String,
    pub ifname: String,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub delegates: Vec<String>,
    pub millis: u128,
}

/// What a command produced.
#[derive(Debug, Default)]
pub struct Report {
    /// The JSON document for stdout, if the command prints one.
    pub stdout: Option<Value>,
    pub attachments: Vec<AttachmentReport>,
    pub network_status: Option<Value>,
}

pub fn run(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<Report, crate::Error> {
    match inv.command {
        Command::Version => Ok(Report {
            stdout: Some(cni::Version::version_info(&conf.cni_version_str)),
            ..Report::default()
        }),
        Command::Add => add::add(inv, conf, store),
        Command::Del => del::del(inv, conf, store).map(|()| Report::default()),
        Command::Check => maintenance::check(inv, conf).map(|()| Report::default()),
        Command::Gc => maintenance::gc(inv, conf, store).map(|()| Report::default()),
        Command::Status => maintenance::status(inv, conf, store).map(|()| Report::default()),
    }
}

/// How this command runs delegates. Plexus itself is never a delegate (no recursion).
fn runner<'a>(conf: &'a PlexusConf, inv: &Invocation) -> Runner<'a> {
    let mut forbidden = vec!["plexus"];
    if conf.plugin_type != "plexus" {
        forbidden.push(conf.plugin_type.as_str());
    }
    Runner {
        cni_path: conf.delegate_path(&inv.cni_path),
        timeout: conf.timeout,
        forbidden,
        builtins: &conf.builtins,
        ipam_data_dirs: &conf.ipam_data_dirs,
    }
}

/// A journaled attachment's conflist and cached result, as DEL and CHECK need them.
fn journaled_parts(a: &JournaledAttachment) -> (Option<NetConfList>, Option<CniResult>) {
    let list = match &a.conf {
        Value::Object(m) => NetConfList::from_map(m.clone()).ok(),
        _ => None,
    };
    let result = a
        .result
        .as_ref()
        .and_then(|r| CniResult::parse(r, cni::Version::V1_1_0).ok());
    (list, result)
}

fn journal(conf: &PlexusConf) -> Result<Journal, crate::Error> {
    Ok(Journal::open(&conf.cni_dir)?)
}

/// Steps 2–3 of the flow for this invocation: resolve the networks and plan the attachments.
fn plan_attachments(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn crate::store::NetworkStore>,
    ifname: &cni::IfName,
    check_uid: bool,
) -> Result<(Resolved, Vec<crate::plan::Attachment>), crate::Error> {
    let resolved = resolve(conf, store, &inv.pod, check_uid)?;
    let infra = inv
        .pod
        .infra_container_id
        .as_deref()
        .unwrap_or(inv.container_id());
    let pod = inv
        .pod
        .name
        .as_deref()
        .map(|name| crate::plan::PodIdentity {
            namespace: inv.pod.namespace.as_deref().unwrap_or("default"),
            name,
            uid: inv.pod.uid.as_deref(),
            infra_container_id: infra,
        });
    let attachments = crate::plan::plan(&crate::plan::PlanRequest {
        cluster: &resolved.cluster,
        defaults: &resolved.defaults,
        secondaries: &resolved.secondaries,
        runtime_ifname: ifname,
        runtime_config: &conf.runtime_config,
        pod,
    })?;
    Ok((resolved, attachments))
}

/// The interfaces the container's other journal entries (ADDs with another `CNI_IFNAME`)
/// hold, each with that entry's `CNI_IFNAME`.
fn sibling_ifnames(
    journal: &Journal,
    lock: &crate::cache::ContainerLock,
    ifname: &str,
) -> Result<std::collections::BTreeMap<String, String>, crate::Error> {
    let mut taken = std::collections::BTreeMap::new();
    for e in journal.siblings(lock, ifname)? {
        taken.insert(e.ifname.clone(), e.ifname.clone());
        for a in &e.attachments {
            taken.insert(a.ifname.clone(), e.ifname.clone());
        }
    }
    Ok(taken)
}

/// A planned attachment as the journal records it before anything runs.
fn journal_record(a: &crate::plan::Attachment) -> JournaledAttachment {
    JournaledAttachment {
        network: a.network.clone(),
        ifname: a.ifname.to_string(),
        is_default: a.is_default,
        conf: a.conf.to_value(),
        cni_args: a.cni_args.clone(),
        state: crate::cache::State::Planned,
        result: None,
        default_route: a.default_route.clone(),
        device_id: a.device_id.clone(),
        delegate_error: None,
        auxiliary: false,
        links: Vec::new(),
    }
}

/// Multus's `auxiliaryCNIChainName`: the confs in `<dir>/<name>/`, where `<dir>` is the
/// folder of the cluster network's conf file (`clusterNetwork` given as a path) or `confDir`,
/// run as one chain on the cluster network's interface after it, starting from its result.
/// `None` when the key is unset or the folder holds no conf.
fn auxiliary_chain(
    conf: &PlexusConf,
    cluster: &NetConfList,
) -> Result<Option<NetConfList>, crate::Error> {
    let Some(name) = conf.auxiliary_cni_chain_name.as_deref() else {
        return Ok(None);
    };
    let invalid = |reason: String| crate::conf::ConfError::Invalid {
        key: "auxiliaryCNIChainName",
        reason,
    };
    if !cni::names::is_valid_name(name) {
        return Err(invalid(format!("{name:?} is not a valid network name")).into());
    }
    let base = match &conf.cluster_network {
        crate::conf::ClusterNetwork::Reference(r) if std::path::Path::new(r).is_absolute() => {
            let p = std::path::Path::new(r);
            if p.is_dir() {
                p.to_path_buf()
            } else {
                p.parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default()
            }
        }
        _ => conf.conf_dir.clone(),
    };
    let dir = base.join(name);
    // The folder and its files must be what they claim: a FIFO named `x.conf` would hold the
    // ADD forever, a device would never end.
    if std::fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
        return Err(invalid(format!("{} is not a directory", dir.display())).into());
    }
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conf" | "conflist" | "json")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut plugins = Vec::new();
    for file in &files {
        let bytes = cni::file::read_regular(file, cni::netconf::MAX_CONF_BYTES as u64)
            .map_err(|e| invalid(format!("read {e}")))?;
        let mut map = cni::netconf::parse_object(&bytes)
            .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
        match map.remove("plugins") {
            Some(Value::Array(list)) => plugins.extend(list),
            Some(_) => {
                return Err(invalid(format!("{}: plugins must be a list", file.display())).into());
            }
            None => plugins.push(Value::Object(map)),
        }
    }
    if plugins.is_empty() {
        return Ok(None);
    }
    let mut list = serde_json::Map::new();
    list.insert("cniVersion".into(), cluster.cni_version.as_str().into());
    list.insert("name".into(), name.into());
    list.insert("plugins".into(), Value::Array(plugins));
    NetConfList::from_map(list)
        .map(Some)
        .map_err(|e| invalid(format!("{}: {e}", dir.display())).into())
}
