//! The `CNI_*` environment of one call, read once at the boundary through one table of which
//! command needs which variable ([`need`]), so no later step builds a path from unchecked
//! input. The meta plugin, the standalone built-in binaries and the daemon's forwarded calls
//! all read it here; [`crate::exec`] writes the same variables for the plugins it runs.

use crate::args::CniArgs;
use crate::command::Command;
use crate::ifname::IfName;
use crate::names;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variables a runtime sets for a CNI call.
pub const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("CNI_COMMAND is not set")]
    NoCommand,
    #[error("CNI_COMMAND {0:?} is not a CNI command")]
    UnknownCommand(String),
    #[error("{0} is required for {1}")]
    Missing(&'static str, Command),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl EnvError {
    pub fn code(&self) -> crate::Code {
        crate::Code::InvalidEnv
    }
}

/// How a command treats one `CNI_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Missing or empty is code 4.
    Required,
    /// Read and checked when present.
    Optional,
    /// Never read: libcni's VERSION probe fills these with placeholders such as `dummy`.
    Ignored,
}

/// The per-command rules of the CNI environment (the spec's operations, and what libcni
/// sends); docs/cni-environment.md is the same table, walked by a test.
pub fn need(command: Command, var: &str) -> Need {
    use Command::*;
    match (var, command) {
        ("CNI_COMMAND", _) => Need::Required,
        (_, Version) => Need::Ignored,
        ("CNI_CONTAINERID" | "CNI_IFNAME", Add | Del | Check) => Need::Required,
        ("CNI_NETNS", Add | Check) => Need::Required,
        ("CNI_NETNS", Del) => Need::Optional,
        ("CNI_ARGS", Add | Del | Check) => Need::Optional,
        // The spec makes CNI_PATH optional for ADD/DEL/CHECK; the reference plugins require
        // it there, and delegates are found through it.
        ("CNI_PATH", Add | Del | Check | Gc) => Need::Required,
        ("CNI_PATH", Status) => Need::Optional,
        _ => Need::Ignored,
    }
}

/// Refuses a CNI variable whose value is not UTF-8. Read as unset instead, a `CNI_ARGS` with
/// one stray byte would lose the pod's name and, with it, every network the pod asked for.
pub fn check_utf8(get: impl Fn(&str) -> Option<OsString>) -> Result<(), EnvError> {
    for var in VARS {
        if get(var).is_some_and(|v| v.to_str().is_none()) {
            return Err(EnvError::Invalid {
                var,
                reason: "not valid UTF-8".into(),
            });
        }
    }
    Ok(())
}

/// The process's own `CNI_*` variables, for [`Env::read`], after [`check_utf8`] has
/// refused any that is not UTF-8.
pub fn process_var(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// What a caller adds to the protocol's own rules.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest container ID accepted, and why (the caller names files after it).
    pub container_id: Option<(usize, &'static str)>,
}

impl Limits {
    pub const NONE: Limits = Limits { container_id: None };
}

/// One call's environment, each variable read only if its command uses it ([`need`]):
/// VERSION, GC and STATUS never look at the container variables, whatever placeholders
/// they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    pub cni_path: String,
}

impl Env {
    /// Reads `CNI_COMMAND` and the variables it needs through `get` (a closure, so tests,
    /// the CLI and the daemon supply their own).
    pub fn read(get: impl Fn(&str) -> Option<String>, limits: &Limits) -> Result<Env, EnvError> {
        let command = read_command(&get)?;
        Env::read_for(command, get, limits)
    }

    /// The variables `command` needs; `CNI_COMMAND` itself already read (a standalone plugin
    /// checks its conf's version first, as skel does).
    pub fn read_for(
        command: Command,
        get: impl Fn(&str) -> Option<String>,
        limits: &Limits,
    ) -> Result<Env, EnvError> {
        // Empty counts as unset for every variable.
        let read = |var: &'static str| -> Result<Option<String>, EnvError> {
            match (need(command, var), get(var).filter(|v| !v.is_empty())) {
                (Need::Ignored, _) => Ok(None),
                (Need::Required, None) => Err(EnvError::Missing(var, command)),
                (_, value) => Ok(value),
            }
        };
        let container_id = read("CNI_CONTAINERID")?
            .map(|c| check_container_id(c, limits))
            .transpose()?;
        let ifname = read("CNI_IFNAME")?
            .map(|i| IfName::parse(&i).map_err(|e| invalid("CNI_IFNAME", e.to_string())))
            .transpose()?;
        let netns = read("CNI_NETNS")?.map(PathBuf::from);
        if let Some(n) = &netns {
            // DEL must work when the netns is already gone; only its shape is checked there.
            if command == Command::Del {
                absolute(n)?;
            } else {
                check_netns(n)?;
            }
        }
        let cni_path = read("CNI_PATH")?.unwrap_or_default();
        let args = CniArgs::parse(&read("CNI_ARGS")?.unwrap_or_default())
            .map_err(|e| invalid("CNI_ARGS", e.to_string()))?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            cni_path,
        })
    }

    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }
}

