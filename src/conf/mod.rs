//! The Plexus conf the runtime hands over on stdin: Multus's thin-plugin keys with the same
//! meaning (a Multus `00-multus.conf` works after changing `type`), plus `manifests`,
//! `timeout` and `resultMode`. Keys Plexus does not know stay in [`PlexusConf::raw`].

use crate::log::{LogFormat, LogOptions, Settings};
use cni::Version;
use cni::netconf::{ConfError as NetConfError, parse_object};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/plexus";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(60);
pub const DEFAULT_DEL_ATTEMPTS: u32 = 5;
pub const DEFAULT_DEL_GIVE_UP_AFTER: Duration = Duration::from_secs(300);
/// How long ADD and GC wait for `readinessindicatorfile` (Multus's 45 s).
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one call through the node daemon may take before the shim gets code 11.
pub const DEFAULT_DAEMON_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("decode plexus conf: {0}")]
    Decode(#[from] cni::netconf::DecodeError),
    #[error("plexus conf: {0}")]
    NetConf(NetConfError),
    #[error("plexus conf key {key:?} must be a string")]
    WrongType { key: &'static str },
    #[error("plexus conf key {key:?}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfError {
    pub fn code(&self) -> cni::Code {
        match self {
            ConfError::Decode(_) | ConfError::WrongType { .. } => cni::Code::Decode,
            ConfError::NetConf(NetConfError::Version(_)) => cni::Code::IncompatibleVersion,
            ConfError::NetConf(NetConfError::WrongType { .. }) => cni::Code::Decode,
            _ => cni::Code::InvalidConfig,
        }
    }
}

/// Which result the runtime gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultMode {
    /// The cluster network's result, as Multus returns it.
    #[default]
    Cluster,
    /// Every attachment's interfaces, IPs and routes.
    Merged,
}

/// Which plugin types run in-process. `"builtins": false` execs every type from the plugin
/// path; `{"bridge": false}` execs just that one (the reference binary of the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builtins {
    pub enabled: bool,
    pub overrides: std::collections::BTreeMap<String, bool>,
}

impl Default for Builtins {
    fn default() -> Self {
        Builtins {
            enabled: true,
            overrides: Default::default(),
        }
    }
}

impl Builtins {
    pub fn allows(&self, plugin_type: &str) -> bool {
        self.overrides
            .get(plugin_type)
            .copied()
            .unwrap_or(self.enabled)
    }
}

/// Where the cluster network comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterNetwork {
    /// `clusterNetwork`: a NAD (`[ns/]name`), a conf name in `confDir`, a directory or a file.
    Reference(String),
    /// `delegates[0]`: an inline conf or conflist.
    Inline(Map<String, Value>),
}

/// `namespaceIsolation` and `globalNamespaces`: which namespaces' NADs a pod may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    pub enabled: bool,
    /// Namespaces every pod may use, besides its own.
    pub global: Vec<String>,
}

/// A DEL that keeps failing answers success once it has failed `attempts` times over at
/// least `give_up_after`; the entry stays as a tombstone that GC retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelPolicy {
    pub attempts: u32,
    pub give_up_after: Duration,
}

/// Thick mode: the node daemon the shim forwards calls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// `daemonSocketDir`: forward each call to the node daemon's socket in this folder.
    pub socket_dir: Option<PathBuf>,
    /// `daemonFallback`: with the daemon down, run ADD/CHECK/GC/STATUS in-process (DEL always is).
    pub fallback: bool,
    /// `daemonTimeout`: how long a call through the daemon may take.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct PlexusConf {
    pub cni_version: Version,
    pub cni_version_str: String,
    pub name: String,
    pub plugin_type: String,
    pub kubeconfig: Option<PathBuf>,
    pub manifests: Option<PathBuf>,
    pub conf_dir: PathBuf,
    pub cni_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub cluster_network: ClusterNetwork,
    /// `delegates[1..]` when `clusterNetwork` is unset: attached after the cluster network,
    /// in order, as `net1`, `net2`, ... (Multus's meaning), in every namespace.
    pub extra_delegates: Vec<Map<String, Value>>,
    pub default_networks: Vec<String>,
    pub multus_namespace: String,
    pub system_namespaces: Vec<String>,
    pub isolation: Isolation,
    pub readiness_indicator_file: Option<PathBuf>,
    pub readiness_timeout: Duration,
    pub retry_delete_on_error: bool,
    pub del_policy: DelPolicy,
    /// Client read timeout per API request (`apiTimeout`, seconds).
    pub api_timeout: Option<Duration>,
    /// The kubelet's device-plugin checkpoint (`deviceCheckpoint`).
    pub device_checkpoint: PathBuf,
    /// Read the conf of an empty-spec NAD from `confDir` (off: see resolve).
    pub nad_conf_from_conf_dir: bool,
    pub auxiliary_cni_chain_name: Option<String>,
    pub log: crate::log::Settings,
    pub timeout: Duration,
    pub gc_grace: Duration,
    pub result_mode: ResultMode,
    pub builtins: Builtins,
    /// The folders a NAD's built-in host-local `dataDir` may name (`ipamDataDirs`).
    pub ipam_data_dirs: Vec<PathBuf>,
    /// Pod-level `runtimeConfig` from the runtime: reaches the cluster network only (NPWG §7.5).
    pub runtime_config: Map<String, Value>,
    pub daemon: Daemon,
    /// The whole conf as received, unknown keys included.
    pub raw: Map<String, Value>,
}

