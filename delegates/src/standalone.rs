//! The standalone CNI binaries (`plexus-bridge`, ..., `plexus-host-local`, `plexus-static`):
//! the same delegates and IPAM behind the plain CNI calling convention — `CNI_*` environment,
//! conf on stdin, result or error object on stdout, exit 1 on error. A link binary's IPAM is
//! [`BuiltinIpam`]: host-local and static in-process, any other `ipam.type` exec'd from
//! `CNI_PATH`.

use crate::exec_ipam::{self, ExecIpam};
use crate::ipam::{self, IpamRequest};
use crate::ipam_select::BuiltinIpam;
use crate::kind::Kind;
use crate::request::Request;
use cni::env::{Env, EnvError, Limits};
use cni::netconf::{NetConf, parse_object};
use cni::{CniResult, Code, Command, ErrorObject, IfName, Version};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where a binary reads its environment; tests pass a closure instead of the process's.
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn main(kind: Kind) -> ExitCode {
    finish(utf8_env().and_then(|()| run(kind, &process_env)))
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
    finish(utf8_env().and_then(|()| run_ipam(kind, &process_env)))
}

fn process_env(key: &str) -> Option<String> {
    cni::env::process_var(key)
}

/// A `CNI_*` variable that is not UTF-8 is refused, never read as unset.
fn utf8_env() -> Result<(), ErrorObject> {
    cni::env::check_utf8(|k| std::env::var_os(k)).map_err(env_error)
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
fn ipam_data_dirs(env: EnvFn) -> Vec<PathBuf> {
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

fn env_error(e: EnvError) -> ErrorObject {
    ErrorObject::new(e.code(), e.to_string(), "")
}

/// One ADD, DEL or CHECK, with everything the environment and stdin said about it.
struct Call {
    env: Env,
    conf: NetConf,
    version: Version,
}

impl Call {
    /// Tags an error with the conf's version, as the spec asks of every error object.
    fn tag(&self, e: ErrorObject) -> ErrorObject {
        e.with_version(self.version.as_str())
    }

    fn ifname(&self) -> &str {
        self.env
            .ifname
            .as_ref()
            .map(IfName::as_str)
            .unwrap_or_default()
    }

    /// `CNI_ARGS` as the runtime gave it, for an IPAM plugin this delegate execs.
    fn raw_args(&self) -> Option<String> {
        (!self.env.args.is_empty()).then(|| self.env.args.to_string())
    }
}

enum Prepared {
    /// VERSION, GC and STATUS need nothing from the delegate: this is the whole answer.
    Answered(Option<String>),
    Call(Call),
}

/// Reads the command, the conf and the environment it needs, in skel's order: the command,
/// the conf and its version, then the variables the command needs ([`cni::env::need`]).
fn prepare(get: EnvFn) -> Result<Prepared, ErrorObject> {
    let command = cni::env::read_command(get).map_err(env_error)?;
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(cni::netconf::MAX_CONF_BYTES as u64 + 1)
        .read_to_end(&mut stdin)
        .map_err(|e| ErrorObject::new(Code::Io, "read config from stdin", e.to_string()))?;
    if command == Command::Version {
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
    let version = conf_version(&conf)?;
    // skel's floors: CHECK from 0.4.0, GC and STATUS from 1.1.0, refused with code 1.
    let refuse = |what: Command| {
        ErrorObject::new(
            Code::IncompatibleVersion,
            format!("config version does not allow {what}"),
            "",
        )
        .with_version(version.as_str())
    };
    match command {
        // Built-ins need no daemon and keep no state that DEL does not remove (host-local
        // has no GC either): always ready, nothing to collect.
        Command::Status | Command::Gc if version.supports_gc() => {
            return Ok(Prepared::Answered(None));
        }
        Command::Status | Command::Gc => return Err(refuse(command)),
        Command::Check if !version.supports_check() => return Err(refuse(command)),
        _ => {}
    }
    let env = Env::read_for(command, get, &Limits::NONE)
        .map_err(|e| env_error(e).with_version(version.as_str()))?;
    Ok(Prepared::Call(Call { env, conf, version }))
}

/// The conf's `cniVersion`; a conf without one reads as 0.1.0, as libcni reads it.
fn conf_version(conf: &NetConf) -> Result<Version, ErrorObject> {
    let raw_version = conf
        .cni_version()
        .map_err(|e| ErrorObject::new(Code::InvalidConfig, e.to_string(), ""))?
        .unwrap_or("0.1.0")
        .to_string();
    Version::parse(&raw_version).map_err(|e| {
        let supported: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
        ErrorObject::new(
            Code::IncompatibleVersion,
            e.to_string(),
            format!("supported: {}", supported.join(", ")),
        )
        .with_version(raw_version.clone())
    })
}

/// Runs one CNI command for a link delegate; `Ok(None)` means success with nothing to print.
pub fn run(kind: Kind, env: EnvFn) -> Result<Option<String>, ErrorObject> {
    let call = match prepare(env)? {
        Prepared::Call(call) => call,
        Prepared::Answered(out) => return Ok(out),
    };
    let data_dirs = ipam_data_dirs(env);
    let ipam = BuiltinIpam {
        container_id: call.env.container_id(),
        ifname: call.ifname(),
        args: &call.env.args,
        data_dirs: &data_dirs,
        exec: ExecIpam {
            container_id: call.env.container_id().to_string(),
            netns: call.env.netns.clone(),
            ifname: call.ifname().to_string(),
            cni_path: call.env.cni_path.clone(),
            cni_args: call.raw_args(),
            timeout: exec_ipam::DEFAULT_TIMEOUT,
        },
    };
    let req = Request {
        container_id: call.env.container_id(),
        netns: call.env.netns.as_deref(),
        ifname: call.ifname(),
        conf: &call.conf,
        ipam: &ipam,
        timeout: exec_ipam::DEFAULT_TIMEOUT,
        // No journal here: DEL recognises links by their tag and the cached result.
        owned: &[],
    };
    let fail = |e: crate::DelegateError| call.tag(e.to_error_object());
    match call.env.command {
        Command::Add => {
            let added = crate::add(kind, &req).map_err(fail)?;
            // What cannot be reported must not stay: undo the ADD before refusing.
            render(&call, &added.result).map(Some).inspect_err(|_| {
                let _ = crate::del(kind, &req);
            })
        }
        Command::Del => match crate::del(kind, &req) {
            // ADD refused this conf before creating anything: nothing to undo, and a DEL
            // that kept failing would keep the runtime from ever finishing the pod.
            Err(e) if e.is_refused_conf() => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "DEL: nothing to undo, ADD refuses this conf: {e}");
                Ok(None)
            }
            other => other.map(|()| None).map_err(fail),
        },
        Command::Check => crate::check(kind, &req).map(|()| None).map_err(fail),
        // `prepare` answered the others.
        Command::Gc | Command::Status | Command::Version => Ok(None),
    }
}

/// Runs one CNI command as an IPAM plugin. IPAM only keeps files: the netns is never entered.
pub fn run_ipam(kind: IpamKind, env: EnvFn) -> Result<Option<String>, ErrorObject> {
    let mut call = match prepare(env)? {
        Prepared::Call(call) => call,
        Prepared::Answered(out) => return Ok(out),
    };
    if let Some(Value::Object(section)) = call.conf.0.get_mut("ipam") {
        section.insert("type".into(), kind.type_name().into());
    }
    let data_dirs = ipam_data_dirs(env);
    let req = IpamRequest {
        container_id: call.env.container_id(),
        ifname: call.ifname(),
        conf: &call.conf,
        args: &call.env.args,
        data_dirs: &data_dirs,
        timeout: exec_ipam::DEFAULT_TIMEOUT,
    };
    let fail = |e: ipam::IpamError| call.tag(ErrorObject::from(e));
    match call.env.command {
        Command::Add => {
            let result = ipam::add(&req).map_err(fail)?;
            render(&call, &result).map(Some).inspect_err(|_| {
                let _ = ipam::del(&req);
            })
        }
        Command::Del => ipam::del(&req).map(|()| None).map_err(fail),
        Command::Check => ipam::check(&req).map(|()| None).map_err(fail),
        // `prepare` answered the others.
        Command::Gc | Command::Status | Command::Version => Ok(None),
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
