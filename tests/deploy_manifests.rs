//! The deployment manifests (config/deploy/, its thick-mode variant config/deploy/thick/, crds/):
//! valid for the pinned Kubernetes version, least-privilege RBAC pinned verb by verb, and a
//! DaemonSet that installs, keeps the conf and writes what the conf example says.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes release the manifests must validate against: the one k8s-openapi's `v1_33`
/// feature builds the client for.
const KUBERNETES_VERSION: &str = "1.33.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(file: &str) -> PathBuf {
    root().join("config/deploy").join(file)
}

fn load<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {file}: {e}"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// Runs `kubernetes-validate` (PyPI) in strict mode; fails the test, never skips, when the
/// tool is missing.
fn kubernetes_validate(files: &[PathBuf]) -> std::process::Output {
    let probe = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "kubernetes-validate is not installed; .ci/test installs it with\n  \
         python3 -m pip install kubernetes-validate==1.37.0"
    );
    Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn manifests_validate_against_the_pinned_kubernetes_version() {
    let mut files = yaml_files(&root().join("config/deploy"));
    files.extend(yaml_files(&root().join("crds")));
    assert!(files.len() >= 5, "{files:?}");
    let out = kubernetes_validate(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for f in &files {
        let line = format!("{} passed", f.display());
        assert!(stdout.contains(&line), "no '{line}' in:\n{stdout}{stderr}");
    }
}

#[test]
fn kubernetes_validate_rejects_an_unknown_field() {
    // Proves the check above has teeth: strict mode refuses what kubectl would silently drop.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(deploy("service-account.yaml")).unwrap();
    std::fs::write(&bad, text.replace("  namespace:", "  nameSpace:")).unwrap();
    let out = kubernetes_validate(&[bad]);
    assert!(!out.status.success(), "{out:?}");
}

/// Every (apiGroup, resource, verb) the role grants.
fn grants(role: &ClusterRole) -> BTreeSet<(String, String, String)> {
    let mut all = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none(), "{rule:?}");
        assert!(rule.non_resource_urls.is_none(), "{rule:?}");
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    all.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    all
}

#[test]
fn cluster_role_grants_exactly_the_allow_list() {
    let role: ClusterRole = load("cluster-role.yaml");
    assert!(role.aggregation_rule.is_none());
    let expected: BTreeSet<(String, String, String)> = [
        ("", "pods", "get"),
        ("", "pods/status", "patch"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(grants(&role), expected);
}

#[test]
fn binding_gives_the_role_to_the_daemonset_account() {
    let sa: ServiceAccount = load("service-account.yaml");
    let binding: ClusterRoleBinding = load("cluster-role-binding.yaml");
    let role: ClusterRole = load("cluster-role.yaml");
    let ds: DaemonSet = load("daemonset.yaml");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(binding.role_ref.name.as_str()),
        role.metadata.name.as_deref()
    );
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
}

fn pod_spec() -> k8s_openapi::api::core::v1::PodSpec {
    let ds: DaemonSet = load("daemonset.yaml");
    ds.spec.unwrap().template.spec.unwrap()
}

/// The value of `--flag=value` in a container's args.
fn flag(c: &Container, name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    c.args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(&prefix).map(String::from))
}

#[test]
fn daemonset_runs_on_every_node_before_pod_networking() {
    let pod = pod_spec();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    // One toleration with no key and no effect tolerates every taint.
    let tolerations = pod.tolerations.unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{tolerations:?}"
    );
}

#[test]
fn init_container_installs_binary_kubeconfig_and_conf() {
    let pod = pod_spec();
    let inits = pod.init_containers.unwrap_or_default();
    assert_eq!(inits.len(), 1);
    let init = &inits[0];
    assert_eq!(init.command.as_deref(), Some(&["plexus".to_string()][..]));
    assert_eq!(
        init.args
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str),
        Some("install")
    );
    assert_eq!(flag(init, "bin-dir").as_deref(), Some("/host/opt/cni/bin"));
    assert_eq!(
        flag(init, "conf-dir").as_deref(),
        Some("/host/etc/cni/net.d")
    );
    // The kubeconfig is written through the /host mount, and the conf names it as the host
    // sees it: the runtime execs plexus on the host, not in this pod.
    let out = flag(init, "kubeconfig-out").unwrap();
    let host = flag(init, "kubeconfig").unwrap();
    assert_eq!(out, format!("/host{host}"));
    assert!(host.starts_with("/etc/cni/net.d/"), "{host}");
    let mounts: Vec<(&str, bool)> = init
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.as_str(), m.read_only.unwrap_or(false)))
        .collect();
    for path in ["/host/opt/cni/bin", "/host/etc/cni/net.d"] {
        assert!(
            mounts.contains(&(path, false)),
            "{path} not writable: {mounts:?}"
        );
    }
}

