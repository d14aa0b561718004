//! `plexus generate-config` and `plexus install` through the real binary, the conf they write
//! driving a real ADD/DEL, and the readiness gate of ADD, GC and STATUS.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn plexus<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plexus"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(args)
        .output()
        .unwrap()
}

fn generate(dir: &Path, extra: &[&str]) -> Output {
    let d = dir.display().to_string();
    let mut args = vec!["generate-config", "--conf-dir", d.as_str()];
    args.extend_from_slice(extra);
    plexus(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    n.sort();
    n
}

fn flannel() -> Value {
    json!({"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
    ]})
}

/// A conf dir as a busy node has it: broken, empty, meta-plugin and non-conf files before
/// the real primary, and another network after it.
/// A node's CNI binary and conf dirs under `root`, flannel's conf in place as the primary.
fn node_dirs(root: &Path, bin: &str, conf: &str) -> (PathBuf, PathBuf) {
    let (bin, conf_dir) = (root.join(bin), root.join(conf));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf_dir).unwrap();
    write(&conf_dir, "10-flannel.conflist", &flannel().to_string());
    (bin, conf_dir)
}

fn busy_conf_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(
        p,
        "01-broken.conf",
        "{\"cniVersion\": \"1.0.0\", \"type\": ",
    );
    write(p, "02-empty.conflist", "");
    write(
        p,
        "03-multus.conf",
        r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","delegates":[{"type":"x"}]}"#,
    );
    write(
        p,
        "04-old-plexus.conflist",
        r#"{"cniVersion":"1.0.0","name":"plexus","plugins":[{"type":"plexus","clusterNetwork":"x"}]}"#,
    );
    write(p, "05-no-type.conf", r#"{"cniVersion":"1.0.0","name":"n"}"#);
    std::fs::create_dir(p.join("06-dir.conf")).unwrap();
    write(p, "07-notes.txt", "not a conf");
    write(
        p,
        "10-flannel.conflist",
        &serde_json::to_string_pretty(&flannel()).unwrap(),
    );
    write(
        p,
        "20-bridge.conf",
        r#"{"cniVersion":"1.0.0","name":"br","type":"bridge","bridge":"cni0"}"#,
    );
    d
}

