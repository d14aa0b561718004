//! Network selections: what a pod asks for in its `k8s.v1.cni.cncf.io/networks` annotation
//! (NPWG §4.1) and in Multus's `v1.multus-cni.io/default-network`.
//!
//! Both the comma form `[ns/]name[@ifname]` and the JSON form are validated to the same rules
//! here, at the boundary, because names end up in API URLs and values end up in delegate
//! configs: a name with `/` or `..` would reach another object, a value another tenant's
//! setting. Multus checks only the comma form. This module knows
//! nothing about NADs or delegates: that is `plan`'s job.
//!
//! Rules worth knowing:
//! - `name` is a DNS-1123 subdomain (≤253), `namespace` a DNS-1123 label (≤63), as the
//!   Kubernetes API server enforces for NADs and namespaces.
//! - An optional string key given as `""` or `null` counts as absent, as it does in Multus
//!   (Go's zero values); an empty `namespace` means the pod's.
//! - Keys this module does not know are ignored.
//! - At most one default-route gateway per IP family across the whole annotation: Multus
//!   refuses ECMP the same way, and NPWG lets only one element carry `default-route`.

mod fields;

use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

use crate::annotations::{
    DEFAULT_NETWORK as DEFAULT_NETWORK_ANNOTATION, NETWORKS as NETWORKS_ANNOTATION,
};
/// Most network selections one annotation may hold.
pub const MAX_SELECTIONS: usize = 32;
/// Largest annotation value accepted (Kubernetes caps all annotations of an object together at
/// 256 KiB, so nothing legitimate is larger).
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Most entries in one element's `ips` or `portMappings`.
pub const MAX_LIST_ENTRIES: usize = 64;

/// One network the pod asks for, validated and with its namespace filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSelection {
    pub name: String,
    /// The element's namespace, or the pod's (the default network's: Multus's namespace).
    pub namespace: String,
    pub interface: Option<cni::IfName>,
    /// As the pod wrote them (`10.1.0.5/24` or `10.1.0.5`), each checked to be an address
    /// with a prefix length in range.
    pub ips: Vec<String>,
    /// Lowercase, colon-separated.
    pub mac: Option<String>,
    pub default_route: Vec<IpAddr>,
    pub port_mappings: Vec<Value>,
    pub bandwidth: Option<Value>,
    pub cni_args: Option<Map<String, Value>>,
    /// Lowercase, colon-separated.
    pub infiniband_guid: Option<String>,
    pub ipam_claim_reference: Option<String>,
    pub device_id: Option<String>,
}

impl NetworkSelection {
    fn named(name: String, namespace: String) -> Self {
        NetworkSelection {
            name,
            namespace,
            interface: None,
            ips: Vec::new(),
            mac: None,
            default_route: Vec::new(),
            port_mappings: Vec::new(),
            bandwidth: None,
            cni_args: None,
            infiniband_guid: None,
            ipam_claim_reference: None,
            device_id: None,
        }
    }

    /// `namespace/name`, the key NADs are looked up and reported by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("annotation {annotation}: value is larger than {MAX_ANNOTATION_BYTES} bytes")]
    TooLarge { annotation: &'static str },
    #[error("annotation {annotation}: value is not valid JSON: {reason}")]
    Json {
        annotation: &'static str,
        reason: String,
    },
    #[error("annotation {annotation}: value must be a JSON list of objects, not {found}")]
    NotList {
        annotation: &'static str,
        found: &'static str,
    },
    #[error("annotation {annotation}: {count} networks, more than {MAX_SELECTIONS}")]
    TooMany {
        annotation: &'static str,
        count: usize,
    },
    #[error("annotation {annotation}: must name exactly one network, found {count}")]
    NotOne {
        annotation: &'static str,
        count: usize,
    },
    #[error("annotation {annotation}: element {index} ({name}): {field}: {reason}")]
    Element {
        annotation: &'static str,
        index: usize,
        /// The element's name as shown (quoted and escaped), or `unnamed`.
        name: String,
        field: &'static str,
        reason: String,
    },
    #[error(
        "annotation {annotation}: elements {first} and {second} both request interface {ifname}"
    )]
    DuplicateInterface {
        annotation: &'static str,
        first: usize,
        second: usize,
        ifname: String,
    },
    #[error(
        "annotation {annotation}: element {index} ({name}): default-route: a second {family} \
         gateway {gateway} (only one per address family, no ECMP)"
    )]
    DefaultRouteConflict {
        annotation: &'static str,
        index: usize,
        name: String,
        family: &'static str,
        gateway: IpAddr,
    },
}

