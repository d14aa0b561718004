//! The built-in static IPAM answers what `/usr/lib/cni/static` answers for the same input.
#![allow(clippy::unwrap_used)]

mod ipam_support;

use cni::args::CniArgs;
use cni::netconf::NetConf;
use cni::{CniResult, Code};
use delegates::ipam::{self, IpamError};
use ipam_support::{reference, req};
use serde_json::{Value, json};

fn conf(ipam: Value, extra: Value) -> NetConf {
    let mut v = json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "ipam": ipam});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    NetConf(v.as_object().unwrap().clone())
}

/// The parts of a result both sides print, as plain strings.
fn ours(r: &CniResult) -> Value {
    json!({
        "ips": r.ips.iter().map(|i| json!({
            "address": i.address.to_string(),
            "gateway": i.gateway.map(|g| g.to_string()),
        })).collect::<Vec<_>>(),
        "routes": r.routes.iter().map(|x| json!({
            "dst": x.dst.to_string(),
            "gw": x.gw.map(|g| g.to_string()),
        })).collect::<Vec<_>>(),
        "nameservers": r.dns.nameservers,
        "domain": r.dns.domain,
        "search": r.dns.search,
    })
}

fn theirs(v: &Value) -> Value {
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    json!({
        "ips": list("ips").iter().map(|i| json!({
            "address": i["address"],
            "gateway": i.get("gateway").cloned().unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
        "routes": list("routes").iter().map(|x| json!({
            "dst": x["dst"],
            "gw": x.get("gw").cloned().unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
        "nameservers": v["dns"].get("nameservers").cloned().unwrap_or(json!([])),
        "domain": v["dns"].get("domain").cloned().unwrap_or(Value::Null),
        "search": v["dns"].get("search").cloned().unwrap_or(json!([])),
    })
}

fn same_as_reference(c: &NetConf, cni_args: &str) -> Value {
    let a = CniArgs::parse(cni_args).unwrap();
    let got = ours(&ipam::add(&req("c1", "eth0", c, &a)).unwrap());
    let want = theirs(&reference("static", "ADD", "c1", "eth0", c, cni_args).unwrap());
    assert_eq!(got, want);
    got
}

#[test]
fn conf_addresses_routes_and_dns() {
    let c = conf(
        json!({"type": "static",
            "addresses": [
                {"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
                {"address": "fd00::5/64"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
            "dns": {"nameservers": ["10.10.0.53"], "domain": "example.org", "search": ["example.org"]}}),
        json!({}),
    );
    let got = same_as_reference(&c, "");
    assert_eq!(got["ips"][0]["address"], "10.10.0.5/24");
}

#[test]
fn cni_args_ip_and_gateway_append() {
    let c = conf(
        json!({"type": "static", "addresses": [{"address": "10.10.0.5/24"}]}),
        json!({}),
    );
    let got = same_as_reference(
        &c,
        "IgnoreUnknown=1;IP=10.20.0.5/16,fd00::9/64;GATEWAY=10.20.0.1",
    );
    assert_eq!(got["ips"].as_array().unwrap().len(), 3);
}

#[test]
fn args_and_runtime_config_replace_the_conf_addresses() {
    let c = conf(
        json!({"type": "static", "addresses": [{"address": "10.10.0.5/24"}]}),
        json!({"args": {"cni": {"ips": ["10.30.0.5/24"]}}}),
    );
    assert_eq!(
        same_as_reference(&c, "")["ips"][0]["address"],
        "10.30.0.5/24"
    );
    let c = conf(
        json!({"type": "static", "addresses": [{"address": "10.10.0.5/24"}]}),
        json!({"args": {"cni": {"ips": ["10.30.0.5/24"]}}, "runtimeConfig": {"ips": ["10.40.0.5/24"]}}),
    );
    assert_eq!(
        same_as_reference(&c, "")["ips"][0]["address"],
        "10.40.0.5/24"
    );
}

#[test]
fn address_without_prefix_is_refused_like_the_reference() {
    let c = conf(
        json!({"type": "static", "addresses": [{"address": "10.10.0.5"}]}),
        json!({}),
    );
    let e = ipam::add(&req("c1", "eth0", &c, &CniArgs::default())).unwrap_err();
    assert!(
        matches!(e, IpamError::InvalidConfig { ref key, .. } if key == "ipam.addresses[0].address")
    );
    assert_eq!(e.code(), Code::InvalidConfig);
    assert!(reference("static", "ADD", "c1", "eth0", &c, "").is_err());
}

#[test]
fn del_is_a_no_op_and_check_passes_without_prev_result() {
    let c = conf(
        json!({"type": "static", "addresses": [{"address": "10.10.0.5/24"}]}),
        json!({}),
    );
    let a = CniArgs::default();
    ipam::del(&req("c1", "eth0", &c, &a)).unwrap();
    ipam::del(&req("never-added", "eth0", &c, &a)).unwrap();
    ipam::check(&req("c1", "eth0", &c, &a)).unwrap();
}
