//! The CNI commands: ADD, DEL, CHECK, GC, STATUS, VERSION. Each takes the validated
//! invocation, the Plexus conf and the store, and returns what goes on stdout. The CLI's
//! `plexus exec` calls the same functions as the runtime's exec of the binary.

mod add;
mod del;
mod maintenance;
mod resolve;

pub use resolve::{
    NETWORKS_ANNOTATION, ResolveError, Resolved, network_by_reference, open_store, resolve,
};

use crate::cache::{Journal, JournaledAttachment};
use crate::conf::PlexusConf;
use crate::env::{Command, Invocation};
use crate::invoke::Runner;
use crate::store::NetworkStore;
use cni::CniResult;
use cni::netconf::NetConfList;
use serde_json::Value;
use std::time::Duration;

/// Longest wait for another operation on the same container to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What one attachment ended up as, for the CLI's summary table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachmentReport {
    pub network: String,
    pub ifname: String,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub delegates: Vec<String>,
    pub millis: u128,
}

/// What a command produced.
#[derive(Debug, Default)]
pub struct Report {
    /// The JSON document for stdout, if the command prints one.
    pub stdout: Option<Value>,
    pub attachments: Vec<AttachmentReport>,
    pub network_status: Option<Value>,
}

pub fn run(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn NetworkStore>,
) -> Result<Report, crate::Error> {
    match inv.command {
        Command::Version => Ok(Report {
            stdout: Some(cni::Version::version_info(&conf.cni_version_str)),
            ..Report::default()
        }),
        Command::Add => add::add(inv, conf, store),
        Command::Del => del::del(inv, conf, store).map(|()| Report::default()),
        Command::Check => maintenance::check(inv, conf).map(|()| Report::default()),
        Command::Gc => maintenance::gc(inv, conf, store).map(|()| Report::default()),
        Command::Status => maintenance::status(inv, conf, store).map(|()| Report::default()),
    }
}

/// How this command runs delegates. Plexus itself is never a delegate (no recursion).
fn runner<'a>(conf: &'a PlexusConf, inv: &Invocation) -> Runner<'a> {
    let mut forbidden = vec!["plexus"];
    if conf.plugin_type != "plexus" {
        forbidden.push(conf.plugin_type.as_str());
    }
    Runner {
        cni_path: conf.delegate_path(&inv.cni_path),
        timeout: conf.timeout,
        forbidden,
        builtins: &conf.builtins,
    }
}

/// A journaled attachment's conflist and cached result, as DEL and CHECK need them.
fn journaled_parts(a: &JournaledAttachment) -> (Option<NetConfList>, Option<CniResult>) {
    let list = match &a.conf {
        Value::Object(m) => NetConfList::from_map(m.clone()).ok(),
        _ => None,
    };
    let result = a
        .result
        .as_ref()
        .and_then(|r| CniResult::parse(r, cni::Version::V1_1_0).ok());
    (list, result)
}

fn journal(conf: &PlexusConf) -> Result<Journal, crate::Error> {
    Ok(Journal::open(&conf.cni_dir)?)
}

/// Steps 2–3 of the flow for this invocation: resolve the networks and plan the attachments.
fn plan_attachments(
    inv: &Invocation,
    conf: &PlexusConf,
    store: Option<&dyn crate::store::NetworkStore>,
    ifname: &cni::IfName,
    check_uid: bool,
) -> Result<(Resolved, Vec<crate::plan::Attachment>), crate::Error> {
    let resolved = resolve(conf, store, &inv.pod, check_uid)?;
    let infra = inv
        .pod
        .infra_container_id
        .as_deref()
        .unwrap_or(inv.container_id());
    let pod = inv
        .pod
        .name
        .as_deref()
        .map(|name| crate::plan::PodIdentity {
            namespace: inv.pod.namespace.as_deref().unwrap_or("default"),
            name,
            uid: inv.pod.uid.as_deref(),
            infra_container_id: infra,
        });
    let attachments = crate::plan::plan(&crate::plan::PlanRequest {
        cluster: &resolved.cluster,
        defaults: &resolved.defaults,
        secondaries: &resolved.secondaries,
        runtime_ifname: ifname,
        runtime_config: &conf.runtime_config,
        pod,
    })?;
    Ok((resolved, attachments))
}

/// A planned attachment as the journal records it before anything runs.
fn journal_record(a: &crate::plan::Attachment) -> JournaledAttachment {
    JournaledAttachment {
        network: a.network.clone(),
        ifname: a.ifname.to_string(),
        is_default: a.is_default,
        conf: a.conf.to_value(),
        cni_args: a.cni_args.clone(),
        state: crate::cache::State::Planned,
        result: None,
        default_route: a.default_route.clone(),
        device_id: a.device_id.clone(),
        delegate_error: None,
    }
}
