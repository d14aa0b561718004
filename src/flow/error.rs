//! The flow's error: every failure a CNI call can end in, composed of the steps' own errors,
//! each knowing its CNI code, so the caller prints one error object and exits 1.

use super::gc::GcFailure;
use super::status::NotReady;
use crate::autoconf::ReadinessError;
use crate::conf::ConfError;
use crate::invoke::InvokeError;
use crate::journal::JournalError;
use crate::plan::PlanError;
use crate::resolve::ResolveError;
use crate::store::StoreError;
use cni::env::EnvError;
use cni::result::ResultError;
use cni::{Code, ErrorObject};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error(transparent)]
    Readiness(#[from] ReadinessError),
    #[error(transparent)]
    Render(#[from] ResultError),
    #[error("GC: {}", join(.0))]
    Gc(Vec<GcFailure>),
    #[error(transparent)]
    NotReady(#[from] NotReady),
}

fn join(failures: &[GcFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Env(e) => e.code(),
            Error::Conf(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Resolve(e) => e.code(),
            Error::Plan(e) => e.code(),
            Error::Journal(e) => e.code(),
            Error::Invoke(e) => e.code(),
            Error::Readiness(e) => e.code(),
            Error::Render(e) => e.code(),
            // GC collects what it could not remove; the collection itself did not fail.
            Error::Gc(_) => Code::DelegateFailed,
            Error::NotReady(_) => Code::NotAvailable,
        }
    }

    /// The delegates' own words, for the error object's `details`.
    pub fn details(&self) -> String {
        match self {
            Error::Invoke(e) => e.details(),
            Error::Journal(e) => e.details(),
            _ => String::new(),
        }
    }

    /// The network whose failure ended the call, when the error names one.
    pub fn network(&self) -> Option<&str> {
        match self {
            Error::Invoke(e) => e.network(),
            Error::Journal(JournalError::Left { errors, .. }) => {
                errors.first().and_then(InvokeError::network)
            }
            Error::Resolve(e) => e.network(),
            _ => None,
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
