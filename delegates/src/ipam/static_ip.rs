//! `static`: the addresses, routes and DNS written in the conf, nothing stored.
//!
//! Address sources as in the reference plugin: `ipam.addresses`, plus `CNI_ARGS` `IP=`
//! (comma-separated CIDRs, gateways from `GATEWAY=`); `args.cni.ips` replaces those, and
//! `runtimeConfig.ips` replaces everything before it. Every address needs its prefix.

use super::{
    IpamError, IpamRequest, RequestedIps, as_object, check_family_count, invalid, ipam_section,
    opt_array, opt_object, opt_str, parse_cidr, parse_dns, parse_ip, parse_routes,
};
use cni::CniResult;
use cni::result::{Dns, IpConfig};
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;

struct Address {
    address: IpNet,
    gateway: Option<IpAddr>,
}

fn canonical(net: IpNet) -> IpNet {
    // An IPv4-mapped IPv6 address with a v4-sized prefix is really IPv4 (Go's `To4()`).
    match (net.addr().to_canonical(), net) {
        (IpAddr::V4(a), IpNet::V6(n)) if n.prefix_len() >= 96 => {
            IpNet::new(IpAddr::V4(a), n.prefix_len() - 96).unwrap_or(net)
        }
        _ => net,
    }
}

fn addresses(req: &IpamRequest) -> Result<Vec<Address>, IpamError> {
    let ipam = ipam_section(req.conf)?;
    let mut out = Vec::new();
    for (i, v) in opt_array(ipam, "addresses", "ipam")?.iter().enumerate() {
        let at = format!("ipam.addresses[{i}]");
        let a = as_object(v, &at)?;
        let key = format!("{at}.address");
        let s = opt_str(a, "address", &at)?.ok_or_else(|| invalid(&key, "missing"))?;
        let gateway = opt_str(a, "gateway", &at)?
            .map(|g| parse_ip(g, &format!("{at}.gateway")))
            .transpose()?;
        out.push(Address {
            address: canonical(parse_cidr(s, &key)?),
            gateway,
        });
    }

    let sources = RequestedIps::read(req)?;
    let cidrs = |list: &[String], key: &str| -> Result<Vec<Address>, IpamError> {
        list.iter()
            .map(|s| {
                Ok(Address {
                    address: canonical(parse_cidr(s, key)?),
                    gateway: None,
                })
            })
            .collect()
    };
    out.extend(cidrs(&sources.env, RequestedIps::ENV_KEY)?);
    if let Some(gws) = req.args.get("GATEWAY") {
        for g in gws.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let gw = parse_ip(g, "CNI_ARGS GATEWAY")?;
            for a in out.iter_mut().filter(|a| a.address.contains(&gw)) {
                a.gateway = Some(gw);
            }
        }
    }
    if !sources.args.is_empty() {
        out = cidrs(&sources.args, RequestedIps::ARGS_KEY)?;
    }
    if !sources.runtime.is_empty() {
        out = cidrs(&sources.runtime, RequestedIps::RUNTIME_KEY)?;
    }
    check_family_count(
        req.conf,
        out.iter().map(|a| a.address.addr()),
        "ipam.addresses",
    )?;
    Ok(out)
}

pub(crate) fn validate(req: &IpamRequest) -> Result<(), IpamError> {
    let ipam = ipam_section(req.conf)?;
    addresses(req)?;
    if let Some(d) = opt_object(ipam, "dns", "ipam")? {
        parse_dns(d, "ipam.dns")?;
    }
    parse_routes(ipam, "ipam").map(drop)
}

pub(crate) fn add(req: &IpamRequest) -> Result<CniResult, IpamError> {
    let ipam = ipam_section(req.conf)?;
    let ips = addresses(req)?
        .into_iter()
        .map(|a| IpConfig {
            address: a.address,
            gateway: a.gateway,
            interface: None,
        })
        .collect();
    let dns = match opt_object(ipam, "dns", "ipam")? {
        Some(d) => parse_dns(d, "ipam.dns")?,
        None => Dns::default(),
    };
    Ok(CniResult {
        interfaces: Vec::new(),
        ips,
        routes: parse_routes(ipam, "ipam")?,
        dns,
    })
}

