//! `plexus generate-config`: find the node's primary CNI conf, wrap it as Plexus's cluster
//! network, and write the conflist the runtime will load first.

use super::AutoconfError;
use super::atomic::{self, Written};
use crate::conf::PlexusConf;
use cni::netconf::{NetConfList, parse_object};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_OUTPUT: &str = "00-plexus.conflist";
/// CIS Kubernetes Benchmark 1.1.9 asks for CNI conf files of 0600 or stricter, and the
/// primary conf we inline may carry credentials (etcd keys, tokens); only the runtime, as
/// root, reads the file.
pub const CONF_MODE: u32 = 0o600;
const PRIMARY_POLL: Duration = Duration::from_secs(1);
/// Plugin types that are a meta plugin's own output, never a primary network.
const META_TYPES: [&str; 3] = ["plexus", "multus", "multus-shim"];
/// The extensions libcni loads from a conf dir.
const CONF_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// What goes into the Plexus plugin's conf besides the cluster network. Unset fields are left
/// out so the conf keeps Plexus's defaults.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub conf_dir: PathBuf,
    /// A file name in `conf_dir` to use as the primary instead of the lexically first.
    pub primary: Option<String>,
    /// File name of the conflist written in `conf_dir`.
    pub output: String,
    pub kubeconfig: Option<PathBuf>,
    pub manifests: Option<PathBuf>,
    pub cni_dir: Option<PathBuf>,
    pub readiness_indicator_file: Option<PathBuf>,
    pub readiness_timeout: Option<Duration>,
    pub multus_namespace: Option<String>,
    pub namespace_isolation: bool,
    pub global_namespaces: Option<String>,
    /// Keep looking this long for a usable primary (the primary CNI may still be starting).
    pub primary_timeout: Duration,
    /// `daemonSocketDir`: the conf makes the binary a shim of the node daemon.
    pub daemon_socket_dir: Option<PathBuf>,
    /// `daemonFallback`, written only when false (true is the default).
    pub daemon_fallback: bool,
}

/// A conf file passed over while looking for the primary, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

/// The conf chosen as the cluster network.
#[derive(Debug, Clone)]
pub struct Primary {
    /// Its file name in the conf dir.
    pub file: String,
    pub conf: Map<String, Value>,
    /// Files passed over before it.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug)]
pub struct Generated {
    pub output: PathBuf,
    /// File name of the primary conf in the conf dir.
    pub primary: String,
    pub written: Written,
    pub skipped: Vec<Skipped>,
    /// Conf files that sort before the output: the runtime loads the lexically first conf,
    /// so while any of these is there Plexus is not the node's CNI.
    pub ahead: Vec<String>,
    pub conflist: Map<String, Value>,
}

/// Picks the primary, builds the conflist, checks that Plexus itself accepts it, and writes
/// it unless the file already holds exactly that.
pub fn generate(opts: &GenerateOptions) -> Result<Generated, AutoconfError> {
    check_file_name("output", &opts.output)?;
    if !opts.output.ends_with(".conflist") {
        return Err(AutoconfError::BadFileName {
            what: "output",
            name: opts.output.clone(),
            reason: "must end in .conflist: the runtime reads the file by its extension".into(),
        });
    }
    if let Some(name) = &opts.primary {
        check_file_name("primary", name)?;
    }
    let primary = find_primary_waiting(opts)?;
    let conflist = build_conflist(primary.conf, opts);
    validate(&conflist)?;
    let output = opts.conf_dir.join(&opts.output);
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(conflist.clone()))
        .map_err(|e| AutoconfError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    let written =
        atomic::replace(&output, &bytes, CONF_MODE).map_err(|source| AutoconfError::Write {
            path: output.clone(),
            source,
        })?;
    let ahead = conf_files(&opts.conf_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.as_str() < opts.output.as_str())
        .collect();
    Ok(Generated {
        output,
        primary: primary.file,
        written,
        skipped: primary.skipped,
        ahead,
        conflist,
    })
}

/// The pinned primary or the first usable one, looked for again every second while there is
/// none (the conf dir missing, nothing usable, the pinned file absent or half-written).
fn find_primary_waiting(opts: &GenerateOptions) -> Result<Primary, AutoconfError> {
    let deadline = Instant::now() + opts.primary_timeout;
    loop {
        let found = match &opts.primary {
            Some(name) => read_candidate(&opts.conf_dir, name)
                .map(|conf| Primary {
                    file: name.clone(),
                    conf,
                    skipped: Vec::new(),
                })
                .map_err(|reason| AutoconfError::BadPrimary {
                    path: opts.conf_dir.join(name),
                    reason,
                }),
            None => pick_primary(&opts.conf_dir, &opts.output),
        };
        match found {
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(
                    PRIMARY_POLL.min(deadline.saturating_duration_since(Instant::now())),
                );
            }
            other => return other,
        }
    }
}

