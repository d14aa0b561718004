//! An [`Ipam`] that execs the IPAM plugin named by `ipam.type` from `CNI_PATH`, for the
//! standalone binaries and for tests against the reference host-local.
//!
//! Children inherit the netns of the thread that spawns them, so this must be called from a
//! thread in the host netns — never from inside `NetNs::run`.

use crate::request::Ipam;
use cni::netconf::NetConf;
use cni::{CniResult, Code, ErrorObject};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct ExecIpam {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_PATH`: colon-separated plugin directories.
    pub cni_path: String,
    pub cni_args: Option<String>,
}

impl ExecIpam {
    fn find(&self, plugin: &str) -> Result<PathBuf, ErrorObject> {
        if plugin.is_empty() || plugin.contains('/') {
            return Err(ErrorObject::new(
                Code::InvalidConfig,
                format!("invalid ipam type {plugin:?}"),
                "",
            ));
        }
        self.cni_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                ErrorObject::new(
                    Code::InvalidConfig,
                    format!("ipam plugin {plugin:?} not found in CNI_PATH"),
                    self.cni_path.clone(),
                )
            })
    }

    fn call(&self, command: &str, conf: &NetConf) -> Result<Vec<u8>, ErrorObject> {
        let plugin = conf
            .ipam_type()
            .map_err(|e| ErrorObject::new(Code::InvalidConfig, e.to_string(), ""))?
            .ok_or_else(|| ErrorObject::new(Code::InvalidConfig, "ipam.type is missing", ""))?;
        let bin = self.find(plugin)?;
        let io_err = |step: &str, e: std::io::Error| {
            ErrorObject::new(
                Code::Io,
                format!("{step} ipam plugin {plugin}"),
                e.to_string(),
            )
        };
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = &self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if let Some(a) = &self.cni_args {
            cmd.env("CNI_ARGS", a);
        }
        let mut child = cmd.spawn().map_err(|e| io_err("start", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&conf.to_bytes())
                .map_err(|e| io_err("write config to", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| io_err("wait for", e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(
            serde_json::from_slice::<ErrorObject>(&out.stdout).unwrap_or_else(|_| {
                ErrorObject::new(
                    Code::DelegateFailed,
                    format!("ipam plugin {plugin} failed: {}", out.status),
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                )
            }),
        )
    }
}

impl Ipam for ExecIpam {
    fn add(&self, conf: &NetConf) -> Result<CniResult, ErrorObject> {
        let out = self.call("ADD", conf)?;
        CniResult::from_slice(&out)
            .map(|(result, _)| result)
            .map_err(|e| ErrorObject::new(Code::Decode, "decode ipam result", e.to_string()))
    }

    fn del(&self, conf: &NetConf) -> Result<(), ErrorObject> {
        self.call("DEL", conf).map(drop)
    }

    fn check(&self, conf: &NetConf) -> Result<(), ErrorObject> {
        self.call("CHECK", conf).map(drop)
    }
}