impl PlexusConf {
    pub fn parse(bytes: &[u8]) -> Result<PlexusConf, ConfError> {
        let raw = parse_object(bytes)?;
        Self::from_map(raw)
    }

    /// Reads every key, in a fixed order, so a conf with several mistakes is always
    /// reported by the same key.
    pub fn from_map(raw: Map<String, Value>) -> Result<PlexusConf, ConfError> {
        let r = Reader(&raw);
        let (cni_version, cni_version_str, name, plugin_type) = identity(&r)?;
        let (cluster_network, extra_delegates) = networks(&r, &cni_version_str)?;
        let result_mode = result_mode(&r)?;
        let (log_format, log_level) = log_format_and_level(&r)?;
        let global_namespaces = global_namespaces(&r)?;
        let runtime_config = runtime_config(&r)?;
        let builtins = builtins(&r)?;
        let ipam_data_dirs = ipam_data_dirs(&raw, &cluster_network, &extra_delegates)?;
        Ok(PlexusConf {
            cni_version,
            cni_version_str,
            name,
            plugin_type,
            kubeconfig: r.abs_path("kubeconfig")?,
            manifests: r.abs_path("manifests")?,
            conf_dir: r.abs_path_or("confDir", DEFAULT_CONF_DIR)?,
            cni_dir: r.abs_path_or("cniDir", DEFAULT_CNI_DIR)?,
            bin_dir: r.abs_path_or("binDir", DEFAULT_BIN_DIR)?,
            cluster_network,
            extra_delegates,
            default_networks: r.string_list("defaultNetworks")?,
            multus_namespace: r
                .string("multusNamespace")?
                .unwrap_or_else(|| "kube-system".into()),
            system_namespaces: if raw.contains_key("systemNamespaces") {
                r.string_list("systemNamespaces")?
            } else {
                vec!["kube-system".into()]
            },
            isolation: Isolation {
                enabled: r.boolean("namespaceIsolation")?.unwrap_or(false),
                global: global_namespaces,
            },
            readiness_indicator_file: r.abs_path("readinessindicatorfile")?,
            readiness_timeout: r
                .seconds_allow_zero("readinessTimeout")?
                .unwrap_or(DEFAULT_READINESS_TIMEOUT),
            retry_delete_on_error: r.boolean("retryDeleteOnError")?.unwrap_or(false),
            nad_conf_from_conf_dir: r.boolean("nadConfFromConfDir")?.unwrap_or(false),
            api_timeout: r.seconds("apiTimeout")?,
            del_policy: del_policy(&r)?,
            device_checkpoint: r.abs_path_or(
                "deviceCheckpoint",
                crate::store::devices::KUBELET_CHECKPOINT,
            )?,
            auxiliary_cni_chain_name: r.string("auxiliaryCNIChainName")?,
            log: Settings {
                file: r.abs_path("logFile")?,
                level: log_level,
                to_stderr: r.boolean("logToStderr")?.unwrap_or(true),
                format: log_format,
                options: log_options(&r)?,
            },
            timeout: r.seconds("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
            gc_grace: r
                .seconds_allow_zero("gcGracePeriod")?
                .unwrap_or(DEFAULT_GC_GRACE),
            result_mode,
            builtins,
            ipam_data_dirs,
            runtime_config,
            daemon: daemon(&r)?,
            raw,
        })
    }

    /// `binDir` first, then the runtime's `CNI_PATH` (Multus's order).
    pub fn delegate_path(&self, cni_path: &str) -> String {
        if cni_path.is_empty() {
            self.bin_dir.display().to_string()
        } else {
            format!("{}:{}", self.bin_dir.display(), cni_path)
        }
    }
}

/// `resultMode`: what the runtime gets on stdout.
fn result_mode(r: &Reader) -> Result<ResultMode, ConfError> {
    match r.string("resultMode")?.as_deref() {
        None | Some("cluster") => Ok(ResultMode::Cluster),
        Some("merged") => Ok(ResultMode::Merged),
        Some(other) => Err(ConfError::Invalid {
            key: "resultMode",
            reason: format!("{other:?} is neither \"cluster\" nor \"merged\""),
        }),
    }
}

/// Thick mode: `daemonSocketDir`, `daemonFallback`, `daemonTimeout`.
fn daemon(r: &Reader) -> Result<Daemon, ConfError> {
    Ok(Daemon {
        socket_dir: r.abs_path("daemonSocketDir")?,
        fallback: r.boolean("daemonFallback")?.unwrap_or(true),
        timeout: r
            .seconds("daemonTimeout")?
            .unwrap_or(DEFAULT_DAEMON_TIMEOUT),
    })
}

/// `cniVersion` (or `cniVersions`), `name` and `type`. The protocol's own keys with the wrong
/// JSON type are decode errors (code 6), as the reference plugins' typed decoding reports
/// them; Plexus's keys are code 7.
fn identity(r: &Reader) -> Result<(Version, String, String, String), ConfError> {
    for key in ["cniVersion", "name", "type"] {
        if matches!(r.0.get(key), Some(v) if !v.is_string()) {
            return Err(ConfError::WrongType { key });
        }
    }
    let cni_version = cni::netconf::negotiate_version(r.0).map_err(ConfError::NetConf)?;
    let cni_version_str = r
        .string("cniVersion")?
        .unwrap_or_else(|| cni_version.to_string());
    let name = r.string("name")?.ok_or(ConfError::Invalid {
        key: "name",
        reason: "is required".into(),
    })?;
    if !cni::names::is_valid_name(&name) {
        return Err(ConfError::Invalid {
            key: "name",
            reason: format!("{name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        });
    }
    let plugin_type = r.string("type")?.ok_or(ConfError::Invalid {
        key: "type",
        reason: "is required".into(),
    })?;
    Ok((cni_version, cni_version_str, name, plugin_type))
}

/// `clusterNetwork`, else `delegates[0]`, and the rest of `delegates`. `delegates` is checked
/// whether or not clusterNetwork makes it unused: a wrong shape is a mistake either way.
fn networks(
    r: &Reader,
    cni_version: &str,
) -> Result<(ClusterNetwork, Vec<Map<String, Value>>), ConfError> {
    let delegates = inline_delegates(r.0, cni_version)?;
    match (r.string("clusterNetwork")?, delegates) {
        (Some(c), _) if !c.is_empty() => Ok((ClusterNetwork::Reference(c), Vec::new())),
        (_, Some(mut list)) if !list.is_empty() => {
            let first = list.remove(0);
            Ok((ClusterNetwork::Inline(first), list))
        }
        _ => Err(ConfError::Invalid {
            key: "clusterNetwork",
            reason: "one of clusterNetwork or delegates is required".into(),
        }),
    }
}

/// `globalNamespaces`: Multus takes a comma-separated string; a list is accepted too.
fn global_namespaces(r: &Reader) -> Result<Vec<String>, ConfError> {
    match r.0.get("globalNamespaces") {
        None | Some(Value::Null) => Ok(vec!["default".to_string()]),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()),
        Some(Value::Array(_)) => r.string_list("globalNamespaces"),
        Some(_) => Err(ConfError::Invalid {
            key: "globalNamespaces",
            reason: "must be a comma-separated string".into(),
        }),
    }
}

/// The pod-level `runtimeConfig`. Go runtimes spell the values' fields as Go field names
/// (`HostPort`, `IngressRate`, `Servers`); delegates get the conventions' spelling.
fn runtime_config(r: &Reader) -> Result<Map<String, Value>, ConfError> {
    match r.0.get("runtimeConfig") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(cni::capability::canonical_map(m)),
        Some(_) => Err(ConfError::Invalid {
            key: "runtimeConfig",
            reason: "must be an object".into(),
        }),
    }
}

fn builtins(r: &Reader) -> Result<Builtins, ConfError> {
    let invalid = |reason: String| ConfError::Invalid {
        key: "builtins",
        reason,
    };
    match r.0.get("builtins") {
        None | Some(Value::Null) => Ok(Builtins::default()),
        Some(Value::Bool(b)) => Ok(Builtins {
            enabled: *b,
            overrides: Default::default(),
        }),
        Some(Value::Object(m)) => {
            let mut overrides = std::collections::BTreeMap::new();
            for (k, v) in m {
                let Value::Bool(b) = v else {
                    return Err(invalid(format!("{k:?} must be true or false")));
                };
                overrides.insert(k.clone(), *b);
            }
            Ok(Builtins {
                enabled: true,
                overrides,
            })
        }
        Some(_) => Err(invalid(
            "must be true, false or an object of plugin types".into(),
        )),
    }
}

fn log_format_and_level(r: &Reader) -> Result<(LogFormat, String), ConfError> {
    let format = match r.string("logFormat")?.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfError::Invalid {
                key: "logFormat",
                reason: format!("{other:?} is neither \"text\" nor \"json\""),
            });
        }
    };
    let level = r.string("logLevel")?.unwrap_or_else(|| "error".into());
    if !matches!(
        level.as_str(),
        "panic" | "error" | "warning" | "warn" | "info" | "verbose" | "debug" | "trace"
    ) {
        return Err(ConfError::Invalid {
            key: "logLevel",
            reason: format!("{level:?} is not a log level"),
        });
    }
    Ok((format, level))
}

