//! `host-local`: addresses from range sets, one address per set, reservations on disk.
//!
//! The conf schema, the allocation order (after `last_reserved_ip.N`, wrapping, gateway
//! skipped) and the error wording follow the reference plugin
//! (plugins/ipam/host-local/backend/allocator) so a pool can be shared with it and looks the
//! same whichever implementation handed an address out.

use super::store::{Locked, Store};
use super::{
    IpamError, IpamRequest, Obj, RequestedIps, as_object, check_family_count, invalid,
    ipam_section, join, opt_array, opt_str, parse_cidr, parse_ip, parse_routes,
};
use cni::CniResult;
use cni::result::{Dns, IpConfig, Route};
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Where reservations live when the conf has no `dataDir` (the reference's default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

fn num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// `n` as an address of `like`'s family; callers only pass values inside a subnet of it.
fn addr(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    subnet: IpNet,
    start: IpAddr,
    end: IpAddr,
    gateway: IpAddr,
}

impl Range {
    /// Reads one range (`subnet`, `rangeStart`, `rangeEnd`, `gateway`) and fills defaults:
    /// the gateway is the subnet's first address, the range runs from the first address to
    /// the last (IPv4: the one before broadcast).
    fn parse(m: &Obj, at: &str) -> Result<Range, IpamError> {
        let subnet_key = join(at, "subnet");
        let subnet_str =
            opt_str(m, "subnet", at)?.ok_or_else(|| invalid(&subnet_key, "missing"))?;
        let subnet = parse_cidr(subnet_str, &subnet_key)?;
        let network = subnet.network();
        if subnet.prefix_len() > subnet.max_prefix_len() - 2 {
            return Err(invalid(
                &subnet_key,
                format!("network {subnet} too small to allocate from"),
            ));
        }
        if subnet.addr() != network {
            return Err(invalid(
                &subnet_key,
                format!(
                    "network has host bits set; for a /{} the network address is {network}",
                    subnet.prefix_len()
                ),
            ));
        }
        let first = addr(network, num(network) + 1);
        let last = match subnet {
            IpNet::V4(n) => addr(network, num(IpAddr::V4(n.broadcast())) - 1),
            IpNet::V6(n) => IpAddr::V6(n.broadcast()),
        };
        let in_subnet = |key: &str, ip: IpAddr| -> Result<IpAddr, IpamError> {
            if ip.is_ipv4() != network.is_ipv4() || !subnet.contains(&ip) {
                return Err(invalid(
                    join(at, key),
                    format!("{ip} not in network {subnet}"),
                ));
            }
            Ok(ip)
        };
        let read = |key: &str| -> Result<Option<IpAddr>, IpamError> {
            opt_str(m, key, at)?
                .map(|s| parse_ip(s, &join(at, key)).and_then(|ip| in_subnet(key, ip)))
                .transpose()
        };
        let gateway = read("gateway")?.unwrap_or(first);
        let start = read("rangeStart")?.unwrap_or(first);
        let end = read("rangeEnd")?.unwrap_or(last);
        if start == network {
            return Err(invalid(
                join(at, "rangeStart"),
                format!("{start} is the network address of {subnet}"),
            ));
        }
        if let IpNet::V4(n) = subnet
            && end == IpAddr::V4(n.broadcast())
        {
            return Err(invalid(
                join(at, "rangeEnd"),
                format!("{end} is the broadcast address of {subnet}"),
            ));
        }
        if num(start) > num(end) {
            return Err(invalid(
                join(at, "rangeStart"),
                format!("rangeStart {start} is after rangeEnd {end}"),
            ));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && self.subnet.contains(&ip)
            && num(self.start) <= num(ip)
            && num(ip) <= num(self.end)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.contains(other.start)
            || self.contains(other.end)
            || other.contains(self.start)
            || other.contains(self.end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges of one family; an interface gets one address per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeSet(Vec<Range>);

impl RangeSet {
    fn parse(list: &[serde_json::Value], at: &str) -> Result<RangeSet, IpamError> {
        if list.is_empty() {
            return Err(invalid(at, "empty range set"));
        }
        let mut ranges = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let here = format!("{at}[{i}]");
            ranges.push(Range::parse(as_object(v, &here)?, &here)?);
        }
        let set = RangeSet(ranges);
        for (i, r) in set.0.iter().enumerate() {
            if r.start.is_ipv4() != set.0[0].start.is_ipv4() {
                return Err(invalid(format!("{at}[{i}]"), "mixed address families"));
            }
            for (j, r2) in set.0.iter().enumerate().skip(i + 1) {
                if r.overlaps(r2) {
                    return Err(invalid(
                        format!("{at}[{j}]"),
                        format!("subnets {r} and {r2} overlap"),
                    ));
                }
            }
        }
        Ok(set)
    }

    fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|r| {
            other
                .0
                .iter()
                .any(|r2| r.start.is_ipv4() == r2.start.is_ipv4() && r.overlaps(r2))
        })
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The reference's round-robin walk: from the address after `last` (or from the first
/// range's start), across the ranges in order, wrapping, until back at the first address
/// tried; gateways are skipped.
struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    first: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a RangeSet, last: Option<IpAddr>) -> RangeIter<'a> {
        let resume = last.and_then(|ip| {
            set.0
                .iter()
                .position(|r| r.contains(ip))
                .map(|idx| (idx, ip))
        });
        match resume {
            Some((idx, ip)) => RangeIter {
                set,
                idx,
                cur: Some(ip),
                first: None,
            },
            None => RangeIter {
                set,
                idx: 0,
                cur: None,
                first: None,
            },
        }
    }
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        let set = self.set;
        loop {
            let mut r = &set.0[self.idx];
            let next = match self.cur {
                None => {
                    self.first = Some(r.start);
                    r.start
                }
                Some(cur) => {
                    let next = if cur == r.end {
                        self.idx = (self.idx + 1) % set.0.len();
                        r = &set.0[self.idx];
                        r.start
                    } else {
                        addr(cur, num(cur) + 1)
                    };
                    match self.first {
                        None => self.first = Some(next),
                        Some(first) if first == next => return None,
                        Some(_) => {}
                    }
                    next
                }
            };
            self.cur = Some(next);
            if next != r.gateway {
                return Some((next, r));
            }
        }
    }
}

