//! The CNI environment (`CNI_*` variables and the `K8S_*` keys of `CNI_ARGS`), validated once
//! at the boundary so no later step builds a path or URL from unchecked input.

use cni::IfName;
use cni::args::CniArgs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("CNI_COMMAND is not set")]
    NoCommand,
    #[error("CNI_COMMAND {0:?} is not a CNI command")]
    UnknownCommand(String),
    #[error("{0} is required for {1}")]
    Missing(&'static str, &'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
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

/// The per-command rules of the CNI environment (SPEC.md "CNI operations", and what libcni
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

/// The variables a runtime sets for a CNI call.
const CNI_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Refuses a CNI variable whose value is not UTF-8. Read as unset instead, a `CNI_ARGS` with
/// one stray byte would lose the pod's name and, with it, every network the pod asked for.
pub fn check_utf8(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<(), EnvError> {
    for var in CNI_VARS {
        if get(var).is_some_and(|v| v.to_str().is_none()) {
            return Err(EnvError::Invalid {
                var,
                reason: "not valid UTF-8".into(),
            });
        }
    }
    Ok(())
}

/// Who the pod is, from `CNI_ARGS` (kubelet sets all four; podman only `K8S_POD_NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub infra_container_id: Option<String>,
}

/// One invocation's environment.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    pub cni_path: String,
    pub pod: PodRef,
}

