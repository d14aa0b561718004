//! What the fuzz targets share: the resolve and plan steps of an ADD, in memory, for a pod
//! whose annotation and NAD the fuzzer writes.

use plexus::conf::PlexusConf;
use plexus::pod::PodRef;
use plexus::store::{Nad, NetworkStore, Pod, StoreError};
use std::collections::BTreeMap;

/// The fuzzer's pod and NADs, held in memory.
struct MemoryStore {
    pods: Vec<Pod>,
    nads: Vec<Nad>,
}

impl NetworkStore for MemoryStore {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, StoreError> {
        Ok(self
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .cloned())
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        Ok(self
            .nads
            .iter()
            .find(|n| n.namespace == namespace && n.name == name)
            .cloned())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// A valid conf for a NAD: macvlan with host-local, with capabilities so that selections
/// asking for `ips`, `mac` and the rest are planned rather than refused early.
pub const GOOD_NAD: &str = r#"{"cniVersion":"1.0.0","name":"good","type":"macvlan","master":"eth9","capabilities":{"ips":true,"mac":true},"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}"#;

fn conf() -> PlexusConf {
    let raw = br#"{"cniVersion":"1.1.0","name":"plexus","type":"plexus",
        "delegates":[{"cniVersion":"1.0.0","name":"cluster","type":"bridge",
            "ipam":{"type":"host-local","subnet":"10.88.0.0/24"}}],
        "runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]}}"#;
    match PlexusConf::parse(raw) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz harness's own conf: {e}"),
    }
}

/// Resolves and plans an ADD of pod `default/fz` with `annotation` as its networks
/// annotation, NADs `default/good` ([`GOOD_NAD`]) and `default/fz` (`nad_config`). Errors
/// are fine; a panic is the bug.
pub fn plan(annotation: &str, nad_config: &str) {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "k8s.v1.cni.cncf.io/networks".to_string(),
        annotation.to_string(),
    );
    let nad = |name: &str, config: &str| Nad {
        namespace: "default".into(),
        name: name.into(),
        annotations: BTreeMap::new(),
        config: Some(config.to_string()),
    };
    let store = MemoryStore {
        pods: vec![Pod {
            namespace: "default".into(),
            name: "fz".into(),
            uid: None,
            annotations,
        }],
        nads: vec![nad("good", GOOD_NAD), nad("fz", nad_config)],
    };
    let conf = conf();
    let pod = PodRef {
        namespace: Some("default".into()),
        name: Some("fz".into()),
        uid: None,
        infra_container_id: None,
    };
    let resolved =
        plexus::resolve::resolve(&conf, Some(&store), &pod, plexus::resolve::Purpose::Lookup);
    let Ok(resolved) = resolved else {
        return;
    };
    let Ok(eth0) = cni::IfName::parse("eth0") else {
        return;
    };
    let planned = plexus::plan::plan(&plexus::plan::PlanRequest {
        cluster: &resolved.cluster,
        defaults: &resolved.defaults,
        secondaries: &resolved.secondaries,
        runtime_ifname: &eth0,
        runtime_config: &conf.runtime_config,
        pod: Some(plexus::plan::PodIdentity {
            namespace: "default",
            name: "fz",
            uid: None,
            infra_container_id: "0123456789abcdef",
        }),
    });
    // What ADD journals and hands each delegate: every plugin's conf must serialize.
    for a in planned.into_iter().flatten() {
        for i in 0..a.conf.plugins.len() {
            if let Some(p) = a.conf.plugin_conf(i) {
                let _ = p.to_bytes();
            }
        }
        let _ = a.conf.to_value();
    }
}
