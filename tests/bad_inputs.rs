//! Bad input from the runtime (environment, stdin), the pod (annotation) and the cluster
//! (NADs): every case gets a CNI error object with the spec's code, exit 1, and leaves no
//! interface, IP reservation, journal file or process behind
//! (shared/reference/reliability-matrix.md §7).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

struct Case {
    what: String,
    code: u64,
    call: Call,
    stdin: Vec<u8>,
    /// A word the message must contain (the variable, key or network it is about).
    names: &'static str,
}

fn base_conf(w: &World) -> Value {
    w.plexus_conf(
        &w.bridge_conf("cluster", "cni-b0", "10.88.20.0/24"),
        json!({}),
    )
}

fn env_cases(w: &World, pod: &PodNs, cases: &mut Vec<Case>) {
    let conf = serde_json::to_vec(&base_conf(w)).unwrap();
    let add = || Call::new("ADD", "c-env", Some(&pod.path), w);
    let mut push = |what: &str, names: &'static str, f: &dyn Fn(&mut Call)| {
        let mut c = add();
        f(&mut c);
        cases.push(Case {
            what: what.into(),
            code: 4,
            call: c,
            stdin: conf.clone(),
            names,
        });
    };
    push("CNI_COMMAND unset", "CNI_COMMAND", &|c| {
        c.unset.push("CNI_COMMAND".into())
    });
    push("CNI_COMMAND=FOO", "CNI_COMMAND", &|c| {
        c.command = "FOO".into()
    });
    push("CNI_CONTAINERID unset", "CNI_CONTAINERID", &|c| {
        c.unset.push("CNI_CONTAINERID".into())
    });
    push("CNI_CONTAINERID empty", "CNI_CONTAINERID", &|c| {
        c.container_id = String::new()
    });
    for id in ["../x", "-a", "a b"] {
        push(
            &format!("container id {id:?}"),
            "CNI_CONTAINERID",
            &move |c| c.container_id = id.into(),
        );
    }
    push("container id of 257 chars", "CNI_CONTAINERID", &|c| {
        c.container_id = "a".repeat(257)
    });
    for ifname in [
        "abcdefghijklmnop",
        ".",
        "..",
        "eth0:1",
        "a b",
        "a/b",
        "a\tb",
        "eth😀",
    ] {
        push(&format!("ifname {ifname:?}"), "CNI_IFNAME", &move |c| {
            c.ifname = ifname.into()
        });
    }
    push("CNI_NETNS unset on ADD", "CNI_NETNS", &|c| {
        c.unset.push("CNI_NETNS".into())
    });
    push("CNI_NETNS not a namespace", "CNI_NETNS", &|c| {
        c.netns = Some("/etc/hostname".into())
    });
    push("CNI_NETNS relative", "CNI_NETNS", &|c| {
        c.netns = Some("proc/1/ns/net".into())
    });
    let own = format!(
        "/proc/{}/task/{}/ns/net",
        std::process::id(),
        nix::unistd::gettid()
    );
    push("CNI_NETNS is the node's own", "CNI_NETNS", &move |c| {
        c.netns = Some(own.clone().into())
    });
    push("CNI_PATH unset", "CNI_PATH", &|c| {
        c.unset.push("CNI_PATH".into())
    });
    push("CNI_ARGS without '='", "CNI_ARGS", &|c| {
        c.args = "K8S_POD_NAME".into()
    });
    push("pod namespace ../kube-system", "K8S_POD_NAMESPACE", &|c| {
        c.args = "K8S_POD_NAMESPACE=../kube-system;K8S_POD_NAME=p".into()
    });
    push("pod UID not a UUID", "K8S_POD_UID", &|c| {
        c.args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_UID=123".into()
    });
}

