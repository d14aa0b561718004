//! STATUS: ready when the journal can be written, the readiness file (if any) exists, the
//! store answers, and the cluster network's delegates that speak 1.1.0 say they are ready.
//! Every "not ready" is code 50, with the reason.

use super::{Error, Request};
use crate::invoke::{self, Container, InvokeError, Runner, Target};
use crate::journal::{Journal, JournalError};
use crate::resolve::{self, Purpose, ResolveError};
use crate::store::{NetworkStore, StoreError};
use std::path::PathBuf;

/// Why Plexus cannot serve ADD now.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("{0}")]
    Journal(JournalError),
    #[error("journal dir {} is not writable: {source}", dir.display())]
    JournalReadOnly {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("readiness indicator file {} does not exist", .0.display())]
    NoReadinessFile(PathBuf),
    #[error("network store: {0}")]
    Store(Box<StoreError>),
    #[error("{kind} store: {source}")]
    StoreNotReady {
        kind: &'static str,
        #[source]
        source: Box<StoreError>,
    },
    #[error("cluster network: {0}")]
    ClusterNetwork(Box<ResolveError>),
    #[error("cluster network {key}: {source}")]
    ClusterConf {
        key: String,
        #[source]
        source: cni::netconf::ConfError,
    },
    #[error("{0}")]
    Delegate(InvokeError),
}

pub(super) fn status(req: &Request, store: Option<&dyn NetworkStore>) -> Result<(), Error> {
    let conf = &req.conf;
    let journal = Journal::open(&conf.cni_dir).map_err(NotReady::Journal)?;
    let probe = journal
        .dir()
        .join(format!(".status.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| NotReady::JournalReadOnly {
            dir: journal.dir().to_path_buf(),
            source,
        })?;
    if let Some(f) = &conf.readiness_indicator_file
        && !f.exists()
    {
        return Err(NotReady::NoReadinessFile(f.clone()).into());
    }
    if let Some(s) = store {
        s.ready().map_err(|source| NotReady::StoreNotReady {
            kind: s.kind(),
            source: Box::new(source),
        })?;
    }
    let r = resolve::resolve(conf, store, &req.pod, Purpose::Lookup)
        .map_err(|e| NotReady::ClusterNetwork(Box::new(e)))?;
    let list = cni::netconf::NetConfList::from_map(r.cluster.config.clone()).map_err(|source| {
        NotReady::ClusterConf {
            key: r.cluster.key.clone(),
            source,
        }
    })?;
    let runner = Runner::new(conf, &req.env.cni_path);
    let t = Target::new(&runner, &r.cluster.key, Container::NONE);
    invoke::status(&list, &t).map_err(|e| NotReady::Delegate(e).into())
}
