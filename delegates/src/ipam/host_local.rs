//! `host-local`: addresses from range sets, one address per set, reservations on disk.
//!
//! The conf schema, the allocation order (after `last_reserved_ip.N`, wrapping, gateway
//! skipped) and the error wording follow the reference plugin
//! (plugins/ipam/host-local/backend/allocator) so a pool can be shared with it and looks the
//! same whichever implementation handed an address out.

use super::range::{Range, RangeIter, RangeSet};
use super::store::{Locked, Store};
use super::{
    IpamError, IpamRequest, RequestedIps, check_family_count, invalid, ipam_section, opt_array,
    opt_str, parse_cidr, parse_ip, parse_routes,
};
use cni::CniResult;
use cni::result::{Dns, IpConfig, Route};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where reservations live when the conf has no `dataDir` (the reference's default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

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
    let data_dir = match opt_str(ipam, "dataDir", "ipam")?.filter(|d| !d.is_empty()) {
        Some(d) => allowed_data_dir(d, req.data_dirs)?,
        None => PathBuf::from(DEFAULT_DATA_DIR),
    };
    Ok((name, data_dir))
}

/// A conf's `dataDir`: absolute, without `..` steps, and in one of the folders the
/// node allows. Stricter than the reference host-local, which takes any path (a relative one
/// from its working directory): a NetworkAttachmentDefinition is tenant input, and
/// host-local creates directories and files where it points.
fn allowed_data_dir(dir: &str, allowed: &[PathBuf]) -> Result<PathBuf, IpamError> {
    use std::path::Component;
    const KEY: &str = "ipam.dataDir";
    let path = Path::new(dir);
    if !path.is_absolute() {
        return Err(invalid(KEY, format!("{dir:?} is not an absolute path")));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(KEY, format!("{dir:?} has \"..\" steps")));
    }
    if !allowed.iter().any(|a| path.starts_with(a)) {
        let list: Vec<String> = allowed.iter().map(|a| a.display().to_string()).collect();
        return Err(invalid(
            KEY,
            format!(
                "{dir:?} is not in a folder this node allows for IPAM data ({})",
                list.join(", ")
            ),
        ));
    }
    Ok(path.to_path_buf())
}

fn parse<'a>(req: &'a IpamRequest) -> Result<Conf<'a>, IpamError> {
    let (name, data_dir) = location(req)?;
    let ipam = ipam_section(req.conf)?;

    // Order as the reference builds it: runtime ipRanges, the legacy single range, `ranges`.
    let mut sets: Vec<(String, RangeSet)> = Vec::new();
    if let Some(serde_json::Value::Object(rc)) = req.conf.0.get("runtimeConfig") {
        // A Go runtime writes `Subnet`, `RangeStart`, ... and "" for unset fields.
        let rc = cni::capability::canonical_map(rc);
        for (i, v) in opt_array(&rc, "ipRanges", "runtimeConfig")?
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
        for (at, b) in sets.iter().skip(i + 1) {
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

pub(crate) fn validate(req: &IpamRequest) -> Result<(), IpamError> {
    require_ids(req)?;
    parse(req).map(drop)
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
    let pool = store.lock(req.timeout)?;
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
    // The spec: ADD twice for one (container, ifname) is a caller error, not a second address.
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
    // ADD reads the pool's location first and refuses the same conf there, before anything
    // is reserved: DEL of such a conf has nothing to release (and must not keep failing).
    let (name, data_dir) = match location(req) {
        Ok(l) => l,
        Err(e @ IpamError::InvalidConfig { .. }) => {
            tracing::warn!(error = %e, "host-local DEL: conf refused as ADD refused it; nothing was reserved");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let Some(store) = Store::open(&data_dir, name)? else {
        return Ok(());
    };
    store
        .lock(req.timeout)?
        .release_by_id(req.container_id, req.ifname)
}

pub(crate) fn check(req: &IpamRequest) -> Result<(), IpamError> {
    require_ids(req)?;
    let conf = parse(req)?;
    let found = match Store::open(&conf.data_dir, conf.name)? {
        Some(store) => store
            .lock(req.timeout)?
            .find_by_id(req.container_id, req.ifname)?,
        None => false,
    };
    if found {
        Ok(())
    } else {
        Err(IpamError::NotFound(req.container_id.to_string()))
    }
}

/// Far more than any resolv.conf holds; glibc reads at most a few KiB of it.
const MAX_RESOLV_CONF: u64 = 64 << 10;

/// The subset of resolv.conf(5) the reference reads: nameserver, domain, search, options.
/// The path comes from the conf, so only a regular file of sane size is read, and opening it
/// cannot block (a FIFO would otherwise hold the ADD forever).
fn parse_resolv_conf(path: &Path) -> Result<Dns, IpamError> {
    use cni::file::FileError;
    let bytes = cni::file::read_regular(path, MAX_RESOLV_CONF).map_err(|e| match e {
        FileError::Io { path, source } => IpamError::Io {
            step: "read resolvConf",
            path,
            source,
        },
        refused => invalid("ipam.resolvConf", refused.to_string()),
    })?;
    let text = String::from_utf8_lossy(&bytes);
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