#[test]
fn picks_the_lexically_first_usable_conf_and_names_what_it_skipped() {
    let d = busy_conf_dir();
    let out = generate(d.path(), &[]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("primary 10-flannel.conflist"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    for skipped in [
        "01-broken.conf",
        "02-empty.conflist",
        "03-multus.conf",
        "04-old-plexus.conflist",
        "05-no-type.conf",
        "06-dir.conf",
    ] {
        assert!(
            err.contains(&format!("skipped {skipped}")),
            "{skipped}: {err}"
        );
    }
    assert!(!err.contains("07-notes.txt"), "{err}");
    assert!(!err.contains("20-bridge.conf"), "{err}");

    let c = read_json(&d.path().join("00-plexus.conflist"));
    assert_eq!(c["name"], "plexus");
    assert_eq!(c["cniVersion"], "0.3.1");
    let plugins = c["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0]["type"], "plexus");
    // Inline and unchanged: the cluster network is exactly the primary file.
    assert_eq!(plugins[0]["delegates"], json!([flannel()]));
    assert_eq!(
        plugins[0]["capabilities"],
        json!({"portMappings": true, "io.kubernetes.cri.pod-annotations": true})
    );
}

#[test]
fn lexical_order_is_byte_order() {
    let d = tempfile::tempdir().unwrap();
    let conf = |name: &str| format!(r#"{{"cniVersion":"1.0.0","name":"{name}","type":"bridge"}}"#);
    write(d.path(), "10-b.conf", &conf("ten"));
    write(d.path(), "1-a.conf", &conf("one"));
    write(d.path(), "a.conf", &conf("lower"));
    write(d.path(), "A.json", &conf("upper"));
    let out = generate(d.path(), &[]);
    assert_ok(&out);
    // '-' (0x2d) sorts before '0' (0x30): "1-a.conf" < "10-b.conf" < "A.json" < "a.conf".
    assert!(
        stdout(&out).contains("primary 1-a.conf"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(d.path().join("1-a.conf")).unwrap();
    std::fs::remove_file(d.path().join("10-b.conf")).unwrap();
    let out = generate(d.path(), &[]);
    assert!(stdout(&out).contains("primary A.json"), "{}", stdout(&out));
}

#[test]
fn a_pinned_primary_wins_and_an_unusable_pin_fails_without_writing() {
    let d = busy_conf_dir();
    let out = generate(d.path(), &["--primary", "20-bridge.conf"]);
    assert_ok(&out);
    let c = read_json(&d.path().join("00-plexus.conflist"));
    assert_eq!(c["plugins"][0]["delegates"][0]["name"], "br");
    assert_eq!(c["cniVersion"], "1.0.0");
    std::fs::remove_file(d.path().join("00-plexus.conflist")).unwrap();

    for (pin, why) in [
        ("01-broken.conf", "not valid JSON"),
        ("03-multus.conf", "a multus conf, not a primary network"),
        (
            "04-old-plexus.conflist",
            "a plexus conf, not a primary network",
        ),
        ("99-missing.conf", "No such file"),
        ("../10-flannel.conflist", "not a path"),
    ] {
        let out = generate(d.path(), &["--primary", pin]);
        assert_eq!(out.status.code(), Some(1), "{pin}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(why), "{pin}: {err}");
        assert!(!d.path().join("00-plexus.conflist").exists(), "{pin}");
    }
}

#[test]
fn no_usable_primary_fails_naming_the_dir_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "01-broken.conf", "{");
    write(
        d.path(),
        "05-multus.conf",
        r#"{"cniVersion":"0.3.1","name":"m","type":"multus"}"#,
    );
    let out = generate(d.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no primary CNI conf"), "{err}");
    assert!(err.contains(&d.path().display().to_string()), "{err}");
    assert!(err.contains("01-broken.conf"), "{err}");
    assert_eq!(names(d.path()), ["01-broken.conf", "05-multus.conf"]);

    let missing = d.path().join("nope");
    let out = generate(&missing, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&missing.display().to_string()));
}

#[test]
fn waits_for_a_primary_that_appears_later() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        write(
            &dir,
            "10-late.conf",
            r#"{"cniVersion":"1.0.0","name":"late","type":"bridge"}"#,
        );
    });
    let t = Instant::now();
    let out = generate(d.path(), &["--primary-timeout", "10"]);
    writer.join().unwrap();
    assert_ok(&out);
    assert!(t.elapsed() >= Duration::from_millis(1500));
    assert!(stdout(&out).contains("primary 10-late.conf"));

    // A pinned primary is waited for too, and the other file present meanwhile is not taken.
    let dir = d.path().to_path_buf();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        write(
            &dir,
            "50-pinned.conf",
            r#"{"cniVersion":"1.0.0","name":"pinned","type":"bridge"}"#,
        );
    });
    let out = generate(
        d.path(),
        &["--primary", "50-pinned.conf", "--primary-timeout", "10"],
    );
    writer.join().unwrap();
    assert_ok(&out);
    assert!(stdout(&out).contains("primary 50-pinned.conf"));
    // Without a timeout a missing pin fails at once.
    let t = Instant::now();
    let out = generate(d.path(), &["--primary", "60-absent.conf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn cni_version_versions_and_capabilities_are_carried_over() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "10-calico.conflist",
        r#"{"name":"k8s-pod-network","cniVersion":"1.0.0","cniVersions":["0.4.0","1.0.0","1.1.0"],
            "plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}},
                       {"type":"bandwidth","capabilities":{"bandwidth":true}},
                       {"type":"portmap","snat":true,"capabilities":{"portMappings":true}}]}"#,
    );
    assert_ok(&generate(d.path(), &[]));
    let c = read_json(&d.path().join("00-plexus.conflist"));
    assert_eq!(c["cniVersion"], "1.0.0");
    assert_eq!(c["cniVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    assert_eq!(
        c["plugins"][0]["capabilities"],
        json!({"bandwidth": true, "portMappings": true,
               "io.kubernetes.cri.pod-annotations": true})
    );

    // A single conf's own capabilities.
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "10-br.conf",
        r#"{"cniVersion":"0.4.0","name":"b","type":"bridge","capabilities":{"ips":true,"mac":false}}"#,
    );
    assert_ok(&generate(d.path(), &[]));
    let c = read_json(&d.path().join("00-plexus.conflist"));
    assert_eq!(c["cniVersion"], "0.4.0");
    assert!(c.get("cniVersions").is_none());
    assert_eq!(
        c["plugins"][0]["capabilities"],
        json!({"ips": true, "io.kubernetes.cri.pod-annotations": true})
    );
}

