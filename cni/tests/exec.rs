//! `cni::exec` against real processes: the fake delegates in `tests/fixtures/delegates/`, copied
//! into a root-owned 0755 temp dir per test, and the reference plugins in /usr/lib/cni.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use cni::Version;
use cni::exec::{self, ExecError, ExecRequest, STDOUT_LIMIT};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/delegates");

/// A file being written while another thread forks can be inherited for a moment as a write fd
/// by that child, and exec-ing the file then fails with ETXTBSY (golang/go#22315). Writers of
/// fixture files take this lock exclusively, spawners shared.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    /// A temp dir holding `bin/` (0755, root) with copies of the named fake delegates.
    fn new(scripts: &[&str]) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("plexus-exec-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let fixture = Fixture { dir };
        fixture.add_dir("bin", 0o755, scripts);
        fixture
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bin(&self) -> PathBuf {
        self.path().join("bin")
    }

    fn add_dir(&self, name: &str, mode: u32, scripts: &[&str]) -> PathBuf {
        let dir = self.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        for script in scripts {
            self.install(script, &dir.join(script), 0o755);
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    /// Copies fixture `script` to `to` with `mode`.
    fn install(&self, script: &str, to: &Path, mode: u32) {
        let _writing = SPAWN_LOCK.write().unwrap_or_else(|e| e.into_inner());
        fs::copy(Path::new(FIXTURES).join(script), to).unwrap();
        fs::set_permissions(to, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn script(&self, name: &str) -> PathBuf {
        self.bin().join(name)
    }

    /// The pid the script wrote to `<script>.pid`: it leads the plugin's process group.
    fn group_of(&self, name: &str) -> Pid {
        let file = self.bin().join(format!("{name}.pid"));
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        Pid::from_raw(text.trim().parse().unwrap())
    }

    /// Processes whose command line mentions this fixture's dir (the scripts themselves).
    fn survivors(&self) -> String {
        let out = Command::new("pgrep")
            .arg("-af")
            .arg(self.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn assert_no_survivors(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = self.survivors();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes survived: {left}");
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    /// A failed test may leave the plugin's group (or an escaped child) running; end them so one
    /// failure does not leak `sleep 1000`s. Only on panic: after a passing test the pids are
    /// gone and could in principle belong to someone else by now.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = fs::read_dir(self.bin()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(script) = name.strip_suffix(".pid") else {
                continue;
            };
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(pid) = text.trim().parse() else {
                continue;
            };
            let pid = Pid::from_raw(pid);
            if script.ends_with(".escaped") {
                let _ = kill(pid, Signal::SIGKILL);
            } else {
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
    }
}

fn request<'a>(stdin: &'a [u8], timeout: Duration) -> ExecRequest<'a> {
    ExecRequest {
        command: cni::Command::Add,
        container_id: "ctr-1234",
        netns: Some(Path::new("/var/run/netns/test")),
        ifname: "net1",
        args: "IgnoreUnknown=1;K8S_POD_NAME=web",
        cni_path: "/opt/cni/bin:/usr/lib/cni",
        stdin,
        timeout,
    }
}

fn run(plugin: &Path, req: &ExecRequest) -> Result<Vec<u8>, ExecError> {
    let _spawning = SPAWN_LOCK.read().unwrap_or_else(|e| e.into_inner());
    exec::run(plugin, req)
}

/// Waits for every member of the group to be gone (zombies are reaped by init shortly after).
fn assert_group_gone(group: Pid) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match killpg(group, None) {
            Err(Errno::ESRCH) => return,
            _ if Instant::now() < deadline => sleep(Duration::from_millis(20)),
            other => panic!("process group {group} still exists: {other:?}"),
        }
    }
}

const CONF: &[u8] = br#"{"cniVersion":"1.0.0","name":"net","type":"ok"}"#;

#[test]
fn ok_plugin_returns_its_stdout() {
    let fx = Fixture::new(&["ok"]);
    let out = run(&fx.script("ok"), &request(CONF, Duration::from_secs(10))).unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(result["ips"][0]["address"], "10.1.0.5/24");
}

#[test]
fn stdin_larger_than_a_pipe_buffer_arrives_intact() {
    let fx = Fixture::new(&["stdin-echo"]);
    let conf: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = run(
        &fx.script("stdin-echo"),
        &request(&conf, Duration::from_secs(20)),
    )
    .unwrap();
    assert!(out == conf, "echoed {} bytes of {}", out.len(), conf.len());
}

#[test]
fn plugin_that_ignores_a_large_stdin_does_not_block_the_call() {
    let fx = Fixture::new(&["garbage"]);
    let conf = vec![b' '; 4 << 20];
    let out = run(
        &fx.script("garbage"),
        &request(&conf, Duration::from_secs(20)),
    )
    .unwrap();
    assert_eq!(out, b"this is not json {\n");
}

#[test]
fn environment_holds_only_the_cni_variables_and_a_fixed_path() {
    let fx = Fixture::new(&["envdump"]);
    let out = run(
        &fx.script("envdump"),
        &request(CONF, Duration::from_secs(10)),
    )
    .unwrap();
    let mut env: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    env.sort();
    assert_eq!(
        env,
        [
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web",
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=ctr-1234",
            "CNI_IFNAME=net1",
            "CNI_NETNS=/var/run/netns/test",
            "CNI_PATH=/opt/cni/bin:/usr/lib/cni",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    );
}

#[test]
fn cni_netns_is_unset_when_none() {
    let fx = Fixture::new(&["envdump"]);
    let mut req = request(CONF, Duration::from_secs(10));
    req.command = cni::Command::Del;
    req.netns = None;
    let out = run(&fx.script("envdump"), &req).unwrap();
    let env = String::from_utf8(out).unwrap();
    assert!(env.lines().any(|l| l == "CNI_COMMAND=DEL"), "{env}");
    assert!(!env.contains("CNI_NETNS"), "{env}");
}

#[test]
fn hanging_plugin_times_out_with_code_11_and_its_group_is_killed() {
    let fx = Fixture::new(&["hang"]);
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = run(&fx.script("hang"), &request(CONF, timeout)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    assert_eq!(err.code(), cni::Code::TryAgainLater);
    assert!(err.to_string().contains("hang"), "{err}");
    assert!(err.to_string().contains("ADD"), "{err}");
    assert!(
        took >= timeout,
        "returned after {took:?}, before the timeout"
    );
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    assert_group_gone(fx.group_of("hang"));
    fx.assert_no_survivors();
}

#[test]
fn background_child_holding_stdout_after_a_clean_exit_is_killed_and_the_answer_kept() {
    let fx = Fixture::new(&["forkhang"]);
    let timeout = Duration::from_secs(20);
    let started = Instant::now();
    let out = run(&fx.script("forkhang"), &request(CONF, timeout)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?} for the background child",
        started.elapsed()
    );
    assert_eq!(out, b"{\"cniVersion\":\"1.0.0\"}\n");
    assert_group_gone(fx.group_of("forkhang"));
    fx.assert_no_survivors();
}

#[test]
fn background_child_holding_stdout_of_a_hanging_plugin_times_out() {
    let fx = Fixture::new(&["forkhang-sleep"]);
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = run(&fx.script("forkhang-sleep"), &request(CONF, timeout)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), cni::Code::TryAgainLater, "{err}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    assert_group_gone(fx.group_of("forkhang-sleep"));
    fx.assert_no_survivors();
}

#[test]
fn child_that_escaped_the_group_does_not_hold_the_call_past_the_grace() {
    let fx = Fixture::new(&["escape"]);
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = run(&fx.script("escape"), &request(CONF, timeout)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), cni::Code::TryAgainLater, "{err}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    assert_group_gone(fx.group_of("escape"));

    // The escaped child is out of reach of the group kill; prove it really escaped (else the
    // test shows nothing), then end it ourselves.
    let escaped = fx.group_of("escape.escaped");
    assert_eq!(kill(escaped, None), Ok(()), "escaped child not running");
    kill(escaped, Signal::SIGKILL).unwrap();
}

#[test]
fn huge_output_is_cut_at_the_cap_and_the_plugin_killed() {
    let fx = Fixture::new(&["huge"]);
    let started = Instant::now();
    let err = run(&fx.script("huge"), &request(CONF, Duration::from_secs(30))).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, ExecError::OutputTooLarge { limit, .. } if limit == STDOUT_LIMIT),
        "{err}"
    );
    assert_eq!(err.code(), cni::Code::DelegateFailed);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_group_gone(fx.group_of("huge"));
    fx.assert_no_survivors();
}

#[test]
fn cni_error_object_keeps_the_delegates_code_and_msg() {
    let fx = Fixture::new(&["err7"]);
    let err = run(&fx.script("err7"), &request(CONF, Duration::from_secs(10))).unwrap_err();
    let ExecError::Plugin { error, .. } = &err else {
        panic!("expected a plugin error, got {err:?}");
    };
    assert_eq!(error.code, 7);
    assert_eq!(error.msg, "invalid bridge name");
    assert_eq!(err.code(), cni::Code::DelegateFailed);
    assert_eq!(err.details(), "code 7: invalid bridge name (name too long)");
    assert!(err.to_string().contains("err7"), "{err}");
}

#[test]
fn failure_without_an_error_object_reports_the_status_and_stderr() {
    let fx = Fixture::new(&["fail"]);
    let err = run(&fx.script("fail"), &request(CONF, Duration::from_secs(10))).unwrap_err();
    let ExecError::Exit { status, .. } = &err else {
        panic!("expected an exit error, got {err:?}");
    };
    assert_eq!(status.code(), Some(3));
    assert_eq!(err.code(), cni::Code::DelegateFailed);
    assert_eq!(err.details(), "boom: cannot frobnicate");
}

#[test]
fn garbage_on_success_is_returned_for_the_caller_to_decode() {
    let fx = Fixture::new(&["garbage"]);
    let out = run(
        &fx.script("garbage"),
        &request(CONF, Duration::from_secs(10)),
    )
    .unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&out).is_err());
}

