//! The built-in delegates, run in-process: same conf, same result, no fork/exec. IPAM runs
//! in-process too for host-local and static, and by exec for every other type.

use super::{InvokeError, Target};
use cni::args::CniArgs;
use cni::exec::ExecRequest;
use cni::netconf::NetConf;
use cni::{CniResult, Code, ErrorObject, Version};
use std::path::Path;

/// IPAM as the meta plugin offers it to a built-in delegate.
struct MetaIpam<'a> {
    t: &'a Target<'a>,
    args: CniArgs,
    netns: Option<&'a Path>,
}

impl MetaIpam<'_> {
    fn ipam_type<'c>(&self, conf: &'c NetConf) -> Result<&'c str, ErrorObject> {
        conf.ipam_type()
            .map_err(|e| ErrorObject::new(Code::InvalidConfig, e.to_string(), ""))?
            .ok_or_else(|| ErrorObject::new(Code::InvalidConfig, "ipam.type is missing", ""))
    }

    fn in_process(&self, ipam_type: &str) -> bool {
        delegates::ipam::is_builtin(ipam_type) && self.t.runner.builtins.allows(ipam_type)
    }

    fn request<'c>(&'c self, conf: &'c NetConf) -> delegates::ipam::IpamRequest<'c> {
        delegates::ipam::IpamRequest {
            container_id: self.t.container_id,
            ifname: self.t.ifname,
            conf,
            args: &self.args,
        }
    }

    /// Spawned from the calling (host-netns) thread: children start in the spawning thread's
    /// netns, and built-in delegates call IPAM before entering the pod's.
    fn exec(&self, ipam_type: &str, command: &str, conf: &NetConf) -> Result<Vec<u8>, ErrorObject> {
        let dirs = cni::exec::split_path(&self.t.runner.cni_path);
        let to_obj = |e: cni::exec::ExecError| match e {
            cni::exec::ExecError::Plugin { error, .. } => *error,
            other => ErrorObject::new(
                match other.code() {
                    c if c == Code::TryAgainLater.as_u32() => Code::TryAgainLater,
                    c if c == Code::InvalidConfig.as_u32() => Code::InvalidConfig,
                    c if c == Code::Io.as_u32() => Code::Io,
                    _ => Code::DelegateFailed,
                },
                other.to_string(),
                other.details(),
            ),
        };
        let path = cni::exec::find_plugin(ipam_type, &dirs, &self.t.runner.forbidden).map_err(to_obj)?;
        let req = ExecRequest {
            command,
            container_id: self.t.container_id,
            netns: self.netns,
            ifname: self.t.ifname,
            args: self.t.cni_args,
            cni_path: &self.t.runner.cni_path,
            stdin: &conf.to_bytes(),
            timeout: self.t.runner.timeout,
        };
        cni::exec::run(&path, &req).map_err(to_obj)
    }
}

impl delegates::Ipam for MetaIpam<'_> {
    fn add(&self, conf: &NetConf) -> Result<CniResult, ErrorObject> {
        let ipam_type = self.ipam_type(conf)?;
        if self.in_process(ipam_type) {
            return delegates::ipam::add(&self.request(conf)).map_err(ErrorObject::from);
        }
        let out = self.exec(ipam_type, "ADD", conf)?;
        let (result, _) = CniResult::from_slice(&out).map_err(|e| {
            ErrorObject::new(Code::DelegateFailed, format!("ipam {ipam_type} result: {e}"), "")
        })?;
        Ok(result)
    }

    fn del(&self, conf: &NetConf) -> Result<(), ErrorObject> {
        let ipam_type = self.ipam_type(conf)?;
        if self.in_process(ipam_type) {
            return delegates::ipam::del(&self.request(conf)).map_err(ErrorObject::from);
        }
        self.exec(ipam_type, "DEL", conf).map(drop)
    }

    fn check(&self, conf: &NetConf) -> Result<(), ErrorObject> {
        let ipam_type = self.ipam_type(conf)?;
        if self.in_process(ipam_type) {
            return delegates::ipam::check(&self.request(conf)).map_err(ErrorObject::from);
        }
        self.exec(ipam_type, "CHECK", conf).map(drop)
    }
}

pub(super) fn call(
    t: &Target,
    kind: delegates::Kind,
    plugin: &str,
    command: &'static str,
    conf: &NetConf,
    netns: Option<&Path>,
) -> Result<Vec<u8>, InvokeError> {
    let fail = |e: delegates::DelegateError| InvokeError::Builtin {
        network: t.network.to_string(),
        plugin: plugin.to_string(),
        command,
        error: Box::new(e.to_error_object()),
    };
    let ipam = MetaIpam {
        t,
        // Already validated when the invocation was read.
        args: CniArgs::parse(t.cni_args).unwrap_or_default(),
        netns,
    };
    let req = delegates::Request {
        container_id: t.container_id,
        netns,
        ifname: t.ifname,
        conf,
        ipam: &ipam,
    };
    match command {
        "ADD" => {
            let result = delegates::add(kind, &req).map_err(fail)?;
            let version = conf
                .cni_version()
                .ok()
                .flatten()
                .and_then(|v| Version::parse(v).ok())
                .unwrap_or(Version::LATEST);
            Ok(serde_json::to_vec(&result.to_value(version)).unwrap_or_default())
        }
        "DEL" => delegates::del(kind, &req).map(|()| Vec::new()).map_err(fail),
        "CHECK" => delegates::check(kind, &req).map(|()| Vec::new()).map_err(fail),
        // Nothing of their own to collect or report (see `speaks_1_1`).
        _ => Ok(Vec::new()),
    }
}
