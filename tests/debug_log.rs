//! Debug logs answer "what did the runtime send": one line per call with the command,
//! container, netns, interface, CNI_ARGS and the conf from stdin, and one line per delegate
//! call with the conf that delegate was given; secrets redacted in both.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn one_line_per_call_and_per_delegate_with_secrets_redacted() {
    enter_node_netns();
    let w = World::new();
    let log = w.tmp.path().join("plexus.log");
    let mut cluster = w.bridge_conf("cluster", "dlbr0", "10.98.0.0/24");
    cluster["password"] = json!("hunter2-in-delegate");
    let conf = w.plexus_conf(
        &cluster,
        json!({"logFile": log.display().to_string(), "logLevel": "debug",
               "logToStderr": false, "apiToken": "s3cr3t-at-top",
               "runtimeConfig": {"portMappings": [{"HostPort": 8080, "ContainerPort": 80}]}}),
    );
    let pod = PodNs::new();
    let mut add = Call::new("ADD", "dl1", Some(&pod.path), &w);
    add.args = format!("{};SOME_TOKEN=abc123", add.args);
    add.run_json(&conf).ok();
    add.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));

    let text = std::fs::read_to_string(&log).unwrap();
    for secret in ["hunter2-in-delegate", "s3cr3t-at-top", "abc123"] {
        assert!(!text.contains(secret), "{secret} reached the log:\n{text}");
    }
    let invoked: Vec<&str> = text.lines().filter(|l| l.contains(" invoked ")).collect();
    assert_eq!(invoked.len(), 2, "one line per call:\n{text}");
    let netns = pod.path.display().to_string();
    for (line, command) in invoked.iter().zip(["ADD", "DEL"]) {
        for part in [
            format!("command=\"{command}\""),
            "container=\"dl1\"".to_string(),
            format!("netns={netns}"),
            "ifname=\"eth0\"".to_string(),
            "cni_args=IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=dl1;SOME_TOKEN=[redacted]"
                .to_string(),
            // The conf as the runtime sent it, runtimeConfig in its own spelling.
            "\"HostPort\":8080".to_string(),
            "\"apiToken\":\"[redacted]\"".to_string(),
        ] {
            assert!(line.contains(&part), "{part} missing from {line}");
        }
    }
    let delegate: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" delegate call "))
        .collect();
    // bridge ADD, then DEL (host-local runs inside the reference bridge).
    assert_eq!(delegate.len(), 2, "one line per delegate call:\n{text}");
    for (line, command) in delegate.iter().zip(["ADD", "DEL"]) {
        for part in [
            format!("command=\"{command}\""),
            "plugin=\"bridge\"".to_string(),
            "\"password\":\"[redacted]\"".to_string(),
            "\"name\":\"cluster\"".to_string(),
            "\"bridge\":\"dlbr0\"".to_string(),
        ] {
            assert!(line.contains(&part), "{part} missing from {line}");
        }
    }
}
