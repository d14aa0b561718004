//! The journal under stress: corrupt or leftover files, unsafe state dirs, a full or read-only
//! disk, a careless umask. Each through the real binary, each ending with the leak oracle.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn setup(w: &World, bridge: &str, subnet: &str) -> serde_json::Value {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "n1",
        &w.macvlan_conf("n1", "upl0", "10.89.1.0/24"),
    );
    w.pod("default", "p", "n1");
    w.plexus_conf(&w.bridge_conf("cluster", bridge, subnet), json!({}))
}

fn entry_file(w: &World) -> std::path::PathBuf {
    let name = w
        .journal_files()
        .into_iter()
        .find(|f| f.ends_with(".json"))
        .expect("a journal entry");
    w.cni_dir.join(name)
}

#[test]
fn a_corrupt_entry_is_quarantined_and_del_still_releases_everything() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(&w, "cni-j0", "10.88.30.0/24");
    for (i, garbage) in [
        &b""[..],
        b"{\"format\":1,\"contai",
        b"[1,2,3]",
        b"\x00\xff garbage",
    ]
    .iter()
    .enumerate()
    {
        let pod = PodNs::new();
        let call =
            Call::new("ADD", &format!("c-corrupt{i}"), Some(&pod.path), &w).pod("default", "p");
        call.run_json(&conf).ok();
        assert_eq!(w.reservations().len(), 2);
        std::fs::write(entry_file(&w), garbage).unwrap();
        // An ADD for the same container stays refused while the entry is unreadable.
        call.run_json(&conf).err(7);
        call.with("DEL").run_json(&conf).ok();
        assert_eq!(
            w.reservations(),
            Vec::<String>::new(),
            "case {i}: IPs released"
        );
        assert_eq!(pod.links(), ["lo"], "case {i}: links removed");
        let left = w.journal_files();
        assert_eq!(
            left,
            ["quarantine"],
            "case {i}: only the quarantined copy stays"
        );
        let quarantined = std::fs::read_dir(w.cni_dir.join("quarantine"))
            .unwrap()
            .count();
        assert_eq!(quarantined, i + 1);
        // The pod can be set up again afterwards.
        call.run_json(&conf).ok();
        call.with("DEL").run_json(&conf).ok();
    }
}

#[test]
fn leftover_temp_files_do_not_disturb_the_entry() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(&w, "cni-j1", "10.88.31.0/24");
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-tmp", Some(&pod.path), &w).pod("default", "p");
    call.run_json(&conf).ok();
    let entry = entry_file(&w);
    let tmp = std::path::PathBuf::from(format!("{}.tmp.99999", entry.display()));
    std::fs::write(&tmp, "half-written by a crashed plexus").unwrap();
    call.with("CHECK").run_json(&conf).ok();
    call.with("DEL").run_json(&conf).ok();
    assert_eq!(w.reservations(), Vec::<String>::new());
    // GC sweeps stale temp files.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    gc["gcGracePeriod"] = json!(0);
    let mut g = Call::new("GC", "", None, &w);
    g.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    g.run_json(&gc).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn unsafe_state_dirs_are_refused_with_code_5() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(&w, "cni-j2", "10.88.32.0/24");
    let pod = PodNs::new();
    let canary = w.tmp.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::os::unix::fs::symlink(&canary, &w.cni_dir).unwrap();
    Call::new("ADD", "c-unsafe", Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&conf)
        .err(5);
    assert_eq!(
        std::fs::read_dir(&canary).unwrap().count(),
        0,
        "nothing written through the link"
    );
    std::fs::remove_file(&w.cni_dir).unwrap();
    std::fs::create_dir(&w.cni_dir).unwrap();
    std::fs::set_permissions(&w.cni_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    Call::new("ADD", "c-unsafe", Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&conf)
        .err(5);
    assert_eq!(pod.links(), ["lo"]);
    assert_eq!(w.reservations(), Vec::<String>::new());
}