/// `CNI_COMMAND`, the one variable every command needs.
pub fn read_command(get: impl Fn(&str) -> Option<String>) -> Result<Command, EnvError> {
    let raw = get("CNI_COMMAND")
        .filter(|v| !v.is_empty())
        .ok_or(EnvError::NoCommand)?;
    Command::parse(&raw).ok_or(EnvError::UnknownCommand(raw))
}

fn invalid(var: &'static str, reason: String) -> EnvError {
    EnvError::Invalid { var, reason }
}

/// libcni's name rule, and the caller's length limit: the ID names files, so nothing else
/// may pass, and an ID refused only when a file is written would be refused after the checks
/// that come before it.
fn check_container_id(id: String, limits: &Limits) -> Result<String, EnvError> {
    if let Some((max, why)) = limits.container_id
        && id.len() > max
    {
        return Err(invalid(
            "CNI_CONTAINERID",
            format!("longer than {max} bytes ({why})"),
        ));
    }
    if !names::is_valid_name(&id) {
        return Err(invalid("CNI_CONTAINERID", names::NAME_RULE.into()));
    }
    Ok(id)
}

fn absolute(path: &Path) -> Result<(), EnvError> {
    if path.is_absolute() {
        return Ok(());
    }
    Err(invalid(
        "CNI_NETNS",
        format!("{} is not an absolute path", path.display()),
    ))
}

/// A netns path must be absolute, be a network namespace (nsfs), and not be the namespace the
/// caller itself runs in: attaching "pod" interfaces to the node would be a silent disaster.
pub fn check_netns(path: &Path) -> Result<(), EnvError> {
    absolute(path)?;
    let bad = |reason: String| invalid("CNI_NETNS", reason);
    let st = nix::sys::statfs::statfs(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(bad(format!(
            "{} is not a network namespace",
            path.display()
        )));
    }
    let ns = std::fs::metadata(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    // /proc/thread-self, not /proc/self: the latter names the main thread's netns.
    if let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net") {
        use std::os::unix::fs::MetadataExt;
        if own.dev() == ns.dev() && own.ino() == ns.ino() {
            return Err(bad(format!(
                "{} is the namespace plexus runs in, not a pod's",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Env, EnvError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| m.get(k).cloned(), &Limits::NONE)
    }

    #[test]
    fn version_needs_only_the_command() {
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        let probe = env(&[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
            ("CNI_CONTAINERID", "../dummy"),
            ("CNI_ARGS", "dummy"),
        ])
        .unwrap();
        assert_eq!(
            (probe.netns, probe.ifname, probe.container_id),
            (None, None, None)
        );
        assert_eq!(env(&[]).unwrap_err(), EnvError::NoCommand);
        assert!(matches!(
            env(&[("CNI_COMMAND", "FOO")]).unwrap_err(),
            EnvError::UnknownCommand(_)
        ));
    }

    #[test]
    fn del_accepts_missing_or_vanished_netns() {
        let base = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        assert!(env(&base).is_ok());
        let mut gone = base.to_vec();
        gone.push(("CNI_NETNS", "/run/netns/does-not-exist"));
        assert!(env(&gone).is_ok());
        gone.push(("CNI_NETNS", "relative"));
        assert!(env(&gone).is_err());
    }

    #[test]
    fn container_ids_follow_libcni_and_the_callers_limit() {
        let limits = Limits {
            container_id: Some((8, "test")),
        };
        let with = |id: &str, limits: &Limits| check_container_id(id.to_string(), limits);
        for bad in ["../x", "-a", "a b", "aaaaaaaaa"] {
            assert!(with(bad, &limits).is_err(), "{bad}");
        }
        assert!(with("a1_b.c-d", &limits).is_ok());
        assert!(with(&"a".repeat(300), &Limits::NONE).is_ok());
        let e = with("aaaaaaaaa", &limits).unwrap_err();
        assert!(e.to_string().contains("CNI_CONTAINERID"), "{e}");
    }

    #[test]
    fn cni_variables_must_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let bad =
            |k: &str| (k == "CNI_ARGS").then(|| OsString::from_vec(b"K8S_POD_NAME=p\xff".to_vec()));
        let e = check_utf8(bad).unwrap_err();
        assert!(e.to_string().contains("CNI_ARGS"), "{e}");
        assert!(check_utf8(|_| Some("x".into())).is_ok());
    }

    #[test]
    fn netns_must_be_a_namespace_and_not_ours() {
        assert!(check_netns(Path::new("/etc/hostname")).is_err());
        assert!(check_netns(Path::new("relative")).is_err());
        assert!(check_netns(Path::new("/proc/thread-self/ns/net")).is_err());
    }
}
