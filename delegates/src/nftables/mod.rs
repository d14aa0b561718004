//! nf_tables over netlink, in-process: the few requests masquerade needs (a table, a NAT base
//! chain, rules carrying a comment, a rule dump, deletes), so no `nft` process is started.
//!
//! No crate fits: the pure-Rust nf_tables crate is GPL, the others bind libnftnl (a C library
//! the node would need) or drive the `nft` binary. The wire format is small and stable, so the
//! messages are written here by hand over a `netlink-sys` socket.
//!
//! Changes go in one batch, which the kernel applies as one transaction: all of it or none.
//! The socket belongs to the netns of the thread that opens it, so the rules land there.

mod wire;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use std::io;
use std::net::IpAddr;
use wire::*;

/// `NFPROTO_INET`: a table that sees both IPv4 and IPv6.
pub const FAMILY_INET: u8 = 1;
/// `NF_INET_POST_ROUTING`.
pub const HOOK_POSTROUTING: u32 = 4;
/// `NF_IP_PRI_NAT_SRC`, the priority nft calls `srcnat`.
pub const PRIORITY_SRCNAT: i32 = 100;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
/// The rule comment's type in the userdata TLVs, as nft writes and reads it.
const UDATA_RULE_COMMENT: u8 = 0;

/// `NFT_REG_1`, the first 16-byte register: every expression here loads into and reads it.
const REG_1: u32 = 1;
const NFT_META_NFPROTO: u32 = 15;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;

/// One expression of a rule, as the kernel executes it (what `nft --debug=netlink` prints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `meta load nfproto => reg 1`
    MetaNfproto,
    /// `payload load <len>b @ network header + <offset> => reg 1`
    Payload { offset: u32, len: u32 },
    /// `bitwise reg 1 = (reg 1 & mask) ^ 0`
    Mask(Vec<u8>),
    /// `cmp eq|neq reg 1 <data>`
    Cmp { eq: bool, data: Vec<u8> },
    /// `masq`
    Masquerade,
}

impl Expr {
    /// Matches packets whose address at `offset` in the network header is inside `net`
    /// (`eq`) or outside it (`!eq`), encoded as nft encodes a prefix: whole bytes are compared
    /// directly, a prefix that ends inside a byte is masked first.
    pub fn prefix(offset: u32, net: ipnet::IpNet, eq: bool) -> Vec<Expr> {
        let addr = octets(net.network());
        let width = addr.len() as u32;
        let bits = u32::from(net.prefix_len());
        if bits == width * 8 || (bits > 0 && bits % 8 == 0) {
            let len = bits / 8;
            return vec![
                Expr::Payload { offset, len },
                Expr::Cmp {
                    eq,
                    data: addr[..len as usize].to_vec(),
                },
            ];
        }
        vec![
            Expr::Payload { offset, len: width },
            Expr::Mask(octets(net.netmask())),
            Expr::Cmp { eq, data: addr },
        ]
    }
}

pub fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One change inside a batch.
#[derive(Clone, Debug)]
pub enum Op<'a> {
    /// Creates the table unless it exists (`add table`).
    AddTable { table: &'a str },
    /// Creates a NAT base chain unless it exists with the same hook (`add chain`).
    AddNatChain {
        table: &'a str,
        chain: &'a str,
        hook: u32,
        priority: i32,
    },
    /// Appends a rule with a comment (`add rule ... comment "..."`).
    AddRule {
        table: &'a str,
        chain: &'a str,
        exprs: &'a [Expr],
        comment: &'a str,
    },
    DelRule {
        table: &'a str,
        chain: &'a str,
        handle: u64,
    },
    /// Deletes the table with its chains and rules.
    DelTable { table: &'a str },
}

impl Op<'_> {
    fn describe(&self) -> String {
        match self {
            Op::AddTable { table } => format!("add table {table}"),
            Op::AddNatChain { table, chain, .. } => format!("add chain {table} {chain}"),
            Op::AddRule { table, chain, .. } => format!("add rule {table} {chain}"),
            Op::DelRule {
                table,
                chain,
                handle,
            } => format!("delete rule {table} {chain} handle {handle}"),
            Op::DelTable { table } => format!("delete table {table}"),
        }
    }
}