/// The lexically first usable conf in `dir` (libcni's and the runtimes' order), skipping our
/// own output and other meta plugins' confs. Unusable files are reported, never chosen: an
/// empty or half-written primary must not become an empty Plexus conf.
pub fn pick_primary(dir: &Path, output: &str) -> Result<Primary, AutoconfError> {
    let names = conf_files(dir).map_err(|source| AutoconfError::ReadConfDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut skipped = Vec::new();
    for name in names.into_iter().filter(|n| n != output) {
        match read_candidate(dir, &name) {
            Ok(conf) => {
                return Ok(Primary {
                    file: name,
                    conf,
                    skipped,
                });
            }
            Err(reason) => skipped.push(Skipped { file: name, reason }),
        }
    }
    Err(AutoconfError::NoPrimary {
        dir: dir.to_path_buf(),
        skipped: skipped
            .iter()
            .map(|s| format!("{}: {}", s.file, s.reason))
            .collect(),
    })
}

/// The names in `dir` with an extension libcni loads, in byte order (Go's sort.Strings in
/// libcni: no locale can change the pick).
fn conf_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(name) = entry?.file_name().into_string() else {
            continue;
        };
        let ext = Path::new(&name).extension().and_then(|e| e.to_str());
        if ext.is_some_and(|e| CONF_EXTENSIONS.contains(&e)) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Reads one conf file the way the runtime would (by its extension) and says why it cannot
/// be the primary, if it cannot.
fn read_candidate(dir: &Path, name: &str) -> Result<Map<String, Value>, String> {
    let path = dir.join(name);
    let meta = std::fs::metadata(&path).map_err(|e| format!("stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > cni::netconf::MAX_CONF_BYTES as u64 {
        return Err(format!(
            "larger than {} bytes",
            cni::netconf::MAX_CONF_BYTES
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("read: {e}"))?;
    let map = parse_object(&bytes).map_err(|e| e.to_string())?;
    let is_list = name.ends_with(".conflist");
    if is_list && !map.contains_key("plugins") {
        return Err("a .conflist without \"plugins\"".into());
    }
    if !is_list && !map.contains_key("type") {
        return Err("a single conf without \"type\"".into());
    }
    let list = NetConfList::from_map(map.clone()).map_err(|e| e.to_string())?;
    for p in &list.plugins {
        let t = p.plugin_type().unwrap_or_default();
        if META_TYPES.contains(&t) {
            return Err(format!("a {t} conf, not a primary network"));
        }
    }
    Ok(map)
}

/// `00-plexus.conflist`: one plugin, Plexus, with the primary inline as `delegates[0]` (the
/// Multus thin conf's shape), the primary's version(s), and the union of the capabilities
/// its plugins declare. A conflist plugin only receives the `runtimeConfig` keys it lists
/// under `capabilities` (the spec's capability rule), so without this union portmap would lose its
/// `portMappings` behind Plexus.
pub fn build_conflist(primary: Map<String, Value>, opts: &GenerateOptions) -> Map<String, Value> {
    let mut capabilities: BTreeSet<String> = NetConfList::from_map(primary.clone())
        .map(|l| l.plugins.iter().flat_map(|p| p.capabilities()).collect())
        .unwrap_or_default();
    // containerd and CRI-O then pass the pod's annotations, so the networks a pod asks for
    // are known without asking the API server, and reach pods a manifests folder lacks.
    capabilities.insert(crate::annotations::POD_ANNOTATIONS_CAPABILITY.to_string());

    let mut plugin = Map::new();
    plugin.insert("type".into(), "plexus".into());
    let caps: Map<String, Value> = capabilities
        .into_iter()
        .map(|c| (c, Value::Bool(true)))
        .collect();
    plugin.insert("capabilities".into(), Value::Object(caps));
    let mut path = |key: &str, p: &Option<PathBuf>| {
        if let Some(p) = p {
            plugin.insert(key.into(), p.display().to_string().into());
        }
    };
    path("kubeconfig", &opts.kubeconfig);
    path("manifests", &opts.manifests);
    path("cniDir", &opts.cni_dir);
    path("readinessindicatorfile", &opts.readiness_indicator_file);
    if let Some(t) = opts.readiness_timeout {
        plugin.insert("readinessTimeout".into(), seconds(t));
    }
    if let Some(ns) = &opts.multus_namespace {
        plugin.insert("multusNamespace".into(), ns.clone().into());
    }
    if opts.namespace_isolation {
        plugin.insert("namespaceIsolation".into(), true.into());
    }
    if let Some(g) = &opts.global_namespaces {
        plugin.insert("globalNamespaces".into(), g.clone().into());
    }
    if let Some(d) = &opts.daemon_socket_dir {
        plugin.insert("daemonSocketDir".into(), d.display().to_string().into());
        if !opts.daemon_fallback {
            plugin.insert("daemonFallback".into(), false.into());
        }
    }
    let version = primary.get("cniVersion").cloned();
    let versions = primary.get("cniVersions").cloned();
    plugin.insert(
        "delegates".into(),
        Value::Array(vec![Value::Object(primary)]),
    );

    let mut list = Map::new();
    if let Some(v) = version {
        list.insert("cniVersion".into(), v);
    }
    if let Some(v) = versions {
        list.insert("cniVersions".into(), v);
    }
    list.insert("name".into(), "plexus".into());
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    list
}

/// Whole seconds as an integer, fractions as a float: the conf reads both.
fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        d.as_secs().into()
    } else {
        d.as_secs_f64().into()
    }
}

/// Parses the conflist as the runtime will hand it to Plexus (list `name` and `cniVersion`
/// injected into the plugin conf), so a conf Plexus would reject is never written.
fn validate(conflist: &Map<String, Value>) -> Result<(), AutoconfError> {
    let list = NetConfList::from_map(conflist.clone())
        .map_err(|e| AutoconfError::Invalid(e.to_string()))?;
    let plugin = list
        .plugin_conf(0)
        .ok_or_else(|| AutoconfError::Invalid("no plugin".into()))?;
    PlexusConf::from_map(plugin.0).map_err(|e| AutoconfError::Invalid(e.to_string()))?;
    Ok(())
}

/// A bare file name: no directory part, nothing hidden, nothing to escape the conf dir with.
fn check_file_name(what: &'static str, name: &str) -> Result<(), AutoconfError> {
    let bad = |reason: &str| AutoconfError::BadFileName {
        what,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.contains('/') || name.contains('\0') {
        return Err(bad("must be a file name in the conf dir, not a path"));
    }
    if name.is_empty() || name.starts_with('.') {
        return Err(bad("must not be empty or start with a dot"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn capabilities_are_the_union_over_the_chain() {
        let primary = obj(json!({"cniVersion": "0.3.1", "name": "cbr0", "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true, "ips": false}}
        ]}));
        let c = build_conflist(primary, &GenerateOptions::default());
        assert_eq!(
            c["plugins"][0]["capabilities"],
            json!({"bandwidth": true, "portMappings": true,
                   "io.kubernetes.cri.pod-annotations": true})
        );
        assert_eq!(c["cniVersion"], "0.3.1");
        validate(&c).unwrap();
    }

    #[test]
    fn the_pod_annotations_capability_is_declared_even_when_the_primary_declares_none() {
        let primary = obj(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}));
        let c = build_conflist(primary, &GenerateOptions::default());
        assert_eq!(
            c["plugins"][0]["capabilities"],
            json!({"io.kubernetes.cri.pod-annotations": true})
        );
    }

    #[test]
    fn file_names_are_plain() {
        for bad in ["", ".hidden.conflist", "../x.conflist", "a/b.conflist"] {
            assert!(check_file_name("output", bad).is_err(), "{bad:?}");
        }
        check_file_name("output", "00-plexus.conflist").unwrap();
    }
}
