//! The standalone CNI binaries (`plexus-bridge`, ..., `plexus-host-local`, `plexus-static`):
//! the same delegates and IPAM behind the plain CNI calling convention — `CNI_*` environment,
//! conf on stdin, result or error object on stdout, exit 1 on error. A link binary's IPAM is
//! [`BuiltinIpam`]: host-local and static in-process, any other `ipam.type` exec'd from
//! `CNI_PATH`.

use crate::exec_ipam::{self, ExecIpam};
use crate::ipam::{self, IpamRequest};
use crate::ipam_select::BuiltinIpam;
use crate::request::{Kind, Request};
use cni::args::CniArgs;
use cni::netconf::{NetConf, parse_object};
use cni::{CniResult, Code, ErrorObject, IfName, Version};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where a binary reads its environment; tests pass a closure instead of the process's.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn main(kind: Kind) -> ExitCode {
    finish(run(kind, &process_env))
}

/// The IPAM a `plexus-host-local` or `plexus-static` binary serves, whatever `ipam.type`
/// names (the binary may be installed under another name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamKind {
    HostLocal,
    Static,
}

impl IpamKind {
    fn type_name(self) -> &'static str {
        match self {
            IpamKind::HostLocal => "host-local",
            IpamKind::Static => "static",
        }
    }
}

