//! Networks named in the conf (`clusterNetwork`, `defaultNetworks`) and the configurations
//! of NADs: a NAD's `spec.config`, or a conf file found by name or path.

use super::ResolveError;
use crate::conf::PlexusConf;
use crate::plan::ResolvedNetwork;
use crate::store::NetworkStore;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A NAD's conf; for an empty spec, the conf file of the same name in `confDir` (NPWG §3.4.1)
/// — only when the conf opts in with `nadConfFromConfDir`: otherwise a tenant's empty NAD
/// could reach networks the node admin meant for the host only.
pub(super) fn nad_or_disk_config(
    conf: &PlexusConf,
    key: &str,
    name: &str,
    config: Option<&str>,
) -> Result<Map<String, Value>, ResolveError> {
    let empty = config.is_none_or(|c| c.trim().is_empty());
    if empty && conf.nad_conf_from_conf_dir {
        return conf_by_name(&conf.conf_dir, name)?.ok_or_else(|| ResolveError::BadNad {
            key: key.to_string(),
            reason: format!(
                "spec.config is empty and no conf named {name:?} is in {}",
                conf.conf_dir.display()
            ),
        });
    }
    nad_config(key, config)
}

fn nad_config(key: &str, config: Option<&str>) -> Result<Map<String, Value>, ResolveError> {
    let bad = |reason: String| ResolveError::BadNad {
        key: key.to_string(),
        reason,
    };
    let text = config
        .filter(|c| !c.trim().is_empty())
        // Reading a host conf for an empty spec lets a tenant reach admin-only networks,
        // so it is not done.
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
) -> Result<ResolvedNetwork, ResolveError> {
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
        && crate::pod::is_dns1123_label(ns)
        && crate::pod::is_dns1123_subdomain(name)
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
    Err(ResolveError::NetworkNotFound(reference.into()))
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

/// The conf files of a folder, in name order: a missing or unreadable folder has none.
pub(super) fn sorted_conf_files(dir: &Path) -> Vec<PathBuf> {
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
