//! Multus's `auxiliaryCNIChainName`: the confs in `<dir>/<name>/`, where `<dir>` is the
//! folder of the cluster network's conf file (`clusterNetwork` given as a path) or `confDir`,
//! run as one chain on the cluster network's interface after it, starting from its result.

use super::ResolveError;
use super::reference::sorted_conf_files;
use crate::conf::{ClusterNetwork, ConfError, PlexusConf};
use cni::netconf::NetConfList;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The chain, `None` when the key is unset or the folder holds no conf; in the cluster
/// network's `cniVersion`.
pub(super) fn chain(
    conf: &PlexusConf,
    cluster_version: cni::Version,
) -> Result<Option<NetConfList>, ResolveError> {
    let Some(name) = conf.auxiliary_cni_chain_name.as_deref() else {
        return Ok(None);
    };
    if !cni::names::is_valid_name(name) {
        return Err(invalid(format!("{name:?} is not a valid network name")));
    }
    let dir = folder(conf).join(name);
    // The folder and its files must be what they claim: a FIFO named `x.conf` would hold the
    // ADD forever, a device would never end.
    if std::fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
        return Err(invalid(format!("{} is not a directory", dir.display())));
    }
    let mut plugins = Vec::new();
    for file in sorted_conf_files(&dir) {
        let bytes = cni::file::read_regular(&file, cni::netconf::MAX_CONF_BYTES as u64)
            .map_err(|e| invalid(format!("read {e}")))?;
        let mut map = cni::netconf::parse_object(&bytes)
            .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
        match map.remove("plugins") {
            Some(Value::Array(list)) => plugins.extend(list),
            Some(_) => {
                return Err(invalid(format!(
                    "{}: plugins must be a list",
                    file.display()
                )));
            }
            None => plugins.push(Value::Object(map)),
        }
    }
    if plugins.is_empty() {
        return Ok(None);
    }
    let mut list = serde_json::Map::new();
    list.insert("cniVersion".into(), cluster_version.as_str().into());
    list.insert("name".into(), name.into());
    list.insert("plugins".into(), Value::Array(plugins));
    NetConfList::from_map(list)
        .map(Some)
        .map_err(|e| invalid(format!("{}: {e}", dir.display())))
}

fn invalid(reason: String) -> ResolveError {
    ResolveError::Conf(ConfError::Invalid {
        key: "auxiliaryCNIChainName",
        reason,
    })
}

/// The folder of the cluster network's conf file, when `clusterNetwork` names one by path,
/// else `confDir`.
fn folder(conf: &PlexusConf) -> PathBuf {
    match &conf.cluster_network {
        ClusterNetwork::Reference(r) if Path::new(r).is_absolute() => {
            let p = Path::new(r);
            if p.is_dir() {
                p.to_path_buf()
            } else {
                p.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        }
        _ => conf.conf_dir.clone(),
    }
}