#[test]
fn file_without_exec_permission_is_code_7() {
    let fx = Fixture::new(&[]);
    let plugin = fx.bin().join("noexec");
    fx.install("ok", &plugin, 0o644);
    let err = run(&plugin, &request(CONF, Duration::from_secs(10))).unwrap_err();
    assert!(matches!(err, ExecError::NotExecutable { .. }), "{err}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
}

#[test]
fn file_in_an_unknown_format_is_code_7_and_not_run_by_a_shell() {
    let fx = Fixture::new(&[]);
    let plugin = fx.bin().join("noshebang");
    let marker = fx.path().join("ran");
    {
        let _writing = SPAWN_LOCK.write().unwrap_or_else(|e| e.into_inner());
        fs::write(&plugin, format!("touch {}\n", marker.display())).unwrap();
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let err = run(&plugin, &request(CONF, Duration::from_secs(10))).unwrap_err();
    assert!(matches!(err, ExecError::NotExecutable { .. }), "{err}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
    assert!(!marker.exists(), "the file was run through a shell");
}

#[test]
fn plugin_open_for_writing_is_text_file_busy_code_11() {
    let fx = Fixture::new(&["ok"]);
    let plugin = fx.script("ok");
    let _writer = fs::OpenOptions::new().write(true).open(&plugin).unwrap();
    let err = run(&plugin, &request(CONF, Duration::from_secs(10))).unwrap_err();
    assert!(matches!(err, ExecError::TextBusy { .. }), "{err}");
    assert_eq!(err.code(), cni::Code::TryAgainLater);
}

#[test]
fn path_like_types_are_refused_and_the_canary_never_runs() {
    let fx = Fixture::new(&[]);
    // Each refused type would reach a canary if it were joined to the search dir naively.
    let evil = fx.add_dir("evil", 0o755, &["canary"]);
    let nested = fx.bin().join("a");
    fs::create_dir(&nested).unwrap();
    fx.install("canary", &nested.join("b"), 0o755);
    let abs = evil.join("canary");
    let abs = abs.to_str().unwrap();
    let dirs = vec![fx.bin()];
    for plugin_type in [
        "../evil/canary",
        "../../bin/sh",
        abs,
        "/bin/sh",
        "a/b",
        "..",
        ".",
        "",
    ] {
        match exec::find_plugin(plugin_type, &dirs, &["plexus"]) {
            Err(err) => {
                assert!(
                    matches!(err, ExecError::BadType { .. }),
                    "{plugin_type:?}: {err}"
                );
                assert_eq!(err.code(), cni::Code::InvalidConfig, "{plugin_type:?}");
            }
            Ok(found) => {
                let _ = run(&found, &request(CONF, Duration::from_secs(10)));
                panic!("{plugin_type:?} resolved to {}", found.display());
            }
        }
    }
    assert!(!evil.join("canary.ran").exists());
    assert!(!nested.join("b.ran").exists());
}

#[test]
fn forbidden_type_is_refused_even_when_present() {
    let fx = Fixture::new(&[]);
    fx.install("canary", &fx.bin().join("plexus"), 0o755);
    let err = exec::find_plugin("plexus", &[fx.bin()], &["plexus", "plexus-shim"]).unwrap_err();
    assert!(matches!(err, ExecError::ForbiddenType { .. }), "{err}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
}

/// `target` written relative to the current directory, so it resolves to the same place.
fn relative_to_cwd(target: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let mut rel = PathBuf::new();
    for _ in cwd.components().skip(1) {
        rel.push("..");
    }
    rel.join(target.strip_prefix("/").unwrap())
}

#[test]
fn untrusted_dirs_are_skipped_and_named() {
    let fx = Fixture::new(&[]);
    let world = fx.add_dir("world", 0o777, &["canary"]);
    let group = fx.add_dir("group", 0o775, &["canary"]);
    let foreign = fx.add_dir("foreign", 0o755, &["canary"]);
    chown(&foreign, Some(65534), Some(65534)).unwrap();
    let relative = relative_to_cwd(&fx.add_dir("rel", 0o755, &["canary"]));
    assert!(
        relative.join("canary").is_file(),
        "relative path does not resolve"
    );
    let good = fx.add_dir("good", 0o755, &[]);
    fx.install("ok", &good.join("canary"), 0o755);

    let dirs = vec![
        relative.clone(),
        world.clone(),
        group.clone(),
        foreign.clone(),
        good.clone(),
    ];
    let found = exec::find_plugin("canary", &dirs, &[]).unwrap();
    assert_eq!(found, good.join("canary"));
    run(&found, &request(CONF, Duration::from_secs(10))).unwrap();

    let err = exec::find_plugin("canary", &dirs[..4], &[]).unwrap_err();
    let ExecError::NotFound {
        searched, skipped, ..
    } = &err
    else {
        panic!("expected not found, got {err:?}");
    };
    assert!(searched.is_empty(), "{searched:?}");
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    let msg = err.to_string();
    assert_eq!(err.code(), cni::Code::InvalidConfig);
    assert!(msg.contains("\"canary\""), "{msg}");
    for (dir, why) in [
        (&relative, "relative"),
        (&world, "writable"),
        (&group, "writable"),
        (&foreign, "uid 65534"),
    ] {
        let entry = format!("{}: ", dir.display());
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with(&entry) && s.contains(why)),
            "{entry}{why} missing in {skipped:?}"
        );
    }
    for dir in [&relative, &world, &group, &foreign] {
        assert!(!dir.join("canary.ran").exists(), "{}", dir.display());
    }
}

#[test]
fn unrunnable_candidates_are_skipped_and_the_search_goes_on() {
    let fx = Fixture::new(&[]);
    let first = fx.add_dir("first", 0o755, &[]);
    fx.install("canary", &first.join("p"), 0o644);
    let second = fx.add_dir("second", 0o755, &[]);
    fx.install("canary", &second.join("p"), 0o777);
    let third = fx.add_dir("third", 0o755, &[]);
    fs::create_dir(third.join("p")).unwrap();
    fs::set_permissions(third.join("p"), fs::Permissions::from_mode(0o755)).unwrap();
    let last = fx.add_dir("last", 0o755, &["ok"]);
    fs::rename(last.join("ok"), last.join("p")).unwrap();
    let missing = fx.path().join("missing");

    let dirs = vec![missing, first.clone(), second, third, last.clone()];
    assert_eq!(exec::find_plugin("p", &dirs, &[]).unwrap(), last.join("p"));

    let err = exec::find_plugin("p", &dirs[..4], &[]).unwrap_err();
    let msg = err.to_string();
    for part in [
        "no exec bit",
        "writable by group or others",
        "not a regular file",
        "cannot stat",
    ] {
        assert!(msg.contains(part), "{part:?} missing in {msg}");
    }
    assert!(!first.join("p.ran").exists());
}

#[test]
fn version_of_the_reference_bridge_plugin_goes_up_to_1_0_0() {
    let bridge = exec::find_plugin(
        "bridge",
        &exec::split_path("/opt/cni/bin:/usr/lib/cni"),
        &["plexus"],
    )
    .unwrap();
    let versions = {
        let _spawning = SPAWN_LOCK.read().unwrap_or_else(|e| e.into_inner());
        exec::version(&bridge, "/usr/lib/cni", Duration::from_secs(20)).unwrap()
    };
    assert_eq!(versions.first(), Some(&Version::V0_1_0));
    assert_eq!(versions.last(), Some(&Version::V1_0_0));
    assert!(versions.contains(&Version::V0_4_0));
}

#[test]
fn version_of_a_failing_plugin_is_its_error() {
    let fx = Fixture::new(&["err7", "garbage"]);
    let _spawning = SPAWN_LOCK.read().unwrap_or_else(|e| e.into_inner());
    let err = exec::version(&fx.script("err7"), "", Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, ExecError::Plugin { .. }), "{err}");
    let err = exec::version(&fx.script("garbage"), "", Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, ExecError::Decode { .. }), "{err}");
    assert_eq!(err.code(), cni::Code::DelegateFailed);
}
