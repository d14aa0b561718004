//! The built-in delegates, run in-process: same conf, same result, no fork/exec. IPAM runs
//! in-process too for host-local and static (unless the conf opts them out), and by exec for
//! every other type.

use super::{InvokeError, Target};
use cni::args::CniArgs;
use cni::netconf::NetConf;
use cni::{Command, Version};
use delegates::OwnedLink;
use delegates::exec_ipam::ExecIpam;
use std::path::Path;

pub(super) fn call(
    t: &Target,
    kind: delegates::Kind,
    plugin: &str,
    command: Command,
    conf: &NetConf,
    netns: Option<&Path>,
) -> Result<(Vec<u8>, Vec<OwnedLink>), InvokeError> {
    let fail = |e: delegates::DelegateError| InvokeError::Builtin {
        network: t.network.to_string(),
        plugin: plugin.to_string(),
        command,
        error: Box::new(e.to_error_object()),
    };
    // Already validated when the invocation was read.
    let args = CniArgs::parse(t.cni_args).unwrap_or_default();
    let exec = ExecIpam {
        container_id: t.container_id.to_string(),
        netns: netns.map(Path::to_path_buf),
        ifname: t.ifname.to_string(),
        cni_path: t.runner.cni_path.clone(),
        cni_args: Some(t.cni_args.to_string()),
        timeout: t.runner.timeout,
    };
    let ipam_type = conf.ipam_type().ok().flatten().unwrap_or_default();
    let in_process = t.runner.builtins.allows(ipam_type);
    let builtin_ipam;
    let ipam: &dyn delegates::Ipam = if in_process {
        builtin_ipam = delegates::BuiltinIpam {
            container_id: t.container_id,
            ifname: t.ifname,
            args: &args,
            data_dirs: t.runner.ipam_data_dirs,
            exec: exec.clone(),
        };
        &builtin_ipam
    } else {
        &exec
    };
    let req = delegates::Request {
        container_id: t.container_id,
        netns,
        ifname: t.ifname,
        conf,
        ipam,
        timeout: t.runner.timeout,
        owned: t.owned,
    };
    match command {
        Command::Add => {
            let added = delegates::add(kind, &req).map_err(fail)?;
            let version = conf
                .cni_version()
                .ok()
                .flatten()
                .and_then(|v| Version::parse(v).ok())
                .unwrap_or(Version::LATEST);
            // A 0.1.0/0.2.0 result without an address cannot be written; the reference
            // plugins fail such an ADD, and so does the built-in, after undoing it.
            match added.result.try_to_value(version) {
                Ok(v) => Ok((serde_json::to_vec(&v).unwrap_or_default(), added.links)),
                Err(e) => {
                    // Undone by what this ADD just created, not by name.
                    let undo = delegates::Request {
                        owned: &added.links,
                        ..req
                    };
                    let _ = delegates::del(kind, &undo);
                    Err(InvokeError::Builtin {
                        network: t.network.to_string(),
                        plugin: plugin.to_string(),
                        command,
                        error: Box::new(cni::ErrorObject::new(
                            cni::Code::IncompatibleVersion,
                            e.to_string(),
                            "",
                        )),
                    })
                }
            }
        }
        Command::Del => match delegates::del(kind, &req) {
            // The conf fails the validation ADD runs before it creates anything: ADD was
            // refused the same way, so there is nothing to undo, and refusing DEL too would
            // keep the pod from ever being deleted.
            Err(e) if e.is_refused_conf() => {
                tracing::warn!(network = t.network, plugin, error = %e, "DEL: ADD refuses this conf, so nothing of it was created");
                Ok((Vec::new(), Vec::new()))
            }
            other => other.map(|()| (Vec::new(), Vec::new())).map_err(fail),
        },
        Command::Check => delegates::check(kind, &req)
            .map(|()| (Vec::new(), Vec::new()))
            .map_err(fail),
        // Nothing of their own to collect or report (see `speaks_1_1`).
        Command::Gc | Command::Status | Command::Version => Ok((Vec::new(), Vec::new())),
    }
}
