//! What a delegate is asked to do: the kind, the container, the conf, and the IPAM to use.

use cni::netconf::NetConf;
use cni::{CniResult, Version};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

use crate::error::DelegateError;
use crate::ipam::IpamFailure;
use crate::netns::{NetNs, NetNsError};
use crate::owned::OwnedLink;

/// Address management as the delegate sees it; the implementation knows the container and
/// interface (in-process host-local/static, or an exec'd IPAM binary).
pub trait Ipam {
    /// What ADD checks before it reserves anything: the conf of an in-process IPAM, the
    /// binary of an exec'd one.
    fn validate(&self, conf: &NetConf) -> Result<(), IpamFailure>;
    fn add(&self, conf: &NetConf) -> Result<CniResult, IpamFailure>;
    fn del(&self, conf: &NetConf) -> Result<(), IpamFailure>;
    fn check(&self, conf: &NetConf) -> Result<(), IpamFailure>;
}

pub struct Request<'a> {
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// The full plugin conf, with `runtimeConfig`, `args` and `prevResult` when present.
    pub conf: &'a NetConf,
    pub ipam: &'a dyn Ipam,
    /// Bound on each step in the kernel (one netns job, one lock wait), as the timeout of an
    /// exec'd plugin bounds it.
    pub timeout: Duration,
    /// DEL: the links this attachment's ADD created, as the caller journaled them. Empty
    /// when nothing was journaled (a standalone binary, an ADD killed before it could
    /// record them): then a link must still carry this attachment's tag to be removed.
    pub owned: &'a [OwnedLink],
}