impl SelectionError {
    /// Every selection problem is a pod configuration error (CNI code 7).
    pub fn code(&self) -> cni::Code {
        cni::Code::InvalidConfig
    }
}

/// Parses `k8s.v1.cni.cncf.io/networks`. An absent or blank annotation selects nothing.
pub fn parse_networks(
    annotation: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    parse_any(NETWORKS_ANNOTATION, annotation, pod_namespace)
}

/// Parses `v1.multus-cni.io/default-network`: the same grammar, exactly one element, the
/// namespace defaulting to `default_namespace` (Multus's `multusNamespace`).
pub fn parse_default_network(
    annotation: &str,
    default_namespace: &str,
) -> Result<NetworkSelection, SelectionError> {
    let mut list = parse_any(DEFAULT_NETWORK_ANNOTATION, annotation, default_namespace)?;
    match list.len() {
        1 => Ok(list.remove(0)),
        count => Err(SelectionError::NotOne {
            annotation: DEFAULT_NETWORK_ANNOTATION,
            count,
        }),
    }
}

fn parse_any(
    annotation: &'static str,
    value: &str,
    namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    if value.len() > MAX_ANNOTATION_BYTES {
        return Err(SelectionError::TooLarge { annotation });
    }
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    // The test Multus and NPWG §4.1.2 use to tell the two forms apart.
    let list = if value.contains(['[', '{', '"']) {
        parse_json(annotation, value, namespace)?
    } else {
        parse_comma(annotation, value, namespace)?
    };
    check_across(annotation, &list)?;
    Ok(list)
}

