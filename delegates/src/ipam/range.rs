//! host-local's range sets as the reference plugin reads them (backend/allocator/range.go,
//! range_set.go) and its round-robin walk (allocator.go `RangeIter`): same defaults, same
//! order, so a pool shared with the reference binary fills the same way.

use super::{IpamError, Obj, as_object, invalid, join, opt_str, parse_cidr, parse_ip};
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    pub(crate) subnet: IpNet,
    pub(crate) start: IpAddr,
    pub(crate) end: IpAddr,
    pub(crate) gateway: IpAddr,
}

impl Range {
    /// Reads one range (`subnet`, `rangeStart`, `rangeEnd`, `gateway`) and fills defaults:
    /// the gateway is the subnet's first address, the range runs from the first address to
    /// the last (IPv4: the one before broadcast).
    pub(crate) fn parse(m: &Obj, at: &str) -> Result<Range, IpamError> {
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

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && self.subnet.contains(&ip)
            && num(self.start) <= num(ip)
            && num(ip) <= num(self.end)
    }

    pub(crate) fn overlaps(&self, other: &Range) -> bool {
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
pub(crate) struct RangeSet(pub(crate) Vec<Range>);

impl RangeSet {
    pub(crate) fn parse(list: &[serde_json::Value], at: &str) -> Result<RangeSet, IpamError> {
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

    pub(crate) fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub(crate) fn overlaps(&self, other: &RangeSet) -> bool {
        self.0
            .iter()
            .any(|r| other.0.iter().any(|r2| r.overlaps(r2)))
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
pub(crate) struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    first: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    pub(crate) fn new(set: &'a RangeSet, last: Option<IpAddr>) -> RangeIter<'a> {
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