fn log_options(r: &Reader) -> Result<Option<LogOptions>, ConfError> {
    match r.0.get("logOptions") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => LogOptions::from_value(v)
            .map(Some)
            .map_err(|reason| ConfError::Invalid {
                key: "logOptions",
                reason,
            }),
    }
}

fn del_policy(r: &Reader) -> Result<DelPolicy, ConfError> {
    let attempts = match r.0.get("delAttempts") {
        None | Some(Value::Null) => DEFAULT_DEL_ATTEMPTS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=1000).contains(n))
            .map(|n| n as u32)
            .ok_or(ConfError::Invalid {
                key: "delAttempts",
                reason: "must be a whole number in 1..=1000".into(),
            })?,
    };
    Ok(DelPolicy {
        attempts,
        give_up_after: r
            .seconds_allow_zero("delGiveUpAfter")?
            .unwrap_or(DEFAULT_DEL_GIVE_UP_AFTER),
    })
}

/// `delegates`: a list of network confs or conflists, each checked to be one. An entry
/// without `cniVersion` speaks Plexus's own (as a conflist's plugins take the list's).
/// `None` when the key is absent.
fn inline_delegates(
    raw: &Map<String, Value>,
    cni_version: &str,
) -> Result<Option<Vec<Map<String, Value>>>, ConfError> {
    let invalid = |reason: String| ConfError::Invalid {
        key: "delegates",
        reason,
    };
    let list = match raw.get("delegates") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("must be a list of network confs".into())),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let Value::Object(m) = entry else {
            return Err(invalid(format!(
                "entry {i} must be a conf or conflist object"
            )));
        };
        let mut m = m.clone();
        if !m.contains_key("cniVersion") && !m.contains_key("cniVersions") {
            m.insert("cniVersion".into(), Value::from(cni_version));
        }
        // A missing name is filled in when the network is planned; everything else about
        // the entry must already hold.
        let mut probe = m.clone();
        probe
            .entry("name")
            .or_insert_with(|| Value::from("delegate"));
        cni::netconf::NetConfList::from_map(probe)
            .map_err(|e| invalid(format!("entry {i}: {e}")))?;
        out.push(m);
    }
    Ok(Some(out))
}

