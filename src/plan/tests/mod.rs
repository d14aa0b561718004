//! The snapshot matrix: each case resolves its annotation against its own NADs, runs the
//! plan, asserts what the case is about, and snapshots the attachments (or the error) as
//! `plan__<case>`, with the input in the snapshot's `info` header.

use super::*;
use crate::selection::{parse_default_network, parse_networks};
use serde_json::json;

mod cases_conf;
mod cases_runtime;

fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

const POD_NS: &str = "tenant";
const CLUSTER: &str = "kube-system/cluster";

type Outcome = Result<Vec<Attachment>, PlanError>;

struct Case {
    name: &'static str,
    what: &'static str,
    nads: Vec<(String, Value)>,
    annotation: String,
    default_network: Option<&'static str>,
    defaults: Vec<&'static str>,
    runtime: Value,
    devices: Vec<(&'static str, &'static str)>,
    pod: bool,
    /// Snapshot only network and interface of each attachment (for the long lists).
    compact: bool,
    check: fn(&Outcome),
}

impl Case {
    fn new(name: &'static str, what: &'static str, check: fn(&Outcome)) -> Case {
        Case {
            name,
            what,
            nads: vec![(
                CLUSTER.into(),
                json!({"cniVersion":"1.0.0","name":"cluster","type":"ptp",
                       "ipam":{"type":"host-local","subnet":"10.244.1.0/24"}}),
            )],
            annotation: String::new(),
            default_network: None,
            defaults: Vec::new(),
            runtime: json!({}),
            devices: Vec::new(),
            pod: true,
            compact: false,
            check,
        }
    }
    fn nad(mut self, key: &str, config: Value) -> Case {
        self.nads.retain(|(k, _)| k != key);
        self.nads.push((key.to_string(), config));
        self
    }
    fn annotation(mut self, a: impl Into<String>) -> Case {
        self.annotation = a.into();
        self
    }
    fn runtime(mut self, rc: Value) -> Case {
        self.runtime = rc;
        self
    }

    fn config(&self, key: &str) -> Map<String, Value> {
        let found = self.nads.iter().find(|(k, _)| k == key);
        match found.map(|(_, v)| v) {
            Some(Value::Object(m)) => m.clone(),
            _ => panic!("case {} has no object NAD {key}", self.name),
        }
    }

    fn resolve(&self, key: String, selection: Option<NetworkSelection>) -> ResolvedNetwork {
        ResolvedNetwork {
            config: self.config(&key),
            device_id: self
                .devices
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, d)| d.to_string()),
            key,
            selection,
        }
    }

    fn run(&self) -> Outcome {
        let cluster_sel = self
            .default_network
            .map(|a| parse_default_network(a, "kube-system").unwrap());
        let cluster_key = cluster_sel.as_ref().map_or(CLUSTER.into(), |s| s.key());
        let cluster = self.resolve(cluster_key, cluster_sel);
        let defaults: Vec<_> = self
            .defaults
            .iter()
            .map(|k| self.resolve(k.to_string(), None))
            .collect();
        let secondaries: Vec<_> = parse_networks(&self.annotation, POD_NS)
            .unwrap()
            .into_iter()
            .map(|s| self.resolve(s.key(), Some(s)))
            .collect();
        let eth0 = IfName::parse("eth0").unwrap();
        let runtime = self.runtime.as_object().unwrap().clone();
        plan(&PlanRequest {
            cluster: &cluster,
            defaults: &defaults,
            secondaries: &secondaries,
            runtime_ifname: &eth0,
            runtime_config: &runtime,
            pod: self.pod.then_some(PodIdentity {
                namespace: POD_NS,
                name: "web-0",
                uid: Some("6f1c1c3e-4a4f-4f4e-9c55-3a8e1f0b6a11"),
                infra_container_id: "c0ffee",
            }),
        })
    }

    fn input(&self) -> Value {
        json!({
            "annotation": self.annotation,
            "default_network": self.default_network,
            "defaults": self.defaults,
            "runtime_config": self.runtime,
            "devices": self.devices.iter().map(|(k, d)| json!({k.to_string(): d})).collect::<Vec<_>>(),
            "pod": self.pod,
            "nads": self.nads.iter().map(|(k, v)| json!({"key": k, "config": v})).collect::<Vec<_>>(),
        })
    }
}

