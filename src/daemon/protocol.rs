//! What the shim and the daemon say to each other over the unix socket: one request (the CNI
//! environment and stdin as the runtime gave them) and one answer (exit code and stdout), or
//! a refusal saying why.
//!
//! Every message starts with the same six bytes, `PLXD` and the protocol number, in every
//! version of Plexus: whatever else changes, each side can always tell that the other speaks
//! another protocol and say so. The package versions must match too: the shim and the daemon
//! are one binary installed by one DaemonSet, and a daemon that interprets a conf written for
//! another version is a bug nobody would think to look for. After the prefix comes a length
//! and a JSON header; a request then carries a length and the raw stdin bytes (a conf need not
//! be UTF-8 to deserve the same error in-process and through the daemon).
//!
//! Plain `std` I/O: the one-shot shim must stay cheap.

use std::collections::BTreeMap;
use std::io::Read;

pub const MAGIC: [u8; 4] = *b"PLXD";
/// Bumped whenever the header shapes change.
pub const PROTOCOL: u16 = 1;
/// The version both sides compare.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The socket's file name in `daemonSocketDir`.
pub const SOCKET_NAME: &str = "plexus.sock";
/// No header of a request or an answer comes near this.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// What the in-process path reads of stdin (one byte over the conf limit, so the conf parser
/// reports the size itself); the shim forwards exactly that.
pub const MAX_STDIN_BYTES: usize = cni::netconf::MAX_CONF_BYTES + 1;
/// The largest request on the wire; the daemon stops reading there.
pub const MAX_REQUEST_BYTES: usize = 6 + 4 + MAX_HEADER_BYTES + 4 + MAX_STDIN_BYTES;
/// The CNI variables the shim forwards: everything the flow reads of its environment.
pub const CNI_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("not a plexus daemon message")]
    NotPlexus,
    #[error("peer speaks plexus daemon protocol {theirs}, this side {PROTOCOL}")]
    Protocol { theirs: u16 },
    #[error(
        "peer is plexus {theirs}, this side {VERSION}: shim and daemon must be the same version"
    )]
    Version { theirs: String },
    #[error("message truncated")]
    Truncated,
    #[error("{what} of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("malformed header: {0}")]
    Header(String),
}

impl ProtocolError {
    /// The other side is a plexus daemon or shim of another version.
    pub fn is_skew(&self) -> bool {
        matches!(
            self,
            ProtocolError::Protocol { .. } | ProtocolError::Version { .. }
        )
    }
}

/// One CNI call as the runtime made it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub version: String,
    /// Only the variables of [`CNI_VARS`] that were set.
    pub env: BTreeMap<String, String>,
    /// How long the shim waits for the answer; the daemon answers by then.
    pub deadline_ms: u64,
    #[serde(skip)]
    pub stdin: Vec<u8>,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub version: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    /// What the call printed and its exit code, exactly as in-process.
    #[serde(rename_all = "camelCase")]
    Answered {
        exit_code: u8,
        stdout: Option<String>,
    },
    /// The daemon did not run the call (another version, a peer that is not root, a malformed
    /// request): the shim decides what to do, as when the daemon is down.
    Refused { reason: String },
}

impl Response {
    pub fn answered(exit_code: u8, stdout: Option<String>) -> Response {
        Response {
            version: VERSION.to_string(),
            outcome: Outcome::Answered { exit_code, stdout },
        }
    }

    pub fn refused(reason: impl Into<String>) -> Response {
        Response {
            version: VERSION.to_string(),
            outcome: Outcome::Refused {
                reason: reason.into(),
            },
        }
    }
}

fn prefix(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL.to_be_bytes());
}

fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every chunk is capped far below u32::MAX before it is written.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub fn encode_request(req: &Request) -> Vec<u8> {
    let header = serde_json::to_vec(req).unwrap_or_default();
    let mut out = Vec::with_capacity(14 + header.len() + req.stdin.len());
    prefix(&mut out);
    put_chunk(&mut out, &header);
    put_chunk(&mut out, &req.stdin);
    out
}

pub fn encode_response(resp: &Response) -> Vec<u8> {
    let header = serde_json::to_vec(resp).unwrap_or_default();
    let mut out = Vec::with_capacity(10 + header.len());
    prefix(&mut out);
    put_chunk(&mut out, &header);
    out
}