pub fn main_ipam(kind: IpamKind) -> ExitCode {
    finish(run_ipam(kind, &process_env))
}

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Prints the answer. A stdout that is closed or full (EPIPE, ENOSPC) makes the call fail
/// with exit status 1, never a panic: a result the runtime never read must not count as
/// success, and the runtime's DEL undoes the ADD.
fn finish(outcome: Result<Option<String>, ErrorObject>) -> ExitCode {
    let (text, status) = match outcome {
        Ok(Some(out)) => (out, ExitCode::SUCCESS),
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => (e.to_json(), ExitCode::FAILURE),
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => status,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The folders a conf's host-local `dataDir` may name: `PLEXUS_IPAM_DATA_DIRS` (absolute
/// paths separated by `:`, set by whoever installs the binary, never by a conf), else the
/// reference plugin's default folder.
fn ipam_data_dirs(env: Env) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = env("PLEXUS_IPAM_DATA_DIRS")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .collect();
    if dirs.is_empty() {
        vec![PathBuf::from(ipam::DEFAULT_DATA_DIR)]
    } else {
        dirs
    }
}

fn env_error(msg: String) -> ErrorObject {
    ErrorObject::new(Code::InvalidEnv, msg, "")
}

fn required(env: Env, key: &str) -> Result<String, ErrorObject> {
    env(key).ok_or_else(|| env_error(format!("{key} is required")))
}

/// One ADD, DEL or CHECK, with everything the environment and stdin said about it.
struct Call {
    command: String,
    conf: NetConf,
    version: Version,
    container_id: String,
    ifname: String,
    netns: Option<PathBuf>,
    cni_args_raw: Option<String>,
    cni_args: CniArgs,
}

impl Call {
    /// Tags an error with the conf's version, as the spec asks of every error object.
    fn tag(&self, e: ErrorObject) -> ErrorObject {
        e.with_version(self.version.as_str())
    }
}

enum Prepared {
    /// VERSION, GC and STATUS need nothing from the delegate: this is the whole answer.
    Answered(Option<String>),
    Call(Call),
}

/// Reads the command, the conf and the environment it needs.
fn prepare(env: Env) -> Result<Prepared, ErrorObject> {
    let command = required(env, "CNI_COMMAND")?;
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(cni::netconf::MAX_CONF_BYTES as u64 + 1)
        .read_to_end(&mut stdin)
        .map_err(|e| ErrorObject::new(Code::Io, "read config from stdin", e.to_string()))?;
    if command == "VERSION" {
        let requested = parse_object(&stdin)
            .ok()
            .and_then(|m| {
                m.get("cniVersion")
                    .and_then(|v| v.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| Version::LATEST.as_str().to_string());
        return Ok(Prepared::Answered(Some(
            Version::version_info(&requested).to_string(),
        )));
    }
    let map = parse_object(&stdin)
        .map_err(|e| ErrorObject::new(Code::Decode, "decode config", e.to_string()))?;
    let conf = NetConf::from_map(map);
    let raw_version = conf
        .cni_version()
        .map_err(|e| ErrorObject::new(Code::InvalidConfig, e.to_string(), ""))?
        // libcni reads a conf without cniVersion as 0.1.0.
        .unwrap_or("0.1.0")
        .to_string();
    let version = Version::parse(&raw_version).map_err(|e| {
        let supported: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
        ErrorObject::new(
            Code::IncompatibleVersion,
            e.to_string(),
            format!("supported: {}", supported.join(", ")),
        )
        .with_version(raw_version.clone())
    })?;
    // skel's floors: CHECK from 0.4.0, GC and STATUS from 1.1.0, refused with code 1.
    let refuse = |what: &str| {
        ErrorObject::new(
            Code::IncompatibleVersion,
            format!("config version does not allow {what}"),
            "",
        )
        .with_version(version.as_str())
    };
    match command.as_str() {
        // Built-ins need no daemon and keep no state that DEL does not remove (host-local
        // has no GC either): always ready, nothing to collect.
        "STATUS" | "GC" if version.supports_gc() => return Ok(Prepared::Answered(None)),
        "STATUS" | "GC" => return Err(refuse(&command)),
        "CHECK" if !version.supports_check() => return Err(refuse("CHECK")),
        _ => {}
    }
    let tag = |e: ErrorObject| e.with_version(version.as_str());
    let container_id = required(env, "CNI_CONTAINERID").map_err(tag)?;
    let ifname = required(env, "CNI_IFNAME").map_err(tag)?;
    IfName::parse(&ifname).map_err(|e| tag(env_error(format!("CNI_IFNAME: {e}"))))?;
    let cni_args_raw = env("CNI_ARGS");
    let cni_args = CniArgs::parse(cni_args_raw.as_deref().unwrap_or(""))
        .map_err(|e| tag(env_error(e.to_string())))?;
    Ok(Prepared::Call(Call {
        command,
        conf,
        version,
        container_id,
        ifname,
        netns: env("CNI_NETNS").map(PathBuf::from),
        cni_args_raw,
        cni_args,
    }))
}

/// Runs one CNI command for a link delegate; `Ok(None)` means success with nothing to print.
pub fn run(kind: Kind, env: Env) -> Result<Option<String>, ErrorObject> {
    let call = match prepare(env)? {
        Prepared::Call(call) => call,
        Prepared::Answered(out) => return Ok(out),
    };
    let data_dirs = ipam_data_dirs(env);
    let ipam = BuiltinIpam {
        container_id: &call.container_id,
        ifname: &call.ifname,
        args: &call.cni_args,
        data_dirs: &data_dirs,
        exec: ExecIpam {
            container_id: call.container_id.clone(),
            netns: call.netns.clone(),
            ifname: call.ifname.clone(),
            cni_path: env("CNI_PATH").unwrap_or_default(),
            cni_args: call.cni_args_raw.clone(),
            timeout: exec_ipam::DEFAULT_TIMEOUT,
        },
    };
    let req = Request {
        container_id: &call.container_id,
        netns: call.netns.as_deref(),
        ifname: &call.ifname,
        conf: &call.conf,
        ipam: &ipam,
        timeout: exec_ipam::DEFAULT_TIMEOUT,
        // No journal here: DEL recognises links by their tag and the cached result.
        owned: &[],
    };
    let fail = |e: crate::DelegateError| call.tag(e.to_error_object());
    match call.command.as_str() {
        "ADD" => {
            if call.netns.is_none() {
                return Err(call.tag(env_error("CNI_NETNS is required".into())));
            }
            let added = crate::add(kind, &req).map_err(fail)?;
            // What cannot be reported must not stay: undo the ADD before refusing.
            render(&call, &added.result).map(Some).inspect_err(|_| {
                let _ = crate::del(kind, &req);
            })
        }
        "DEL" => match crate::del(kind, &req) {
            // ADD refused this conf before creating anything: nothing to undo, and a DEL
            // that kept failing would keep the runtime from ever finishing the pod.
            Err(e) if e.is_refused_conf() => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "DEL: nothing to undo, ADD refuses this conf: {e}");
                Ok(None)
            }
            other => other.map(|()| None).map_err(fail),
        },
        "CHECK" => crate::check(kind, &req).map(|()| None).map_err(fail),
        other => Err(call.tag(env_error(format!("unknown CNI_COMMAND {other:?}")))),
    }
}

/// Runs one CNI command as an IPAM plugin. No netns is needed: IPAM only keeps files.
pub fn run_ipam(kind: IpamKind, env: Env) -> Result<Option<String>, ErrorObject> {
    let mut call = match prepare(env)? {
        Prepared::Call(call) => call,
        Prepared::Answered(out) => return Ok(out),
    };
    if let Some(Value::Object(section)) = call.conf.0.get_mut("ipam") {
        section.insert("type".into(), kind.type_name().into());
    }
    let data_dirs = ipam_data_dirs(env);
    let req = IpamRequest {
        container_id: &call.container_id,
        ifname: &call.ifname,
        conf: &call.conf,
        args: &call.cni_args,
        data_dirs: &data_dirs,
        timeout: exec_ipam::DEFAULT_TIMEOUT,
    };
    let fail = |e: ipam::IpamError| call.tag(ErrorObject::from(e));
    match call.command.as_str() {
        "ADD" => {
            let result = ipam::add(&req).map_err(fail)?;
            render(&call, &result).map(Some).inspect_err(|_| {
                let _ = ipam::del(&req);
            })
        }
        "DEL" => ipam::del(&req).map(|()| None).map_err(fail),
        "CHECK" => ipam::check(&req).map(|()| None).map_err(fail),
        other => Err(call.tag(env_error(format!("unknown CNI_COMMAND {other:?}")))),
    }
}

/// The result in the conf's version; 0.1.0/0.2.0 cannot carry a result without an address.
fn render(call: &Call, result: &CniResult) -> Result<String, ErrorObject> {
    result
        .try_to_value(call.version)
        .map(|v| v.to_string())
        .map_err(|e| {
            call.tag(ErrorObject::new(
                Code::IncompatibleVersion,
                e.to_string(),
                "",
            ))
        })
}
