//! The one error type the built-in delegates return, and its CNI error code.

use crate::ipam::IpamFailure;
use crate::netns::NetNsError;
use cni::{Code, ErrorObject};

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("invalid config key {key:?}: {reason}")]
    Config { key: String, reason: String },
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("kernel lacks {kind}")]
    KernelLacks {
        kind: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{step}")]
    Netlink {
        step: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{step}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}: {reason}")]
    Failed { step: String, reason: String },
    #[error("{step}")]
    Nftables {
        step: String,
        #[source]
        source: crate::nftables::NftError,
    },
    #[error("{what} still held by another call after {waited:?}")]
    Busy {
        what: String,
        waited: std::time::Duration,
    },
    /// The pod already has an interface of the requested name (the spec: the plugin must
    /// fail); it is kept.
    #[error("the pod already has an interface named {ifname}; it is left as it is")]
    Exists { ifname: String },
    #[error("ipam: {0}")]
    Ipam(#[source] IpamFailure),
    /// The result cannot be written in the conf's version: libcni refuses a 0.1.0/0.2.0
    /// result without an address.
    #[error(transparent)]
    Unreportable(#[from] cni::result::ResultError),
    /// DEL keeps going after a failure and reports all of them at the end.
    #[error("{}", join(.0))]
    Many(Vec<DelegateError>),
}

fn join(errors: &[DelegateError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The errno of a kernel refusal, positive (`EEXIST`, not `-EEXIST`).
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

impl DelegateError {
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        DelegateError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn netlink(step: impl Into<String>, source: rtnetlink::Error) -> Self {
        DelegateError::Netlink {
            step: step.into(),
            source,
        }
    }

    pub fn code(&self) -> u32 {
        use nix::libc::{EAGAIN, EBUSY, EINTR};
        match self {
            DelegateError::Config { .. } | DelegateError::Exists { .. } => {
                Code::InvalidConfig.as_u32()
            }
            DelegateError::NetNs(NetNsError::TimedOut { .. }) | DelegateError::Busy { .. } => {
                Code::TryAgainLater.as_u32()
            }
            DelegateError::NetNs(_) | DelegateError::Io { .. } => Code::Io.as_u32(),
            DelegateError::KernelLacks { .. } => Code::KernelLacksLinkKind.as_u32(),
            DelegateError::Netlink { source, .. } => match errno(source) {
                Some(EAGAIN | EBUSY | EINTR) => Code::TryAgainLater.as_u32(),
                _ => Code::DelegateFailed.as_u32(),
            },
            DelegateError::Failed { .. } | DelegateError::Nftables { .. } => {
                Code::DelegateFailed.as_u32()
            }
            // IPAM's own code reaches the runtime unchanged, as the reference plugins do.
            DelegateError::Ipam(e) => e.code(),
            DelegateError::Unreportable(e) => e.code().as_u32(),
            DelegateError::Many(list) => list
                .first()
                .map_or(Code::DelegateFailed.as_u32(), DelegateError::code),
        }
    }

    pub fn to_error_object(&self) -> ErrorObject {
        if let DelegateError::Ipam(e) = self {
            return e.to_error_object();
        }
        let mut details = Vec::new();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            details.push(s.to_string());
            source = s.source();
        }
        ErrorObject {
            cni_version: String::new(),
            code: self.code(),
            msg: self.to_string(),
            details: details.join(": "),
        }
    }

    /// Whether this (DEL) failure is only the delegate's conf failing validation: ADD
    /// validated the same conf before it created anything and refused it, so there is
    /// nothing to undo and DEL may count as done.
    pub fn is_refused_conf(&self) -> bool {
        match self {
            DelegateError::Config { .. } => true,
            DelegateError::Many(list) => list.iter().all(DelegateError::is_refused_conf),
            _ => false,
        }
    }

    /// Folds a list of DEL failures into one result.
    pub fn collect(mut errors: Vec<DelegateError>) -> Result<(), DelegateError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(DelegateError::Many(errors)),
        }
    }
}
