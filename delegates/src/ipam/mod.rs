//! In-process IPAM: `host-local` and `static`, reading the reference plugins' conf schemas.
//!
//! `host-local` shares its data directory with the reference binary (same file names, file
//! content, `last_reserved_ip.N` files and `flock` on `lock`), so built-in and external
//! allocations can be mixed on one node. Everything here is synchronous and touches only
//! the filesystem; it knows nothing of netns, Kubernetes or Plexus's own conf.

mod host_local;
mod range;
mod static_ip;
mod store;

use cni::args::CniArgs;
use cni::netconf::NetConf;
use cni::result::{Dns, Route};
use cni::{CniResult, Code, ErrorObject};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use host_local::DEFAULT_DATA_DIR;
pub use store::SPARE_SLOTS;

/// One IPAM call: what a delegate knows when it would otherwise exec an IPAM binary.
#[derive(Debug, Clone, Copy)]
pub struct IpamRequest<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// The whole plugin conf: `name`, the `ipam` object, optional `runtimeConfig` and `args`.
    pub conf: &'a NetConf,
    /// `CNI_ARGS`; `IP=` (and `GATEWAY=` for static) are honoured like the reference plugins do.
    pub args: &'a CniArgs,
    /// The folders a conf's `ipam.dataDir` may name (it or a folder below it): the conf may
    /// be a tenant's, and host-local creates files where it says.
    pub data_dirs: &'a [PathBuf],
    /// How long the call may wait for the pool's lock, as an exec'd IPAM plugin may run.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid ipam config: key {key:?}: {reason}")]
    InvalidConfig { key: String, reason: String },
    #[error("ipam type {0:?} is not built in (built-in: host-local, static)")]
    UnknownType(String),
    #[error("{0} is empty")]
    MissingEnv(&'static str),
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Wording kept from the reference host-local so existing alerts and greps still match.
    #[error(
        "failed to allocate for range {index}: no IP addresses available in range set: {range_set}"
    )]
    Exhausted { index: usize, range_set: String },
    #[error(
        "failed to allocate for range {index}: requested IP address {ip} is not available in range set {range_set}"
    )]
    RequestedTaken {
        index: usize,
        ip: IpAddr,
        range_set: String,
    },
    #[error("failed to allocate for range {index}: requested ip {ip} is subnet's gateway")]
    RequestedGateway { index: usize, ip: IpAddr },
    #[error("failed to allocate all requested IPs: {0}")]
    RequestedOutside(String),
    #[error(
        "failed to allocate for range {index}: {ip} has been allocated to {container_id}, duplicate allocation is not allowed"
    )]
    Duplicate {
        index: usize,
        ip: IpAddr,
        container_id: String,
    },
    #[error("ipam lock {} still held by another call after {waited:?}", .path.display())]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("host-local: failed to find address added by container {0}")]
    NotFound(String),
    #[error("static: failed to match addr {ip} on interface {ifname}")]
    StaticMismatch { ip: IpAddr, ifname: String },
}

impl IpamError {
    pub fn code(&self) -> Code {
        match self {
            IpamError::InvalidConfig { .. }
            | IpamError::UnknownType(_)
            | IpamError::RequestedGateway { .. }
            | IpamError::RequestedOutside(_) => Code::InvalidConfig,
            IpamError::MissingEnv(_) => Code::InvalidEnv,
            IpamError::Io { .. } => Code::Io,
            IpamError::LockTimeout { .. } => Code::TryAgainLater,
            // The spec has no code for "pool exhausted" or "state does not match": these are
            // the delegate failing at its own job.
            IpamError::Exhausted { .. }
            | IpamError::RequestedTaken { .. }
            | IpamError::Duplicate { .. }
            | IpamError::NotFound(_)
            | IpamError::StaticMismatch { .. } => Code::DelegateFailed,
        }
    }
}

impl From<&IpamError> for ErrorObject {
    fn from(e: &IpamError) -> ErrorObject {
        let details = match e {
            IpamError::Io { source, .. } => source.to_string(),
            _ => String::new(),
        };
        ErrorObject::new(e.code(), e.to_string(), details)
    }
}

impl From<IpamError> for ErrorObject {
    fn from(e: IpamError) -> ErrorObject {
        ErrorObject::from(&e)
    }
}

/// Why a delegate's IPAM failed: the in-process IPAM's own error, typed, or the error object
/// an exec'd IPAM plugin answered with (or the one made for a plugin that could not run).
#[derive(Debug)]
pub enum IpamFailure {
    Builtin(IpamError),
    Plugin(ErrorObject),
}

