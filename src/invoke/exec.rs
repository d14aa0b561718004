//! Delegates run as binaries from the plugin path, through `cni::exec`.

use super::{InvokeError, Target};
use cni::exec::{ExecError, ExecRequest};
use cni::netconf::NetConf;
use cni::{CniResult, Command, Version};
use serde_json::Value;
use std::path::Path;

/// Runs the plugin once; what it printed on success.
pub(super) fn run(
    t: &Target,
    path: &Path,
    plugin: &str,
    command: Command,
    conf: &NetConf,
) -> Result<Vec<u8>, InvokeError> {
    let req = ExecRequest {
        command,
        container_id: t.container.id,
        netns: t.netns_for(command),
        ifname: t.container.ifname,
        args: t.container.cni_args,
        cni_path: &t.runner.cni_path,
        stdin: &conf.to_bytes(),
        timeout: t.runner.timeout,
    };
    cni::exec::run(path, &req).map_err(|e| InvokeError::Exec {
        network: t.network.to_string(),
        plugin: plugin.to_string(),
        command,
        source: Box::new(scrub_delegate_words(e, conf)),
    })
}

/// ADD: the result the plugin printed, read in the chain's version.
pub(super) fn add(
    t: &Target,
    path: &Path,
    plugin: &str,
    conf: &NetConf,
    version: Version,
) -> Result<CniResult, InvokeError> {
    let out = run(t, path, plugin, Command::Add, conf)?;
    let bad = |reason: String| InvokeError::BadResult {
        network: t.network.to_string(),
        plugin: plugin.to_string(),
        command: Command::Add,
        reason,
    };
    let value = cni::netconf::parse_strict(&out).map_err(|e| bad(e.to_string()))?;
    CniResult::parse(&value, version).map_err(|e| bad(e.to_string()))
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