fn ok(o: &Outcome) -> &[Attachment] {
    match o {
        Ok(a) => a,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn error(o: &Outcome) -> String {
    match o {
        Ok(a) => panic!("expected an error, got {} attachments", a.len()),
        Err(e) => {
            assert_eq!(e.code(), 7);
            e.to_string()
        }
    }
}

/// The plugin `i` of attachment `a` as JSON.
fn plugin(o: &Outcome, a: usize, i: usize) -> Value {
    Value::Object(ok(o)[a].conf.plugins[i].0.clone())
}

fn ifnames(o: &Outcome) -> Vec<String> {
    ok(o).iter().map(|a| a.ifname.to_string()).collect()
}

const MACVLAN: &str = "tenant/macvlan-a";

fn macvlan() -> Value {
    json!({"cniVersion":"1.0.0","name":"macvlan-a","type":"macvlan","master":"eth1",
           "ipam":{"type":"host-local","subnet":"10.10.0.0/24"}})
}

fn macvlan_static(caps: Value) -> Value {
    json!({"cniVersion":"1.0.0","name":"macvlan-static","type":"macvlan","master":"eth1",
           "capabilities":caps,"ipam":{"type":"static"}})
}

fn chain(first_caps: Value, second_caps: Value) -> Value {
    json!({"cniVersion":"1.0.0","name":"chain","plugins":[
        {"type":"macvlan","master":"eth1","capabilities":first_caps,"ipam":{"type":"static"}},
        {"type":"tuning","capabilities":second_caps}]})
}

/// Properties every successful plan has, whatever the case.
fn invariants(case: &Case, out: &[Attachment]) {
    assert_eq!(out[0].ifname.as_str(), "eth0", "{}", case.name);
    assert!(
        out[0].is_default && out[1..].iter().all(|a| !a.is_default),
        "{}",
        case.name
    );
    let mut names: Vec<_> = out.iter().map(|a| a.ifname.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        out.len(),
        "{}: interface names repeat",
        case.name
    );
    for a in out {
        for p in &a.conf.plugins {
            assert!(
                !p.0.contains_key("capabilities"),
                "{}: capabilities left",
                case.name
            );
        }
    }
}

#[test]
fn plan_matrix() {
    let mut cases = cases_conf::cases();
    cases.extend(cases_runtime::cases());
    assert!(cases.len() >= 25);
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names repeat");
    for case in &cases {
        let outcome = case.run();
        (case.check)(&outcome);
        let shown = match &outcome {
            Ok(out) => {
                invariants(case, out);
                if case.compact {
                    out.iter()
                        .map(|a| json!([a.network, a.ifname]))
                        .collect::<Value>()
                } else {
                    serde_json::to_value(out).unwrap()
                }
            }
            Err(e) => json!({"error": e.to_string(), "code": e.code().as_u32()}),
        };
        let mut settings = snapshots();
        settings.set_description(case.what);
        settings.set_info(&case.input());
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_json_snapshot!(format!("plan__{}", case.name), shown));
    }
}

#[test]
fn pod_identity_with_separator_is_refused() {
    let net = ResolvedNetwork {
        key: CLUSTER.into(),
        config: json!({"cniVersion":"1.0.0","name":"c","type":"ptp"})
            .as_object()
            .unwrap()
            .clone(),
        selection: None,
        device_id: None,
    };
    let eth0 = IfName::parse("eth0").unwrap();
    let req = PlanRequest {
        cluster: &net,
        defaults: &[],
        secondaries: &[],
        runtime_ifname: &eth0,
        runtime_config: &Map::new(),
        pod: Some(PodIdentity {
            namespace: "ns",
            name: "p;K8S_POD_NAMESPACE=kube-system",
            uid: None,
            infra_container_id: "c",
        }),
    };
    let e = plan(&req).unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(e.to_string().starts_with("pod K8S_POD_NAME"), "{e}");
}
