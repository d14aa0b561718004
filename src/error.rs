//! The top error: every failure a CNI command can end in, each knowing its CNI code, so
//! `main` prints one error object and exits 1.

use cni::{Code, ErrorObject};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
    #[error(transparent)]
    Conf(Box<crate::conf::ConfError>),
    #[error(transparent)]
    Cache(Box<crate::cache::CacheError>),
    #[error(transparent)]
    Invoke(Box<crate::invoke::InvokeError>),
    #[error(transparent)]
    Store(Box<crate::store::StoreError>),
    #[error(transparent)]
    Selection(Box<crate::selection::SelectionError>),
    #[error(transparent)]
    Plan(Box<crate::plan::PlanError>),
    #[error(transparent)]
    Resolve(Box<crate::commands::ResolveError>),
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
    #[error("the pod already has an interface named {ifname}; it is left as it is")]
    InterfaceExists { ifname: String },
    #[error("container {container_id} has no attachment on {ifname}")]
    UnknownContainer {
        container_id: String,
        ifname: String,
    },
    #[error("DEL of container {container_id} left {} attachment(s): {}", .errors.len(), join(.errors))]
    Teardown {
        container_id: String,
        errors: Vec<crate::invoke::InvokeError>,
    },
    #[error("set the requested default route: {0}")]
    DefaultRoute(Box<delegates::DelegateError>),
    #[error("pod netns: {0}")]
    PodNetns(Box<delegates::DelegateError>),
    #[error("GC: {0}")]
    Gc(String),
    #[error("{0}")]
    Render(cni::result::ResultError),
    #[error("{0}")]
    NotReady(String),
    #[error(transparent)]
    Readiness(#[from] crate::autoconf::ReadinessError),
}

fn join(errors: &[crate::invoke::InvokeError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Env(e) => e.code(),
            Error::Conf(e) => e.code(),
            Error::Cache(e) => e.code(),
            Error::Invoke(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Selection(e) => e.code(),
            Error::Plan(e) => e.code(),
            Error::Resolve(e) => e.code(),
            Error::Duplicate { .. } | Error::IfnameTaken { .. } | Error::InterfaceExists { .. } => {
                Code::InvalidConfig
            }
            Error::UnknownContainer { .. } => Code::UnknownContainer,
            Error::Teardown { errors, .. } => {
                errors.first().map_or(Code::DelegateFailed, |e| e.code())
            }
            Error::Gc(_) => Code::DelegateFailed,
            Error::Render(e) => e.code(),
            Error::DefaultRoute(e) | Error::PodNetns(e) => delegate_code(e),
            Error::NotReady(_) => Code::NotAvailable,
            Error::Readiness(e) => e.code(),
        }
    }

    pub fn details(&self) -> String {
        match self {
            Error::Invoke(e) => e.details(),
            Error::Teardown { errors, .. } => errors
                .iter()
                .map(|e| e.details())
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        }
    }

    pub fn to_object(&self, cni_version: &str) -> ErrorObject {
        ErrorObject {
            cni_version: cni_version.to_string(),
            code: self.code().as_u32(),
            msg: self.to_string(),
            details: self.details(),
        }
    }
}

/// A built-in's own code, as the runtime sees it (see `InvokeError::code`).
fn delegate_code(e: &delegates::DelegateError) -> Code {
    match Code::from_u32(e.code()) {
        Some(
            c @ (Code::InvalidConfig | Code::TryAgainLater | Code::KernelLacksLinkKind | Code::Io),
        ) => c,
        _ => Code::DelegateFailed,
    }
}

impl From<crate::invoke::InvokeError> for Error {
    fn from(e: crate::invoke::InvokeError) -> Self {
        Error::Invoke(Box::new(e))
    }
}

impl From<crate::selection::SelectionError> for Error {
    fn from(e: crate::selection::SelectionError) -> Self {
        Error::Selection(Box::new(e))
    }
}

impl From<crate::plan::PlanError> for Error {
    fn from(e: crate::plan::PlanError) -> Self {
        Error::Plan(Box::new(e))
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Store(Box::new(e))
    }
}

impl From<crate::commands::ResolveError> for Error {
    fn from(e: crate::commands::ResolveError) -> Self {
        Error::Resolve(Box::new(e))
    }
}

impl From<crate::cache::CacheError> for Error {
    fn from(e: crate::cache::CacheError) -> Self {
        Error::Cache(Box::new(e))
    }
}

impl From<crate::conf::ConfError> for Error {
    fn from(e: crate::conf::ConfError) -> Self {
        Error::Conf(Box::new(e))
    }
}