/// A rule as the dump reports it: enough to find one's own and delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("netfilter netlink socket")]
    Socket(#[source] io::Error),
    #[error("kernel refused `{op}`")]
    Refused {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("kernel answered {got} of {want} nf_tables requests")]
    Incomplete { got: usize, want: usize },
    #[error("malformed nf_tables answer: {0}")]
    Malformed(&'static str),
    #[error("rule dump kept being interrupted by other ruleset changes")]
    Interrupted,
}

impl NftError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A netfilter netlink socket in the calling thread's netns.
pub struct Nft {
    sock: Socket,
    seq: u32,
}

impl Nft {
    pub fn open() -> Result<Nft, NftError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        sock.bind_auto().map_err(NftError::Socket)?;
        // Acks carry only the header of the request they answer, not the whole rule.
        sock.set_cap_ack(true).map_err(NftError::Socket)?;
        Ok(Nft { sock, seq: 0 })
    }

    /// Closes the socket on a thread of its own. While the kernel still has objects of a
    /// committed deletion or update to release (after an RCU grace period, milliseconds
    /// here), closing any netfilter socket waits for that release; the changes themselves
    /// are committed and visible, so the caller's remaining work need not wait. Closed here
    /// when no thread can be started.
    pub fn close_detached(self) {
        let _ = std::thread::Builder::new()
            .name("nft-close".into())
            .spawn(move || drop(self));
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Applies `ops` in `family` as one transaction.
    pub fn apply(&mut self, family: u8, ops: &[Op]) -> Result<(), NftError> {
        if ops.is_empty() {
            return Ok(());
        }
        let begin = self.next_seq();
        let first = begin.wrapping_add(1);
        let mut w = Writer::default();
        w.batch_marker(NFNL_MSG_BATCH_BEGIN, begin, NFNL_SUBSYS_NFTABLES);
        for op in ops {
            let seq = self.next_seq();
            encode(&mut w, family, seq, op);
        }
        let end = self.next_seq();
        w.batch_marker(NFNL_MSG_BATCH_END, end, NFNL_SUBSYS_NFTABLES);
        self.sock.send(&w.buf, 0).map_err(NftError::Socket)?;

        // The kernel handles the whole batch inside send(): every answer is queued by now,
        // and a batch it rejects before looking at the requests (no nf_tables in the kernel)
        // answers only for the batch header. So read what is there, never wait for more.
        let mut acks = 0usize;
        let mut failure: Option<NftError> = None;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            match self.sock.recv(&mut buf, nix::libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(NftError::Socket(e)),
            }
            for m in messages(&buf)? {
                if m.ty != NLMSG_ERROR || m.seq < begin || m.seq > end {
                    continue;
                }
                let errno = ack_errno(m.payload)?;
                if m.seq >= first && m.seq < end {
                    acks += 1;
                }
                if errno != 0 && failure.is_none() {
                    let op = match m.seq.checked_sub(first) {
                        Some(i) if (i as usize) < ops.len() => ops[i as usize].describe(),
                        _ => "commit".to_string(),
                    };
                    failure = Some(NftError::Refused {
                        op,
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
            }
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if acks != ops.len() {
            return Err(NftError::Incomplete {
                got: acks,
                want: ops.len(),
            });
        }
        Ok(())
    }

    /// Whether `chain` exists in `table`. A plain lookup: unlike a transaction that fails,
    /// it costs the kernel no RCU grace period.
    pub fn has_chain(&mut self, family: u8, table: &str, chain: &str) -> Result<bool, NftError> {
        let seq = self.next_seq();
        let mut w = Writer::default();
        let m = w.begin(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN,
            NLM_F_ACK,
            seq,
            family,
        );
        w.attr_str(NFTA_CHAIN_TABLE, table);
        w.attr_str(NFTA_CHAIN_NAME, chain);
        w.end(m);
        self.sock.send(&w.buf, 0).map_err(NftError::Socket)?;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            self.sock.recv(&mut buf, 0).map_err(NftError::Socket)?;
            for m in messages(&buf)? {
                if m.seq != seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                return match ack_errno(m.payload)? {
                    0 => Ok(true),
                    nix::libc::ENOENT => Ok(false),
                    errno => Err(NftError::Refused {
                        op: format!("get chain {table} {chain}"),
                        source: io::Error::from_raw_os_error(errno),
                    }),
                };
            }
        }
    }

    /// The rules of `table` (none when there is no such table).
    pub fn rules(&mut self, family: u8, table: &str) -> Result<Vec<Rule>, NftError> {
        // A dump spanning several reads is flagged by the kernel when another process changed
        // the ruleset meanwhile; a fresh dump then sees a consistent state.
        for _ in 0..8 {
            if let Some(r) = self.dump_rules(family, table)? {
                return Ok(r);
            }
        }
        Err(NftError::Interrupted)
    }

    /// `None` when the dump was interrupted.
    fn dump_rules(&mut self, family: u8, table: &str) -> Result<Option<Vec<Rule>>, NftError> {
        let seq = self.next_seq();
        let mut w = Writer::default();
        let m = w.begin(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
        );
        w.attr_str(NFTA_RULE_TABLE, table);
        w.end(m);
        self.sock.send(&w.buf, 0).map_err(NftError::Socket)?;

        let mut rules = Vec::new();
        let mut interrupted = false;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            self.sock.recv(&mut buf, 0).map_err(NftError::Socket)?;
            for m in messages(&buf)? {
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.ty {
                    NLMSG_DONE => return Ok((!interrupted).then_some(rules)),
                    NLMSG_ERROR => {
                        return match ack_errno(m.payload)? {
                            // Kernels that check the table's existence up front.
                            nix::libc::ENOENT => Ok(Some(Vec::new())),
                            errno => Err(NftError::Refused {
                                op: format!("list rules of table {table}"),
                                source: io::Error::from_raw_os_error(errno),
                            }),
                        };
                    }
                    t if t == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE => {
                        rules.push(parse_rule(m.payload)?);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn encode(w: &mut Writer, family: u8, seq: u32, op: &Op) {
    let ty = |t: u16| NFNL_SUBSYS_NFTABLES << 8 | t;
    match *op {
        Op::AddTable { table } => {
            let m = w.begin(ty(NFT_MSG_NEWTABLE), NLM_F_CREATE | NLM_F_ACK, seq, family);
            w.attr_str(NFTA_TABLE_NAME, table);
            w.end(m);
        }
        Op::AddNatChain {
            table,
            chain,
            hook,
            priority,
        } => {
            let m = w.begin(ty(NFT_MSG_NEWCHAIN), NLM_F_CREATE | NLM_F_ACK, seq, family);
            w.attr_str(NFTA_CHAIN_TABLE, table);
            w.attr_str(NFTA_CHAIN_NAME, chain);
            let h = w.nest(NFTA_CHAIN_HOOK);
            w.attr_be32(NFTA_HOOK_HOOKNUM, hook);
            w.attr_be32(NFTA_HOOK_PRIORITY, priority as u32);
            w.end_nest(h);
            w.attr_str(NFTA_CHAIN_TYPE, "nat");
            w.end(m);
        }
        Op::AddRule {
            table,
            chain,
            exprs,
            comment,
        } => {
            let flags = NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK;
            let m = w.begin(ty(NFT_MSG_NEWRULE), flags, seq, family);
            w.attr_str(NFTA_RULE_TABLE, table);
            w.attr_str(NFTA_RULE_CHAIN, chain);
            let list = w.nest(NFTA_RULE_EXPRESSIONS);
            for e in exprs {
                encode_expr(w, e);
            }
            w.end_nest(list);
            let mut udata = vec![UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
            udata.extend_from_slice(comment.as_bytes());
            udata.push(0);
            w.attr(NFTA_RULE_USERDATA, &udata);
            w.end(m);
        }
        Op::DelRule {
            table,
            chain,
            handle,
        } => {
            let m = w.begin(ty(NFT_MSG_DELRULE), NLM_F_ACK, seq, family);
            w.attr_str(NFTA_RULE_TABLE, table);
            w.attr_str(NFTA_RULE_CHAIN, chain);
            w.attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
            w.end(m);
        }
        Op::DelTable { table } => {
            let m = w.begin(ty(NFT_MSG_DELTABLE), NLM_F_ACK, seq, family);
            w.attr_str(NFTA_TABLE_NAME, table);
            w.end(m);
        }
    }
}

fn encode_expr(w: &mut Writer, e: &Expr) {
    // Attribute numbers of each expression's own attribute space.
    let elem = w.nest(NFTA_LIST_ELEM);
    let (name, data): (&str, Vec<(u16, Field)>) = match e {
        Expr::MetaNfproto => (
            "meta",
            vec![(2, Field::Be32(NFT_META_NFPROTO)), (1, Field::Be32(REG_1))],
        ),
        Expr::Payload { offset, len } => (
            "payload",
            vec![
                (1, Field::Be32(REG_1)),
                (2, Field::Be32(NFT_PAYLOAD_NETWORK_HEADER)),
                (3, Field::Be32(*offset)),
                (4, Field::Be32(*len)),
            ],
        ),
        Expr::Mask(mask) => (
            "bitwise",
            vec![
                (1, Field::Be32(REG_1)),
                (2, Field::Be32(REG_1)),
                (3, Field::Be32(mask.len() as u32)),
                (4, Field::Value(mask.clone())),
                (5, Field::Value(vec![0; mask.len()])),
            ],
        ),
        Expr::Cmp { eq, data } => (
            "cmp",
            vec![
                (1, Field::Be32(REG_1)),
                (2, Field::Be32(if *eq { 0 } else { 1 })),
                (3, Field::Value(data.clone())),
            ],
        ),
        Expr::Masquerade => ("masq", vec![]),
    };
    w.attr_str(NFTA_EXPR_NAME, name);
    let d = w.nest(NFTA_EXPR_DATA);
    for (ty, f) in data {
        match f {
            Field::Be32(v) => w.attr_be32(ty, v),
            Field::Value(bytes) => {
                let n = w.nest(ty);
                w.attr(NFTA_DATA_VALUE, &bytes);
                w.end_nest(n);
            }
        }
    }
    w.end_nest(d);
    w.end_nest(elem);
}

enum Field {
    Be32(u32),
    /// A `nft_data` value: nested, as the kernel expects constants.
    Value(Vec<u8>),
}

fn parse_rule(payload: &[u8]) -> Result<Rule, NftError> {
    // Skip the nfgenmsg.
    let body = payload
        .get(4..)
        .ok_or(NftError::Malformed("rule message"))?;
    let mut rule = Rule {
        chain: String::new(),
        handle: 0,
        comment: None,
    };
    let mut handle = None;
    for (ty, v) in attrs(body)? {
        match ty {
            NFTA_RULE_CHAIN => rule.chain = c_string(v),
            NFTA_RULE_HANDLE => {
                let b: [u8; 8] = v.try_into().map_err(|_| NftError::Malformed("handle"))?;
                handle = Some(u64::from_be_bytes(b));
            }
            NFTA_RULE_USERDATA => rule.comment = comment(v),
            _ => {}
        }
    }
    rule.handle = handle.ok_or(NftError::Malformed("rule without handle"))?;
    Ok(rule)
}

/// The comment among a rule's userdata TLVs (type, length, value).
fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if ty == UDATA_RULE_COMMENT {
            return Some(c_string(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests;