#[test]
fn token_file_is_the_projected_expiring_token_on_the_host() {
    let pod = pod_spec();
    // Only the projected token below: no long-lived default token mount.
    assert_eq!(pod.automount_service_account_token, Some(false));
    let volumes = pod.volumes.unwrap_or_default();
    let projected = volumes
        .iter()
        .find(|v| v.projected.is_some())
        .expect("a projected token volume");
    let token = projected
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten()
        .find_map(|s| s.service_account_token.as_ref())
        .expect("a serviceAccountToken source");
    let expiry = token.expiration_seconds.unwrap_or(0);
    assert!((600..=86400).contains(&expiry), "{expiry}");

    let inits = pod.init_containers.unwrap_or_default();
    let init = &inits[0];
    // kubelet keeps a pod's projected volume at this host path and rotates the token there.
    assert_eq!(
        flag(init, "token-file").unwrap(),
        format!(
            "/var/lib/kubelet/pods/$(POD_UID)/volumes/kubernetes.io~projected/{}/{}",
            projected.name, token.path
        )
    );
    for c in pod.containers.iter().chain(std::iter::once(init)) {
        let uid = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "POD_UID")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(uid, Some("metadata.uid"), "container {}", c.name);
        let mounted = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == projected.name);
        assert!(mounted, "container {} lacks the token volume", c.name);
    }
}

#[test]
fn main_container_keeps_installing_and_never_removes_the_conf() {
    let pod = pod_spec();
    let inits = pod.init_containers.unwrap_or_default();
    assert_eq!(pod.containers.len(), 1);
    let main = &pod.containers[0];
    // Same arguments as the init step, so the loop converges to what the init wrote.
    assert_eq!(main.args, inits[0].args);
    let script = main
        .command
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(script.contains("plexus \"$@\""), "{script}");
    assert!(script.contains("while"), "{script}");
    // Deleting the conf on exit is the failure Multus has: pods silently lose their
    // secondary networks. Nothing may remove it.
    for c in pod.containers.iter().chain(inits.iter()) {
        let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        assert!(
            pre_stop.is_none(),
            "container {} has a preStop hook",
            c.name
        );
        let text = format!("{:?} {:?}", c.command, c.args);
        for word in ["rm ", "unlink", "--cleanup"] {
            assert!(!text.contains(word), "container {} runs {word:?}", c.name);
        }
    }
}

#[test]
fn host_paths_are_mounted_as_intended() {
    let pod = pod_spec();
    let volumes = pod.volumes.unwrap_or_default();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
    };
    let main = &pod.containers[0];
    let mount = |path: &str| {
        main.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .map(|m| (host_path(&m.name), m.read_only.unwrap_or(false)))
    };
    assert_eq!(
        mount("/host/opt/cni/bin"),
        Some((Some("/opt/cni/bin".into()), false))
    );
    assert_eq!(
        mount("/host/etc/cni/net.d"),
        Some((Some("/etc/cni/net.d".into()), false))
    );
    assert_eq!(
        mount("/var/lib/cni/plexus"),
        Some((Some("/var/lib/cni/plexus".into()), true))
    );
    assert_eq!(
        mount("/var/lib/kubelet/device-plugins"),
        Some((Some("/var/lib/kubelet/device-plugins".into()), true))
    );
}

#[test]
fn every_container_has_requests_and_limits_and_no_privilege() {
    let pod = pod_spec();
    let inits = pod.init_containers.unwrap_or_default();
    for c in pod.containers.iter().chain(inits.iter()) {
        let r = c.resources.as_ref().unwrap();
        for (what, list) in [("requests", &r.requests), ("limits", &r.limits)] {
            let list = list
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no {what}", c.name));
            assert!(
                list.contains_key("cpu") && list.contains_key("memory"),
                "{} {what}",
                c.name
            );
        }
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        let dropped = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        assert_eq!(dropped, ["ALL"], "{}", c.name);
    }
}

#[test]
fn conf_example_is_a_plexus_conf_naming_the_daemonset_kubeconfig() {
    let text = std::fs::read_to_string(deploy("00-plexus.conflist.example")).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    // The runtime hands each plugin the list's name and cniVersion.
    let mut conf = plugins[0].as_object().unwrap().clone();
    conf.insert("name".into(), list["name"].clone());
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    let conf = plexus::conf::PlexusConf::from_map(conf).unwrap();
    assert_eq!(conf.plugin_type, "plexus");
    assert!(conf.isolation.enabled);
    assert_eq!(conf.isolation.global, ["default", "shared"]);
    let pod = pod_spec();
    let inits = pod.init_containers.unwrap_or_default();
    assert_eq!(
        conf.kubeconfig.map(|p| p.display().to_string()),
        flag(&inits[0], "kubeconfig")
    );
    // The primary sits inline as the cluster network, as generate-config writes it.
    assert!(matches!(
        conf.cluster_network,
        plexus::conf::ClusterNetwork::Inline(_)
    ));
}