#[test]
fn files_are_private_even_with_umask_000() {
    enter_node_netns();
    let w = World::new();
    let mut conf = setup(&w, "cni-j3", "10.88.33.0/24");
    let log = w.tmp.path().join("plexus.log");
    conf["logFile"] = json!(log.display().to_string());
    conf["logLevel"] = json!("debug");
    conf["logToStderr"] = json!(false);
    let pod = PodNs::new();
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("umask 000; exec {}", env!("CARGO_BIN_EXE_plexus")),
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c-umask")
        .env("CNI_NETNS", &pod.path)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p")
        .env("CNI_PATH", w.cni_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(&serde_json::to_vec(&conf).unwrap())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // stdout is the result and nothing else.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.cni_dir), 0o700);
    assert_eq!(mode(&entry_file(&w)), 0o600);
    assert_eq!(mode(&log), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("attached"),
        "log has the network-status line: {text}"
    );
    assert!(text.lines().count() >= 2, "one event per line");
    Call::new("DEL", "c-umask", Some(&pod.path), &w)
        .pod("default", "p")
        .run_json(&conf)
        .ok();
    w.assert_clean(Some(&pod));
}

/// A tmpfs mounted over the state dir for the test's lifetime.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!(
            "mount -t tmpfs -o {opts},mode=0700 plexus-test {}",
            dir.display()
        ));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_state_dir_fails_add_before_any_delegate_runs() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(&w, "cni-j4", "10.88.34.0/24");
    let pod = PodNs::new();
    {
        let _fs = Tmpfs::mount(&w.cni_dir, "size=64k");
        // Fill it up.
        let _ = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}/fill", w.cni_dir.display()),
                "bs=4k",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        let r = Call::new("ADD", "c-full", Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf);
        let e = r.err(5);
        assert!(e["msg"].as_str().unwrap().contains("journal"), "{e}");
        assert_eq!(pod.links(), ["lo"]);
        assert_eq!(w.reservations(), Vec::<String>::new(), "no delegate ran");
        // DEL on a full disk still answers 0.
        Call::new("DEL", "c-full", Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf)
            .ok();
    }
    {
        let _fs = Tmpfs::mount(&w.cni_dir, "size=1m,ro");
        let r = Call::new("ADD", "c-ro", Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf);
        r.err(5);
        assert_eq!(pod.links(), ["lo"]);
        assert_eq!(w.reservations(), Vec::<String>::new());
        Call::new("DEL", "c-ro", Some(&pod.path), &w)
            .pod("default", "p")
            .run_json(&conf)
            .ok();
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_never_on_stdout() {
    enter_node_netns();
    let w = World::new();
    let mut conf = setup(&w, "cni-j5", "10.88.35.0/24");
    let log = w.tmp.path().join("plexus.json.log");
    conf["logFile"] = json!(log.display().to_string());
    conf["logLevel"] = json!("debug");
    conf["logFormat"] = json!("json");
    conf["logToStderr"] = json!(false);
    let pod = PodNs::new();
    let add = Call::new("ADD", "c-jsonlog", Some(&pod.path), &w).pod("default", "p");
    let r = add.run_json(&conf);
    r.ok();
    assert_eq!(r.json()["cniVersion"], "1.1.0", "stdout is only the result");
    assert_eq!(r.stderr, "", "logToStderr false keeps stderr quiet");
    add.with("DEL").run_json(&conf).ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() >= 3, "{text}");
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    w.assert_clean(Some(&pod));
}

