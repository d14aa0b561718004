//! Building one delegate's configuration: the NAD's conf or conflist with `name` filled in,
//! `runtimeConfig` per declared capability, the pod's `cni-args` and the device ID.

use super::{PlanError, ResolvedNetwork};
use cni::netconf::{NetConf, NetConfList};
use serde_json::{Map, Value};

/// A runtime value the pod asked for through its selection, which some plugin must accept.
struct Ask {
    capability: &'static str,
    /// The annotation key the request came from, for the error message.
    field: &'static str,
    value: Value,
}

fn asks(net: &ResolvedNetwork) -> Vec<Ask> {
    let Some(sel) = &net.selection else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut ask = |capability, field, value| {
        out.push(Ask {
            capability,
            field,
            value,
        })
    };
    if !sel.ips.is_empty() {
        ask("ips", "ips", Value::from(sel.ips.clone()));
    }
    if let Some(mac) = &sel.mac {
        ask("mac", "mac", Value::from(mac.clone()));
    }
    if !sel.port_mappings.is_empty() {
        ask(
            "portMappings",
            "portMappings",
            Value::Array(sel.port_mappings.clone()),
        );
    }
    if let Some(bw) = &sel.bandwidth {
        ask("bandwidth", "bandwidth", bw.clone());
    }
    if let Some(guid) = &sel.infiniband_guid {
        ask(
            "infinibandGUID",
            "infiniband-guid",
            Value::from(guid.clone()),
        );
    }
    if net.device_id.is_none()
        && let Some(dev) = &sel.device_id
    {
        ask("deviceID", "deviceID", Value::from(dev.clone()));
    }
    out
}

/// The device ID the attachment uses: the resource's, else the one the pod named.
pub(super) fn device_id(net: &ResolvedNetwork) -> Option<&str> {
    net.device_id
        .as_deref()
        .or_else(|| net.selection.as_ref()?.device_id.as_deref())
}

fn invalid(
    net: &ResolvedNetwork,
    field: impl Into<String>,
    reason: impl Into<String>,
) -> PlanError {
    PlanError::Invalid {
        network: net.key.clone(),
        field: field.into(),
        reason: reason.into(),
    }
}

pub(super) fn delegate_conf(
    net: &ResolvedNetwork,
    pod_runtime: &Map<String, Value>,
) -> Result<NetConfList, PlanError> {
    let (mut list, is_list) = named_list(net)?;
    let declared: Vec<Vec<String>> = list.plugins.iter().map(NetConf::capabilities).collect();
    let declares = |cap: &str| declared.iter().flatten().any(|c| c == cap);
    let offered = runtime_offer(net, pod_runtime, &declares)?;
    let extra_args = extra_cni_args(net, &declares)?;
    for (i, (plugin, caps)) in list.plugins.iter_mut().zip(&declared).enumerate() {
        let at = |key: &str| {
            if is_list {
                format!("plugins[{i}].{key}")
            } else {
                key.to_string()
            }
        };
        inject(net, plugin, caps, &offered, &extra_args, at)?;
    }
    Ok(list)
}

/// The NAD's conf as a conflist, named, and whether it was written as one.
fn named_list(net: &ResolvedNetwork) -> Result<(NetConfList, bool), PlanError> {
    let mut map = net.config.clone();
    // NPWG §3.4.2: a NAD's config may leave the name out; the NAD's own name stands in.
    if !map.contains_key("name") {
        let nad_name = net.key.rsplit('/').next().unwrap_or(&net.key);
        map.insert("name".into(), Value::from(nad_name));
    }
    let is_list = map.contains_key("plugins");
    let list = NetConfList::from_map(map).map_err(|error| PlanError::Config {
        network: net.key.clone(),
        error,
    })?;
    // The name becomes a directory name in host-local and in libcni's cache.
    if !cni::names::is_valid_name(&list.name) {
        return Err(invalid(
            net,
            "name",
            format!("{:?} {}", list.name, cni::names::NAME_RULE),
        ));
    }
    Ok((list, is_list))
}

/// What reaches runtimeConfig: the runtime's values (cluster network only), the device
/// plugin's device, then the pod's own requests, which win over the runtime's. A request for
/// a capability no plugin of the chain declares is refused, not dropped.
fn runtime_offer(
    net: &ResolvedNetwork,
    pod_runtime: &Map<String, Value>,
    declares: &dyn Fn(&str) -> bool,
) -> Result<Map<String, Value>, PlanError> {
    let mut offered = pod_runtime.clone();
    if let Some(dev) = &net.device_id {
        offered.insert("deviceID".into(), Value::from(dev.clone()));
    }
    for ask in asks(net) {
        if !declares(ask.capability) {
            return Err(PlanError::MissingCapability {
                network: net.key.clone(),
                field: ask.field,
                capability: ask.capability,
            });
        }
        offered.insert(ask.capability.into(), ask.value);
    }
    Ok(offered)
}

