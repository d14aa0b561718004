//! Results of every CNI version, held in one current (1.1.0) shape, with conversion up and
//! down per the spec's rules. Conversion lives in this module; nothing else looks at the
//! per-version wire shapes.
//!
//! Reading goes through [`CniResult::project`]: a result read as version V is exactly what V
//! can carry, so `parse(to_value(r, V), V) == project(r, V)` for every result and version.
//! What the versions carry (the spec's result of each tag, and libcni's converters):
//! - 0.1.0/0.2.0: `ip4`/`ip6` objects `{ip, gateway, routes[{dst, gw}]}` and `dns`. Only the
//!   first v4 and the first v6 address survive, routes follow their family into `ip4`/`ip6`
//!   and are dropped when that family has no address, interfaces are lost.
//! - 0.3.0/0.3.1/0.4.0: `interfaces{name, mac, sandbox}`, `ips{version, interface, address,
//!   gateway}`, `routes{dst, gw}`, `dns`.
//! - 1.0.0: as 0.4.0 without `ips[].version`.
//! - 1.1.0: interfaces gain `mtu`, `socketPath`, `pciID`; routes gain `mtu`, `advmss`,
//!   `priority`, `table`, `scope`.

use crate::error::Code;
use crate::version::{Version, VersionError};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with its prefix, host bits kept (`10.1.0.5/24`).
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A result in the current shape, whatever version it was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("decode result: {0}")]
    Json(#[source] serde_json::Error),
    #[error("decode a {version} result: it is not a JSON object")]
    NotAnObject { version: Version },
    #[error("decode {field} of a {version} result: {error}")]
    Field {
        field: &'static str,
        version: Version,
        #[source]
        error: serde_json::Error,
    },
    #[error("decode result: cniVersion is not a string")]
    VersionNotString,
    #[error("read result: {0}")]
    Version(#[from] VersionError),
    #[error("render result as {version}: it has no IP address, which {version} requires")]
    NoAddress { version: Version },
}

impl ResultError {
    pub fn code(&self) -> Code {
        match self {
            ResultError::Json(_)
            | ResultError::NotAnObject { .. }
            | ResultError::Field { .. }
            | ResultError::VersionNotString => Code::Decode,
            // libcni refuses the down-conversion itself, so this is a version incompatibility.
            ResultError::Version(_) | ResultError::NoAddress { .. } => Code::IncompatibleVersion,
        }
    }
}

impl CniResult {
    /// Reads a result written in `version`; the value's own `cniVersion` is not consulted.
    /// Fields that `version` does not define are ignored, so the answer equals its
    /// [`project`](Self::project) to `version`.
    pub fn parse(value: &Value, version: Version) -> Result<CniResult, ResultError> {
        let obj = value
            .as_object()
            .ok_or(ResultError::NotAnObject { version })?;
        let read = if version.is_legacy_result() {
            read_legacy(obj, version)?
        } else {
            read_current(obj, version)?
        };
        Ok(read.project(version))
    }

    /// Reads a result in the version its `cniVersion` names. A missing `cniVersion` means
    /// 0.1.0, as libcni's 0.2.0 reader takes it.
    pub fn parse_any(value: &Value) -> Result<(CniResult, Version), ResultError> {
        let version = match value.get("cniVersion") {
            None => Version::V0_1_0,
            Some(Value::String(s)) => Version::parse(s)?,
            Some(_) => return Err(ResultError::VersionNotString),
        };
        Ok((CniResult::parse(value, version)?, version))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<(CniResult, Version), ResultError> {
        let value: Value = serde_json::from_slice(bytes).map_err(ResultError::Json)?;
        CniResult::parse_any(&value)
    }

    /// Renders the result in `version`, `cniVersion` first. Never fails: a result without any
    /// address rendered as 0.1.0/0.2.0 has neither `ip4` nor `ip6` (see
    /// [`try_to_value`](Self::try_to_value) for the spec-conforming check).
    pub fn to_value(&self, version: Version) -> Value {
        let r = self.project(version);
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(version.as_str()));
        if version.is_legacy_result() {
            for (key, v4) in [("ip4", true), ("ip6", false)] {
                if let Some(ip) = r.ips.iter().find(|ip| is_v4(&ip.address) == v4) {
                    m.insert(key.into(), legacy_ip_value(ip, &r.routes, v4));
                }
            }
        } else {
            if !r.interfaces.is_empty() {
                m.insert("interfaces".into(), to_json(&r.interfaces));
            }
            if !r.ips.is_empty() {
                let ips = r.ips.iter().map(|ip| ip_value(ip, version)).collect();
                m.insert("ips".into(), Value::Array(ips));
            }
            if !r.routes.is_empty() {
                m.insert("routes".into(), to_json(&r.routes));
            }
        }
        // libcni's 0.x result types write `"dns": {}` even when empty (Go does not omit an
        // empty struct); the 1.x type removes it in its own MarshalJSON.
        if version < Version::V1_0_0 || !r.dns.is_empty() {
            m.insert("dns".into(), to_json(&r.dns));
        }
        Value::Object(m)
    }

    /// [`to_value`](Self::to_value), refusing what libcni refuses: a 0.1.0/0.2.0 result
    /// must carry at least one address.
    pub fn try_to_value(&self, version: Version) -> Result<Value, ResultError> {
        self.check_expressible(version)?;
        Ok(self.to_value(version))
    }

    /// Whether the result can be written in `version` as libcni would accept it: a
    /// 0.1.0/0.2.0 result must carry at least one address.
    pub fn check_expressible(&self, version: Version) -> Result<(), ResultError> {
        if version.is_legacy_result() && self.ips.is_empty() {
            return Err(ResultError::NoAddress { version });
        }
        Ok(())
    }

    /// What survives a trip through `version`: the documented lossy projection.
    ///
    /// Always: interface indices that point past `interfaces` are dropped, and values the Go
    /// reference types cannot tell from "unset" (empty strings, zero MTU/advmss/priority)
    /// become `None`. Below 1.1.0 the 1.1.0 interface and route fields go. Below 0.3.0 only
    /// the first v4 and first v6 address remain (v4 first, without interface index), routes
    /// keep the family of a remaining address (v4 routes first), and interfaces go.
    pub fn project(&self, version: Version) -> CniResult {
        let mut r = self.normalized();
        if version < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                *rt = Route {
                    dst: rt.dst,
                    gw: rt.gw,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                };
            }
        }
        if version.is_legacy_result() {
            let first = |v4: bool| {
                r.ips
                    .iter()
                    .find(|ip| is_v4(&ip.address) == v4)
                    .map(|ip| IpConfig {
                        interface: None,
                        ..ip.clone()
                    })
            };
            let (ip4, ip6) = (first(true), first(false));
            let routes_of = |v4: bool| r.routes.iter().filter(move |rt| is_v4(&rt.dst) == v4);
            let mut routes = Vec::new();
            if ip4.is_some() {
                routes.extend(routes_of(true).cloned());
            }
            if ip6.is_some() {
                routes.extend(routes_of(false).cloned());
            }
            r = CniResult {
                interfaces: Vec::new(),
                ips: ip4.into_iter().chain(ip6).collect(),
                routes,
                dns: r.dns,
            };
        }
        r
    }

    /// Interfaces inside the container (those with a non-empty `sandbox`), with their index.
    pub fn sandbox_interfaces(&self) -> impl Iterator<Item = (usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }

    fn normalized(&self) -> CniResult {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let nonzero = |n: Option<u32>| n.filter(|n| *n != 0);
        let count = self.interfaces.len();
        CniResult {
            interfaces: self
                .interfaces
                .iter()
                .map(|i| Interface {
                    name: i.name.clone(),
                    mac: nonempty(&i.mac),
                    mtu: nonzero(i.mtu),
                    sandbox: nonempty(&i.sandbox),
                    socket_path: nonempty(&i.socket_path),
                    pci_id: nonempty(&i.pci_id),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| IpConfig {
                    interface: ip.interface.filter(|i| *i < count),
                    ..ip.clone()
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|rt| Route {
                    mtu: nonzero(rt.mtu),
                    advmss: nonzero(rt.advmss),
                    priority: nonzero(rt.priority),
                    ..rt.clone()
                })
                .collect(),
            dns: Dns {
                domain: nonempty(&self.dns.domain),
                ..self.dns.clone()
            },
        }
    }
}

fn is_v4(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(_))
}