#[test]
fn conf_keys_from_flags_reach_the_plugin_conf() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "10-flannel.conflist", &flannel().to_string());
    let out = generate(
        d.path(),
        &[
            "--kubeconfig",
            "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
            "--readiness-indicator-file",
            "/run/flannel/subnet.env",
            "--readiness-timeout",
            "30",
            "--multus-namespace",
            "net-system",
            "--namespace-isolation",
            "--global-namespaces",
            "default,shared",
            "--output",
            "00-alt.conflist",
        ],
    );
    assert_ok(&out);
    let c = read_json(&d.path().join("00-alt.conflist"));
    let p = &c["plugins"][0];
    assert_eq!(p["kubeconfig"], "/etc/cni/net.d/plexus.d/plexus.kubeconfig");
    assert_eq!(p["readinessindicatorfile"], "/run/flannel/subnet.env");
    assert_eq!(p["readinessTimeout"], 30);
    assert_eq!(p["multusNamespace"], "net-system");
    assert_eq!(p["namespaceIsolation"], true);
    assert_eq!(p["globalNamespaces"], "default,shared");

    // The runtime hands the plugin its list's name and cniVersion: that must parse.
    let conf = plugin_stdin(&c);
    let parsed = plexus::conf::PlexusConf::from_map(conf.as_object().unwrap().clone()).unwrap();
    assert_eq!(parsed.readiness_timeout, Duration::from_secs(30));
    assert!(parsed.isolation.enabled);
    assert_eq!(parsed.isolation.global, ["default", "shared"]);
    assert_eq!(parsed.multus_namespace, "net-system");

    let out = generate(d.path(), &["--output", "00-plexus.conf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(".conflist"), "{}", stderr(&out));
}

#[test]
fn written_atomically_0600_and_not_rewritten_when_unchanged() {
    let d = busy_conf_dir();
    assert_ok(&generate(d.path(), &[]));
    let out = d.path().join("00-plexus.conflist");
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert!(
        names(d.path()).iter().all(|n| !n.contains(".tmp")),
        "{:?}",
        names(d.path())
    );

    std::thread::sleep(Duration::from_millis(20));
    let again = generate(d.path(), &[]);
    assert_ok(&again);
    // Our own output is never taken for the primary.
    assert!(stdout(&again).contains("unchanged"), "{}", stdout(&again));
    assert!(stdout(&again).contains("primary 10-flannel.conflist"));
    let meta2 = std::fs::metadata(&out).unwrap();
    assert_eq!(meta2.mtime_nsec(), meta.mtime_nsec());
    assert_eq!(meta2.ino(), meta.ino());

    // A change in the primary is a change in the output, by rename (a new inode).
    let mut f = flannel();
    f["plugins"][1]["capabilities"]["bandwidth"] = json!(true);
    write(d.path(), "10-flannel.conflist", &f.to_string());
    let changed = generate(d.path(), &[]);
    assert!(stdout(&changed).contains("wrote"), "{}", stdout(&changed));
    let meta3 = std::fs::metadata(&out).unwrap();
    assert_ne!(meta3.ino(), meta.ino());
    assert_eq!(meta3.mode() & 0o7777, 0o600);
    assert_eq!(
        read_json(&out)["plugins"][0]["capabilities"],
        json!({"bandwidth": true, "portMappings": true, "io.kubernetes.cri.pod-annotations": true})
    );
}

/// What the runtime puts on the plugin's stdin for a one-plugin conflist.
fn plugin_stdin(conflist: &Value) -> Value {
    let mut p = conflist["plugins"][0].clone();
    p["name"] = conflist["name"].clone();
    p["cniVersion"] = conflist["cniVersion"].clone();
    p
}

#[test]
fn the_generated_conf_drives_a_real_add_and_del() {
    enter_node_netns();
    let w = World::new();
    let conf_dir = w.tmp.path().join("net.d");
    std::fs::create_dir(&conf_dir).unwrap();
    let bridge = w.bridge_conf("cluster", "cni-ac0", "10.88.7.0/24");
    let primary = json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
        {"type": "bridge", "bridge": "cni-ac0", "isGateway": true, "ipam": bridge["ipam"]},
        {"type": "tuning", "capabilities": {"mac": true}}
    ]});
    write(&conf_dir, "10-cluster.conflist", &primary.to_string());
    let cni_dir = w.cni_dir.display().to_string();
    let manifests = w.manifests.display().to_string();
    assert_ok(&generate(
        &conf_dir,
        &["--cni-dir", &cni_dir, "--manifests", &manifests],
    ));
    let conflist = read_json(&conf_dir.join("00-plexus.conflist"));
    assert_eq!(
        conflist["plugins"][0]["capabilities"],
        json!({"mac": true, "io.kubernetes.cri.pod-annotations": true})
    );
    let mut stdin = plugin_stdin(&conflist);
    // The runtime passes runtimeConfig for the capabilities the plugin declared.
    stdin["runtimeConfig"] = json!({"mac": "02:11:22:33:44:55"});

    let pod = PodNs::new();
    let add = Call::new("ADD", "c-auto", Some(&pod.path), &w).run_json(&stdin);
    add.ok();
    assert_eq!(add.json()["cniVersion"], "1.0.0");
    assert_eq!(pod.addrs("eth0"), ["10.88.7.2/24"]);
    let link = pod.exec("ip -br link show eth0");
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("02:11:22:33:44:55"),
        "runtimeConfig.mac did not reach the primary's tuning plugin: {}",
        String::from_utf8_lossy(&link.stdout)
    );
    Call::new("DEL", "c-auto", Some(&pod.path), &w)
        .run_json(&stdin)
        .ok();
    w.assert_clean(Some(&pod));
}