struct Conf<'a> {
    name: &'a str,
    data_dir: PathBuf,
    sets: Vec<RangeSet>,
    routes: Vec<Route>,
    resolv_conf: Option<&'a str>,
    requested: Vec<IpAddr>,
}

/// Where the pool lives: enough for DEL, which must work even when the ranges no longer
/// validate (the conf changed since ADD).
fn location<'a>(req: &'a IpamRequest) -> Result<(&'a str, PathBuf), IpamError> {
    let ipam = ipam_section(req.conf)?;
    let name = match req.conf.0.get("name") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid("name", "must be a string")),
        None => return Err(invalid("name", "missing")),
    };
    // The name becomes a directory name under dataDir.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(invalid(
            "name",
            format!("{name:?} cannot name a directory under dataDir"),
        ));
    }
    let data_dir = opt_str(ipam, "dataDir", "ipam")?
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_DATA_DIR);
    Ok((name, PathBuf::from(data_dir)))
}

fn parse<'a>(req: &'a IpamRequest) -> Result<Conf<'a>, IpamError> {
    let (name, data_dir) = location(req)?;
    let ipam = ipam_section(req.conf)?;

    // Order as the reference builds it: runtime ipRanges, the legacy single range, `ranges`.
    let mut sets: Vec<(String, RangeSet)> = Vec::new();
    if let Some(serde_json::Value::Object(rc)) = req.conf.0.get("runtimeConfig") {
        for (i, v) in opt_array(rc, "ipRanges", "runtimeConfig")?
            .iter()
            .enumerate()
        {
            let at = format!("runtimeConfig.ipRanges[{i}]");
            let list = v.as_array().ok_or_else(|| invalid(&at, "must be a list"))?;
            sets.push((at.clone(), RangeSet::parse(list, &at)?));
        }
    }
    if opt_str(ipam, "subnet", "ipam")?.is_some_and(|s| !s.is_empty()) {
        sets.push(("ipam".into(), RangeSet(vec![Range::parse(ipam, "ipam")?])));
    }
    for (i, v) in opt_array(ipam, "ranges", "ipam")?.iter().enumerate() {
        let at = format!("ipam.ranges[{i}]");
        let list = v.as_array().ok_or_else(|| invalid(&at, "must be a list"))?;
        sets.push((at.clone(), RangeSet::parse(list, &at)?));
    }
    if sets.is_empty() {
        return Err(invalid("ipam.ranges", "no IP ranges specified"));
    }
    for (i, (_, a)) in sets.iter().enumerate() {
        for (at, b) in sets.iter().skip(i + 1).map(|(at, b)| (at, b)) {
            if a.overlaps(b) {
                return Err(invalid(
                    at,
                    format!("range set {b} overlaps with range set {a}"),
                ));
            }
        }
    }
    check_family_count(
        req.conf,
        sets.iter().map(|(_, s)| s.0[0].start),
        "ipam.ranges",
    )?;

    let sources = RequestedIps::read(req)?;
    let mut requested: Vec<IpAddr> = Vec::new();
    for (key, list) in [
        (RequestedIps::ENV_KEY, &sources.env),
        (RequestedIps::ARGS_KEY, &sources.args),
        (RequestedIps::RUNTIME_KEY, &sources.runtime),
    ] {
        for s in list {
            // The reference's ip.ParseIP takes a bare address or a CIDR and keeps the address.
            let ip = match s.split_once('/') {
                Some(_) => parse_cidr(s, key)?.addr().to_canonical(),
                None => parse_ip(s, key)?,
            };
            if !requested.contains(&ip) {
                requested.push(ip);
            }
        }
    }

    Ok(Conf {
        name,
        data_dir,
        sets: sets.into_iter().map(|(_, s)| s).collect(),
        routes: parse_routes(ipam, "ipam")?,
        resolv_conf: opt_str(ipam, "resolvConf", "ipam")?.filter(|s| !s.is_empty()),
        requested,
    })
}