fn to_json<T: Serialize>(v: &T) -> Value {
    // These types hold strings, numbers and addresses only, which always serialize.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn ip_value(ip: &IpConfig, version: Version) -> Value {
    let mut m = Map::new();
    if version < Version::V1_0_0 {
        let family = if is_v4(&ip.address) { "4" } else { "6" };
        m.insert("version".into(), Value::from(family));
    }
    if let Some(i) = ip.interface {
        m.insert("interface".into(), Value::from(i));
    }
    m.insert("address".into(), Value::from(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), Value::from(gw.to_string()));
    }
    Value::Object(m)
}

fn legacy_ip_value(ip: &IpConfig, routes: &[Route], v4: bool) -> Value {
    let mut m = Map::new();
    m.insert("ip".into(), Value::from(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), Value::from(gw.to_string()));
    }
    let family: Vec<&Route> = routes.iter().filter(|r| is_v4(&r.dst) == v4).collect();
    if !family.is_empty() {
        m.insert("routes".into(), to_json(&family));
    }
    Value::Object(m)
}

/// Go's `omitempty` strings and `net.IP`'s text form both take `""` as unset.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, deserialize_with = "empty_as_none")]
    sandbox: Option<String>,
    #[serde(rename = "socketPath", default, deserialize_with = "empty_as_none")]
    socket_path: Option<String>,
    #[serde(rename = "pciID", default, deserialize_with = "empty_as_none")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    address: IpNet,
    #[serde(default, deserialize_with = "empty_as_none")]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: IpNet,
    #[serde(default, deserialize_with = "empty_as_none")]
    gw: Option<IpAddr>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

