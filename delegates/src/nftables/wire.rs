//! Netlink framing for the nf_tables client: messages and attributes written (headers in host
//! order, every attribute padded to 4 bytes) and read back without trusting their lengths.

use super::NftError;

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub(super) const NLA_TYPE_MASK: u16 = 0x3fff;

/// Builds netlink messages: headers in host order, nf_tables integers big-endian, every
/// attribute padded to 4 bytes.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8) -> usize {
        self.header(ty, NLM_F_REQUEST | flags, seq, family, 0)
    }

    /// The batch's begin and end markers name the subsystem in `res_id`.
    pub(super) fn batch_marker(&mut self, ty: u16, seq: u32, subsystem: u16) {
        let m = self.header(ty, NLM_F_REQUEST, seq, 0, subsystem);
        self.end(m);
    }

    fn header(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version NFNETLINK_V0, resource id (big-endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub(super) fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub(super) fn attr(&mut self, ty: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub(super) fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    pub(super) fn attr_be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub(super) fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub(super) fn end_nest(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

pub(super) struct Message<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    /// Everything after the netlink header.
    pub(super) payload: &'a [u8],
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, NftError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let bad = NftError::Malformed("netlink header");
        let len = u32_at(buf, at).ok_or(bad)? as usize;
        if len < 16 || at + len > buf.len() {
            return Err(NftError::Malformed("netlink message length"));
        }
        out.push(Message {
            ty: u16_at(buf, at + 4).ok_or(NftError::Malformed("type"))?,
            flags: u16_at(buf, at + 6).ok_or(NftError::Malformed("flags"))?,
            seq: u32_at(buf, at + 8).ok_or(NftError::Malformed("seq"))?,
            payload: &buf[at + 16..at + len],
        });
        at += len.next_multiple_of(4);
    }
    Ok(out)
}

/// The positive errno of an `NLMSG_ERROR` (0 for an ack).
pub(super) fn ack_errno(payload: &[u8]) -> Result<i32, NftError> {
    let raw = u32_at(payload, 0).ok_or(NftError::Malformed("error message"))?;
    Ok(-(raw as i32))
}

/// Attributes of one level: (type without flags, value).
pub(super) fn attrs(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, NftError> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16_at(b, 0).ok_or(NftError::Malformed("attribute"))? as usize;
        let ty = u16_at(b, 2).ok_or(NftError::Malformed("attribute"))? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return Err(NftError::Malformed("attribute length"));
        }
        out.push((ty, &b[4..len]));
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    Ok(out)
}

pub(super) fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}