fn require_ids(req: &IpamRequest) -> Result<(), IpamError> {
    if req.container_id.trim().is_empty() {
        return Err(IpamError::MissingEnv("CNI_CONTAINERID"));
    }
    if req.ifname.is_empty() {
        return Err(IpamError::MissingEnv("CNI_IFNAME"));
    }
    Ok(())
}

pub(crate) fn add(req: &IpamRequest) -> Result<CniResult, IpamError> {
    require_ids(req)?;
    let conf = parse(req)?;
    let dns = match conf.resolv_conf {
        Some(path) => parse_resolv_conf(Path::new(path))?,
        None => Dns::default(),
    };
    let store = Store::create(&conf.data_dir, conf.name)?;
    // One lock for the whole ADD (the reference takes it per range set): no other ADD can
    // see this interface half allocated.
    let pool = store.lock()?;
    let mut pending = conf.requested.clone();
    let mut ips = Vec::with_capacity(conf.sets.len());
    for (idx, set) in conf.sets.iter().enumerate() {
        let want = pending
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|i| pending.remove(i));
        match allocate(&pool, req, idx, set, want) {
            Ok(ip) => ips.push(ip),
            Err(e) => {
                if !ips.is_empty() {
                    let _ = pool.release_by_id(req.container_id, req.ifname);
                }
                return Err(e);
            }
        }
    }
    if !pending.is_empty() {
        let _ = pool.release_by_id(req.container_id, req.ifname);
        let list: Vec<String> = pending.iter().map(IpAddr::to_string).collect();
        return Err(IpamError::RequestedOutside(list.join(" ")));
    }
    Ok(CniResult {
        interfaces: Vec::new(),
        ips,
        routes: conf.routes,
        dns,
    })
}

fn allocate(
    pool: &Locked,
    req: &IpamRequest,
    index: usize,
    set: &RangeSet,
    want: Option<IpAddr>,
) -> Result<IpConfig, IpamError> {
    let config = |ip: IpAddr, r: &Range| -> Result<IpConfig, IpamError> {
        let address = IpNet::new(ip, r.subnet.prefix_len())
            .map_err(|e| invalid("ipam.ranges", e.to_string()))?;
        Ok(IpConfig {
            address,
            gateway: Some(r.gateway),
            interface: None,
        })
    };
    if let Some(ip) = want {
        let Some(r) = set.range_for(ip) else {
            return Err(IpamError::RequestedOutside(ip.to_string()));
        };
        if ip == r.gateway {
            return Err(IpamError::RequestedGateway { index, ip });
        }
        if !pool.reserve(req.container_id, req.ifname, ip, index)? {
            return Err(IpamError::RequestedTaken {
                index,
                ip,
                range_set: set.to_string(),
            });
        }
        return config(ip, r);
    }
    // SPEC.md: ADD twice for one (container, ifname) is a caller error, not a second address.
    if let Some(ip) = pool
        .get_by_id(req.container_id, req.ifname)?
        .into_iter()
        .find(|ip| set.contains(*ip))
    {
        return Err(IpamError::Duplicate {
            index,
            ip,
            container_id: req.container_id.to_string(),
        });
    }
    for (ip, r) in RangeIter::new(set, pool.last_reserved_ip(index)) {
        if pool.reserve(req.container_id, req.ifname, ip, index)? {
            return config(ip, r);
        }
    }
    Err(IpamError::Exhausted {
        index,
        range_set: set.to_string(),
    })
}

