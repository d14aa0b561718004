//! The standalone CNI binaries (`plexus-bridge`, ...): the same delegates behind the plain
//! CNI calling convention — `CNI_*` environment, conf on stdin, result or error object on
//! stdout, exit 1 on error. IPAM runs as the binary named by `ipam.type` from `CNI_PATH`.

use crate::exec_ipam::ExecIpam;
use crate::request::{Kind, Request};
use cni::netconf::{NetConf, parse_object};
use cni::{Code, ErrorObject, IfName, Version};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Versions the binaries answer; results are written with `CniResult::to_value`.
const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn main(kind: Kind) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut stdout = std::io::stdout().lock();
    match run(kind, &env) {
        Ok(Some(out)) => {
            let _ = writeln!(stdout, "{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(stdout, "{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}

fn env_error(msg: String) -> ErrorObject {
    ErrorObject::new(Code::InvalidEnv, msg, "")
}

fn required(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Result<String, ErrorObject> {
    env(key).ok_or_else(|| env_error(format!("{key} is required")))
}

/// Runs one CNI command; `Ok(None)` means success with nothing to print.
pub fn run(
    kind: Kind,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ErrorObject> {
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
        let info = serde_json::json!({"cniVersion": requested, "supportedVersions": SUPPORTED});
        return Ok(Some(info.to_string()));
    }
    let map = parse_object(&stdin)
        .map_err(|e| ErrorObject::new(Code::Decode, "decode config", e.to_string()))?;
    let conf = NetConf::from_map(map);
    let version = conf
        .cni_version()
        .map_err(|e| ErrorObject::new(Code::InvalidConfig, e.to_string(), ""))?
        .unwrap_or("0.1.0")
        .to_string();
    let parsed = match Version::parse(&version) {
        Ok(v) if SUPPORTED.contains(&version.as_str()) => v,
        _ => {
            return Err(ErrorObject::new(
                Code::IncompatibleVersion,
                format!("unsupported cniVersion {version:?}"),
                format!("supported: {}", SUPPORTED.join(", ")),
            )
            .with_version(version));
        }
    };
    let tag = |e: ErrorObject| e.with_version(version.clone());
    if matches!(command.as_str(), "STATUS" | "GC") {
        // Built-ins need no daemon and keep no state outside IPAM: always ready, nothing to
        // collect beyond what DEL removes.
        return Ok(None);
    }
    let container_id = required(env, "CNI_CONTAINERID").map_err(tag)?;
    let ifname = required(env, "CNI_IFNAME").map_err(tag)?;
    IfName::parse(&ifname).map_err(|e| tag(env_error(format!("CNI_IFNAME: {e}"))))?;
    let netns = env("CNI_NETNS").map(PathBuf::from);
    let ipam = ExecIpam {
        container_id: container_id.clone(),
        netns: netns.clone(),
        ifname: ifname.clone(),
        cni_path: env("CNI_PATH").unwrap_or_default(),
        cni_args: env("CNI_ARGS"),
        timeout: crate::exec_ipam::DEFAULT_TIMEOUT,
    };
    let req = Request {
        container_id: &container_id,
        netns: netns.as_deref(),
        ifname: &ifname,
        conf: &conf,
        ipam: &ipam,
    };
    let fail = |e: crate::DelegateError| tag(e.to_error_object());
    match command.as_str() {
        "ADD" => {
            if netns.is_none() {
                return Err(tag(env_error("CNI_NETNS is required".into())));
            }
            let result = crate::add(kind, &req).map_err(fail)?;
            Ok(Some(result.to_value(parsed).to_string()))
        }
        "DEL" => crate::del(kind, &req).map(|()| None).map_err(fail),
        "CHECK" => crate::check(kind, &req).map(|()| None).map_err(fail),
        other => Err(tag(env_error(format!("unknown CNI_COMMAND {other:?}")))),
    }
}