fn parse_comma(
    annotation: &'static str,
    value: &str,
    namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() > MAX_SELECTIONS {
        return Err(SelectionError::TooMany {
            annotation,
            count: items.len(),
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let err = |field, reason| SelectionError::Element {
                annotation,
                index,
                name: fields::shown(item),
                field,
                reason,
            };
            let (rest, ifname) = match item.split_once('@') {
                Some((r, i)) => (r, Some(i)),
                None => (item, None),
            };
            let (ns, name) = match rest.split_once('/') {
                Some((n, r)) => (Some(n), r),
                None => (None, rest),
            };
            fields::dns_subdomain(name).map_err(|r| err("name", r))?;
            let mut sel = NetworkSelection::named(name.to_string(), namespace.to_string());
            if let Some(ns) = ns {
                fields::dns_label(ns).map_err(|r| err("namespace", r))?;
                sel.namespace = ns.to_string();
            }
            if let Some(i) = ifname {
                if i.contains('@') {
                    return Err(err("interface", "more than one '@'".into()));
                }
                sel.interface = Some(fields::interface(i).map_err(|r| err("interface", r))?);
            }
            Ok(sel)
        })
        .collect()
}

fn parse_json(
    annotation: &'static str,
    value: &str,
    namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    let parsed =
        cni::netconf::parse_strict(value.as_bytes()).map_err(|e| SelectionError::Json {
            annotation,
            reason: e.to_string(),
        })?;
    let list = match parsed {
        Value::Array(list) => list,
        other => {
            return Err(SelectionError::NotList {
                annotation,
                found: json_kind(&other),
            });
        }
    };
    if list.len() > MAX_SELECTIONS {
        return Err(SelectionError::TooMany {
            annotation,
            count: list.len(),
        });
    }
    list.iter()
        .enumerate()
        .map(|(index, v)| Element::new(annotation, index, v)?.parse(namespace))
        .collect()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One JSON element being read, with what every error about it needs.
struct Element<'a> {
    annotation: &'static str,
    index: usize,
    name: String,
    map: &'a Map<String, Value>,
}

impl<'a> Element<'a> {
    fn new(annotation: &'static str, index: usize, v: &'a Value) -> Result<Self, SelectionError> {
        let Value::Object(map) = v else {
            return Err(SelectionError::Element {
                annotation,
                index,
                name: "unnamed".into(),
                field: "element",
                reason: format!("is {}, not an object", json_kind(v)),
            });
        };
        let name = match map.get("name") {
            Some(Value::String(s)) => fields::shown(s),
            _ => "unnamed".into(),
        };
        Ok(Element {
            annotation,
            index,
            name,
            map,
        })
    }

    fn err(&self, field: &'static str, reason: impl Into<String>) -> SelectionError {
        SelectionError::Element {
            annotation: self.annotation,
            index: self.index,
            name: self.name.clone(),
            field,
            reason: reason.into(),
        }
    }

    /// A string key; `null` and `""` count as absent.
    fn string(&self, key: &'static str) -> Result<Option<&'a str>, SelectionError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("is {}, not a string", json_kind(v)))),
        }
    }

    fn list(&self, key: &'static str) -> Result<&'a [Value], SelectionError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) if a.len() > MAX_LIST_ENTRIES => {
                Err(self.err(key, format!("more than {MAX_LIST_ENTRIES} entries")))
            }
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.err(key, format!("is {}, not a list", json_kind(v)))),
        }
    }

    fn string_list(&self, key: &'static str) -> Result<Vec<&'a str>, SelectionError> {
        self.list(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    self.err(key, format!("entry {i} is {}, not a string", json_kind(v)))
                })
            })
            .collect()
    }

    fn parse(&self, namespace: &str) -> Result<NetworkSelection, SelectionError> {
        let mut sel = self.identity(namespace)?;
        self.addressing(&mut sel)?;
        self.capabilities(&mut sel)?;
        if let Some(g) = self.string("infiniband-guid")? {
            sel.infiniband_guid =
                Some(fields::infiniband_guid(g).map_err(|r| self.err("infiniband-guid", r))?);
        }
        if let Some(claim) = self.string("ipam-claim-reference")? {
            // An IPAMClaim is an object in the pod's namespace, so its name obeys the same rule.
            fields::dns_subdomain(claim).map_err(|r| self.err("ipam-claim-reference", r))?;
            // NPWG v1.3 §4.1.2.1.11: the claim decides the addresses, so asking for both is
            // contradictory.
            if !sel.ips.is_empty() {
                return Err(self.err("ipam-claim-reference", "cannot be combined with ips"));
            }
            sel.ipam_claim_reference = Some(claim.to_string());
        }
        if let Some(d) = self.string("deviceID")? {
            fields::device_id(d).map_err(|r| self.err("deviceID", r))?;
            sel.device_id = Some(d.to_string());
        }
        Ok(sel)
    }

    /// Which network, in which namespace, on which interface.
    fn identity(&self, namespace: &str) -> Result<NetworkSelection, SelectionError> {
        let name = self
            .string("name")?
            .ok_or_else(|| self.err("name", "is missing"))?;
        fields::dns_subdomain(name).map_err(|r| self.err("name", r))?;
        let mut sel = NetworkSelection::named(name.to_string(), namespace.to_string());
        if let Some(ns) = self.string("namespace")? {
            fields::dns_label(ns).map_err(|r| self.err("namespace", r))?;
            sel.namespace = ns.to_string();
        }
        // `interfaceRequest` is the name Multus's JSON used before NPWG settled on `interface`.
        let ifname = match (self.string("interface")?, self.string("interfaceRequest")?) {
            (Some(_), Some(_)) => {
                return Err(self.err("interface", "both interface and interfaceRequest are set"));
            }
            (Some(i), None) => Some(("interface", i)),
            (None, Some(i)) => Some(("interfaceRequest", i)),
            (None, None) => None,
        };
        if let Some((field, i)) = ifname {
            sel.interface = Some(fields::interface(i).map_err(|r| self.err(field, r))?);
        }
        Ok(sel)
    }

    /// `ips`, `mac` and `default-route`.
    fn addressing(&self, sel: &mut NetworkSelection) -> Result<(), SelectionError> {
        for (i, ip) in self.string_list("ips")?.into_iter().enumerate() {
            let addr = fields::ip_with_prefix(ip)
                .map_err(|r| self.err("ips", format!("entry {i}: {r}")))?;
            let seen = sel
                .ips
                .iter()
                .any(|prev| fields::ip_with_prefix(prev).is_ok_and(|p| p == addr));
            if seen {
                return Err(self.err("ips", format!("address {addr} is listed twice")));
            }
            sel.ips.push(ip.to_string());
        }
        if let Some(m) = self.string("mac")? {
            sel.mac = Some(fields::mac(m).map_err(|r| self.err("mac", r))?);
        }
        for (i, gw) in self.string_list("default-route")?.into_iter().enumerate() {
            let ip = fields::ip_addr(gw)
                .map_err(|r| self.err("default-route", format!("entry {i}: {r}")))?;
            sel.default_route.push(ip);
        }
        Ok(())
    }

    /// `portMappings`, `bandwidth` and `cni-args`: what reaches the delegates' runtimeConfig
    /// and args.
    fn capabilities(&self, sel: &mut NetworkSelection) -> Result<(), SelectionError> {
        // Field names in any case, as Multus's Go decoder reads them; delegates get the
        // conventions' spelling.
        for (i, pm) in self.list("portMappings")?.iter().enumerate() {
            let pm = cni::capability::canonical("portMappings", &Value::Array(vec![pm.clone()]))
                .as_array()
                .and_then(|a| a.first().cloned())
                .unwrap_or_default();
            fields::port_mapping(&pm)
                .map_err(|r| self.err("portMappings", format!("entry {i}: {r}")))?;
            sel.port_mappings.push(pm);
        }
        match self.map.get("bandwidth") {
            None | Some(Value::Null) => {}
            Some(bw) => {
                let bw = cni::capability::canonical("bandwidth", bw);
                fields::bandwidth(&bw).map_err(|r| self.err("bandwidth", r))?;
                sel.bandwidth = Some(bw);
            }
        }
        match self.map.get("cni-args") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => sel.cni_args = Some(m.clone()),
            Some(v) => {
                return Err(self.err("cni-args", format!("is {}, not an object", json_kind(v))));
            }
        }
        Ok(())
    }
}

/// Rules that span elements: no interface requested twice, one gateway per family.
fn check_across(annotation: &'static str, list: &[NetworkSelection]) -> Result<(), SelectionError> {
    let mut seen_gateway = [false; 2];
    for (index, sel) in list.iter().enumerate() {
        if let Some(ifname) = &sel.interface
            && let Some(first) = list[..index]
                .iter()
                .position(|s| s.interface.as_ref() == Some(ifname))
        {
            return Err(SelectionError::DuplicateInterface {
                annotation,
                first,
                second: index,
                ifname: ifname.to_string(),
            });
        }
        for gw in &sel.default_route {
            let (slot, family) = if gw.is_ipv4() {
                (0, "IPv4")
            } else {
                (1, "IPv6")
            };
            if seen_gateway[slot] {
                return Err(SelectionError::DefaultRouteConflict {
                    annotation,
                    index,
                    name: fields::shown(&sel.name),
                    family,
                    gateway: *gw,
                });
            }
            seen_gateway[slot] = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
