//! Step 5 of the flow: running attachments' delegate chains — each plugin of the conflist in
//! order on ADD (the previous plugin's result as `prevResult`), in reverse on DEL (the chain's
//! cached result as `prevResult`), CHECK with the cached result, GC and STATUS forwarded to
//! the plugins that speak 1.1.0 — and the pod-wide kernel effects no single delegate owns
//! ([`pod`]: looking for the pod's interfaces, its default routes, removing its links
//! together).
//!
//! The only module that reaches `delegates`. A plugin runs in-process when it is a built-in
//! kind the conf allows, else as a binary from the plugin path ([`Delegate`]); the rest of
//! Plexus does not care which. Built-ins' results and errors stay typed up to the report.

mod builtin;
mod chain;
mod exec;
pub mod pod;

pub use chain::{Chain, check, del, gc, status};
pub use delegates::netns::NsId;
pub use delegates::{Added, OwnedLink};

use crate::conf::{Builtins, PlexusConf};
use cni::exec::ExecError;
use cni::netconf::NetConf;
use cni::{Code, Command};
use delegates::DelegateError;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// A built-in's error as the CNI error object it would print standalone, so the
    /// runtime reads the same words either way; the typed error stays the source.
    #[error("network {network}: {plugin} {command}: {}", .source.to_error_object())]
    Builtin {
        network: String,
        plugin: String,
        command: Command,
        #[source]
        source: Box<DelegateError>,
    },
    #[error("the pod already has an interface named {ifname}; it is left as it is")]
    InterfaceExists { ifname: String },
    #[error("pod netns: {0}")]
    PodNetns(#[source] Box<DelegateError>),
    #[error("set the requested default route: {0}")]
    DefaultRoute(#[source] Box<DelegateError>),
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
            InvokeError::Builtin { source, .. }
            | InvokeError::PodNetns(source)
            | InvokeError::DefaultRoute(source) => builtin_code(source),
            InvokeError::InterfaceExists { .. } => Code::InvalidConfig,
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
            InvokeError::Builtin { source, .. } => source.to_error_object().to_string(),
            InvokeError::InterfaceExists { .. }
            | InvokeError::PodNetns(_)
            | InvokeError::DefaultRoute(_) => String::new(),
        }
    }

    /// The network whose delegate failed, when there is one.
    pub fn network(&self) -> Option<&str> {
        match self {
            InvokeError::Exec { network, .. }
            | InvokeError::Unresolved { network, .. }
            | InvokeError::BadResult { network, .. }
            | InvokeError::Builtin { network, .. } => Some(network),
            _ => None,
        }
    }
}

/// An in-process delegate's invalid config, try-again, missing link kind and I/O are
/// Plexus's own answers; anything else it says is the delegate failing.
fn builtin_code(e: &DelegateError) -> Code {
    match Code::from_u32(e.code()) {
        Some(
            c @ (Code::InvalidConfig | Code::TryAgainLater | Code::KernelLacksLinkKind | Code::Io),
        ) => c,
        _ => Code::DelegateFailed,
    }
}

/// Where a plugin's code comes from: in-process, or a binary on the plugin path.
#[derive(Debug, Clone, PartialEq)]
pub enum Delegate {
    Builtin(delegates::Kind),
    Exec(PathBuf),
}

/// How delegates are run during one call: the same for every attachment.
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

impl<'a> Runner<'a> {
    /// The conf's runner for a call whose `CNI_PATH` is `cni_path`. Plexus itself is never a
    /// delegate (no recursion), under its own type or the one the conf gives it.
    pub fn new(conf: &'a PlexusConf, cni_path: &str) -> Runner<'a> {
        let mut forbidden = vec!["plexus"];
        if conf.plugin_type != "plexus" {
            forbidden.push(conf.plugin_type.as_str());
        }
        Runner {
            cni_path: conf.delegate_path(cni_path),
            timeout: conf.timeout,
            forbidden,
            builtins: &conf.builtins,
            ipam_data_dirs: &conf.ipam_data_dirs,
        }
    }

    /// Where `plugin_type`'s code comes from.
    pub fn resolve(&self, plugin_type: &str) -> Result<Delegate, ExecError> {
        if let Some(kind) = self.builtin(plugin_type) {
            return Ok(Delegate::Builtin(kind));
        }
        let dirs = cni::exec::split_path(&self.cni_path);
        cni::exec::find_plugin(plugin_type, &dirs, &self.forbidden).map(Delegate::Exec)
    }

    /// The built-in kind `plugin_type` runs as, when the conf lets it run in-process.
    pub fn builtin(&self, plugin_type: &str) -> Option<delegates::Kind> {
        delegates::Kind::of(plugin_type).filter(|_| self.builtins.allows(plugin_type))
    }
}

/// The container an attachment belongs to; [`Container::NONE`] for GC and STATUS, which are
/// about a network.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    pub id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// The `CNI_ARGS` value of its delegates.
    pub cni_args: &'a str,
    /// DEL: the links the attachment's ADD created, as journaled (built-ins remove a link
    /// only while it is still one of these, or carries the attachment's tag).
    pub owned: &'a [OwnedLink],
}

impl Container<'_> {
    pub const NONE: Container<'static> = Container {
        id: "",
        netns: None,
        ifname: "",
        cni_args: "",
        owned: &[],
    };
}

/// Everything about one attachment that is not its conf.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub runner: &'a Runner<'a>,
    pub network: &'a str,
    pub container: Container<'a>,
}

impl<'a> Target<'a> {
    pub fn new(runner: &'a Runner<'a>, network: &'a str, container: Container<'a>) -> Self {
        Target {
            runner,
            network,
            container,
        }
    }

    /// The netns a plugin is told about: a DEL into a namespace that no longer exists still
    /// has to run (the spec wants IPAM released even when the netns is gone), and the
    /// reference plugins take an empty `CNI_NETNS` then.
    fn netns_for(&self, command: Command) -> Option<&'a Path> {
        self.container
            .netns
            .filter(|p| command != Command::Del || p.exists())
    }

    /// Logs what the runtime would see in the delegate's environment and stdin.
    fn log_call(&self, plugin: &str, command: Command, conf: &NetConf) {
        tracing::debug!(
            network = self.network,
            plugin,
            command = command.as_str(),
            ifname = self.container.ifname,
            cni_args = %crate::log::redact_args(self.container.cni_args),
            conf = %crate::log::redact(&serde_json::Value::Object(conf.0.clone())),
            "delegate call"
        );
    }
}
