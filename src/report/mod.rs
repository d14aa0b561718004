//! Step 6 of the flow, the report: what the runtime gets on stdout (the cluster network's
//! result or every attachment's merged, in the runtime's `cniVersion`), the pod's
//! network-status, and the summary the CLI prints. Pure functions of the attachments and
//! their results; publishing the network-status is the store's.

mod status;

pub use status::{NetworkStatus, StatusInput, merged_result, network_status, pci_device_info};

use crate::conf::{PlexusConf, ResultMode};
use crate::plan::Attachment;
use cni::CniResult;
use cni::result::ResultError;
use serde_json::Value;
use std::time::Duration;

/// What one attachment ended up as, for the CLI's summary table and the daemon's metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachmentReport {
    pub network: String,
    pub ifname: String,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub delegates: Vec<String>,
    pub millis: u128,
}

impl AttachmentReport {
    pub fn new(att: &Attachment, result: &CniResult, took: Duration) -> AttachmentReport {
        let sandbox = result
            .interfaces
            .iter()
            .position(|i| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()));
        AttachmentReport {
            network: att.network.clone(),
            ifname: att.ifname.to_string(),
            ips: result.ips.iter().map(|ip| ip.address.to_string()).collect(),
            mac: sandbox.and_then(|i| result.interfaces[i].mac.clone()),
            delegates: att
                .conf
                .plugins
                .iter()
                .map(|p| p.plugin_type().unwrap_or_default().to_string())
                .collect(),
            millis: took.as_millis(),
        }
    }
}

/// What a command produced.
#[derive(Debug, Default)]
pub struct Report {
    /// The JSON document for stdout, if the command prints one.
    pub stdout: Option<Value>,
    pub attachments: Vec<AttachmentReport>,
    pub network_status: Option<Value>,
}

impl Report {
    /// VERSION's answer: every version Plexus speaks.
    pub fn version(conf: &PlexusConf) -> Report {
        Report {
            stdout: Some(cni::Version::version_info(&conf.cni_version_str)),
            ..Report::default()
        }
    }
}

/// The pod's network-status annotation for the plan's attachments and their results.
pub fn pod_status(attachments: &[Attachment], results: &[CniResult]) -> Option<Value> {
    let device_infos: Vec<Option<Value>> = attachments
        .iter()
        .map(|a| a.device_id.as_deref().and_then(pci_device_info))
        .collect();
    let inputs: Vec<StatusInput> = attachments
        .iter()
        .zip(results)
        .zip(&device_infos)
        .map(|((a, r), info)| StatusInput {
            network: &a.network,
            is_default: a.is_default,
            result: r,
            default_route: &a.default_route,
            device_info: info.as_ref(),
        })
        .collect();
    serde_json::to_value(network_status(&inputs)).ok()
}

/// The result the runtime gets, in the conf's `cniVersion`. 0.1.0/0.2.0 cannot carry a
/// result without an address: refused, as libcni refuses it.
pub fn result(conf: &PlexusConf, results: &[CniResult]) -> Result<Value, ResultError> {
    let result = match conf.result_mode {
        ResultMode::Cluster => results.first().cloned().unwrap_or_default(),
        ResultMode::Merged => merged_result(&results.iter().collect::<Vec<_>>()),
    };
    result.try_to_value(conf.cni_version)
}
