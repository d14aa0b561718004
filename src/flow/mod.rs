//! The flow of one CNI call, as one library call: [`run`] takes a typed [`Request`] and the
//! [`Services`] that outlive a call, and returns the [`Report`] or the [`Error`]. The one-shot
//! binary, `plexus exec` and the node daemon all make this same call; they differ only in
//! where the request comes from and which services they keep.
//!
//! An ADD goes parse ([`Request::parse`]) → resolve → plan → journal → invoke → report, each
//! step its own module; the command files (`add.rs`, `del.rs`, `check.rs`, `gc.rs`,
//! `status.rs`) are the scripts over them.

mod add;
mod check;
mod del;
mod error;
mod gc;
mod hotplug;
mod status;

pub use error::Error;
pub use gc::GcFailure;
pub use hotplug::{Hotplugged, Outcome as HotplugOutcome, Skipped as HotplugSkipped, hotplug};
pub use status::NotReady;

use crate::conf::PlexusConf;
use crate::plan::{Attachment, PlanRequest, PodIdentity};
use crate::pod::PodRef;
use crate::report::Report;
use crate::store::NetworkStore;
use cni::env::{Env, EnvError};
use cni::{Command, IfName};
use std::io::Read;
use std::time::Duration;

fn read_env(get: impl Fn(&str) -> Option<String>) -> Result<(Env, PodRef), EnvError> {
    let env = Env::read(get, &LIMITS)?;
    let pod = PodRef::from_args(&env.args)?;
    Ok((env, pod))
}

/// What Plexus adds to the protocol's environment rules: the container ID names journal files.
const LIMITS: cni::env::Limits = cni::env::Limits {
    container_id: Some((
        crate::journal::MAX_CONTAINER_ID,
        "the journal names files after it",
    )),
};

/// One call: the command and its `CNI_*` environment, the pod it is for, and the conf.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Env,
    pub pod: PodRef,
    pub conf: PlexusConf,
    /// The conf as it came on stdin, for forwarding it unchanged to the daemon; empty for a
    /// request made in-process.
    pub stdin: Vec<u8>,
}

/// The whole answer for the runtime: exit code and stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub exit_code: u8,
    pub stdout: Option<String>,
}

impl Request {
    /// Step 1 of the flow: the CNI environment (`get`), then the conf on `stdin`, read in
    /// that order so a bad environment is answered without waiting for stdin. `Err` is the
    /// complete answer: VERSION's, which must answer even for a conf Plexus could not use
    /// otherwise, or the error object of a bad environment, stdin or conf.
    pub fn parse(
        get: impl Fn(&str) -> Option<String>,
        stdin: &mut dyn Read,
    ) -> Result<Request, Answer> {
        let (env, pod) = read_env(get).map_err(refused)?;
        let mut bytes = Vec::new();
        // One byte over the limit, so the conf parser reports the size itself.
        let limit = cni::netconf::MAX_CONF_BYTES as u64 + 1;
        if let Err(e) = stdin.take(limit).read_to_end(&mut bytes) {
            let obj = cni::ErrorObject::new(cni::Code::Io, format!("read stdin: {e}"), "");
            return Err(Answer {
                exit_code: 1,
                stdout: Some(obj.to_json()),
            });
        }
        let requested = || {
            cni::netconf::parse_object(&bytes).ok().and_then(|m| {
                m.get("cniVersion")
                    .and_then(|v| v.as_str().map(String::from))
            })
        };
        if env.command == Command::Version {
            let requested = requested().unwrap_or_else(|| cni::Version::LATEST.to_string());
            return Err(Answer {
                exit_code: 0,
                stdout: Some(cni::Version::version_info(&requested).to_string()),
            });
        }
        let conf = PlexusConf::parse(&bytes).map_err(|e| {
            let version = requested().unwrap_or_default();
            failed(&Error::from(e), &version)
        })?;
        Ok(Request {
            env,
            pod,
            conf,
            stdin: bytes,
        })
    }

    /// A request under a conf already read (`plexus exec`, the demo), from the environment
    /// `get` gives.
    pub fn with_conf(
        get: impl Fn(&str) -> Option<String>,
        conf: PlexusConf,
    ) -> Result<Request, EnvError> {
        let (env, pod) = read_env(get)?;
        Ok(Request {
            env,
            pod,
            conf,
            stdin: Vec::new(),
        })
    }

    pub fn command(&self) -> Command {
        self.env.command
    }

    pub fn container_id(&self) -> &str {
        self.env.container_id()
    }

    /// `CNI_IFNAME`, which the commands about one container need.
    fn ifname(&self) -> Result<&IfName, Error> {
        self.env.ifname.as_ref().ok_or(Error::Env(EnvError::Missing(
            "CNI_IFNAME",
            self.env.command,
        )))
    }