/// Just the prefix: what the daemon sends a peer of another protocol, which can read nothing
/// else of ours.
pub fn encode_prefix() -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    prefix(&mut out);
    out
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn prefix(&mut self) -> Result<(), ProtocolError> {
        // A message too short to hold the prefix is not ours either.
        let magic = self.take(4).map_err(|_| ProtocolError::NotPlexus)?;
        if magic != MAGIC {
            return Err(ProtocolError::NotPlexus);
        }
        let p = self.take(2)?;
        let theirs = u16::from_be_bytes([p[0], p[1]]);
        if theirs != PROTOCOL {
            return Err(ProtocolError::Protocol { theirs });
        }
        Ok(())
    }

    fn chunk(&mut self, what: &'static str, limit: usize) -> Result<&[u8], ProtocolError> {
        let l = self.take(4)?;
        let size = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if size > limit {
            return Err(ProtocolError::TooLarge { what, size, limit });
        }
        self.take(size)
    }
}

fn check_version(theirs: &str) -> Result<(), ProtocolError> {
    if theirs != VERSION {
        return Err(ProtocolError::Version {
            theirs: theirs.to_string(),
        });
    }
    Ok(())
}

pub fn decode_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
    let mut c = Cursor(bytes);
    c.prefix()?;
    let header = c.chunk("request header", MAX_HEADER_BYTES)?;
    let mut req: Request =
        serde_json::from_slice(header).map_err(|e| ProtocolError::Header(e.to_string()))?;
    check_version(&req.version)?;
    req.stdin = c.chunk("stdin", MAX_STDIN_BYTES)?.to_vec();
    Ok(req)
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, ProtocolError> {
    let mut c = Cursor(bytes);
    c.prefix()?;
    let header = c.chunk("response header", MAX_HEADER_BYTES + MAX_STDIN_BYTES)?;
    let resp: Response =
        serde_json::from_slice(header).map_err(|e| ProtocolError::Header(e.to_string()))?;
    check_version(&resp.version)?;
    Ok(resp)
}

/// Reads until EOF, at most `limit + 1` bytes so an oversized message is seen as one.
pub fn read_capped(r: &mut dyn Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            version: VERSION.into(),
            env: [("CNI_COMMAND".to_string(), "ADD".to_string())].into(),
            deadline_ms: 1000,
            stdin: b"{\xff not utf-8".to_vec(),
        }
    }

    #[test]
    fn request_round_trips_with_raw_stdin() {
        let req = request();
        assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
    }

    #[test]
    fn response_round_trips() {
        for resp in [
            Response::answered(1, Some("{\"code\":11}".into())),
            Response::answered(0, None),
            Response::refused("peer uid 65534 is not root"),
        ] {
            assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
        }
    }

    #[test]
    fn another_protocol_is_named_from_the_prefix_alone() {
        let mut bytes = encode_request(&request());
        bytes[5] = bytes[5].wrapping_add(1);
        let err = decode_request(&bytes).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::Protocol {
                theirs: PROTOCOL + 1
            }
        );
        assert!(err.is_skew());
        // The daemon answers such a peer with the bare prefix, which the other side can read.
        let mut answer = encode_prefix();
        answer[5] = answer[5].wrapping_add(1);
        assert!(decode_response(&answer).unwrap_err().is_skew());
    }

    #[test]
    fn another_package_version_is_refused() {
        let mut req = request();
        req.version = "0.0.1-other".into();
        let err = decode_request(&encode_request(&req)).unwrap_err();
        assert!(err.is_skew(), "{err}");
        assert!(err.to_string().contains("0.0.1-other"), "{err}");
    }

    #[test]
    fn garbage_truncation_and_oversize_are_errors() {
        assert_eq!(
            decode_request(b"GET / HTTP/1.1\r\n").unwrap_err(),
            ProtocolError::NotPlexus
        );
        assert_eq!(decode_request(b"PL").unwrap_err(), ProtocolError::NotPlexus);
        let bytes = encode_request(&request());
        assert_eq!(
            decode_request(&bytes[..bytes.len() - 1]).unwrap_err(),
            ProtocolError::Truncated
        );
        let mut huge = encode_prefix();
        huge.extend_from_slice(&(MAX_HEADER_BYTES as u32 + 1).to_be_bytes());
        assert!(matches!(
            decode_request(&huge).unwrap_err(),
            ProtocolError::TooLarge { .. }
        ));
    }
}
