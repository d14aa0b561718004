//! What a delegate is asked to do: the kind, the container, the conf, and the IPAM to use.

use cni::netconf::NetConf;
use cni::{CniResult, ErrorObject};
use serde_json::Value;
use std::path::Path;

use crate::error::DelegateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Bridge,
    Macvlan,
    Ipvlan,
    Vxlan,
}

/// The built-in kind for a conf's `type`, if there is one.
pub fn kind_of(plugin_type: &str) -> Option<Kind> {
    match plugin_type {
        "bridge" | "plexus-bridge" => Some(Kind::Bridge),
        "macvlan" | "plexus-macvlan" => Some(Kind::Macvlan),
        "ipvlan" | "plexus-ipvlan" => Some(Kind::Ipvlan),
        "vxlan" | "plexus-vxlan" => Some(Kind::Vxlan),
        _ => None,
    }
}

/// Address management as the delegate sees it; the implementation knows the container and
/// interface (in-process host-local/static, or an exec'd IPAM binary).
pub trait Ipam {
    fn add(&self, conf: &NetConf) -> Result<CniResult, ErrorObject>;
    fn del(&self, conf: &NetConf) -> Result<(), ErrorObject>;
    fn check(&self, conf: &NetConf) -> Result<(), ErrorObject>;
}

pub struct Request<'a> {
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// The full plugin conf, with `runtimeConfig`, `args` and `prevResult` when present.
    pub conf: &'a NetConf,
    pub ipam: &'a dyn Ipam,
}

impl Request<'_> {
    pub fn keys(&self) -> Keys<'_> {
        Keys(&self.conf.0)
    }

    pub fn netns_required(&self) -> Result<&Path, DelegateError> {
        self.netns
            .ok_or_else(|| DelegateError::config("CNI_NETNS", "a netns path is required"))
    }

    pub fn has_ipam(&self) -> bool {
        matches!(self.conf.0.get("ipam"), Some(Value::Object(m)) if m.contains_key("type"))
    }

    /// Runs IPAM ADD when the conf has an `ipam` section; no section means no addresses.
    pub fn ipam_add(&self) -> Result<CniResult, DelegateError> {
        if !self.has_ipam() {
            return Ok(CniResult::default());
        }
        self.ipam.add(self.conf).map_err(DelegateError::Ipam)
    }

    pub fn ipam_del(&self) -> Result<(), DelegateError> {
        if !self.has_ipam() {
            return Ok(());
        }
        self.ipam.del(self.conf).map_err(DelegateError::Ipam)
    }

    pub fn ipam_check(&self) -> Result<(), DelegateError> {
        if !self.has_ipam() {
            return Ok(());
        }
        self.ipam.check(self.conf).map_err(DelegateError::Ipam)
    }

    /// The result of the ADD that CHECK verifies.
    pub fn prev_result(&self) -> Result<CniResult, DelegateError> {
        let v = self
            .conf
            .0
            .get("prevResult")
            .ok_or_else(|| DelegateError::config("prevResult", "CHECK needs a prevResult"))?;
        crate::wire::parse_result(v).map_err(|e| DelegateError::config("prevResult", e))
    }

    /// `runtimeConfig.mac` (capability `mac`), as the reference plugins read it.
    pub fn runtime_mac(&self) -> Result<Option<Vec<u8>>, DelegateError> {
        let Some(serde_json::Value::Object(rc)) = self.conf.0.get("runtimeConfig") else {
            return Ok(None);
        };
        match rc.get("mac") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => crate::link::parse_mac(s)
                .map(Some)
                .ok_or_else(|| DelegateError::config("runtimeConfig.mac", "not a MAC address")),
            Some(_) => Err(DelegateError::config(
                "runtimeConfig.mac",
                "must be a string",
            )),
        }
    }

    pub fn cni_version(&self) -> &str {
        self.conf
            .0
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("1.0.0")
    }
}

/// Typed reads of conf keys whose errors name the key.
#[derive(Clone, Copy)]
pub struct Keys<'a>(pub &'a serde_json::Map<String, Value>);

impl<'a> Keys<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.0.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, DelegateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(DelegateError::config(key, "must be a string")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, DelegateError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(DelegateError::config(key, "must be a boolean")),
        }
    }

    pub fn u32(&self, key: &str) -> Result<Option<u32>, DelegateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| DelegateError::config(key, "must be a non-negative 32-bit integer")),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<&'a str>, DelegateError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| DelegateError::config(key, "must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(DelegateError::config(key, "must be a list of strings")),
        }
    }

    /// An interface name from the conf: ≤15 bytes, no `/`, not `.`/`..`, no whitespace.
    pub fn ifname(&self, key: &str) -> Result<Option<&'a str>, DelegateError> {
        let Some(name) = self.str(key)? else {
            return Ok(None);
        };
        cni::IfName::parse(name).map_err(|e| DelegateError::config(key, e.to_string()))?;
        Ok(Some(name))
    }
}
