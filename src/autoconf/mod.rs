//! Making Plexus the node's CNI entry: `plexus generate-config` wraps the primary CNI conf
//! found in the conf dir into `00-plexus.conflist`; `plexus install` (the DaemonSet's init
//! step) installs the binary and a kubeconfig, then generates the conf; the readiness gate
//! makes ADD and GC wait for the cluster network.
//!
//! Files are only ever replaced atomically and never deleted: a half-written or missing conf
//! would let the runtime fall back to the primary CNI and start pods without their networks.
//! This module knows the Plexus conf's keys but nothing of the CNI commands.

pub mod atomic;
pub mod command;
pub mod generate;
pub mod install;
pub mod kubeconfig;
pub mod readiness;

pub use generate::{GenerateOptions, Generated, Skipped, generate};
pub use install::{InstallOptions, Installed, KubeconfigOptions, install};
pub use readiness::{ReadinessError, wait_for_conf, wait_for_readiness};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AutoconfError {
    #[error("read CNI conf dir {}: {source}", dir.display())]
    ReadConfDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no primary CNI conf in {}: {}",
        dir.display(),
        if skipped.is_empty() { "no .conf, .conflist or .json file".to_string() } else { format!("none usable ({})", skipped.join("; ")) }
    )]
    NoPrimary { dir: PathBuf, skipped: Vec<String> },
    #[error("primary CNI conf {}: {reason}", path.display())]
    BadPrimary { path: PathBuf, reason: String },
    #[error("{what} file name {name:?} {reason}")]
    BadFileName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("generated conf would not be accepted by plexus: {0}")]
    Invalid(String),
    #[error("read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {} must be an absolute path", path.display())]
    RelativePath { what: &'static str, path: PathBuf },
    #[error(
        "no API server for the kubeconfig: pass --server or run in a pod (KUBERNETES_SERVICE_HOST/PORT)"
    )]
    NoServer,
}