/// A Plexus conf whose readiness indicator file is under the world's temp dir.
fn gated_conf(w: &World, ready: &Path, timeout: f64) -> Value {
    w.plexus_conf(
        &w.bridge_conf("cluster", "cni-rd0", "10.88.9.0/24"),
        json!({"readinessindicatorfile": ready.display().to_string(), "readinessTimeout": timeout}),
    )
}

#[test]
fn add_waits_for_the_readiness_file_and_fails_11_when_it_never_comes() {
    enter_node_netns();
    let w = World::new();
    let ready = w.tmp.path().join("ready");
    let conf = gated_conf(&w, &ready, 1.0);
    let pod = PodNs::new();

    let t = Instant::now();
    let add = Call::new("ADD", "c-rd", Some(&pod.path), &w).run_json(&conf);
    let took = t.elapsed();
    let e = add.err(11);
    assert!(e["msg"].as_str().unwrap().contains("ready"), "{e}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Nothing was created: no journal dir, no bridge, nothing in the pod.
    assert!(!w.cni_dir.exists());
    assert!(!node_links().contains(&"cni-rd0".to_string()));
    w.assert_clean(Some(&pod));

    // The indicator appears during the wait: ADD goes on.
    let conf = gated_conf(&w, &ready, 20.0);
    let r = ready.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        std::fs::write(r, "").unwrap();
    });
    let t = Instant::now();
    let add = Call::new("ADD", "c-rd", Some(&pod.path), &w).run_json(&conf);
    let took = t.elapsed();
    writer.join().unwrap();
    add.ok();
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert_eq!(pod.addrs("eth0"), ["10.88.9.2/24"]);
    Call::new("DEL", "c-rd", Some(&pod.path), &w)
        .run_json(&conf)
        .ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn gc_waits_status_does_not_and_del_ignores_the_gate() {
    let w = World::new();
    let ready: PathBuf = w.tmp.path().join("ready");
    let mut conf = gated_conf(&w, &ready, 5.0);

    // STATUS answers 50 at once.
    let t = Instant::now();
    let status = Call::new("STATUS", "", None, &w).run_json(&conf);
    status.err(50);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // DEL of something never added succeeds without waiting.
    let t = Instant::now();
    Call::new("DEL", "c-none", None, &w).run_json(&conf).ok();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    conf["readinessTimeout"] = json!(0.5);
    conf["cni.dev/valid-attachments"] = json!([]);
    let t = Instant::now();
    let gc = Call::new("GC", "", None, &w).run_json(&conf);
    gc.err(11);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

/// Spawns `path 30`. A binary written a moment ago can briefly be "busy" because another
/// test thread forked while its write fd was open; that fd closes at the child's exec.
fn spawn_retrying(path: &Path) -> std::process::Child {
    for _ in 0..50 {
        match Command::new(path).arg("30").spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {}: {e}", path.display()),
        }
    }
    panic!("{} stayed busy", path.display());
}