fn stdin_cases(w: &World, pod: &PodNs, cases: &mut Vec<Case>) {
    let conf = base_conf(w);
    let add = Call::new("ADD", "c-stdin", Some(&pod.path), w);
    let mut push = |what: &str, code: u64, names: &'static str, stdin: Vec<u8>| {
        cases.push(Case {
            what: what.into(),
            code,
            call: add.clone(),
            stdin,
            names,
        });
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = conf.clone();
        f(&mut c);
        serde_json::to_vec(&c).unwrap()
    };
    push("empty stdin", 6, "empty", Vec::new());
    push("truncated JSON", 6, "JSON", br#"{"cniVersion":"#.to_vec());
    push("top level array", 6, "object", b"[1,2]".to_vec());
    push("top level string", 6, "object", br#""plexus""#.to_vec());
    push("top level number", 6, "object", b"42".to_vec());
    push(
        "duplicate keys",
        6,
        "duplicate",
        br#"{"cniVersion":"1.1.0","name":"a","name":"b","type":"plexus"}"#.to_vec(),
    );
    push(
        "invalid UTF-8",
        6,
        "JSON",
        b"{\"cniVersion\":\"1.1.0\",\"name\":\"\xff\"}".to_vec(),
    );
    push(
        "lone surrogate",
        6,
        "JSON",
        br#"{"cniVersion":"1.1.0","name":"\ud800"}"#.to_vec(),
    );
    push(
        "NUL in a string",
        6,
        "NUL",
        br#"{"cniVersion":"1.1.0","name":"a\u0000b"}"#.to_vec(),
    );
    let mut big = serde_json::to_vec(&conf).unwrap();
    big.pop();
    big.extend(format!(",\"pad\":\"{}\"}}", "x".repeat(1 << 20)).bytes());
    push("more than 1 MiB", 6, "too large", big);
    let deep = format!(
        r#"{{"cniVersion":"1.1.0","x":{}{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    push("nesting deeper than 64", 6, "deeper", deep.into_bytes());
    push(
        "cniVersion missing",
        7,
        "cniVersion",
        with(&|c| {
            c.as_object_mut().unwrap().remove("cniVersion");
        }),
    );
    push(
        "cniVersion 9.9.9",
        1,
        "9.9.9",
        with(&|c| c["cniVersion"] = json!("9.9.9")),
    );
    push(
        "cniVersion abc",
        1,
        "abc",
        with(&|c| c["cniVersion"] = json!("abc")),
    );
    push(
        "cniVersion a number",
        6,
        "cniVersion",
        with(&|c| c["cniVersion"] = json!(1.0)),
    );
    push(
        "name missing",
        7,
        "name",
        with(&|c| {
            c.as_object_mut().unwrap().remove("name");
        }),
    );
    push("name ../x", 7, "name", with(&|c| c["name"] = json!("../x")));
    push(
        "name with a space",
        7,
        "name",
        with(&|c| c["name"] = json!("a b")),
    );
    push(
        "type a list",
        6,
        "type",
        with(&|c| c["type"] = json!(["plexus"])),
    );
    push(
        "no cluster network",
        7,
        "clusterNetwork",
        with(&|c| {
            c.as_object_mut().unwrap().remove("delegates");
        }),
    );
    push(
        "timeout zero",
        7,
        "timeout",
        with(&|c| c["timeout"] = json!(0)),
    );
    push(
        "timeout negative",
        7,
        "timeout",
        with(&|c| c["timeout"] = json!(-5)),
    );
    push(
        "timeout a string",
        7,
        "timeout",
        with(&|c| c["timeout"] = json!("10s")),
    );
    push(
        "kubeconfig relative",
        7,
        "kubeconfig",
        with(&|c| c["kubeconfig"] = json!("etc/kubeconfig")),
    );
}

const ANNOTATIONS: &[(&str, &str, &str)] = &[
    ("unterminated JSON", "[{", "JSON"),
    ("object instead of list", r#"{"name":"n1"}"#, "list"),
    ("element without name", r#"[{"interface":"net5"}]"#, "name"),
    ("name Net_1", "Net_1", "Net_1"),
    ("name of 254 chars", "LONG", "name"),
    (
        "namespace a/b in JSON",
        r#"[{"name":"n1","namespace":"a/b"}]"#,
        "namespace",
    ),
    (
        "namespace ..",
        r#"[{"name":"n1","namespace":".."}]"#,
        "namespace",
    ),
    ("comma form a/b/c", "a/b/c", "a/b/c"),
    ("comma form n@x@y", "n@x@y", "n@x@y"),
    (
        "interface equals CNI_IFNAME",
        r#"[{"name":"n1","interface":"eth0"}]"#,
        "eth0",
    ),
    (
        "same interface twice",
        r#"[{"name":"n1","interface":"x1"},{"name":"n1","interface":"x1"}]"#,
        "x1",
    ),
    ("interface lo", r#"[{"name":"n1","interface":"lo"}]"#, "lo"),
    (
        "interface with newline",
        "[{\"name\":\"n1\",\"interface\":\"net1\\n\"}]",
        "interface",
    ),
    (
        "interface of 16 chars",
        r#"[{"name":"n1","interface":"abcdefghijklmnop"}]"#,
        "interface",
    ),
    (
        "mac broadcast",
        r#"[{"name":"n1","mac":"ff:ff:ff:ff:ff:ff"}]"#,
        "mac",
    ),
    (
        "mac multicast",
        r#"[{"name":"n1","mac":"01:00:5e:00:00:01"}]"#,
        "mac",
    ),
    (
        "mac all zero",
        r#"[{"name":"n1","mac":"00:00:00:00:00:00"}]"#,
        "mac",
    ),
    (
        "mac not hex",
        r#"[{"name":"n1","mac":"zz:00:00:00:00:01"}]"#,
        "mac",
    ),
    (
        "ip prefix /33",
        r#"[{"name":"n1","ips":["10.0.0.1/33"]}]"#,
        "ips",
    ),
    (
        "ip 300.1.1.1",
        r#"[{"name":"n1","ips":["300.1.1.1"]}]"#,
        "ips",
    ),
    (
        "ip with zone",
        r#"[{"name":"n1","ips":["fe80::1%eth0"]}]"#,
        "ips",
    ),
    (
        "ips with ipam-claim-reference",
        r#"[{"name":"n1","ips":["10.0.0.1/24"],"ipam-claim-reference":"c"}]"#,
        "ipam-claim-reference",
    ),
    (
        "default-route not an IP",
        r#"[{"name":"n1","default-route":["gateway"]}]"#,
        "default-route",
    ),
    (
        "cni-args not an object",
        r#"[{"name":"n1","cni-args":"x"}]"#,
        "cni-args",
    ),
    (
        "portMappings port 0",
        r#"[{"name":"n1","portMappings":[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]}]"#,
        "portMappings",
    ),
    (
        "portMappings port 70000",
        r#"[{"name":"n1","portMappings":[{"hostPort":70000,"containerPort":80,"protocol":"tcp"}]}]"#,
        "portMappings",
    ),
    (
        "bandwidth negative",
        r#"[{"name":"n1","bandwidth":{"ingressRate":-1}}]"#,
        "bandwidth",
    ),
    ("33 attachments", "MANY", "32"),
    (
        "ips without a declared capability",
        r#"[{"name":"n1","ips":["10.89.1.50/24"]}]"#,
        "ips",
    ),
];

fn annotation_cases(w: &World, pod: &PodNs, cases: &mut Vec<Case>) {
    let conf = serde_json::to_vec(&base_conf(w)).unwrap();
    for (i, (what, annotation, names)) in ANNOTATIONS.iter().enumerate() {
        let value = match *annotation {
            "LONG" => "a".repeat(254),
            "MANY" => vec!["n1"; 33].join(","),
            other => other.to_string(),
        };
        let name = format!("bad{i}");
        w.pod("default", &name, &value);
        cases.push(Case {
            what: format!("annotation: {what}"),
            code: 7,
            call: Call::new("ADD", &format!("c-ann{i}"), Some(&pod.path), w).pod("default", &name),
            stdin: conf.clone(),
            names,
        });
    }
}

fn nad_cases(w: &World, pod: &PodNs, cases: &mut Vec<Case>) {
    let conf = serde_json::to_vec(&base_conf(w)).unwrap();
    let bad: &[(&str, &str)] = &[
        ("not JSON", "{nope"),
        (
            "both type and plugins",
            r#"{"cniVersion":"1.0.0","type":"macvlan","plugins":[{"type":"tuning"}]}"#,
        ),
        ("neither type nor plugins", r#"{"cniVersion":"1.0.0"}"#),
        ("empty plugins", r#"{"cniVersion":"1.0.0","plugins":[]}"#),
        (
            "args not an object",
            r#"{"cniVersion":"1.0.0","type":"macvlan","args":"x"}"#,
        ),
    ];
    for (i, (what, config)) in bad.iter().enumerate() {
        let nad = format!("badnad{i}");
        w.manifest(
            &format!("nad-bad{i}.yaml"),
            &format!(
                "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: {nad}\nspec:\n  config: '{}'\n",
                config.replace('\'', "''")
            ),
        );
        let pod_name = format!("uses-bad{i}");
        w.pod("default", &pod_name, &nad);
        cases.push(Case {
            what: format!("NAD: {what}"),
            code: 7,
            call: Call::new("ADD", &format!("c-nad{i}"), Some(&pod.path), w)
                .pod("default", &pod_name),
            stdin: conf.clone(),
            names: "default/badnad",
        });
    }
    // Delegate types that try to leave CNI_PATH or recurse into plexus. The canary sits
    // outside the plugin path where the first two types lead (relative to the world's bin
    // dir, and absolute): a lookup that let a path through would run it.
    let outside = w.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let touched = w.tmp.path().join("canary-touched");
    write_script(&outside, "canary", &format!("touch {}", touched.display()));
    let absolute = outside.join("canary").display().to_string();
    for (i, t) in [
        "../outside/canary",
        absolute.as_str(),
        "../../bin/sh",
        "/bin/sh",
        "a/b",
        "..",
        "",
        "plexus",
    ]
    .iter()
    .enumerate()
    {
        let nad = format!("evil{i}");
        w.nad(
            "default",
            &nad,
            &json!({"cniVersion": "1.0.0", "name": nad, "type": t}),
        );
        let pod_name = format!("uses-evil{i}");
        w.pod("default", &pod_name, &nad);
        cases.push(Case {
            what: format!("delegate type {t:?}"),
            code: 7,
            call: Call::new("ADD", &format!("c-evil{i}"), Some(&pod.path), w)
                .pod("default", &pod_name),
            stdin: conf.clone(),
            names: "evil",
        });
    }
}

#[test]
fn every_bad_input_gets_its_code_and_leaves_nothing() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "n1",
        &w.macvlan_conf("n1", "upl0", "10.89.1.0/24"),
    );
    let pod = PodNs::new();
    let mut cases = Vec::new();
    env_cases(&w, &pod, &mut cases);
    stdin_cases(&w, &pod, &mut cases);
    annotation_cases(&w, &pod, &mut cases);
    nad_cases(&w, &pod, &mut cases);
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let r = case.call.run(&case.stdin);
        let problem = (|| -> Option<String> {
            if r.code != 1 {
                return Some(format!(
                    "exit {} (stdout {:?}, stderr {:?})",
                    r.code, r.stdout, r.stderr
                ));
            }
            let v: Value = serde_json::from_str(&r.stdout).ok()?;
            if v["code"] != case.code {
                return Some(format!("code {} instead of {}: {v}", v["code"], case.code));
            }
            let msg = v["msg"].as_str().unwrap_or_default();
            if !msg.contains(case.names) {
                return Some(format!("message does not name {:?}: {msg}", case.names));
            }
            None
        })()
        .or_else(|| {
            serde_json::from_str::<Value>(&r.stdout)
                .err()
                .map(|e| format!("not JSON ({e}): {:?}", r.stdout))
        });
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", case.what));
        }
        // Nothing left, after every case, and nothing ran that a refused type names.
        assert!(
            !w.tmp.path().join("canary-touched").exists(),
            "{}: a refused delegate type ran",
            case.what
        );
        assert_eq!(pod.links(), ["lo"], "{}: links left", case.what);
        assert_eq!(
            w.reservations(),
            Vec::<String>::new(),
            "{}: IPs left",
            case.what
        );
        assert_eq!(
            w.journal_files(),
            Vec::<String>::new(),
            "{}: journal left",
            case.what
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} bad inputs checked", cases.len());
}