impl Invocation {
    /// Reads the process environment through `get` (a closure so tests and the CLI can supply
    /// their own). Each variable is read only if `command` uses it ([`need`]): VERSION, GC and
    /// STATUS never look at the container variables, whatever placeholders they hold.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, EnvError> {
        let raw = get("CNI_COMMAND")
            .filter(|v| !v.is_empty())
            .ok_or(EnvError::NoCommand)?;
        let command = Command::parse(&raw).ok_or(EnvError::UnknownCommand(raw))?;
        let verb = command.as_str();
        // Empty counts as unset for every variable.
        let read = |var: &'static str| -> Result<Option<String>, EnvError> {
            match (need(command, var), get(var).filter(|v| !v.is_empty())) {
                (Need::Ignored, _) => Ok(None),
                (Need::Required, None) => Err(EnvError::Missing(var, verb)),
                (_, value) => Ok(value),
            }
        };

        let container_id = read("CNI_CONTAINERID")?
            .map(|c| validate_container_id(&c))
            .transpose()?;
        let ifname = read("CNI_IFNAME")?
            .map(|i| {
                IfName::parse(&i).map_err(|e| EnvError::Invalid {
                    var: "CNI_IFNAME",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let netns = read("CNI_NETNS")?.map(PathBuf::from);
        if let Some(n) = &netns {
            // DEL must work when the netns is already gone; only its shape is checked there.
            if command == Command::Del {
                if !n.is_absolute() {
                    return Err(EnvError::Invalid {
                        var: "CNI_NETNS",
                        reason: format!("{} is not an absolute path", n.display()),
                    });
                }
            } else {
                validate_netns(n)?;
            }
        }
        let cni_path = read("CNI_PATH")?.unwrap_or_default();
        let args = CniArgs::parse(&read("CNI_ARGS")?.unwrap_or_default()).map_err(|e| {
            EnvError::Invalid {
                var: "CNI_ARGS",
                reason: e.to_string(),
            }
        })?;
        let pod = pod_ref(&args)?;
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
            cni_path,
            pod,
        })
    }

    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$` (libcni's rule), and short enough that every journal file
/// named after it fits in a file name: the ID names files in the journal directory, so
/// nothing else may pass, and an ID refused only when the journal is written would be
/// refused after the checks that come before it.
pub fn validate_container_id(id: &str) -> Result<String, EnvError> {
    let invalid = |reason: &str| EnvError::Invalid {
        var: "CNI_CONTAINERID",
        reason: reason.to_string(),
    };
    let max = crate::cache::MAX_CONTAINER_ID;
    if id.len() > max {
        return Err(invalid(&format!(
            "longer than {max} bytes (the journal names files after it)"
        )));
    }
    let mut bytes = id.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return Err(invalid("must start with a letter or digit")),
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(invalid(
            "only letters, digits, '_', '.' and '-' are allowed",
        ));
    }
    Ok(id.to_string())
}

/// A netns path must be absolute, be a network namespace (nsfs), and not be the namespace
/// Plexus itself runs in: attaching "pod" interfaces to the node would be a silent disaster.
pub fn validate_netns(path: &Path) -> Result<(), EnvError> {
    let invalid = |reason: String| EnvError::Invalid {
        var: "CNI_NETNS",
        reason,
    };
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    let st =
        nix::sys::statfs::statfs(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(invalid(format!(
            "{} is not a network namespace",
            path.display()
        )));
    }
    let ns = std::fs::metadata(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    // /proc/thread-self, not /proc/self: the latter names the main thread's netns.
    if let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net") {
        use std::os::unix::fs::MetadataExt;
        if own.dev() == ns.dev() && own.ino() == ns.ino() {
            return Err(invalid(format!(
                "{} is the namespace plexus runs in, not a pod's",
                path.display()
            )));
        }
    }
    Ok(())
}

fn pod_ref(args: &CniArgs) -> Result<PodRef, EnvError> {
    let label = |var: &'static str| -> Result<Option<String>, EnvError> {
        match args.get(var).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if is_dns1123_subdomain(v) => Ok(Some(v.to_string())),
            Some(v) => Err(EnvError::Invalid {
                var: "CNI_ARGS",
                reason: format!("{var}={v:?} is not a DNS-1123 name"),
            }),
        }
    };
    let namespace = label("K8S_POD_NAMESPACE")?;
    let name = label("K8S_POD_NAME")?;
    let uid = match args.get("K8S_POD_UID").filter(|v| !v.is_empty()) {
        None => None,
        Some(u) if is_uuid(u) => Some(u.to_string()),
        Some(u) => {
            return Err(EnvError::Invalid {
                var: "CNI_ARGS",
                reason: format!("K8S_POD_UID={u:?} is not a UUID"),
            });
        }
    };
    let infra_container_id = match args.get("K8S_POD_INFRA_CONTAINER_ID") {
        Some(c) if !c.is_empty() => Some(validate_container_id(c)?),
        _ => None,
    };
    Ok(PodRef {
        namespace,
        name,
        uid,
        infra_container_id,
    })
}

/// RFC 1123 subdomain as Kubernetes uses it for object names: ≤253 chars of lowercase
/// alphanumerics, `-` and `.`, starting and ending alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_unbounded)
}

/// RFC 1123 label (namespaces): ≤63 chars.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_unbounded(s)
}

fn is_dns1123_label_unbounded(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn inv(vars: &[(&str, &str)]) -> Result<Invocation, EnvError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Invocation::from_env(|k| m.get(k).cloned())
    }

    #[test]
    fn version_needs_only_the_command() {
        assert_eq!(
            inv(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        let probe = inv(&[
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
        assert_eq!(inv(&[]).unwrap_err(), EnvError::NoCommand);
        assert!(matches!(
            inv(&[("CNI_COMMAND", "FOO")]).unwrap_err(),
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
        assert!(inv(&base).is_ok());
        let mut gone = base.to_vec();
        gone.push(("CNI_NETNS", "/run/netns/does-not-exist"));
        assert!(inv(&gone).is_ok());
    }

    #[test]
    fn container_ids_are_checked() {
        let max = crate::cache::MAX_CONTAINER_ID;
        for bad in ["../x", "-a", "a b", &"a".repeat(max + 1), &"a".repeat(257)] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
        assert!(validate_container_id("a1_b.c-d").is_ok());
        assert!(validate_container_id(&"a".repeat(max)).is_ok());
    }

    #[test]
    fn pod_args_are_checked() {
        let base = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        let with = |a: &str| {
            let mut v = base.to_vec();
            v.push(("CNI_ARGS", a));
            inv(&v)
        };
        assert!(with("K8S_POD_NAMESPACE=../kube-system").is_err());
        assert!(with("K8S_POD_UID=nope").is_err());
        assert!(with("K8S_POD_NAME").is_err());
        let ok = with("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c").unwrap();
        assert_eq!(ok.pod.name.as_deref(), Some("p"));
    }

    #[test]
    fn cni_variables_must_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let bad = |k: &str| {
            (k == "CNI_ARGS").then(|| std::ffi::OsString::from_vec(b"K8S_POD_NAME=p\xff".to_vec()))
        };
        let e = check_utf8(bad).unwrap_err();
        assert!(e.to_string().contains("CNI_ARGS"), "{e}");
        assert!(check_utf8(|_| Some("x".into())).is_ok());
    }

    #[test]
    fn netns_must_be_a_namespace_and_not_ours() {
        assert!(validate_netns(Path::new("/etc/hostname")).is_err());
        assert!(validate_netns(Path::new("relative")).is_err());
        assert!(validate_netns(Path::new("/proc/thread-self/ns/net")).is_err());
    }
}