#[test]
fn install_replaces_a_binary_that_is_running() {
    let d = tempfile::tempdir().unwrap();
    let (bin, conf_dir) = node_dirs(d.path(), "bin", "net.d");
    // The "old plexus" is busy: a sleep binary running from the target path.
    let target = bin.join("plexus");
    std::fs::copy("/bin/sleep", &target).unwrap();
    let mut old = spawn_retrying(&target);
    // Proof that the file is busy: writing in place (what `cp` does) fails.
    std::thread::sleep(Duration::from_millis(100));
    let in_place = std::fs::OpenOptions::new().write(true).open(&target);
    assert_eq!(
        in_place.err().and_then(|e| e.raw_os_error()),
        Some(nix::libc::ETXTBSY)
    );

    let bin_s = bin.display().to_string();
    let conf_s = conf_dir.display().to_string();
    let out = plexus(&["install", "--bin-dir", &bin_s, "--conf-dir", &conf_s]);
    let still_running = old.try_wait().unwrap().is_none();
    let _ = old.kill();
    let _ = old.wait();
    assert_ok(&out);
    assert!(still_running, "the old binary's process was disturbed");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_plexus")).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(names(&bin), ["plexus"]);
    assert!(conf_dir.join("00-plexus.conflist").exists());
    // The installed binary works.
    let v = Command::new(&target).arg("version").output().unwrap();
    assert!(stdout(&v).starts_with("plexus "), "{}", stdout(&v));

    // Idempotent: a second run changes nothing.
    let ino = std::fs::metadata(&target).unwrap().ino();
    let again = plexus(&["install", "--bin-dir", &bin_s, "--conf-dir", &conf_s]);
    assert_ok(&again);
    assert_eq!(
        stdout(&again).matches("unchanged").count(),
        2,
        "{}",
        stdout(&again)
    );
    assert_eq!(std::fs::metadata(&target).unwrap().ino(), ino);
}

/// The runtime execs the installed binary on the node, under the node's libc, whatever it is
/// (an older glibc, musl, none): the binary must bring its own. Run here inside a root that
/// holds nothing but what `install` put there, so no dynamic loader or shared library exists.
#[test]
fn the_installed_binary_runs_in_a_root_with_no_libc() {
    let root = tempfile::tempdir().unwrap();
    let (bin, conf_dir) = node_dirs(root.path(), "opt/cni/bin", "etc/cni/net.d");
    let out = plexus(&[
        "install",
        "--bin-dir",
        &bin.display().to_string(),
        "--conf-dir",
        &conf_dir.display().to_string(),
    ]);
    assert_ok(&out);
    let mut call = Command::new("/usr/sbin/chroot")
        .arg(root.path())
        .arg("/opt/cni/bin/plexus")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let conf = json!({"cniVersion": "1.1.0", "name": "plexus", "type": "plexus"});
        let mut stdin = call.stdin.take().unwrap();
        stdin.write_all(conf.to_string().as_bytes()).unwrap();
    }
    let version = call.wait_with_output().unwrap();
    assert_ok(&version);
    let answer: Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(answer["cniVersion"], "1.1.0", "{answer}");
    assert!(
        answer["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.1.0"))),
        "{answer}"
    );
}

