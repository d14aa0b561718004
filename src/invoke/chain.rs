//! One attachment's chain: ADD in order, DEL in reverse, CHECK, and GC and STATUS forwarded.

use super::{Added, Delegate, InvokeError, Target, builtin, exec};
use cni::netconf::{NetConf, NetConfList};
use cni::{CniResult, Command, Version};
use serde_json::Value;

/// A chain ready to ADD: every plugin found (or built in), every built-in's conf through the
/// checks its ADD makes before it creates anything. Preparing the whole plan before the
/// first link is made means a bad third network leaves nothing to undo.
pub struct Chain<'c> {
    list: &'c NetConfList,
    plugins: Vec<(String, Delegate)>,
}

impl<'c> Chain<'c> {
    pub fn prepare(list: &'c NetConfList, t: &Target) -> Result<Chain<'c>, InvokeError> {
        let mut plugins = Vec::with_capacity(list.plugins.len());
        for (i, plugin) in plugin_types(list).into_iter().enumerate() {
            let delegate = t
                .runner
                .resolve(&plugin)
                .map_err(|source| InvokeError::Unresolved {
                    network: t.network.to_string(),
                    plugin: plugin.clone(),
                    source: Box::new(source),
                })?;
            if let Delegate::Builtin(kind) = delegate {
                builtin::validate(t, kind, &plugin, &plugin_conf(list, i))?;
            }
            plugins.push((plugin, delegate));
        }
        Ok(Chain { list, plugins })
    }

    /// ADD: every plugin in order, the first given `prev` as `prevResult` (the auxiliary
    /// chain continues the cluster network's result); returns the last plugin's result in
    /// current form, and the links the chain's built-ins created.
    pub fn add(&self, t: &Target, prev: Option<&CniResult>) -> Result<Added, InvokeError> {
        let version = self.list.cni_version;
        let mut prev: Option<CniResult> = prev.cloned();
        let mut links = Vec::new();
        for (i, (plugin, delegate)) in self.plugins.iter().enumerate() {
            let mut conf = plugin_conf(self.list, i);
            if let Some(p) = &prev {
                conf.set("prevResult", p.to_value(version));
            }
            t.log_call(plugin, Command::Add, &conf);
            let added = match delegate {
                Delegate::Builtin(kind) => builtin::add(t, *kind, plugin, &conf, version)?,
                Delegate::Exec(path) => Added {
                    result: exec::add(t, path, plugin, &conf, version)?,
                    links: Vec::new(),
                },
            };
            links.extend(added.links);
            prev = Some(added.result);
        }
        let result = prev.unwrap_or_default();
        // A later plugin of the chain (tuning) may have changed the pod interface's MAC: the
        // identity DEL checks is the one the chain ended with.
        let ifname = t.container.ifname;
        if let Some(mac) = result
            .interfaces
            .iter()
            .find(|i| i.name == ifname && i.sandbox.is_some())
            .and_then(|i| i.mac.clone())
        {
            for l in links
                .iter_mut()
                .filter(|l| l.side == delegates::owned::Side::Pod && l.name == ifname)
            {
                l.mac = Some(mac.clone());
            }
        }
        Ok(Added { result, links })
    }
}

fn plugin_types(list: &NetConfList) -> Vec<String> {
    list.plugins
        .iter()
        .map(|p| p.plugin_type().unwrap_or_default().to_string())
        .collect()
}

fn plugin_conf(list: &NetConfList, i: usize) -> NetConf {
    // `i` always comes from enumerating `list.plugins`.
    list.plugin_conf(i)
        .unwrap_or_else(|| NetConf::from_map(serde_json::Map::new()))
}

/// Runs one plugin for a command that prints nothing on success.
fn run(t: &Target, plugin: &str, command: Command, conf: &NetConf) -> Result<(), InvokeError> {
    t.log_call(plugin, command, conf);
    let delegate = t
        .runner
        .resolve(plugin)
        .map_err(|source| InvokeError::Exec {
            network: t.network.to_string(),
            plugin: plugin.to_string(),
            command,
            source: Box::new(source),
        })?;
    match delegate {
        Delegate::Builtin(kind) => builtin::run(t, kind, plugin, command, conf),
        Delegate::Exec(path) => exec::run(t, &path, plugin, command, conf).map(drop),
    }
}

/// DEL: every plugin in reverse, going on past failures; returns the first failure.
pub fn del(list: &NetConfList, t: &Target, prev: Option<&CniResult>) -> Result<(), InvokeError> {
    let mut first_err = None;
    for (i, plugin) in plugin_types(list).iter().enumerate().rev() {
        let mut conf = plugin_conf(list, i);
        if let Some(p) = prev
            && list.cni_version >= Version::V0_4_0
        {
            conf.set("prevResult", p.to_value(list.cni_version));
        }
        if let Err(e) = run(t, plugin, Command::Del, &conf) {
            tracing::warn!(network = t.network, plugin = %plugin, error = %e, "delegate DEL failed");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// CHECK: every plugin in order with the cached result. Versions before 0.4.0 have no CHECK
/// and a conflist may opt out with `disableCheck`: both are skipped, not failed.
pub fn check(list: &NetConfList, t: &Target, prev: &CniResult) -> Result<bool, InvokeError> {
    if !list.cni_version.supports_check() || list.disable_check {
        return Ok(false);
    }
    for (i, plugin) in plugin_types(list).iter().enumerate() {
        let mut conf = plugin_conf(list, i);
        conf.set("prevResult", prev.to_value(list.cni_version));
        run(t, plugin, Command::Check, &conf)?;
    }
    Ok(true)
}

/// Whether GC and STATUS may be forwarded to a plugin: delegates before 1.1.0 answer them
/// with "unknown CNI_COMMAND" (their VERSION says which they speak). The built-ins keep no
/// state of their own beyond IPAM reservations, which DEL releases; they have nothing to
/// collect and are always ready.
fn speaks_1_1(plugin: &str, t: &Target) -> bool {
    match t.runner.resolve(plugin) {
        Ok(Delegate::Exec(path)) => cni::exec::version(&path, &t.runner.cni_path, t.runner.timeout)
            .map(|v| v.contains(&Version::V1_1_0))
            .unwrap_or(false),
        Ok(Delegate::Builtin(_)) | Err(_) => false,
    }
}

/// GC (CNI 1.1) forwarded to the plugins of a chain that speak 1.1.0, with the attachments
/// that are still valid for this network.
pub fn gc(list: &NetConfList, t: &Target, valid: &[(String, String)]) -> Result<(), InvokeError> {
    if list.disable_gc || list.cni_version < Version::V1_1_0 {
        return Ok(());
    }
    let attachments: Vec<Value> = valid
        .iter()
        .map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i}))
        .collect();
    for (i, plugin) in plugin_types(list).iter().enumerate() {
        if !speaks_1_1(plugin, t) {
            continue;
        }
        let mut conf = plugin_conf(list, i);
        conf.set(
            cni::netconf::VALID_ATTACHMENTS,
            Value::Array(attachments.clone()),
        );
        conf.set(cni::netconf::ATTACHMENTS, Value::Array(attachments.clone()));
        run(t, plugin, Command::Gc, &conf)?;
    }
    Ok(())
}

/// STATUS forwarded to the plugins of a chain that speak 1.1.0.
pub fn status(list: &NetConfList, t: &Target) -> Result<(), InvokeError> {
    if list.cni_version < Version::V1_1_0 {
        return Ok(());
    }
    for (i, plugin) in plugin_types(list).iter().enumerate() {
        if !speaks_1_1(plugin, t) {
            continue;
        }
        run(t, plugin, Command::Status, &plugin_conf(list, i))?;
    }
    Ok(())
}
