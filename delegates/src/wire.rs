//! Minimal reading and writing of CNI results in the 1.x shape.
//!
//! TODO(merge): replace with `CniResult::from_value` / `CniResult::to_value(version)` from the
//! cni crate once its conversion code lands; this covers only what the delegates and their
//! standalone binaries need (IPAM output in, 1.x result out).

use cni::CniResult;
use cni::result::{Dns, Interface, IpConfig, Route};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

pub fn parse_result(v: &Value) -> Result<CniResult, String> {
    let w = Wire::deserialize(v).map_err(|e| format!("result is not a CNI result: {e}"))?;
    Ok(CniResult {
        interfaces: w.interfaces,
        ips: w.ips,
        routes: w.routes,
        dns: w.dns,
    })
}

pub fn render_result(r: &CniResult, version: &str) -> Value {
    let mut m = Map::new();
    m.insert("cniVersion".into(), json!(version));
    if !r.interfaces.is_empty() {
        m.insert("interfaces".into(), json!(r.interfaces));
    }
    if !r.ips.is_empty() {
        m.insert("ips".into(), json!(r.ips));
    }
    if !r.routes.is_empty() {
        m.insert("routes".into(), json!(r.routes));
    }
    m.insert("dns".into(), json!(r.dns));
    Value::Object(m)
}