#[test]
fn install_writes_a_token_file_kubeconfig_and_points_the_conf_at_it() {
    let d = tempfile::tempdir().unwrap();
    let (bin, conf_dir) = node_dirs(d.path(), "bin", "net.d");
    let ca = d.path().join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let kc = conf_dir.join("plexus.d/plexus.kubeconfig");
    let token = "/etc/cni/net.d/plexus.d/token";
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "install",
            "--bin-dir",
            &bin.display().to_string(),
            "--conf-dir",
            &conf_dir.display().to_string(),
            "--kubeconfig-out",
            &kc.display().to_string(),
            "--token-file",
            token,
            "--ca-file",
            &ca.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .env_clear()
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .args(args(&[]))
        .output()
        .unwrap();
    assert_ok(&out);
    let meta = std::fs::metadata(&kc).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let k = kube::config::Kubeconfig::read_from(&kc).unwrap();
    let cluster = k.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
    assert!(cluster.certificate_authority_data.is_some());
    let user = k.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(user.token_file.as_deref(), Some(token));
    assert!(user.token.is_none(), "a token must never be inlined");
    let c = read_json(&conf_dir.join("00-plexus.conflist"));
    assert_eq!(
        c["plugins"][0]["kubeconfig"],
        kc.display().to_string().as_str()
    );

    // --server overrides the in-cluster address; --kubeconfig overrides the conf's path.
    let out = plexus(&args(&[
        "--server",
        "https://api.example:6443",
        "--kubeconfig",
        "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
    ]));
    assert_ok(&out);
    let k = kube::config::Kubeconfig::read_from(&kc).unwrap();
    assert_eq!(
        k.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
        Some("https://api.example:6443")
    );
    let c = read_json(&conf_dir.join("00-plexus.conflist"));
    assert_eq!(
        c["plugins"][0]["kubeconfig"],
        "/etc/cni/net.d/plexus.d/plexus.kubeconfig"
    );

    // Outside a pod and without --server there is no address to write.
    let out = plexus(&args(&[]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
}

#[test]
fn snapshot_of_a_generated_conflist() {
    let d = busy_conf_dir();
    assert_ok(&generate(
        d.path(),
        &[
            "--kubeconfig",
            "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
            "--readiness-indicator-file",
            "/run/flannel/subnet.env",
        ],
    ));
    let text = std::fs::read_to_string(d.path().join("00-plexus.conflist")).unwrap();
    snapshots().bind(|| insta::assert_snapshot!("autoconf__flannel_conflist", text));
}

#[test]
fn warns_when_a_conf_sorts_before_the_output() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "10-flannel.conflist", &flannel().to_string());
    let out = generate(d.path(), &["--output", "99-plexus.conflist"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("10-flannel.conflist sort(s) before") && err.contains("will not use plexus"),
        "{err}"
    );
    let out = generate(d.path(), &[]);
    assert!(!stderr(&out).contains("sort(s) before"), "{}", stderr(&out));
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn install_refresh_keeps_token_and_conf_current_and_keeps_the_conf_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let (bin, conf_dir) = node_dirs(d.path(), "bin", "net.d");
    let ca = d.path().join("ca.crt");
    std::fs::write(&ca, "ca").unwrap();
    let source_token = d.path().join("sa-token");
    std::fs::write(&source_token, "token-1").unwrap();
    // The container writes the copy under its mount; the kubeconfig names the host's path.
    let host_token = conf_dir.join("plexus.d/token");
    let host_view = "/etc/cni/net.d/plexus.d/token";
    let kc = conf_dir.join("plexus.d/plexus.kubeconfig");
    let s = |p: &Path| p.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .env_clear()
        .args([
            "install",
            "--bin-dir",
            &s(&bin),
            "--conf-dir",
            &s(&conf_dir),
            "--kubeconfig-out",
            &s(&kc),
            "--token-file",
            host_view,
            "--token-out",
            &s(&host_token),
            "--token-source",
            &s(&source_token),
            "--server",
            "https://127.0.0.1:6443",
            "--ca-file",
            &s(&ca),
            "--refresh",
            "1",
            // For the first install only: a refresh round must not stall on a missing primary.
            "--primary-timeout",
            "600",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What the refresh loop says, collected as it comes: each round that fails says so.
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let said = said.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                said.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let conf = conf_dir.join("00-plexus.conflist");
    wait_until("first install", || {
        std::fs::read_to_string(&host_token).is_ok_and(|t| t == "token-1") && conf.exists()
    });
    assert_eq!(
        std::fs::metadata(&host_token).unwrap().mode() & 0o7777,
        0o600
    );
    let k = kube::config::Kubeconfig::read_from(&kc).unwrap();
    assert_eq!(
        k.auth_infos[0]
            .auth_info
            .as_ref()
            .unwrap()
            .token_file
            .as_deref(),
        Some(host_view)
    );

    // kubelet rotates the projected token; the primary CNI rewrites its conf.
    std::fs::write(&source_token, "token-2").unwrap();
    let mut f = flannel();
    f["plugins"][1]["capabilities"]["bandwidth"] = json!(true);
    write(&conf_dir, "10-flannel.conflist", &f.to_string());
    wait_until("token and conf refreshed", || {
        std::fs::read_to_string(&host_token).is_ok_and(|t| t == "token-2")
            && read_json(&conf)["plugins"][0]["capabilities"]["bandwidth"] == true
    });

    // The primary disappears: the conf stays as it was (never an empty or missing conf).
    std::fs::remove_file(conf_dir.join("10-flannel.conflist")).unwrap();
    wait_until("a refresh round without the primary", || {
        said.lock().unwrap().contains("(the previous conf stays)")
    });
    assert_eq!(read_json(&conf)["plugins"][0]["delegates"][0], f);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let mut status = None;
    while t.elapsed() < Duration::from_secs(5) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("install --refresh did not stop on SIGTERM");
    };
    reader.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(conf.exists(), "the conf must stay after exit");
    assert!(kc.exists());
}