#[derive(Deserialize)]
struct WireLegacyIp {
    ip: IpNet,
    #[serde(default, deserialize_with = "empty_as_none")]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
}

#[derive(Deserialize)]
struct WireDns {
    #[serde(default)]
    nameservers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "empty_as_none")]
    domain: Option<String>,
    #[serde(default)]
    search: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Vec<String>>,
}

/// Decodes `obj[field]`; absent and `null` both read as "not given", as in Go.
fn field<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Value>,
    field: &'static str,
    version: Version,
) -> Result<Option<T>, ResultError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|error| ResultError::Field {
                field,
                version,
                error,
            }),
    }
}

impl From<WireRoute> for Route {
    fn from(w: WireRoute) -> Self {
        Route {
            dst: w.dst,
            gw: w.gw,
            mtu: w.mtu,
            advmss: w.advmss,
            priority: w.priority,
            table: w.table,
            scope: w.scope,
        }
    }
}

fn read_dns(obj: &Map<String, Value>, version: Version) -> Result<Dns, ResultError> {
    Ok(field::<WireDns>(obj, "dns", version)?
        .map(|d| Dns {
            nameservers: d.nameservers.unwrap_or_default(),
            domain: d.domain,
            search: d.search.unwrap_or_default(),
            options: d.options.unwrap_or_default(),
        })
        .unwrap_or_default())
}

fn read_current(obj: &Map<String, Value>, version: Version) -> Result<CniResult, ResultError> {
    let interfaces = field::<Vec<WireInterface>>(obj, "interfaces", version)?
        .unwrap_or_default()
        .into_iter()
        .map(|w| Interface {
            name: w.name,
            mac: w.mac,
            mtu: w.mtu,
            sandbox: w.sandbox,
            socket_path: w.socket_path,
            pci_id: w.pci_id,
        })
        .collect();
    let ips = field::<Vec<WireIp>>(obj, "ips", version)?
        .unwrap_or_default()
        .into_iter()
        .map(|w| IpConfig {
            address: w.address,
            gateway: w.gateway,
            interface: w.interface,
        })
        .collect();
    let routes = field::<Vec<WireRoute>>(obj, "routes", version)?
        .unwrap_or_default()
        .into_iter()
        .map(Route::from)
        .collect();
    Ok(CniResult {
        interfaces,
        ips,
        routes,
        dns: read_dns(obj, version)?,
    })
}

fn read_legacy(obj: &Map<String, Value>, version: Version) -> Result<CniResult, ResultError> {
    let mut r = CniResult {
        dns: read_dns(obj, version)?,
        ..CniResult::default()
    };
    for key in ["ip4", "ip6"] {
        if let Some(w) = field::<WireLegacyIp>(obj, key, version)? {
            r.ips.push(IpConfig {
                address: w.ip,
                gateway: w.gateway,
                interface: None,
            });
            r.routes
                .extend(w.routes.unwrap_or_default().into_iter().map(Route::from));
        }
    }
    Ok(r)
}
