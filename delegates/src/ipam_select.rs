//! The [`Ipam`] both the meta plugin and the standalone binaries hand to a delegate: the
//! built-in `host-local` and `static` run in-process, every other `ipam.type` (dhcp,
//! whereabouts, calico-ipam, ...) runs by exec from `CNI_PATH`.
//!
//! To force the external binary even for a built-in type, pass the [`ExecIpam`] itself as the
//! delegate's IPAM instead of this.

use crate::exec_ipam::ExecIpam;
use crate::ipam::{self, IpamFailure, IpamRequest};
use crate::request::Ipam;
use cni::CniResult;
use cni::args::CniArgs;
use cni::netconf::NetConf;

pub struct BuiltinIpam<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS` as given to the delegate; host-local and static read `IP=` (and static
    /// `GATEWAY=`) from it.
    pub args: &'a CniArgs,
    /// The folders host-local's `dataDir` may name.
    pub data_dirs: &'a [std::path::PathBuf],
    /// Used for every `ipam.type` that is not built in; carries its own copy of the
    /// container, interface, raw `CNI_ARGS`, `CNI_PATH` and timeout.
    pub exec: ExecIpam,
}

impl BuiltinIpam<'_> {
    /// The in-process request when `conf`'s `ipam.type` is built in; `None` sends the call to
    /// exec (which also reports a missing or malformed `ipam.type`).
    fn in_process<'c>(&'c self, conf: &'c NetConf) -> Option<IpamRequest<'c>> {
        match conf.ipam_type() {
            Ok(Some(t)) if ipam::is_builtin(t) => Some(IpamRequest {
                container_id: self.container_id,
                ifname: self.ifname,
                conf,
                args: self.args,
                data_dirs: self.data_dirs,
                timeout: self.exec.timeout,
            }),
            _ => None,
        }
    }
}

impl Ipam for BuiltinIpam<'_> {
    fn validate(&self, conf: &NetConf) -> Result<(), IpamFailure> {
        match self.in_process(conf) {
            Some(req) => ipam::validate(&req).map_err(IpamFailure::from),
            None => self.exec.validate(conf),
        }
    }

    fn add(&self, conf: &NetConf) -> Result<CniResult, IpamFailure> {
        match self.in_process(conf) {
            Some(req) => ipam::add(&req).map_err(IpamFailure::from),
            None => self.exec.add(conf),
        }
    }

    fn del(&self, conf: &NetConf) -> Result<(), IpamFailure> {
        match self.in_process(conf) {
            Some(req) => ipam::del(&req).map_err(IpamFailure::from),
            None => self.exec.del(conf),
        }
    }

    fn check(&self, conf: &NetConf) -> Result<(), IpamFailure> {
        match self.in_process(conf) {
            Some(req) => ipam::check(&req).map_err(IpamFailure::from),
            None => self.exec.check(conf),
        }
    }
}
