//! `runtimeConfig` as real runtimes write it: containerd 1.6 fills it from Go structs without
//! JSON tags (`HostPort`, `IngressRate`, `Servers`, `Subnet`), and passes every pod
//! annotation under `io.kubernetes.cri.pod-annotations` when the plugin declares it.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// The runtimeConfig containerd 1.6 sends with these capabilities declared, byte for byte.
fn containerd_runtime_config() -> Value {
    json!({
        "portMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
        "bandwidth": {"IngressRate": 10000000u64, "IngressBurst": 4294967295u64,
                      "EgressRate": 20000000u64, "EgressBurst": 4294967295u64},
        "dns": {"Servers": ["10.96.0.10"], "Searches": ["default.svc.cluster.local"],
                "Options": ["ndots:5"]}
    })
}

/// A stand-in plugin that keeps the conf it was given (per command) and succeeds.
fn recorder(w: &World) {
    let dir = w.tmp.path().display().to_string();
    w.script(
        "recorder",
        &format!(
            "cat > {dir}/recorded.$CNI_COMMAND.json\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\"}}'\nexit 0"
        ),
    );
}

fn recorded(w: &World, command: &str) -> Value {
    let text = std::fs::read_to_string(w.tmp.path().join(format!("recorded.{command}.json")))
        .unwrap_or_else(|e| panic!("the stand-in got no {command}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn go_spelled_values_reach_delegates_in_the_conventions_spelling() {
    enter_node_netns();
    let w = World::new();
    recorder(&w);
    let cluster = json!({"cniVersion": "1.0.0", "name": "rc", "plugins": [
        {"type": "recorder", "capabilities": {"portMappings": true, "bandwidth": true, "dns": true}}
    ]});
    let conf = w.plexus_conf(
        &cluster,
        json!({"runtimeConfig": containerd_runtime_config(),
               "capabilities": {"portMappings": true, "bandwidth": true, "dns": true}}),
    );
    let pod = PodNs::new();
    let add = Call::new("ADD", "rc1", Some(&pod.path), &w);
    add.run_json(&conf).ok();
    assert_eq!(
        recorded(&w, "ADD")["runtimeConfig"],
        json!({
            "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
            "bandwidth": {"ingressRate": 10000000u64, "ingressBurst": 4294967295u64,
                          "egressRate": 20000000u64, "egressBurst": 4294967295u64},
            "dns": {"servers": ["10.96.0.10"], "searches": ["default.svc.cluster.local"],
                    "options": ["ndots:5"]}
        })
    );
    add.with("DEL").run_json(&conf).ok();
    assert_eq!(
        recorded(&w, "DEL")["runtimeConfig"]["portMappings"][0]["hostPort"],
        18080,
        "DEL hands the same runtimeConfig"
    );
    w.assert_clean(Some(&pod));
}

/// containerd writes `ipRanges` as `[[{"Subnet": .., "RangeStart": .., "RangeEnd": "",
/// "Gateway": ""}]]`: the built-in host-local and the reference one (exec'd) both allocate
/// from the range it names.
#[test]
fn go_spelled_ip_ranges_are_honoured_in_process_and_by_the_reference() {
    enter_node_netns();
    for builtins in [true, false] {
        let w = World::new();
        // The pool is the runtime's alone (a conf subnet too would overlap it).
        let cluster = json!({"cniVersion": "1.0.0", "name": "ranges", "type": "bridge",
            "bridge": "rcbr0", "capabilities": {"ipRanges": true},
            "ipam": {"type": "host-local", "dataDir": w.ipam_dir.display().to_string()}});
        let conf = w.plexus_conf(
            &cluster,
            json!({"builtins": builtins, "runtimeConfig": {"ipRanges": [[{
                "Subnet": "10.93.0.0/24", "RangeStart": "10.93.0.50", "RangeEnd": "", "Gateway": ""
            }]]}}),
        );
        let pod = PodNs::new();
        let add = Call::new("ADD", "rc2", Some(&pod.path), &w);
        let result = add.run_json(&conf);
        result.ok();
        assert_eq!(
            result.json()["ips"][0]["address"],
            "10.93.0.50/24",
            "builtins {builtins}"
        );
        add.with("DEL").run_json(&conf).ok();
        w.assert_clean(Some(&pod));
    }
}
