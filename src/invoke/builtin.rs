//! The built-in delegates, run in-process: same conf, same result, no fork/exec. IPAM runs
//! in-process too for host-local and static (unless the conf opts them out), and by exec for
//! every other type. Results and errors stay typed: nothing is printed and parsed back.

use super::{Added, InvokeError, Target};
use cni::args::CniArgs;
use cni::netconf::NetConf;
use cni::{Command, Version};
use delegates::exec_ipam::ExecIpam;
use delegates::{DelegateError, Kind, Request};
use std::path::Path;

/// Builds the delegate's request (its IPAM included) and hands it to `f`.
fn with_request<R>(
    t: &Target,
    conf: &NetConf,
    netns: Option<&Path>,
    f: impl FnOnce(&Request) -> R,
) -> R {
    let c = &t.container;
    // Already validated when the environment was read.
    let args = CniArgs::parse(c.cni_args).unwrap_or_default();
    let exec = ExecIpam {
        container_id: c.id.to_string(),
        netns: netns.map(Path::to_path_buf),
        ifname: c.ifname.to_string(),
        cni_path: t.runner.cni_path.clone(),
        cni_args: Some(c.cni_args.to_string()),
        timeout: t.runner.timeout,
    };
    let ipam_type = conf.ipam_type().ok().flatten().unwrap_or_default();
    let builtin_ipam;
    let ipam: &dyn delegates::Ipam = if t.runner.builtins.allows(ipam_type) {
        builtin_ipam = delegates::BuiltinIpam {
            container_id: c.id,
            ifname: c.ifname,
            args: &args,
            data_dirs: t.runner.ipam_data_dirs,
            exec: exec.clone(),
        };
        &builtin_ipam
    } else {
        &exec
    };
    f(&Request {
        container_id: c.id,
        netns,
        ifname: c.ifname,
        conf,
        ipam,
        timeout: t.runner.timeout,
        owned: c.owned,
    })
}

fn failed(t: &Target, plugin: &str, command: Command, e: DelegateError) -> InvokeError {
    InvokeError::Builtin {
        network: t.network.to_string(),
        plugin: plugin.to_string(),
        command,
        source: Box::new(e),
    }
}

/// What the kind's ADD checks before it creates anything, reported as its ADD would.
pub(super) fn validate(
    t: &Target,
    kind: Kind,
    plugin: &str,
    conf: &NetConf,
) -> Result<(), InvokeError> {
    with_request(t, conf, t.netns_for(Command::Add), |req| {
        delegates::validate(kind, req)
    })
    .map_err(|e| failed(t, plugin, Command::Add, e))
}

/// ADD; the result as the chain's `version` carries it.
pub(super) fn add(
    t: &Target,
    kind: Kind,
    plugin: &str,
    conf: &NetConf,
    version: Version,
) -> Result<Added, InvokeError> {
    with_request(t, conf, t.netns_for(Command::Add), |req| {
        let added = delegates::add(kind, req)?;
        // A 0.1.0/0.2.0 result without an address cannot be written; the reference plugins
        // fail such an ADD, and so does the built-in, after undoing it by what this ADD just
        // created, not by name.
        if let Err(e) = added.result.check_expressible(version) {
            let undo = Request {
                owned: &added.links,
                ..*req
            };
            let _ = delegates::del(kind, &undo);
            return Err(DelegateError::from(e));
        }
        Ok(Added {
            result: added.result.project(version),
            links: added.links,
        })
    })
    .map_err(|e| failed(t, plugin, Command::Add, e))
}

/// DEL or CHECK; GC and STATUS have nothing to do in-process (see `chain::speaks_1_1`).
pub(super) fn run(
    t: &Target,
    kind: Kind,
    plugin: &str,
    command: Command,
    conf: &NetConf,
) -> Result<(), InvokeError> {
    let outcome = with_request(t, conf, t.netns_for(command), |req| match command {
        Command::Del => match delegates::del(kind, req) {
            // The conf fails the validation ADD runs before it creates anything: ADD was
            // refused the same way, so there is nothing to undo, and refusing DEL too would
            // keep the pod from ever being deleted.
            Err(e) if e.is_refused_conf() => {
                tracing::warn!(network = t.network, plugin, error = %e, "DEL: ADD refuses this conf, so nothing of it was created");
                Ok(())
            }
            other => other,
        },
        Command::Check => delegates::check(kind, req),
        Command::Add | Command::Gc | Command::Status | Command::Version => Ok(()),
    });
    outcome.map_err(|e| failed(t, plugin, command, e))
}