    /// What the runtime sent, in one line: enough to replay the call by hand.
    pub fn log(&self) {
        tracing::debug!(
            command = self.env.command.as_str(),
            container = self.container_id(),
            netns = %self.env.netns.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            ifname = self.env.ifname.as_ref().map(|i| i.as_str()).unwrap_or_default(),
            cni_args = %crate::log::redact_args(&self.env.args.to_string()),
            cni_path = %self.env.cni_path,
            conf = %crate::log::redact(&serde_json::Value::Object(self.conf.raw.clone())),
            "invoked"
        );
    }

    /// Longest wait for another operation on the same container to finish, and never longer
    /// than the call's `timeout`: a lock someone holds forever costs no more than a delegate
    /// that never answers.
    fn lock_wait(&self) -> Duration {
        Duration::from_secs(30).min(self.conf.timeout)
    }
}

/// What a call may use that outlives it.
#[derive(Default, Clone, Copy)]
pub struct Services<'a> {
    /// The store the caller keeps (the daemon's caches); without one, the conf's store is
    /// opened when the command needs it.
    pub store: Option<&'a dyn NetworkStore>,
}

/// The store of one call: the caller's, or the conf's, opened for it.
enum Store<'a> {
    Given(&'a dyn NetworkStore),
    Opened(Option<Box<dyn NetworkStore>>),
}

impl<'a> Store<'a> {
    fn of(
        services: &Services<'a>,
        conf: &PlexusConf,
    ) -> Result<Store<'a>, crate::store::StoreError> {
        match services.store {
            Some(s) => Ok(Store::Given(s)),
            None => crate::store::open(conf).map(Store::Opened),
        }
    }

    fn get(&self) -> Option<&dyn NetworkStore> {
        match self {
            Store::Given(s) => Some(*s),
            Store::Opened(s) => s.as_deref(),
        }
    }
}

/// Step 3 of the flow for this call: the resolved networks as attachments.
fn plan(req: &Request, resolved: &crate::resolve::Resolved) -> Result<Vec<Attachment>, Error> {
    let ifname = req.ifname()?;
    let infra = req
        .pod
        .infra_container_id
        .as_deref()
        .unwrap_or(req.container_id());
    let pod = req.pod.name.as_deref().map(|name| PodIdentity {
        namespace: req.pod.namespace(),
        name,
        uid: req.pod.uid.as_deref(),
        infra_container_id: infra,
    });
    Ok(crate::plan::plan(&PlanRequest {
        cluster: &resolved.cluster,
        defaults: &resolved.defaults,
        secondaries: &resolved.secondaries,
        runtime_ifname: ifname,
        runtime_config: &req.conf.runtime_config,
        pod,
    })?)
}

/// Runs one call, its netlink work over one connection per netns (see
/// [`delegates::netns::session`]).
pub fn run(req: &Request, services: &Services) -> Result<Report, Error> {
    delegates::netns::session(|| command(req, services))
}

fn command(req: &Request, services: &Services) -> Result<Report, Error> {
    match req.env.command {
        Command::Version => Ok(Report::version(&req.conf)),
        Command::Add => {
            let store = Store::of(services, &req.conf)?;
            add::add(req, store.get())
        }
        // DEL works from the journal: opening a store (parsing a manifests folder, building
        // an API client) would only slow the hot path. It opens one itself in the rare case
        // it must re-resolve an unreadable entry.
        Command::Del => del::del(req, services).map(|()| Report::default()),
        Command::Check => check::check(req).map(|()| Report::default()),
        Command::Gc => {
            let store = Store::of(services, &req.conf)?;
            gc::gc(req, store.get()).map(|()| Report::default())
        }
        // STATUS answers in its own codes (50/51), whatever keeps the store from opening.
        Command::Status => {
            let store = Store::of(services, &req.conf).map_err(|e| NotReady::Store(Box::new(e)))?;
            status::status(req, store.get()).map(|()| Report::default())
        }
    }
}

/// A call's outcome as the runtime gets it.
pub fn answer(req: &Request, outcome: Result<Report, Error>) -> Answer {
    match outcome {
        Ok(report) => Answer {
            exit_code: 0,
            stdout: report.stdout.map(|v| v.to_string()),
        },
        Err(e) => {
            tracing::error!(command = req.env.command.as_str(), container = req.container_id(), error = %e, "failed");
            failed(&e, &req.conf.cni_version_str)
        }
    }
}

/// What an environment that does not hold up gets.
pub fn refused(e: EnvError) -> Answer {
    failed(&Error::from(e), "")
}

fn failed(e: &Error, cni_version: &str) -> Answer {
    Answer {
        exit_code: 1,
        stdout: Some(e.to_object(cni_version).to_json()),
    }
}