pub(crate) fn del(req: &IpamRequest) -> Result<(), IpamError> {
    require_ids(req)?;
    let (name, data_dir) = location(req)?;
    let Some(store) = Store::open(&data_dir, name)? else {
        return Ok(());
    };
    store.lock()?.release_by_id(req.container_id, req.ifname)
}

pub(crate) fn check(req: &IpamRequest) -> Result<(), IpamError> {
    require_ids(req)?;
    let conf = parse(req)?;
    let found = match Store::open(&conf.data_dir, conf.name)? {
        Some(store) => store.lock()?.find_by_id(req.container_id, req.ifname)?,
        None => false,
    };
    if found {
        Ok(())
    } else {
        Err(IpamError::NotFound(req.container_id.to_string()))
    }
}

/// The subset of resolv.conf(5) the reference reads: nameserver, domain, search, options.
fn parse_resolv_conf(path: &Path) -> Result<Dns, IpamError> {
    let text = std::fs::read_to_string(path).map_err(|source| IpamError::Io {
        step: "read resolvConf",
        path: path.to_path_buf(),
        source,
    })?;
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(keyword), rest) = (fields.next(), fields) else {
            continue;
        };
        let rest: Vec<String> = rest.map(str::to_string).collect();
        let Some(first) = rest.first() else {
            continue;
        };
        match keyword {
            "nameserver" => dns.nameservers.push(first.clone()),
            "domain" => dns.domain = Some(first.clone()),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: serde_json::Value) -> Result<Range, IpamError> {
        Range::parse(v.as_object().unwrap(), "r")
    }

    fn set(v: serde_json::Value) -> RangeSet {
        RangeSet::parse(v.as_array().unwrap(), "s").unwrap()
    }

    fn walk(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        RangeIter::new(s, last.map(|l| l.parse().unwrap()))
            .map(|(ip, _)| ip.to_string())
            .collect()
    }

    #[test]
    fn range_defaults_skip_network_and_broadcast() {
        let r = range(serde_json::json!({"subnet": "10.0.0.0/29"})).unwrap();
        assert_eq!(r.start.to_string(), "10.0.0.1");
        assert_eq!(r.end.to_string(), "10.0.0.6");
        assert_eq!(r.gateway.to_string(), "10.0.0.1");
        let r = range(serde_json::json!({"subnet": "fd00::/126"})).unwrap();
        assert_eq!(r.end.to_string(), "fd00::3");
    }

    #[test]
    fn walk_starts_at_range_start_and_skips_gateway() {
        let s = set(serde_json::json!([{"subnet": "10.0.0.0/29"}]));
        assert_eq!(
            walk(&s, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn walk_resumes_after_last_and_wraps_across_ranges() {
        let s = set(serde_json::json!([
            {"subnet": "10.0.0.0/29", "rangeStart": "10.0.0.4"},
            {"subnet": "10.0.1.0/30"}
        ]));
        assert_eq!(
            walk(&s, Some("10.0.0.5")),
            ["10.0.0.6", "10.0.1.2", "10.0.0.4", "10.0.0.5"]
        );
        // A last address outside the set (the conf changed) restarts from the beginning.
        assert_eq!(walk(&s, Some("192.168.0.9"))[0], "10.0.0.4");
    }

    #[test]
    fn walk_of_a_range_holding_only_the_gateway_is_empty() {
        let s = set(serde_json::json!([
            {"subnet": "10.0.0.0/29", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.1"}
        ]));
        assert!(walk(&s, None).is_empty());
        assert!(walk(&s, Some("10.0.0.1")).is_empty());
    }

    #[test]
    fn range_errors_name_the_key() {
        let key = |v| match range(v) {
            Err(IpamError::InvalidConfig { key, .. }) => key,
            other => panic!("expected invalid config, got {other:?}"),
        };
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/33"})),
            "r.subnet"
        );
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/31"})),
            "r.subnet"
        );
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.1/24"})),
            "r.subnet"
        );
        assert_eq!(key(serde_json::json!({})), "r.subnet");
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"})),
            "r.gateway"
        );
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/24", "gateway": "fd00::1"})),
            "r.gateway"
        );
        assert_eq!(
            key(
                serde_json::json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.8"})
            ),
            "r.rangeStart"
        );
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.8"})),
            "r.rangeEnd"
        );
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.255"})),
            "r.rangeEnd"
        );
        assert_eq!(
            key(serde_json::json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0"})),
            "r.rangeStart"
        );
        assert!(range(serde_json::json!({"subnet": "10.0.0.0/30"})).is_ok());
    }
}
