//! Running one attachment's delegate chain: each plugin of the conflist in order on ADD (the
//! previous plugin's result as `prevResult`), in reverse on DEL (the chain's cached result as
//! `prevResult`), CHECK with the cached result. The meta plugin does not care whether a
//! plugin runs in-process or as a binary: [`Delegate`] decides.

use cni::exec::{ExecError, ExecRequest};
use cni::netconf::{NetConf, NetConfList};
use cni::{CniResult, Code, Command, ErrorObject, Version};
use delegates::{Added, OwnedLink};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conf::Builtins;

mod builtin;

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("network {network}: {plugin} {command}: {source}")]
    Exec {
        network: String,
        plugin: String,
        command: Command,
        #[source]
        source: Box<ExecError>,
    },
    #[error("network {network}: {plugin}: {source}")]
    Unresolved {
        network: String,
        plugin: String,
        #[source]
        source: Box<ExecError>,
    },
    #[error("network {network}: {plugin} {command} returned an unreadable result: {reason}")]
    BadResult {
        network: String,
        plugin: String,
        command: Command,
        reason: String,
    },
    #[error("network {network}: {plugin} {command}: {error}")]
    Builtin {
        network: String,
        plugin: String,
        command: Command,
        error: Box<ErrorObject>,
    },
}

impl InvokeError {
    /// True when the chain failed before any of its plugins ran (a plugin could not be
    /// found or was refused), so there is nothing on the node to undo.
    pub fn nothing_ran(&self) -> bool {
        matches!(self, InvokeError::Unresolved { .. })
    }

    pub fn code(&self) -> Code {
        match self {
            InvokeError::Exec { source, .. } | InvokeError::Unresolved { source, .. } => {
                source.code()
            }
            InvokeError::BadResult { .. } => Code::DelegateFailed,
            // An in-process delegate's invalid config, try-again, missing link kind and I/O
            // are Plexus's own answers; anything else it says is the delegate failing.
            InvokeError::Builtin { error, .. } => match Code::from_u32(error.code) {
                Some(
                    c @ (Code::InvalidConfig
                    | Code::TryAgainLater
                    | Code::KernelLacksLinkKind
                    | Code::Io),
                ) => c,
                _ => Code::DelegateFailed,
            },
        }
    }

    /// The delegate's own words, kept for the runtime: a code 100 says only that a delegate
    /// failed, these say why.
    pub fn details(&self) -> String {
        match self {
            InvokeError::Exec { source, .. } | InvokeError::Unresolved { source, .. } => {
                source.details()
            }
            InvokeError::BadResult { reason, .. } => reason.clone(),
            InvokeError::Builtin { error, .. } => error.to_string(),
        }
    }
}

/// Where a plugin's code comes from: in-process, or a binary on the plugin path.
#[derive(Debug, Clone, PartialEq)]
pub enum Delegate {
    Builtin(delegates::Kind),
    Exec(PathBuf),
}

/// How delegates are run during one command: the same for every attachment.
#[derive(Debug, Clone)]
pub struct Runner<'a> {
    /// The delegate search path (binDir then CNI_PATH).
    pub cni_path: String,
    pub timeout: Duration,
    /// Plugin types that would recurse into Plexus.
    pub forbidden: Vec<&'a str>,
    pub builtins: &'a Builtins,
    /// The folders a built-in host-local's `dataDir` may name (`ipamDataDirs`).
    pub ipam_data_dirs: &'a [PathBuf],
}

/// Everything about one attachment that is not its conf.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub runner: &'a Runner<'a>,
    pub network: &'a str,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    /// DEL: the links the attachment's ADD created, as journaled (built-ins remove a link
    /// only while it is still one of these, or carries the attachment's tag).
    pub owned: &'a [OwnedLink],
}

pub fn resolve(plugin_type: &str, t: &Target) -> Result<Delegate, ExecError> {
    if t.runner.builtins.allows(plugin_type)
        && let Some(kind) = delegates::Kind::of(plugin_type)
    {
        return Ok(Delegate::Builtin(kind));
    }
    let dirs = cni::exec::split_path(&t.runner.cni_path);
    cni::exec::find_plugin(plugin_type, &dirs, &t.runner.forbidden).map(Delegate::Exec)
}

fn plugin_types(list: &NetConfList) -> Vec<String> {
    list.plugins
        .iter()
        .map(|p| p.plugin_type().unwrap_or_default().to_string())
        .collect()
}

