//! Callers that do what no well-behaved runtime does, through the real binary: a stdout that
//! is closed or full, container IDs at and past the length the journal can name, IDs that
//! look like each other's prefix or like a temp file, a `CNI_ARGS` that is not UTF-8, and a
//! plugin path that would make plexus run itself or a binary someone else could have put
//! there. Each gets exit status 1 with the spec's code (never a panic) and leaves nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};

fn conf(w: &World, bridge: &str, subnet: &str) -> Value {
    w.plexus_conf(
        &w.bridge_conf("cluster", bridge, subnet),
        json!({"builtins": true}),
    )
}

/// Runs `cmd` with `stdin`, its stdout going to `out`: exit status and stderr.
fn run_into(mut cmd: Command, stdin: &[u8], out: Stdio) -> (i32, String) {
    cmd.stdin(Stdio::piped()).stdout(out).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A call refused on its environment exits before reading stdin.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A stdout on which every write fails with ENOSPC.
fn full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

/// A stdout whose reader is gone: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    Stdio::from(w)
}

fn assert_exit_1_without_panic((code, stderr): (i32, String), what: &str) {
    assert_eq!(code, 1, "{what}: exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[test]
fn a_closed_or_full_stdout_is_exit_1_and_the_add_stays_journaled_for_del() {
    enter_node_netns();
    let w = World::new();
    let c = serde_json::to_vec(&conf(&w, "cni-hc0", "10.88.100.0/24")).unwrap();
    for (i, out) in [full(), closed_pipe()].into_iter().enumerate() {
        let pod = PodNs::new();
        let add = Call::new("ADD", &format!("c-out{i}"), Some(&pod.path), &w);
        assert_exit_1_without_panic(run_into(add.command(), &c, out), "ADD");
        // The runtime saw a failure and will DEL: what the ADD made is journaled for it.
        assert!(
            w.journal_files().iter().any(|f| f.ends_with(".json")),
            "{:?}",
            w.journal_files()
        );
        assert_eq!(pod.links(), ["eth0", "lo"]);
        add.with("DEL").run(&c).ok();
        w.assert_clean(Some(&pod));
    }
    // An error object, a VERSION answer and the CLI's output hit the same wall.
    let pod = PodNs::new();
    let mut bad = Call::new("ADD", "c-bad", Some(&pod.path), &w);
    bad.ifname = "a/b".into();
    assert_exit_1_without_panic(run_into(bad.command(), &c, full()), "error object");
    let version = Call::new("VERSION", "", None, &w);
    assert_exit_1_without_panic(run_into(version.command(), &c, closed_pipe()), "VERSION");
    for args in [&["version"][..], &["gen", "crd"]] {
        let mut cli = Command::new(env!("CARGO_BIN_EXE_plexus"));
        cli.args(args).env_clear();
        assert_exit_1_without_panic(run_into(cli, b"", full()), &args.join(" "));
    }
    w.assert_clean(Some(&pod));
}

#[test]
fn container_ids_past_what_the_journal_can_name_are_code_4_before_anything() {
    enter_node_netns();
    let w = World::new();
    let c = conf(&w, "cni-hc1", "10.88.101.0/24");
    let pod = PodNs::new();
    // 218 bytes: the longest ID whose every journal file name (the temp file's is longest)
    // fits in 255 bytes.
    let longest = "a".repeat(218);
    let too_long = "a".repeat(219);
    let e = Call::new("ADD", &too_long, Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&c)
        .err(4);
    assert!(
        e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );
    assert!(!w.cni_dir.exists(), "not even the journal dir was made");
    w.assert_clean(Some(&pod));
    let add = Call::new("ADD", &longest, Some(&pod.path), &w).pod("default", "p");
    add.run_json(&c).ok();
    add.with("CHECK").run_json(&c).ok();
    add.with("DEL").run_json(&c).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn journal_lookups_match_a_container_exactly() {
    enter_node_netns();
    let w = World::new();
    let c = conf(&w, "cni-hc2", "10.88.102.0/24");
    let (a, b, t) = (PodNs::new(), PodNs::new(), PodNs::new());
    // "c" is a prefix of "c-other"'s file names; "x.json.tmp.1" looks like a temp file.
    let other = Call::new("ADD", "c-other", Some(&b.path), &w);
    other.run_json(&c).ok();
    let tmpish = Call::new("ADD", "x.json.tmp.1", Some(&t.path), &w);
    tmpish.run_json(&c).ok();
    let before = w.journal_files();
    let short = Call::new("ADD", "c", Some(&a.path), &w);
    short.run_json(&c).ok();
    short.with("DEL").run_json(&c).ok();
    assert_eq!(
        w.journal_files(),
        before,
        "c's lock went with its last entry"
    );

    // GC (grace 0) keeps every entry it is told is valid, temp-file look-alike included.
    let mut gc_conf = c.clone();
    gc_conf["gcGracePeriod"] = json!(0);
    gc_conf["cni.dev/valid-attachments"] = json!([
        {"containerID": "c-other", "ifname": "eth0"},
        {"containerID": "x.json.tmp.1", "ifname": "eth0"}
    ]);
    let mut gc = Call::new("GC", "", None, &w);
    gc.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    gc.run_json(&gc_conf).ok();
    assert_eq!(w.journal_files(), before);
    tmpish.with("CHECK").run_json(&c).ok();
    tmpish.with("DEL").run_json(&c).ok();
    other.with("DEL").run_json(&c).ok();
    assert_eq!(t.links(), ["lo"]);
    w.assert_clean(Some(&b));
}

#[test]
fn cni_args_that_are_not_utf8_are_code_4_never_a_pod_without_identity() {
    enter_node_netns();
    let w = World::new();
    let c = serde_json::to_vec(&conf(&w, "cni-hc3", "10.88.103.0/24")).unwrap();
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-utf8", Some(&pod.path), &w);
    for var in ["CNI_ARGS", "CNI_IFNAME"] {
        let mut cmd = call.command();
        let mut bytes = b"K8S_POD_NAMESPACE=default;K8S_POD_NAME=p".to_vec();
        if var == "CNI_IFNAME" {
            bytes = b"eth".to_vec();
        }
        bytes.push(0xff);
        cmd.env(var, std::ffi::OsString::from_vec(bytes));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Refused on its environment, plexus exits before reading stdin.
        let _ = child.stdin.take().unwrap().write_all(&c);
        let o = child.wait_with_output().unwrap();
        let r = Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        let e = r.err(4);
        assert!(e["msg"].as_str().unwrap().contains(var), "{e}");
        assert!(!w.cni_dir.exists(), "{var}: nothing was started");
        w.assert_clean(Some(&pod));
    }
}

#[test]
fn plexus_never_runs_itself_or_a_plugin_someone_else_could_have_written() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let canary = w.tmp.path().join("ran");
    // An admin's alias of plexus under another name, a symlink and a hard link's worth.
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_plexus"), w.bin.join("multus")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_plexus"), w.bin.join("mycni")).unwrap();
    // A plugin owned by an ordinary user, in a directory that is otherwise trusted.
    w.script("userplugin", &format!("touch {}", canary.display()));
    nix::unistd::chown(
        &w.bin.join("userplugin"),
        Some(nix::unistd::Uid::from_raw(1000)),
        None,
    )
    .unwrap();
    let c = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-hc4", "10.88.104.0/24"),
        json!({}),
    );
    let pod = PodNs::new();
    for (i, (ty, says)) in [
        ("multus", "running executable"),
        ("mycni", "running executable"),
        ("userplugin", "not root"),
    ]
    .iter()
    .enumerate()
    {
        w.nad(
            "default",
            &format!("n{i}"),
            &json!({"cniVersion": "1.0.0", "name": format!("n{i}"), "type": ty}),
        );
        w.pod("default", &format!("p{i}"), &format!("n{i}"));
        let e = Call::new("ADD", &format!("c-self{i}"), Some(&pod.path), &w)
            .pod("default", &format!("p{i}"))
            .run_json(&c)
            .err(7);
        assert!(e["msg"].as_str().unwrap().contains(says), "{ty}: {e}");
        w.assert_clean(Some(&pod));
    }
    assert!(!canary.exists(), "the user's plugin never ran");
}