/// `ipamDataDirs`: absolute folders, default the reference host-local's `dataDir`. Set by
/// the node's admin in the Plexus conf; NADs only choose among them. The `dataDir`s of the
/// inline networks (`delegates`) are the admin's own choice and allowed too.
fn ipam_data_dirs(
    raw: &Map<String, Value>,
    cluster: &ClusterNetwork,
    extra_delegates: &[Map<String, Value>],
) -> Result<Vec<PathBuf>, ConfError> {
    const KEY: &str = "ipamDataDirs";
    let plain = |p: &std::path::Path| {
        p.is_absolute() && !p.components().any(|c| c == std::path::Component::ParentDir)
    };
    let mut dirs = if matches!(raw.get(KEY), None | Some(Value::Null)) {
        vec![PathBuf::from(delegates::ipam::DEFAULT_DATA_DIR)]
    } else {
        Reader(raw)
            .string_list(KEY)?
            .iter()
            .map(|d| {
                let p = PathBuf::from(d);
                if plain(&p) {
                    Ok(p)
                } else {
                    Err(ConfError::Invalid {
                        key: KEY,
                        reason: format!("{d:?} is not an absolute path without .. steps"),
                    })
                }
            })
            .collect::<Result<_, _>>()?
    };
    let inline = match cluster {
        ClusterNetwork::Inline(m) => Some(m),
        ClusterNetwork::Reference(_) => None,
    };
    for m in inline.into_iter().chain(extra_delegates) {
        let plugins = m.get("plugins").and_then(Value::as_array);
        let confs =
            std::iter::once(m).chain(plugins.into_iter().flatten().filter_map(Value::as_object));
        for c in confs {
            let dir = c
                .get("ipam")
                .and_then(|i| i.get("dataDir"))
                .and_then(Value::as_str)
                .map(PathBuf::from);
            if let Some(d) = dir.filter(|d| plain(d) && !dirs.contains(d)) {
                dirs.push(d);
            }
        }
    }
    Ok(dirs)
}