// Thick mode (config/deploy/thick/): the node daemon and its shim conf.

#[test]
fn thick_manifests_validate_against_the_pinned_kubernetes_version() {
    let files = yaml_files(&root().join("config/deploy/thick"));
    assert_eq!(files.len(), 4, "{files:?}");
    let out = kubernetes_validate(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn thick_cluster_role_grants_exactly_the_daemon_allow_list() {
    let role: ClusterRole = load("thick/cluster-role.yaml");
    assert!(role.aggregation_rule.is_none());
    let expected: BTreeSet<(String, String, String)> = [
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/status", "patch"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(grants(&role), expected);
    let binding: ClusterRoleBinding = load("thick/cluster-role-binding.yaml");
    let sa: ServiceAccount = load("thick/service-account.yaml");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

/// Every value of `--flag=value` in a container's args.
fn flag_all(c: &Container, name: &str) -> Vec<String> {
    let prefix = format!("--{name}=");
    c.args
        .iter()
        .flatten()
        .filter_map(|a| a.strip_prefix(&prefix).map(String::from))
        .collect()
}

#[test]
fn thick_daemonset_runs_the_daemon_where_the_shim_conf_looks_for_it() {
    let ds: DaemonSet = load("thick/daemonset.yaml");
    let sa: ServiceAccount = load("thick/service-account.yaml");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.host_network, Some(true));
    let inits = pod.init_containers.clone().unwrap_or_default();
    assert_eq!(inits.len(), 1);
    let (init, daemon) = (&inits[0], &pod.containers[0]);
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(init.args.as_ref().unwrap()[0], "install");
    assert_eq!(daemon.args.as_ref().unwrap()[0], "daemon");
    // The node name comes from the downward API.
    assert_eq!(flag(daemon, "node-name").as_deref(), Some("$(NODE_NAME)"));
    let node = daemon
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(node.as_deref(), Some("spec.nodeName"));
    // One socket dir everywhere: the init step's conf, the daemon's, the example, the mount.
    let dir = flag(daemon, "daemon-socket-dir").unwrap();
    assert_eq!(
        flag(init, "daemon-socket-dir").as_deref(),
        Some(dir.as_str())
    );
    let text = std::fs::read_to_string(deploy("thick/00-plexus.conflist.example")).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut conf = list["plugins"][0].as_object().unwrap().clone();
    conf.insert("name".into(), list["name"].clone());
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    let conf = plexus::conf::PlexusConf::from_map(conf).unwrap();
    assert_eq!(conf.daemon.socket_dir, Some(PathBuf::from(&dir)));
    assert!(conf.daemon.fallback);
    // Both write the same conf: the daemon's rewrite changes nothing the init step wrote.
    for name in ["conf-dir", "kubeconfig"] {
        assert_eq!(flag(init, name), flag(daemon, name), "--{name}");
    }
    assert_eq!(
        conf.kubeconfig.map(|p| p.display().to_string()),
        flag(init, "kubeconfig")
    );
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mounted = daemon
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .and_then(|m| volumes.iter().find(|v| v.name == m.name))
        .and_then(|v| v.host_path.as_ref())
        .map(|h| h.path.clone());
    assert_eq!(
        mounted,
        Some(dir.clone()),
        "socket dir not the same host path"
    );
    // Probes on the metrics address, ready only once caches and conf are there.
    let port: i32 = flag(daemon, "metrics-address")
        .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_string()))
        .unwrap()
        .parse()
        .unwrap();
    for (probe, path) in [
        (&daemon.liveness_probe, "/healthz"),
        (&daemon.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)
        );
    }
    // Calls in flight get their grace before the kill; nothing removes the conf.
    let grace: i64 = flag(daemon, "shutdown-grace").unwrap().parse().unwrap();
    assert!(pod.termination_grace_period_seconds.unwrap() > grace);
    for c in pod.containers.iter().chain(inits.iter()) {
        assert!(
            c.lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .is_none()
        );
        let text = format!("{:?} {:?}", c.command, c.args);
        for word in ["rm ", "unlink", "--cleanup"] {
            assert!(!text.contains(word), "container {} runs {word:?}", c.name);
        }
        let all = flag_all(c, "daemon-socket-dir");
        assert!(all.len() <= 1, "{all:?}");
    }
}
