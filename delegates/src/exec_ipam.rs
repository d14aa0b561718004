//! An [`Ipam`] that execs the IPAM plugin named by `ipam.type` from `CNI_PATH`, through
//! `cni::exec`: the type must be a bare file name found in a root-owned directory nobody else
//! can write, the plugin sees only the `CNI_*` environment and `PATH`, and it runs in its own
//! process group that is killed when it outlives `timeout` or floods stdout.
//!
//! Children start in the netns of the thread that spawns them, so this must be called from a
//! thread in the host netns — never from inside `NetNs::run`.

use crate::ipam::IpamFailure;
use crate::request::Ipam;
use cni::exec::{ExecError, ExecRequest, find_plugin, split_path};
use cni::netconf::NetConf;
use cni::{CniResult, Code, Command, ErrorObject, Version};
use std::path::PathBuf;
use std::time::Duration;

/// What the standalone binaries give an IPAM plugin; host-local answers in milliseconds, and
/// dhcp's own client waits up to about 20 s for a lease.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ExecIpam {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_PATH`: colon-separated plugin directories.
    pub cni_path: String,
    /// `CNI_ARGS`, passed through unchanged.
    pub cni_args: Option<String>,
    /// Per call; the plugin's whole process group is killed when it runs out.
    pub timeout: Duration,
}

/// The CNI error for a failed exec. A plugin that answered with its own error object keeps
/// it, code and all, as the reference plugins pass their IPAM's error on.
pub fn error_object(e: ExecError) -> ErrorObject {
    match e {
        ExecError::Plugin { error, .. } => *error,
        other => ErrorObject {
            cni_version: String::new(),
            code: other.code().as_u32(),
            msg: format!("ipam: {other}"),
            details: other.details(),
        },
    }
}

impl ExecIpam {
    /// The binary `ipam.type` names on `CNI_PATH`.
    fn find(&self, conf: &NetConf) -> Result<PathBuf, ErrorObject> {
        let plugin = conf
            .ipam_type()
            .map_err(|e| ErrorObject::new(Code::InvalidConfig, e.to_string(), ""))?
            .ok_or_else(|| ErrorObject::new(Code::InvalidConfig, "ipam.type is missing", ""))?;
        find_plugin(plugin, &split_path(&self.cni_path), &[]).map_err(error_object)
    }

    fn call(&self, command: Command, conf: &NetConf) -> Result<Vec<u8>, ErrorObject> {
        let bin = self.find(conf)?;
        let stdin = conf.to_bytes();
        let req = ExecRequest {
            command,
            container_id: &self.container_id,
            netns: self.netns.as_deref(),
            ifname: &self.ifname,
            args: self.cni_args.as_deref().unwrap_or(""),
            cni_path: &self.cni_path,
            stdin: &stdin,
            timeout: self.timeout,
        };
        cni::exec::run(&bin, &req).map_err(error_object)
    }
}

impl Ipam for ExecIpam {
    fn validate(&self, conf: &NetConf) -> Result<(), IpamFailure> {
        self.find(conf).map(drop).map_err(IpamFailure::Plugin)
    }

    fn add(&self, conf: &NetConf) -> Result<CniResult, IpamFailure> {
        let out = self.call(Command::Add, conf)?;
        let decode = |e: &dyn std::fmt::Display| {
            ErrorObject::new(Code::Decode, "ipam: decode ADD result", e.to_string())
        };
        let value: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| IpamFailure::Plugin(decode(&e)))?;
        // A plugin names the version it wrote; one that does not answered in the version it
        // was asked for (the conf's).
        let asked = conf
            .cni_version()
            .ok()
            .flatten()
            .and_then(|v| Version::parse(v).ok());
        let parsed = match (value.get("cniVersion"), asked) {
            (None, Some(version)) => CniResult::parse(&value, version),
            _ => CniResult::parse_any(&value).map(|(r, _)| r),
        };
        parsed.map_err(|e| decode(&e).into())
    }

    fn del(&self, conf: &NetConf) -> Result<(), IpamFailure> {
        self.call(Command::Del, conf)
            .map(drop)
            .map_err(IpamFailure::Plugin)
    }

    fn check(&self, conf: &NetConf) -> Result<(), IpamFailure> {
        self.call(Command::Check, conf)
            .map(drop)
            .map_err(IpamFailure::Plugin)
    }
}
