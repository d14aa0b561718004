//! Secrets never leak: a planted bearer token (inline in the kubeconfig), and NAD keys that
//! look like secrets, must appear nowhere in the log file at the most verbose level, on
//! stderr or on stdout — through a successful ADD and DEL, a 401 from the API server, and a
//! delegate that fails. Control characters in CNI_ARGS and in an annotation stay escaped,
//! one log line per event.
#![allow(clippy::unwrap_used)]

mod common;

use common::apiserver::{FakeApi, FakeOptions, nad_object, pod_object};
use common::*;
use serde_json::json;

const TOKEN: &str = "planted-bearer-7f3a9c";
const NAD_SECRETS: [&str; 3] = [
    "planted-password-41",
    "planted-api-token-42",
    "planted-secret-43",
];
const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

/// Everything a run left where a person could read it.
fn exposed(log: &std::path::Path, runs: &[&Run]) -> String {
    let mut all = std::fs::read_to_string(log).unwrap_or_default();
    for r in runs {
        all.push_str(&r.stdout);
        all.push_str(&r.stderr);
    }
    all
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [TOKEN].iter().chain(NAD_SECRETS.iter()) {
        assert!(!text.contains(s), "{what}: {s} leaked:\n{text}");
    }
}

#[test]
fn tokens_and_secret_keys_never_reach_log_stderr_or_stdout() {
    enter_node_netns();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let w = World::new();
    let api = FakeApi::start(FakeOptions {
        token: TOKEN.into(),
        ..FakeOptions::default()
    });
    let log = w.tmp.path().join("plexus.log");
    // A NAD whose conf carries secrets, for a delegate that fails, and one that works.
    let mut bad = json!({"cniVersion": "1.0.0", "name": "bad", "type": "stand-in",
        "password": NAD_SECRETS[0], "auth": {"apiToken": NAD_SECRETS[1]},
        "plugins_secret": NAD_SECRETS[2]});
    api.add_nad(nad_object("default", "bad", Some(&bad)));
    let mut good = w.macvlan_conf("good", "upl0", "10.89.12.0/24");
    good["password"] = json!(NAD_SECRETS[0]);
    good["credentials"] = json!({"clientSecret": NAD_SECRETS[2]});
    api.add_nad(nad_object("default", "good", Some(&good)));
    api.add_pod(pod_object(
        "default",
        "ok",
        UID,
        &[("k8s.v1.cni.cncf.io/networks", "good")],
    ));
    api.add_pod(pod_object(
        "default",
        "fails",
        UID,
        &[("k8s.v1.cni.cncf.io/networks", "good, bad")],
    ));
    // The stand-in fails ADD; a careless delegate repeats its conf in the error.
    w.script(
        "stand-in",
        r#"[ "$CNI_COMMAND" = DEL ] && exit 0
conf=$(cat)
printf '{"cniVersion":"1.0.0","code":7,"msg":"refused","details":"%s"}' "$(printf %s "$conf" | tr -d '"\\')"
exit 1"#,
    );
    let mut conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-sec0", "10.88.12.0/24"),
        json!({"kubeconfig": api.kubeconfig(w.tmp.path()).display().to_string(),
               "logFile": log.display().to_string(), "logLevel": "trace",
               "logToStderr": true}),
    );
    conf.as_object_mut().unwrap().remove("manifests");
    let pod = PodNs::new();
    let call = |cid: &str, name: &str| {
        let mut c = Call::new("ADD", cid, Some(&pod.path), &w).pod("default", name);
        c.args = format!("{};K8S_POD_UID={UID}", c.args);
        c
    };

    // A good ADD and DEL at the most verbose level.
    let add = call("c-ok", "ok").run_json(&conf);
    add.ok();
    let del = call("c-ok", "ok").with("DEL").run_json(&conf);
    del.ok();
    assert_no_secret("ADD and DEL", &exposed(&log, &[&add, &del]));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"password\":\"[redacted]\""),
        "the delegate's conf was logged, redacted: {text}"
    );

    // A delegate that fails and repeats its secrets.
    let failed = call("c-fail", "fails").run_json(&conf);
    failed.err(100);
    assert_no_secret("failing delegate", &exposed(&log, &[&failed]));
    w.assert_clean(Some(&pod));

    // The API server refuses the token (401).
    api.set_token("some-other-token");
    let refused = call("c-401", "ok").run_json(&conf);
    let e = refused.err(11);
    assert!(e["msg"].as_str().unwrap().contains("401"), "{e}");
    assert_no_secret("401", &exposed(&log, &[&refused]));
    w.assert_clean(Some(&pod));
    bad["type"] = json!("unused");
}

#[test]
fn control_characters_in_cni_args_and_annotations_stay_escaped_on_one_line() {
    enter_node_netns();
    let w = World::new();
    let log = w.tmp.path().join("plexus.log");
    // An annotation with an escape sequence and a newline (YAML double quotes spell them
    // \e and \n): refused, and the error's log line must stay one line.
    w.manifest(
        "pod-ctl.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ctl\n  namespace: default\n  annotations:\n    k8s.v1.cni.cncf.io/networks: \"net\\e[31m\\nred\"\n",
    );
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-sec1", "10.88.13.0/24"),
        json!({"logFile": log.display().to_string(), "logLevel": "debug",
               "logToStderr": false}),
    );
    let pod = PodNs::new();
    let mut add = Call::new("ADD", "c-ctl", Some(&pod.path), &w).pod("default", "ctl");
    add.args = format!("{};EXTRA=a\nb\u{1b}c", add.args);
    let r = add.run_json(&conf);
    r.err(7);
    let text = std::fs::read_to_string(&log).unwrap();
    // Every line is one event: it starts with its timestamp, and no control character
    // (escape, newline) arrived raw to split it or to drive a terminal.
    for line in text.lines() {
        assert!(
            line.starts_with("20") && !line.chars().any(char::is_control),
            "a log line that is not one escaped event: {line:?}\n{text}"
        );
    }
    let invoked: Vec<&str> = text.lines().filter(|l| l.contains(" invoked ")).collect();
    assert_eq!(invoked.len(), 1, "{text}");
    assert!(
        invoked[0].contains("EXTRA=a\\x0ab\\x1bc"),
        "CNI_ARGS escaped on its line: {}",
        invoked[0]
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.contains(" failed ")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("k8s.v1.cni.cncf.io/networks"),
        "the refusal names the annotation: {}",
        failed[0]
    );
}