/// Runs one plugin of a chain; returns what an exec'd plugin would print on success (a result
/// for ADD, nothing otherwise) and the links a built-in ADD created.
fn call(
    t: &Target,
    plugin: &str,
    command: Command,
    conf: &NetConf,
) -> Result<(Vec<u8>, Vec<OwnedLink>), InvokeError> {
    let wrap = |source| InvokeError::Exec {
        network: t.network.to_string(),
        plugin: plugin.to_string(),
        command,
        source: Box::new(source),
    };
    // A DEL into a namespace that no longer exists still has to run (IPAM release must not
    // depend on the netns, SPEC.md DEL); the reference plugins take an empty CNI_NETNS then.
    let netns = t.netns.filter(|p| command != Command::Del || p.exists());
    tracing::debug!(
        network = t.network,
        plugin,
        command = command.as_str(),
        ifname = t.ifname,
        cni_args = %crate::log::redact_args(t.cni_args),
        conf = %crate::log::redact(&serde_json::Value::Object(conf.0.clone())),
        "delegate call"
    );
    match resolve(plugin, t).map_err(wrap)? {
        Delegate::Builtin(kind) => builtin::call(t, kind, plugin, command, conf, netns),
        Delegate::Exec(path) => {
            let req = ExecRequest {
                command,
                container_id: t.container_id,
                netns,
                ifname: t.ifname,
                args: t.cni_args,
                cni_path: &t.runner.cni_path,
                stdin: &conf.to_bytes(),
                timeout: t.runner.timeout,
            };
            cni::exec::run(&path, &req)
                .map(|out| (out, Vec::new()))
                .map_err(|e| wrap(scrub_delegate_words(e, conf)))
        }
    }
}

/// A delegate may repeat its conf in its error object or on stderr: the values of the conf's
/// secret-looking keys are cut out of what it said before that reaches Plexus's error (on
/// stdout), its log and the journal.
fn scrub_delegate_words(mut e: ExecError, conf: &NetConf) -> ExecError {
    let secrets = crate::log::secret_values(&Value::Object(conf.0.clone()));
    if secrets.is_empty() {
        return e;
    }
    match &mut e {
        ExecError::Plugin { error, .. } => {
            error.msg = crate::log::scrub(&error.msg, &secrets);
            error.details = crate::log::scrub(&error.details, &secrets);
        }
        ExecError::Timeout { stderr, .. } | ExecError::Exit { stderr, .. } => {
            *stderr = crate::log::scrub(stderr, &secrets);
        }
        _ => {}
    }
    e
}

/// ADD: every plugin in order; returns the last plugin's result in current form, and the
/// links the chain's built-ins created.
pub fn add(list: &NetConfList, t: &Target) -> Result<Added, InvokeError> {
    add_after(list, t, None)
}

/// ADD of a chain that continues an earlier one: its first plugin gets `prev` as
/// `prevResult` (the auxiliary chain runs on the cluster network's result).
pub fn add_after(
    list: &NetConfList,
    t: &Target,
    prev: Option<&CniResult>,
) -> Result<Added, InvokeError> {
    let plugins = plugin_types(list);
    // Every plugin of the chain is found before the first one runs: a chain that cannot run
    // to its end should not start.
    for plugin in &plugins {
        resolve(plugin, t).map_err(|source| InvokeError::Unresolved {
            network: t.network.to_string(),
            plugin: plugin.clone(),
            source: Box::new(source),
        })?;
    }
    let mut prev: Option<CniResult> = prev.cloned();
    let mut links = Vec::new();
    for (i, plugin) in plugins.iter().enumerate() {
        let mut conf = plugin_conf(list, i);
        if let Some(p) = &prev {
            conf.set("prevResult", p.to_value(list.cni_version));
        }
        let (out, made) = call(t, plugin, Command::Add, &conf)?;
        links.extend(made);
        let bad = |reason: String| InvokeError::BadResult {
            network: t.network.to_string(),
            plugin: plugin.clone(),
            command: Command::Add,
            reason,
        };
        let value = cni::netconf::parse_strict(&out).map_err(|e| bad(e.to_string()))?;
        let result = CniResult::parse(&value, list.cni_version).map_err(|e| bad(e.to_string()))?;
        prev = Some(result);
    }
    let result = prev.unwrap_or_default();
    // A later plugin of the chain (tuning) may have changed the pod interface's MAC: the
    // identity DEL checks is the one the chain ended with.
    if let Some(mac) = result
        .interfaces
        .iter()
        .find(|i| i.name == t.ifname && i.sandbox.is_some())
        .and_then(|i| i.mac.clone())
    {
        for l in links
            .iter_mut()
            .filter(|l| l.side == delegates::owned::Side::Pod && l.name == t.ifname)
        {
            l.mac = Some(mac.clone());
        }
    }
    Ok(Added { result, links })
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
        if let Err(e) = call(t, plugin, Command::Del, &conf) {
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
        call(t, plugin, Command::Check, &conf)?;
    }
    Ok(true)
}

/// The versions a plugin binary speaks (VERSION), used to decide whether GC and STATUS may be
/// forwarded to it: delegates before 1.1.0 answer them with "unknown CNI_COMMAND".
pub fn speaks_1_1(plugin: &str, t: &Target) -> bool {
    match resolve(plugin, t) {
        Ok(Delegate::Exec(path)) => cni::exec::version(&path, &t.runner.cni_path, t.runner.timeout)
            .map(|v| v.contains(&Version::V1_1_0))
            .unwrap_or(false),
        // The built-ins keep no state of their own beyond IPAM reservations, which DEL
        // releases; they have nothing to collect and are always ready.
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
        call(t, plugin, Command::Gc, &conf)?;
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
        call(t, plugin, Command::Status, &plugin_conf(list, i))?;
    }
    Ok(())
}

fn plugin_conf(list: &NetConfList, i: usize) -> NetConf {
    // `i` always comes from enumerating `list.plugins`.
    list.plugin_conf(i)
        .unwrap_or_else(|| NetConf::from_map(serde_json::Map::new()))
}