/// With a `prevResult`, each configured address must be in its `ips` with the configured
/// gateway; without one there is nothing to compare, and nothing was stored.
pub(crate) fn check(req: &IpamRequest) -> Result<(), IpamError> {
    let wanted = addresses(req)?;
    let Some(prev) = opt_object(&req.conf.0, "prevResult", "")? else {
        return Ok(());
    };
    let mut have: Vec<(IpAddr, Option<IpAddr>)> = Vec::new();
    for (i, v) in opt_array(prev, "ips", "prevResult")?.iter().enumerate() {
        let at = format!("prevResult.ips[{i}]");
        let o = as_object(v, &at)?;
        let Some(addr) = opt_str(o, "address", &at)? else {
            continue;
        };
        let gw = match o.get("gateway") {
            Some(Value::String(g)) => Some(parse_ip(g, &format!("{at}.gateway"))?),
            _ => None,
        };
        have.push((
            parse_cidr(addr, &format!("{at}.address"))?
                .addr()
                .to_canonical(),
            gw,
        ));
    }
    for w in wanted {
        let ip = w.address.addr();
        let ok = have
            .iter()
            .any(|(a, g)| *a == ip && (w.gateway.is_none() || w.gateway == *g));
        if !ok {
            return Err(IpamError::StaticMismatch {
                ip,
                ifname: req.ifname.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::args::CniArgs;
    use cni::netconf::NetConf;

    fn conf(v: Value) -> NetConf {
        NetConf(v.as_object().unwrap().clone())
    }

    fn req<'a>(c: &'a NetConf, a: &'a CniArgs) -> IpamRequest<'a> {
        IpamRequest {
            container_id: "c",
            ifname: "eth0",
            conf: c,
            args: a,
            data_dirs: &[],
            timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn cni_args_ip_appends_and_gateway_attaches_by_subnet() {
        let c = conf(serde_json::json!({"name": "n", "ipam": {"type": "static",
            "addresses": [{"address": "10.0.0.5/24"}]}}));
        let a = CniArgs::parse("IP=10.1.0.5/24,fd00::5/64;GATEWAY=10.1.0.1").unwrap();
        let got: Vec<(String, Option<String>)> = addresses(&req(&c, &a))
            .unwrap()
            .into_iter()
            .map(|a| (a.address.to_string(), a.gateway.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.5/24".to_string(), None),
                ("10.1.0.5/24".to_string(), Some("10.1.0.1".to_string())),
                ("fd00::5/64".to_string(), None),
            ]
        );
    }

    #[test]
    fn runtime_ips_replace_conf_and_args() {
        let c = conf(serde_json::json!({"name": "n",
            "ipam": {"type": "static", "addresses": [{"address": "10.0.0.5/24"}]},
            "args": {"cni": {"ips": ["10.2.0.5/24"]}},
            "runtimeConfig": {"ips": ["10.3.0.5/16"]}}));
        let a = CniArgs::default();
        let got: Vec<String> = addresses(&req(&c, &a))
            .unwrap()
            .into_iter()
            .map(|a| a.address.to_string())
            .collect();
        assert_eq!(got, ["10.3.0.5/16"]);
    }

    #[test]
    fn address_without_prefix_is_invalid_config_naming_the_source() {
        let c = conf(serde_json::json!({"name": "n", "ipam": {"type": "static"},
            "runtimeConfig": {"ips": ["10.3.0.5"]}}));
        let a = CniArgs::default();
        match addresses(&req(&c, &a)) {
            Err(IpamError::InvalidConfig { key, .. }) => assert_eq!(key, "runtimeConfig.ips"),
            _ => panic!("expected invalid config"),
        }
    }

    #[test]
    fn check_compares_with_prev_result() {
        let mut c = conf(serde_json::json!({"name": "n", "ipam": {"type": "static",
            "addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]}}));
        let a = CniArgs::default();
        assert!(check(&req(&c, &a)).is_ok());
        c.set(
            "prevResult",
            serde_json::json!({"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]}),
        );
        assert!(check(&req(&c, &a)).is_ok());
        c.set(
            "prevResult",
            serde_json::json!({"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.254"}]}),
        );
        assert!(matches!(
            check(&req(&c, &a)),
            Err(IpamError::StaticMismatch { .. })
        ));
    }
}
