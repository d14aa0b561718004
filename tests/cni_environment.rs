//! Walks the table of docs/cni-environment.md: for every command and `CNI_*` variable, runs the
//! real binary with that variable missing, empty, bad or a placeholder, and checks the outcome
//! the table promises. The table is the contract; this test keeps the binary to it.

mod common;

use common::{Call, PodNs, Run, World};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];

/// `(variable, command) -> cell`, read from the doc's table.
fn table() -> BTreeMap<(String, String), String> {
    let doc = include_str!("../docs/cni-environment.md");
    let mut header: Vec<String> = Vec::new();
    let mut cells = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let cols: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        if cols[0] == "variable" {
            header = cols;
            continue;
        }
        if !cols[0].starts_with("CNI_") {
            continue;
        }
        for (i, cell) in cols.iter().enumerate().skip(1) {
            cells.insert((cols[0].clone(), header[i].clone()), cell.clone());
        }
    }
    assert_eq!(
        &header[1..],
        COMMANDS,
        "the table's columns are the six commands"
    );
    assert_eq!(cells.len(), 6 * 6, "six variables by six commands");
    cells
}

/// Values a validated variable must refuse (each is refused by every command that validates).
fn bad_values(var: &str) -> &'static [&'static str] {
    match var {
        "CNI_CONTAINERID" => &["../escape", "-lead"],
        "CNI_NETNS" => &["dummy", "relative/ns"],
        "CNI_IFNAME" => &["a/b", "sixteen-chars-xx"],
        "CNI_ARGS" => &["K8S_POD_UID=nope", "novalue"],
        _ => &[],
    }
}

struct Fixture {
    w: World,
    pod: PodNs,
    conf: Value,
}

impl Fixture {
    fn new() -> Fixture {
        let w = World::new();
        // A stand-in cluster delegate: prints a result on ADD, nothing for the other commands.
        w.script(
            "envtest",
            r#"[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}'; exit 0"#,
        );
        let cluster = json!({"cniVersion": "1.0.0", "name": "envnet", "type": "envtest"});
        let conf = w.plexus_conf(
            &cluster,
            json!({"cniVersion": "1.1.0", "cni.dev/valid-attachments": []}),
        );
        Fixture {
            w,
            pod: PodNs::new(),
            conf,
        }
    }

    /// The environment a well-behaved runtime gives `command`.
    fn base(&self, command: &str) -> Call {
        let mut c = Call::new(command, "envc1", Some(&self.pod.path), &self.w);
        if matches!(command, "GC" | "STATUS" | "VERSION") {
            // libcni's VERSION probe: placeholders for what the command does not use.
            c.container_id = String::new();
            c.netns = None;
            c.ifname = String::new();
            c.args = String::new();
        }
        c
    }

    fn run(&self, call: &Call) -> Run {
        call.run_json(&self.conf)
    }

    /// Runs `call` (CHECK needs its ADD first) and undoes any ADD; returns `call`'s outcome.
    fn attempt(&self, call: &Call) -> Run {
        let check = call.command == "CHECK";
        if check {
            self.run(&self.base("ADD")).ok();
        }
        let out = self.run(call);
        if call.command == "ADD" && out.code == 0 || check {
            self.run(&self.base("DEL")).ok();
        }
        self.w.assert_clean(Some(&self.pod));
        out
    }
}

fn field<'a>(c: &'a mut Call, var: &str) -> &'a mut String {
    match var {
        "CNI_COMMAND" => &mut c.command,
        "CNI_CONTAINERID" => &mut c.container_id,
        "CNI_IFNAME" => &mut c.ifname,
        "CNI_ARGS" => &mut c.args,
        "CNI_PATH" => &mut c.path,
        other => panic!("no field for {other}"),
    }
}

/// `call` with `var` set to `value`, or unset for `None`.
fn with(mut call: Call, var: &str, value: Option<&str>) -> Call {
    if var == "CNI_NETNS" {
        call.netns = value.map(Into::into);
        return call;
    }
    match value {
        Some(v) => *field(&mut call, var) = v.to_string(),
        None => call.unset.push(var.into()),
    }
    call
}

fn expect_env_error(out: &Run, var: &str, what: &str) {
    let e = out.err(4);
    assert!(
        e["msg"].as_str().unwrap_or_default().contains(var),
        "{what}: the code 4 error must name {var}: {e}"
    );
}

fn expect_ok(out: &Run, what: &str) {
    assert_eq!(
        out.code, 0,
        "{what}: expected success; stdout: {} stderr: {}",
        out.stdout, out.stderr
    );
}

#[test]
fn every_cell_of_the_environment_table_holds() {
    common::enter_node_netns();
    let f = Fixture::new();
    for command in COMMANDS {
        expect_ok(
            &f.attempt(&f.base(command)),
            &format!("{command} as a runtime sends it"),
        );
    }
    let cells = table();
    for ((var, command), cell) in &cells {
        let what = |case: &str| format!("{command} with {var} {case} (table: {cell:?})");
        let base = f.base(command);
        let required = cell.starts_with("required");
        let validated = cell.ends_with("validated");
        match cell.as_str() {
            "required" | "required, validated" | "optional" | "optional, validated" | "ignored" => {
            }
            other => panic!("unknown table cell {other:?} for {var}/{command}"),
        }
        // Empty counts as missing for every variable.
        for (case, value) in [("missing", None), ("empty", Some(""))] {
            // Without CNI_COMMAND and the container variables the binary is the command line.
            if var == "CNI_COMMAND" && value.is_none() {
                continue;
            }
            let out = f.attempt(&with(base.clone(), var, value));
            if required {
                expect_env_error(&out, var, &what(case));
            } else {
                expect_ok(&out, &what(case));
            }
        }
        for bad in bad_values(var) {
            let out = f.attempt(&with(base.clone(), var, Some(bad)));
            if validated {
                expect_env_error(&out, var, &what(&format!("= {bad:?}")));
            } else if cell == "ignored" {
                expect_ok(&out, &what(&format!("= {bad:?}")));
            }
        }
        if cell == "ignored" {
            let out = f.attempt(&with(base.clone(), var, Some("dummy")));
            expect_ok(&out, &what("= \"dummy\""));
        }
    }
}

/// The call libcni makes before it uses a network (podman and CRI-O report the network as
/// missing when it fails), exactly as recorded from a real caller.
#[test]
fn version_with_libcni_placeholders_answers() {
    let w = World::new();
    let call = Call {
        command: "VERSION".into(),
        container_id: String::new(),
        netns: Some("dummy".into()),
        ifname: "dummy".into(),
        args: String::new(),
        path: "dummy".into(),
        extra_env: Vec::new(),
        unset: Vec::new(),
        program: None,
    };
    let out = call.run(br#"{"cniVersion":"1.0.0","name":"x","type":"plexus"}"#);
    out.ok();
    let v = out.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.1.0")) && a.contains(&json!("0.1.0"))),
        "{v}"
    );
    drop(w);
}

/// containerd's second DEL of a pod (RemovePodSandbox) carries an empty CNI_NETNS and must
/// still undo what the journal holds.
#[test]
fn del_with_an_empty_netns_undoes_the_add() {
    common::enter_node_netns();
    let f = Fixture::new();
    f.run(&f.base("ADD")).ok();
    let entries = f.w.journal_files();
    assert_eq!(
        entries.iter().filter(|n| n.ends_with(".json")).count(),
        1,
        "{entries:?}"
    );
    let mut del = f.base("DEL");
    del.netns = Some("".into());
    f.run(&del).ok();
    f.w.assert_clean(None);
}
