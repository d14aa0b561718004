//! The CNI error object (the spec's error result) and the error codes Plexus uses.

use serde::{Deserialize, Serialize};

/// Error codes: the spec's (0–99) and Plexus's own (100+): 100 a delegate failed (its own
/// code and words kept in `details`), 101 namespace isolation denied, 102 the pod's UID is
/// not the one the runtime named, 103 the kernel lacks a link kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedConnectivity = 51,
    DelegateFailed = 100,
    NamespaceIsolation = 101,
    PodUidMismatch = 102,
    KernelLacksLinkKind = 103,
}

impl Code {
    const ALL: [Code; 14] = [
        Code::IncompatibleVersion,
        Code::UnsupportedField,
        Code::UnknownContainer,
        Code::InvalidEnv,
        Code::Io,
        Code::Decode,
        Code::InvalidConfig,
        Code::TryAgainLater,
        Code::NotAvailable,
        Code::LimitedConnectivity,
        Code::DelegateFailed,
        Code::NamespaceIsolation,
        Code::PodUidMismatch,
        Code::KernelLacksLinkKind,
    ];

    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code a number on the wire names, if it is one of these.
    pub fn from_u32(n: u32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_u32() == n)
    }
}

/// A code equals the number that stands for it on the wire, so a test can say
/// `assert_eq!(e.code(), 7)` as the spec's table does.
impl PartialEq<u32> for Code {
    fn eq(&self, n: &u32) -> bool {
        self.as_u32() == *n
    }
}

/// What a plugin prints on stdout when it fails. `code` stays a plain number because delegates
/// may answer with any code (the reference plugins use 999 for most config errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ErrorObject {
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code: code.as_u32(),
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.cni_version = version.into();
        self
    }

    /// Renders the object the way it goes on stdout: one JSON document.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and a number cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"internal error\"}}", self.code))
    }
}

impl std::fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorObject {}