/// Typed reads of the conf's keys; every error names its key.
struct Reader<'a>(&'a Map<String, Value>);

impl Reader<'_> {
    fn string(&self, key: &'static str) -> Result<Option<String>, ConfError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfError::Invalid {
                key,
                reason: "must be a string".into(),
            }),
        }
    }

    fn boolean(&self, key: &'static str) -> Result<Option<bool>, ConfError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ConfError::Invalid {
                key,
                reason: "must be true or false".into(),
            }),
        }
    }

    fn string_list(&self, key: &'static str) -> Result<Vec<String>, ConfError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or(ConfError::Invalid {
                        key,
                        reason: "must be a list of strings".into(),
                    })
                })
                .collect(),
            Some(_) => Err(ConfError::Invalid {
                key,
                reason: "must be a list of strings".into(),
            }),
        }
    }

    fn abs_path_or(&self, key: &'static str, default: &str) -> Result<PathBuf, ConfError> {
        Ok(self.abs_path(key)?.unwrap_or_else(|| default.into()))
    }

    fn abs_path(&self, key: &'static str) -> Result<Option<PathBuf>, ConfError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => {
                let p = PathBuf::from(&s);
                if !p.is_absolute() {
                    return Err(ConfError::Invalid {
                        key,
                        reason: format!("{s:?} is not an absolute path"),
                    });
                }
                Ok(Some(p))
            }
        }
    }

    fn seconds(&self, key: &'static str) -> Result<Option<Duration>, ConfError> {
        match self.seconds_allow_zero(key)? {
            Some(d) if d.is_zero() => Err(ConfError::Invalid {
                key,
                reason: "must be a positive number of seconds".into(),
            }),
            other => Ok(other),
        }
    }

    fn seconds_allow_zero(&self, key: &'static str) -> Result<Option<Duration>, ConfError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if (0.0..=86_400.0).contains(&f) => Ok(Some(Duration::from_secs_f64(f))),
                _ => Err(ConfError::Invalid {
                    key,
                    reason: format!("{n} is not a number of seconds in 0..=86400"),
                }),
            },
            Some(_) => Err(ConfError::Invalid {
                key,
                reason: "must be a number of seconds".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PlexusConf, ConfError> {
        PlexusConf::parse(s.as_bytes())
    }

    #[test]
    fn reads_a_multus_thin_conf() {
        let c = parse(
            r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"plexus",
                "kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig",
                "confDir":"/etc/cni/multus/net.d","cniDir":"/var/lib/cni/multus","binDir":"/opt/cni/bin",
                "logFile":"/var/log/multus.log","logLevel":"debug","logToStderr":false,
                "capabilities":{"portMappings":true},
                "readinessindicatorfile":"/run/flannel/subnet.env",
                "namespaceIsolation":true,"globalNamespaces":"default,shared",
                "multusNamespace":"kube-system","systemNamespaces":["kube-system"],
                "defaultNetworks":["extra"],"retryDeleteOnError":true,
                "delegates":[{"cniVersion":"0.3.1","name":"flannel","type":"flannel"}]}"#,
        )
        .unwrap();
        assert_eq!(c.isolation.global, ["default", "shared"]);
        assert!(matches!(c.cluster_network, ClusterNetwork::Inline(_)));
        assert_eq!(c.cni_dir, PathBuf::from("/var/lib/cni/multus"));
        assert!(c.retry_delete_on_error);
        assert_eq!(c.default_networks, ["extra"]);
    }

    #[test]
    fn cluster_network_wins_over_delegates() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"cbr0",
                "delegates":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(c.cluster_network, ClusterNetwork::Reference("cbr0".into()));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus"}"#,
                "clusterNetwork",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c","timeout":0}"#,
                "timeout",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c","timeout":"5"}"#,
                "timeout",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c","resultMode":"all"}"#,
                "resultMode",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c","kubeconfig":"rel/k"}"#,
                "kubeconfig",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"../x","type":"plexus","clusterNetwork":"c"}"#,
                "name",
            ),
            (
                r#"{"cniVersion":"1.1.0","type":"plexus","clusterNetwork":"c"}"#,
                "name",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c","ipamDataDirs":["ipam"]}"#,
                "ipamDataDirs",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c","ipamDataDirs":"/var"}"#,
                "ipamDataDirs",
            ),
        ];
        for (input, key) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.code(), 7, "{input}");
            assert!(e.to_string().contains(key), "{e} should name {key}");
        }
    }

    #[test]
    fn every_inline_delegate_is_kept_in_order() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"p","type":"plexus","delegates":[
                {"cniVersion":"1.0.0","name":"a","type":"bridge"},
                {"cniVersion":"1.0.0","name":"b","plugins":[{"type":"macvlan"}]},
                {"cniVersion":"1.0.0","type":"ipvlan"}]}"#,
        )
        .unwrap();
        let ClusterNetwork::Inline(first) = &c.cluster_network else {
            panic!("{:?}", c.cluster_network)
        };
        assert_eq!(first["name"], "a");
        assert_eq!(c.extra_delegates.len(), 2);
        assert_eq!(c.extra_delegates[0]["name"], "b");
        assert_eq!(c.extra_delegates[1]["type"], "ipvlan");
        // An entry without cniVersion speaks the conf's.
        assert_eq!(c.extra_delegates[1]["cniVersion"], "1.0.0");
    }

    #[test]
    fn wrong_delegates_are_code_7_whether_or_not_cluster_network_is_set() {
        for cluster in ["", r#""clusterNetwork":"cbr0","#] {
            for delegates in [
                r#""x""#,
                r#"{"type":"bridge"}"#,
                r#"[{"type":"bridge"},"flannel"]"#,
                r#"[{"name":"no-type"}]"#,
                r#"[{"type":"bridge","plugins":[]}]"#,
                r#"[{"type":"bridge","cniVersion":"9.9.9"}]"#,
            ] {
                let input = format!(
                    r#"{{"cniVersion":"1.0.0","name":"p","type":"plexus",{cluster}"delegates":{delegates}}}"#
                );
                let e = parse(&input).unwrap_err();
                assert_eq!(e.code(), 7, "{input}: {e}");
                assert!(e.to_string().contains("delegates"), "{input}: {e}");
            }
        }
        let e = parse(r#"{"cniVersion":"1.0.0","name":"p","type":"plexus","delegates":[]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("clusterNetwork"), "{e}");
    }

    #[test]
    fn ipam_data_dirs_default_and_take_the_inline_cluster_networks_own() {
        let c = parse(r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"c"}"#)
            .unwrap();
        assert_eq!(c.ipam_data_dirs, [PathBuf::from("/var/lib/cni/networks")]);
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"p","type":"plexus","ipamDataDirs":["/srv/ipam"],
                "delegates":[{"cniVersion":"1.0.0","name":"c","plugins":[
                    {"type":"bridge","ipam":{"type":"host-local","dataDir":"/run/c-ipam"}},
                    {"type":"tuning"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.ipam_data_dirs,
            [PathBuf::from("/srv/ipam"), PathBuf::from("/run/c-ipam")]
        );
    }

    #[test]
    fn version_errors_use_the_spec_codes() {
        let e = parse(r#"{"cniVersion":"9.9.9","name":"p","type":"plexus","clusterNetwork":"c"}"#)
            .unwrap_err();
        assert_eq!(e.code(), 1);
        let e = parse(r#"{"cniVersion":1.0,"name":"p","type":"plexus","clusterNetwork":"c"}"#)
            .unwrap_err();
        assert_eq!(e.code(), 6);
        let e = parse(r#"{"name":"p","type":"plexus","clusterNetwork":"c"}"#).unwrap_err();
        assert_eq!(e.code(), 7);
    }
}