impl Request<'_> {
    pub fn keys(&self) -> Keys<'_> {
        Keys(&self.conf.0)
    }

    /// The alias of the links this attachment creates.
    pub fn tag(&self) -> String {
        crate::owned::tag(self.container_id, self.ifname)
    }

    /// A namespace to work in, every job in it bounded by the timeout.
    pub fn open_netns(&self, path: &Path) -> Result<NetNs, NetNsError> {
        NetNs::open(path).map(|ns| ns.bounded(self.timeout))
    }

    /// The caller's (the node's) namespace, bounded the same way.
    pub fn node_netns(&self) -> Result<NetNs, NetNsError> {
        NetNs::current().map(|ns| ns.bounded(self.timeout))
    }

    /// The ADD's result when the runtime passed it (`prevResult`, DEL from 0.4.0 on); DEL
    /// uses it only to recognise links, so an unreadable one counts as absent.
    pub fn cached_result(&self) -> Option<CniResult> {
        self.conf.0.get("prevResult")?;
        self.prev_result().ok()
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

    pub fn ipam_validate(&self) -> Result<(), DelegateError> {
        if !self.has_ipam() {
            return Ok(());
        }
        self.ipam.validate(self.conf).map_err(DelegateError::Ipam)
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
    ///
    /// The runtime converts `prevResult` to the conf's `cniVersion` (the spec's plugin
    /// delegation), so that version, not a `cniVersion` inside `prevResult`, says how
    /// to read it. Only a conf without `cniVersion` falls back to the result's own.
    pub fn prev_result(&self) -> Result<CniResult, DelegateError> {
        let v = self
            .conf
            .0
            .get("prevResult")
            .ok_or_else(|| DelegateError::config("prevResult", "CHECK needs a prevResult"))?;
        let parsed = match self.cni_version()? {
            Some(version) => CniResult::parse(v, version),
            None => CniResult::parse_any(v).map(|(r, _)| r),
        };
        parsed.map_err(|e| DelegateError::config("prevResult", e.to_string()))
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

    /// The conf's `cniVersion`, `None` when it has none.
    pub fn cni_version(&self) -> Result<Option<Version>, DelegateError> {
        match self.conf.cni_version() {
            Ok(Some(s)) => Version::parse(s)
                .map(Some)
                .map_err(|e| DelegateError::config("cniVersion", e.to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(DelegateError::config("cniVersion", e.to_string())),
        }
    }
}

/// The conf's `dns` (`nameservers`, `domain`, `search`, `options`). Keys match whatever their
/// case, as Go's decoder matches them for the reference plugins.
pub fn conf_dns(conf: &NetConf) -> Result<cni::result::Dns, DelegateError> {
    let mut dns = cni::result::Dns::default();
    let obj = match conf.0.get("dns") {
        None | Some(Value::Null) => return Ok(dns),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(DelegateError::config("dns", "must be an object")),
    };
    for (key, value) in obj {
        let list = |field: &str| -> Result<Vec<String>, DelegateError> {
            match value {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            DelegateError::config(
                                format!("dns.{field}"),
                                "must be a list of strings",
                            )
                        })
                    })
                    .collect(),
                _ => Err(DelegateError::config(
                    format!("dns.{field}"),
                    "must be a list of strings",
                )),
            }
        };
        match key.to_ascii_lowercase().as_str() {
            "nameservers" => dns.nameservers = list("nameservers")?,
            "search" => dns.search = list("search")?,
            "options" => dns.options = list("options")?,
            "domain" => {
                dns.domain = match value {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(DelegateError::config("dns.domain", "must be a string")),
                }
            }
            _ => {}
        }
    }
    Ok(dns)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct NoIpam;
    impl Ipam for NoIpam {
        fn validate(&self, _: &NetConf) -> Result<(), IpamFailure> {
            Ok(())
        }
        fn add(&self, _: &NetConf) -> Result<CniResult, IpamFailure> {
            Ok(CniResult::default())
        }
        fn del(&self, _: &NetConf) -> Result<(), IpamFailure> {
            Ok(())
        }
        fn check(&self, _: &NetConf) -> Result<(), IpamFailure> {
            Ok(())
        }
    }

    fn prev(conf: serde_json::Value) -> Result<CniResult, DelegateError> {
        let Value::Object(m) = conf else {
            panic!("conf must be an object")
        };
        let conf = NetConf::from_map(m);
        Request {
            container_id: "c",
            netns: None,
            ifname: "eth0",
            conf: &conf,
            ipam: &NoIpam,
            timeout: Duration::from_secs(1),
            owned: &[],
        }
        .prev_result()
    }

    #[test]
    fn prev_result_is_read_in_the_confs_version_not_its_own() {
        // A 1.1.0 conf whose prevResult claims 1.0.0: the 1.1.0-only interface MTU must
        // survive, which it would not if the embedded cniVersion were believed.
        let r = prev(json!({
            "cniVersion": "1.1.0",
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mtu": 1400, "sandbox": "/ns"}],
                "ips": [{"address": "10.1.0.5/24", "interface": 0}]
            }
        }))
        .unwrap();
        assert_eq!(r.interfaces[0].mtu, Some(1400));
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/24");
    }

    #[test]
    fn prev_result_of_a_0_4_0_conf_reads_ips_with_version() {
        let r = prev(json!({
            "cniVersion": "0.4.0",
            "prevResult": {
                "ips": [{"version": "6", "address": "fd00::5/64", "gateway": "fd00::1"}],
                "routes": [{"dst": "::/0"}]
            }
        }))
        .unwrap();
        assert_eq!(r.ips[0].address.to_string(), "fd00::5/64");
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn conf_dns_reads_every_field_in_either_case() {
        let conf = |v: serde_json::Value| NetConf::from_map(v.as_object().unwrap().clone());
        let d = conf_dns(&conf(json!({"dns": {
            "nameservers": ["10.0.0.53"], "Domain": "ex.local",
            "SEARCH": ["a.ex"], "options": ["ndots:2"]}})))
        .unwrap();
        assert_eq!(d.nameservers, ["10.0.0.53"]);
        assert_eq!(d.domain.as_deref(), Some("ex.local"));
        assert_eq!(d.search, ["a.ex"]);
        assert_eq!(d.options, ["ndots:2"]);
        assert!(conf_dns(&conf(json!({}))).unwrap().is_empty());
        for bad in [
            json!("x"),
            json!({"nameservers": "1.1.1.1"}),
            json!({"domain": 5}),
        ] {
            let e = conf_dns(&conf(json!({ "dns": bad }))).unwrap_err();
            assert!(e.to_string().contains("dns"), "{e}");
            assert_eq!(e.code(), 7);
        }
    }

    #[test]
    fn prev_result_errors_name_the_key() {
        let e = prev(json!({"cniVersion": "1.0.0"})).unwrap_err();
        assert!(e.to_string().contains("prevResult"), "{e}");
        let e = prev(json!({"cniVersion": "1.0.0", "prevResult": {"ips": "x"}})).unwrap_err();
        assert!(e.to_string().contains("prevResult"), "{e}");
        assert_eq!(e.code(), 7);
        let e = prev(json!({"cniVersion": "7.0.0", "prevResult": {}})).unwrap_err();
        assert!(e.to_string().contains("cniVersion"), "{e}");
    }
}