/// The selection's `cni-args` and its IPAM claim, for every plugin's `args.cni`.
fn extra_cni_args(
    net: &ResolvedNetwork,
    declares: &dyn Fn(&str) -> bool,
) -> Result<Map<String, Value>, PlanError> {
    let mut extra_args = Map::new();
    let Some(sel) = &net.selection else {
        return Ok(extra_args);
    };
    if let Some(cni_args) = &sel.cni_args {
        if cni_args.contains_key("ips") && !declares("ips") {
            return Err(PlanError::MissingCapability {
                network: net.key.clone(),
                field: "cni-args.ips",
                capability: "ips",
            });
        }
        extra_args.extend(cni_args.clone());
    }
    if let Some(claim) = &sel.ipam_claim_reference {
        if extra_args.contains_key("ipam-claim-reference") {
            return Err(invalid(
                net,
                "cni-args",
                "sets \"ipam-claim-reference\" next to the ipam-claim-reference key",
            ));
        }
        extra_args.insert("ipam-claim-reference".into(), Value::from(claim.clone()));
    }
    Ok(extra_args)
}

/// One plugin of the chain: its types checked, then what it declared of `offered` as its
/// runtimeConfig, the extra `args.cni`, and the device under both names. `at` names a key of
/// this plugin in errors.
fn inject(
    net: &ResolvedNetwork,
    plugin: &mut NetConf,
    caps: &[String],
    offered: &Map<String, Value>,
    extra_args: &Map<String, Value>,
    at: impl Fn(&str) -> String,
) -> Result<(), PlanError> {
    // `type` names a binary looked up in CNI_PATH: a path would escape it.
    if let Ok(t) = plugin.plugin_type()
        && cni::names::check_plugin_type(t).is_err()
    {
        return Err(invalid(
            net,
            at("type"),
            format!("{t:?} is not a bare plugin name"),
        ));
    }
    if let Ok(Some(t)) = plugin.ipam_type()
        && cni::names::check_plugin_type(t).is_err()
    {
        return Err(invalid(
            net,
            at("ipam.type"),
            format!("{t:?} is not a bare plugin name"),
        ));
    }
    plugin.remove("capabilities");
    let runtime: Map<String, Value> = offered
        .iter()
        .filter(|(k, _)| caps.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // As libcni: runtimeConfig is set only when there is something to pass.
    if !runtime.is_empty() {
        plugin.set("runtimeConfig", Value::Object(runtime));
    }
    merge_args(net, &at("args"), plugin, extra_args)?;
    if let Some(dev) = &net.device_id {
        // SR-IOV and host-device read the device from the conf itself, under both names.
        plugin.set("deviceID", Value::from(dev.clone()));
        plugin.set("pciBusID", Value::from(dev.clone()));
    }
    Ok(())
}

/// Adds the pod's keys to `args.cni`. Checked even when the pod adds nothing, so that a
/// malformed `args` is reported the same way whatever the pod asks (Multus panics on
/// `"args":"x"` once a pod sends cni-args).
fn merge_args(
    net: &ResolvedNetwork,
    field: &str,
    plugin: &mut NetConf,
    extra: &Map<String, Value>,
) -> Result<(), PlanError> {
    match plugin.0.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => match a.get("cni") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => return Err(invalid(net, format!("{field}.cni"), "is not an object")),
        },
        Some(_) => return Err(invalid(net, field, "is not an object")),
    }
    if extra.is_empty() {
        return Ok(());
    }
    let cni = object_at(plugin.0.entry("args").or_insert(Value::Null))
        .and_then(|args| object_at(args.entry("cni").or_insert(Value::Null)));
    let Some(cni) = cni else {
        // Unreachable after the checks above; kept as an error rather than a panic.
        return Err(invalid(net, field, "is not an object"));
    };
    for (k, v) in extra {
        match cni.get(k) {
            None => {
                cni.insert(k.clone(), v.clone());
            }
            Some(existing) if existing == v => {}
            Some(existing) => {
                return Err(invalid(
                    net,
                    "cni-args",
                    format!(
                        "key {k:?} would change the network's own {field}.cni value {existing}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The object in `slot`, created when the slot is empty.
fn object_at(slot: &mut Value) -> Option<&mut Map<String, Value>> {
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}