impl IpamFailure {
    /// The error object a standalone plugin prints: the IPAM's own code reaches the runtime
    /// unchanged, as the reference plugins pass their IPAM's error on.
    pub fn to_error_object(&self) -> ErrorObject {
        match self {
            IpamFailure::Builtin(e) => ErrorObject::from(e),
            IpamFailure::Plugin(obj) => obj.clone(),
        }
    }

    pub fn code(&self) -> u32 {
        match self {
            IpamFailure::Builtin(e) => e.code().as_u32(),
            IpamFailure::Plugin(obj) => obj.code,
        }
    }
}

impl std::fmt::Display for IpamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_error_object().fmt(f)
    }
}

impl std::error::Error for IpamFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IpamFailure::Builtin(e) => Some(e),
            IpamFailure::Plugin(_) => None,
        }
    }
}

impl From<IpamError> for IpamFailure {
    fn from(e: IpamError) -> IpamFailure {
        IpamFailure::Builtin(e)
    }
}

impl From<ErrorObject> for IpamFailure {
    fn from(obj: ErrorObject) -> IpamFailure {
        IpamFailure::Plugin(obj)
    }
}

/// Whether `ipam.type` is served in-process: the reference names, and the names of our own
/// standalone binaries (`plexus-host-local`, `plexus-static`) as `kind_of` does for links.
pub fn is_builtin(ipam_type: &str) -> bool {
    matches!(
        ipam_type,
        "host-local" | "static" | "plexus-host-local" | "plexus-static"
    )
}

enum Kind {
    HostLocal,
    Static,
}

fn kind(conf: &NetConf) -> Result<Kind, IpamError> {
    match conf.ipam_type() {
        Ok(Some("host-local" | "plexus-host-local")) => Ok(Kind::HostLocal),
        Ok(Some("static" | "plexus-static")) => Ok(Kind::Static),
        Ok(Some(other)) => Err(IpamError::UnknownType(other.to_string())),
        Ok(None) => Err(invalid("ipam.type", "missing")),
        Err(e) => Err(invalid("ipam", e.to_string())),
    }
}

/// Everything ADD checks before it reserves anything: the conf, and (host-local) the
/// container and interface the reservation is keyed by.
pub fn validate(req: &IpamRequest) -> Result<(), IpamError> {
    match kind(req.conf)? {
        Kind::HostLocal => host_local::validate(req),
        Kind::Static => static_ip::validate(req),
    }
}

/// Allocates (host-local) or reports (static) the addresses for one interface.
pub fn add(req: &IpamRequest) -> Result<CniResult, IpamError> {
    match kind(req.conf)? {
        Kind::HostLocal => host_local::add(req),
        Kind::Static => static_ip::add(req),
    }
}

/// Releases what ADD reserved for (container ID, ifname). Releasing nothing is success.
pub fn del(req: &IpamRequest) -> Result<(), IpamError> {
    match kind(req.conf)? {
        Kind::HostLocal => host_local::del(req),
        Kind::Static => Ok(()),
    }
}

/// host-local: a reservation for (container ID, ifname) exists. static: the conf's addresses
/// appear in `prevResult` when one is given.
pub fn check(req: &IpamRequest) -> Result<(), IpamError> {
    match kind(req.conf)? {
        Kind::HostLocal => host_local::check(req),
        Kind::Static => static_ip::check(req),
    }
}

// ---- shared conf reading: every error names the key it is about ----

type Obj = Map<String, Value>;

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> IpamError {
    IpamError::InvalidConfig {
        key: key.into(),
        reason: reason.into(),
    }
}

fn ipam_section(conf: &NetConf) -> Result<&Obj, IpamError> {
    match conf.0.get("ipam") {
        Some(Value::Object(m)) => Ok(m),
        None | Some(Value::Null) => Err(invalid("ipam", "missing")),
        Some(_) => Err(invalid("ipam", "must be an object")),
    }
}

fn opt_str<'a>(m: &'a Obj, key: &str, at: &str) -> Result<Option<&'a str>, IpamError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(join(at, key), "must be a string")),
    }
}

fn opt_array<'a>(m: &'a Obj, key: &str, at: &str) -> Result<&'a [Value], IpamError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(join(at, key), "must be a list")),
    }
}

fn opt_object<'a>(m: &'a Obj, key: &str, at: &str) -> Result<Option<&'a Obj>, IpamError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(invalid(join(at, key), "must be an object")),
    }
}

fn as_object<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, IpamError> {
    v.as_object()
        .ok_or_else(|| invalid(at, "must be an object"))
}