#[test]
fn log_options_rotate_a_full_log_on_the_next_call() {
    enter_node_netns();
    let w = World::new();
    let mut conf = setup(&w, "cni-j6", "10.88.36.0/24");
    let log = w.tmp.path().join("rot.log");
    std::fs::write(&log, vec![b'x'; (1 << 20) + 10]).unwrap();
    conf["logFile"] = json!(log.display().to_string());
    conf["logLevel"] = json!("info");
    conf["logToStderr"] = json!(false);
    conf["logOptions"] = json!({"maxSize": 1, "maxBackups": 1, "compress": true});
    let pod = PodNs::new();
    let add = Call::new("ADD", "c-rot", Some(&pod.path), &w).pod("default", "p");
    add.run_json(&conf).ok();
    let backups: Vec<String> = std::fs::read_dir(w.tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("rot.log.") && n.ends_with(".gz"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(
        fresh.contains("attached") && !fresh.contains("xxxx"),
        "the new log starts empty: {} bytes",
        fresh.len()
    );
    add.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn a_delegates_control_characters_never_split_or_colour_a_log_line() {
    enter_node_netns();
    let w = World::new();
    let mut conf = setup(&w, "cni-j7", "10.88.37.0/24");
    // The delegate's error message carries a newline and an ANSI escape.
    w.script(
        "sneaky",
        r#"[ "$CNI_COMMAND" = DEL ] && exit 0
printf '{"code":7,"msg":"refused\\nFAKE ERROR line\\u001b[31m"}'; exit 1"#,
    );
    w.nad(
        "default",
        "sn",
        &json!({"cniVersion": "1.0.0", "name": "sn", "type": "sneaky"}),
    );
    w.pod("default", "s", "sn");
    let log = w.tmp.path().join("text.log");
    conf["logFile"] = json!(log.display().to_string());
    conf["logToStderr"] = json!(false);
    let pod = PodNs::new();
    Call::new("ADD", "c-sneaky", Some(&pod.path), &w)
        .pod("default", "s")
        .run_json(&conf)
        .err(100);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "raw escape in the log: {text:?}");
    let line = text
        .lines()
        .find(|l| l.contains("refused"))
        .expect("the failure is logged");
    assert!(
        line.contains("FAKE ERROR line"),
        "the message stays on its event's line: {text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("FAKE")), "{text}");
    w.assert_clean(Some(&pod));
}

/// A power cut between a new entry's rename and its `fsync` can leave the entry's name on a
/// torn plan, written before any delegate ran. A runtime that forgot the container never DELs
/// it, so GC sets it aside once the container is no longer listed; while listed it stays, and
/// an unreadable entry that still names attachments stays for DEL to undo them.
#[test]
fn gc_sets_aside_a_torn_plan_once_the_runtime_no_longer_lists_it() {
    enter_node_netns();
    let w = World::new();
    let conf = setup(&w, "cni-j9", "10.88.39.0/24");
    let journal = plexus::journal::Journal::open(&w.cni_dir).unwrap();
    let torn = journal.entry_path("c-torn", "eth0");
    std::fs::write(&torn, br#"{"format":1,"containerID":"c-to"#).unwrap();
    let named = journal.entry_path("c-named", "eth0");
    std::fs::write(
        &named,
        br#"{"format": 99, "attachments": [{"network": "n1", "ifname": "net1", "isDefault": false, "conf": {}, "cniArgs": "", "state": "added"}]}"#,
    )
    .unwrap();

    let mut gc = conf.clone();
    gc["gcGracePeriod"] = json!(0);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c-torn", "ifname": "eth0"}]);
    let mut g = Call::new("GC", "", None, &w);
    g.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    g.run_json(&gc).ok();
    assert!(torn.exists(), "a listed container's entry stays");

    gc["cni.dev/valid-attachments"] = json!([]);
    g.run_json(&gc).ok();
    assert!(!torn.exists(), "the torn plan is set aside");
    assert!(named.exists(), "an entry naming attachments stays for DEL");
    let quarantined: Vec<String> = std::fs::read_dir(w.cni_dir.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0].starts_with(&torn.file_name().unwrap().to_string_lossy().to_string()),
        "{quarantined:?}"
    );
    std::fs::remove_file(&named).unwrap();
}
