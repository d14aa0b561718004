//! `ipMasq`: source NAT for a pod's traffic leaving its subnet, in nftables.
//!
//! One table per network (`inet plexus-masq-<hash>`) with one rule per pod address, tagged
//! with a comment naming the container and interface so DEL removes exactly its own rules; the
//! table goes with the network's last rule. The rules are written over netlink from the
//! calling thread, so they land in its netns (the node's). A lock file serialises ADD and DEL
//! of one network, because "last rule gone → delete table" must not race another pod's ADD.

use crate::error::DelegateError;
use crate::nftables::{self, Expr, FAMILY_INET, Nft, NftError, Op};
use cni::result::IpConfig;
use std::fs::File;
use std::net::IpAddr;
use std::time::Duration;

const LOCK_DIR: &str = "/run/plexus";
pub const CHAIN: &str = "postrouting";

pub fn table_name(network: &str) -> String {
    format!("plexus-masq-{:08x}", crate::link::fnv1a(&[network]) as u32)
}

pub fn tag(container_id: &str, ifname: &str) -> String {
    // nft comments are limited to 128 bytes; a hash keeps long container IDs inside it.
    format!(
        "plexus {:016x}",
        crate::link::fnv1a(&[container_id, ifname])
    )
}

fn lock(network: &str, timeout: Duration) -> Result<File, DelegateError> {
    let path = format!("{LOCK_DIR}/{}.lock", table_name(network));
    crate::link::lock_file(&path, timeout)
}

/// The rule `ip saddr <addr> ip daddr != <subnet> ip daddr != 224.0.0.0/4 masquerade` (ip6
/// and ff00::/8 for IPv6): the pod's traffic leaving its own subnet is masqueraded, multicast
/// is not, as with the reference plugins.
pub fn rule(ip: &IpConfig) -> Vec<Expr> {
    let addr = ip.address.addr();
    let (nfproto, saddr, daddr, multicast) = match addr {
        IpAddr::V4(_) => (2u8, 12, 16, "224.0.0.0/4"),
        IpAddr::V6(_) => (10u8, 8, 24, "ff00::/8"),
    };
    let mut exprs = vec![
        Expr::MetaNfproto,
        Expr::Cmp {
            eq: true,
            data: vec![nfproto],
        },
    ];
    exprs.extend(Expr::prefix(saddr, ipnet::IpNet::from(addr), true));
    exprs.extend(Expr::prefix(daddr, ip.address.trunc(), false));
    if let Ok(m) = multicast.parse() {
        exprs.extend(Expr::prefix(daddr, m, false));
    }
    exprs.push(Expr::Masquerade);
    exprs
}

fn failed(step: String) -> impl FnOnce(NftError) -> DelegateError {
    move |source| DelegateError::Nftables { step, source }
}

/// Adds the pod's rules in one nft transaction: they all go in, or none does.
pub fn add(
    network: &str,
    container_id: &str,
    ifname: &str,
    ips: &[IpConfig],
    timeout: Duration,
) -> Result<(), DelegateError> {
    if ips.is_empty() {
        return Ok(());
    }
    let _guard = lock(network, timeout)?;
    let table = table_name(network);
    let tag = tag(container_id, ifname);
    let rules: Vec<Vec<Expr>> = ips.iter().map(rule).collect();
    let rule_ops: Vec<Op> = rules
        .iter()
        .map(|exprs| Op::AddRule {
            table: &table,
            chain: CHAIN,
            exprs,
            comment: &tag,
        })
        .collect();
    let step = format!("add masquerade rules to inet {table}");
    let mut nft = Nft::open().map_err(failed(step.clone()))?;
    // The rules alone when the chain is there: re-adding an existing table and chain would be
    // an update, which the kernel releases only after an RCU grace period, and a batch the
    // kernel refuses costs one too, so the chain is looked up first.
    let present = nft
        .has_chain(FAMILY_INET, &table, CHAIN)
        .map_err(failed(step.clone()))?;
    let mut ops = Vec::with_capacity(rule_ops.len() + 2);
    if !present {
        ops.push(Op::AddTable { table: &table });
        ops.push(Op::AddNatChain {
            table: &table,
            chain: CHAIN,
            hook: nftables::HOOK_POSTROUTING,
            priority: nftables::PRIORITY_SRCNAT,
        });
    }
    ops.extend(rule_ops);
    let r = nft.apply(FAMILY_INET, &ops);
    nft.close_detached();
    r.map_err(failed(step))
}

/// Removes the pod's rules (and the table with the network's last one) and hands back the
/// socket that did it. Closing a netfilter socket waits until the kernel has released what a
/// transaction deleted (an RCU grace period) and holds the node netns's nf_tables commit mutex
/// meanwhile, which the removal of any link of that netns needs too. So a caller that removes
/// links next closes the socket after them, when the release is long done, and neither waits
/// for the other.
pub fn remove(
    network: &str,
    container_id: &str,
    ifname: &str,
    timeout: Duration,
) -> Result<Nft, DelegateError> {
    let _guard = lock(network, timeout)?;
    let table = table_name(network);
    let step = format!("remove masquerade rules from inet {table}");
    let mut nft = Nft::open().map_err(failed(step.clone()))?;
    let rules = nft
        .rules(FAMILY_INET, &table)
        .map_err(failed(step.clone()))?;
    let tag = tag(container_id, ifname);
    let (ours, others): (Vec<_>, Vec<_>) = rules
        .iter()
        .partition(|r| r.comment.as_deref() == Some(tag.as_str()));
    // A second DEL (or the bridge's own after DEL removed the rules first) finds nothing of
    // ours; it sends no transaction, since a refused one would hold the socket's close for a
    // grace period. An empty table is still ours to remove.
    let drop_table = others.is_empty()
        && (!ours.is_empty()
            || nft
                .has_chain(FAMILY_INET, &table, CHAIN)
                .map_err(failed(step.clone()))?);
    let result = if drop_table {
        match nft.apply(FAMILY_INET, &[Op::DelTable { table: &table }]) {
            // No table: nothing of ours left (a DEL repeated, or ipMasq never reached the
            // kernel).
            Err(e) if e.errno() == Some(nix::libc::ENOENT) => Ok(()),
            r => r,
        }
    } else {
        let ops: Vec<Op> = ours
            .iter()
            .map(|r| Op::DelRule {
                table: &table,
                chain: &r.chain,
                handle: r.handle,
            })
            .collect();
        nft.apply(FAMILY_INET, &ops)
    };
    result.map_err(failed(step))?;
    Ok(nft)
}
