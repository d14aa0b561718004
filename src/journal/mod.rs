//! Step 4 of the flow, the journal: what Plexus planned and did for each (container, ifname),
//! written before the first delegate runs, so DEL can always undo an ADD — after a crash, a
//! `kill -9`, a deleted NAD or with the API server down.
//!
//! This module owns how an attachment is recorded ([`Record`]: its conf exactly as run, its
//! result, the identities of the links it made), the files ([`Journal`]), the ADD
//! transaction ([`AddTransaction`]: record the plan, mark each attachment started and done,
//! abort or commit, and the one place that decides when the entry goes to disk), and the
//! reverse replay that undoes an entry ([`undo`]), shared by an aborted ADD, DEL and GC. It
//! runs delegates only through `invoke`.

mod files;
mod lock;
mod record;
mod transaction;
pub mod undo;

pub use files::{Journal, Lookup, MAX_CONTAINER_ID, parse};
pub use lock::{ContainerLock, LOCK_FILE};
pub use record::{Entry, Record, State, now_secs};
pub use transaction::AddTransaction;

use crate::invoke::InvokeError;
use cni::Code;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal dir {dir}: {reason}")]
    UnsafeDir { dir: PathBuf, reason: String },
    #[error("journal {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal lock for container {container_id} still held after {waited:?}")]
    LockTimeout {
        container_id: String,
        waited: Duration,
    },
    #[error("container {container_id} already has an attachment on {ifname}: DEL it first")]
    Duplicate {
        container_id: String,
        ifname: String,
    },
    #[error(
        "container {container_id} already has {ifname} from its ADD on {other}: this ADD would reuse it"
    )]
    IfnameTaken {
        container_id: String,
        ifname: String,
        other: String,
    },
    #[error("container {container_id} has no attachment on {ifname}")]
    Unknown {
        container_id: String,
        ifname: String,
    },
    #[error("DEL of container {container_id} left {} attachment(s): {}", .errors.len(), join(.errors))]
    Left {
        container_id: String,
        errors: Vec<InvokeError>,
    },
}

fn join(errors: &[InvokeError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl JournalError {
    /// The state dir is read-only: DEL goes on best effort, ADD must not start.
    pub fn is_read_only(&self) -> bool {
        matches!(self, JournalError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::EROFS))
    }

    pub fn code(&self) -> Code {
        match self {
            JournalError::LockTimeout { .. } => Code::TryAgainLater,
            JournalError::UnsafeDir { .. } | JournalError::Io { .. } => Code::Io,
            JournalError::Duplicate { .. } | JournalError::IfnameTaken { .. } => {
                Code::InvalidConfig
            }
            JournalError::Unknown { .. } => Code::UnknownContainer,
            JournalError::Left { errors, .. } => errors
                .first()
                .map_or(Code::DelegateFailed, InvokeError::code),
        }
    }

    /// The delegates' own words for what DEL left.
    pub fn details(&self) -> String {
        match self {
            JournalError::Left { errors, .. } => errors
                .iter()
                .map(InvokeError::details)
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        }
    }
}