fn as_str<'a>(v: &'a Value, at: &str) -> Result<&'a str, IpamError> {
    v.as_str().ok_or_else(|| invalid(at, "must be a string"))
}

fn opt_number<T: TryFrom<u64>>(m: &Obj, key: &str, at: &str) -> Result<Option<T>, IpamError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(join(at, key), "must be a small non-negative integer")),
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// IPv4-mapped IPv6 addresses are read as IPv4, as Go's `To4()` does in the reference.
fn parse_ip(s: &str, at: &str) -> Result<IpAddr, IpamError> {
    s.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| invalid(at, format!("{s:?} is not an IP address")))
}

/// A CIDR with host bits kept (`10.1.0.5/24`), like the reference's `types.IPNet`.
fn parse_cidr(s: &str, at: &str) -> Result<IpNet, IpamError> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| invalid(at, format!("{s:?} is not in CIDR notation")))
}

fn parse_routes(m: &Obj, at: &str) -> Result<Vec<Route>, IpamError> {
    let mut out = Vec::new();
    for (i, v) in opt_array(m, "routes", at)?.iter().enumerate() {
        let here = format!("{}[{i}]", join(at, "routes"));
        let r = as_object(v, &here)?;
        let dst =
            opt_str(r, "dst", &here)?.ok_or_else(|| invalid(join(&here, "dst"), "missing"))?;
        let gw = opt_str(r, "gw", &here)?
            .map(|g| parse_ip(g, &join(&here, "gw")))
            .transpose()?;
        out.push(Route {
            dst: parse_cidr(dst, &join(&here, "dst"))?,
            gw,
            mtu: opt_number(r, "mtu", &here)?,
            advmss: opt_number(r, "advmss", &here)?,
            priority: opt_number(r, "priority", &here)?,
            table: opt_number(r, "table", &here)?,
            scope: opt_number(r, "scope", &here)?,
        });
    }
    Ok(out)
}

fn string_list(m: &Obj, key: &str, at: &str) -> Result<Vec<String>, IpamError> {
    opt_array(m, key, at)?
        .iter()
        .enumerate()
        .map(|(i, v)| as_str(v, &format!("{}[{i}]", join(at, key))).map(str::to_string))
        .collect()
}

/// Where requested addresses come from, kept apart because host-local merges them and
/// static lets later sources replace earlier ones.
struct RequestedIps {
    /// `CNI_ARGS` `IP=`, split on commas.
    env: Vec<String>,
    /// `args.cni.ips` in the conf.
    args: Vec<String>,
    /// `runtimeConfig.ips` (the `ips` capability).
    runtime: Vec<String>,
}

impl RequestedIps {
    const ENV_KEY: &'static str = "CNI_ARGS IP";
    const ARGS_KEY: &'static str = "args.cni.ips";
    const RUNTIME_KEY: &'static str = "runtimeConfig.ips";

    fn read(req: &IpamRequest) -> Result<RequestedIps, IpamError> {
        let env = req.args.get("IP").map(split_commas).unwrap_or_default();
        let args = match opt_object(&req.conf.0, "args", "")? {
            Some(a) => match opt_object(a, "cni", "args")? {
                Some(c) => string_list(c, "ips", "args.cni")?,
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        let runtime = match opt_object(&req.conf.0, "runtimeConfig", "")? {
            Some(rc) => string_list(rc, "ips", "runtimeConfig")?,
            None => Vec::new(),
        };
        Ok(RequestedIps { env, args, runtime })
    }
}

fn split_commas(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_dns(m: &Obj, at: &str) -> Result<Dns, IpamError> {
    Ok(Dns {
        nameservers: string_list(m, "nameservers", at)?,
        domain: opt_str(m, "domain", at)?.map(str::to_string),
        search: string_list(m, "search", at)?,
        options: string_list(m, "options", at)?,
    })
}

/// CNI 0.1.0 and 0.2.0 results hold one address per family (reference `LoadIPAMConfig`).
fn check_family_count(
    conf: &NetConf,
    ips: impl Iterator<Item = IpAddr>,
    key: &str,
) -> Result<(), IpamError> {
    let old = matches!(conf.cni_version(), Ok(Some("0.1.0" | "0.2.0")));
    if !old {
        return Ok(());
    }
    let (mut v4, mut v6) = (0, 0);
    for ip in ips {
        if ip.is_ipv4() {
            v4 += 1;
        } else {
            v6 += 1;
        }
    }
    if v4 > 1 || v6 > 1 {
        return Err(invalid(
            key,
            "CNI versions before 0.3.0 support only one address per family",
        ));
    }
    Ok(())
}
