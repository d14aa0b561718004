//! Running a CNI plugin binary (the spec's execution protocol): find it on `CNI_PATH`, run it
//! with the `CNI_*` environment and the conf on stdin, bound its time and output, and turn its
//! answer into bytes or an [`ExecError`].
//!
//! Synchronous on purpose (threads, no async runtime): a plugin exec is one blocking child per
//! call. Spawn from a thread in the host netns: a child starts in the netns of the *thread*
//! that spawns it, and plugins are told their target netns through `CNI_NETNS` instead.
//! Decoding a successful result is the caller's job; this module only knows the error object.

mod child;
mod lookup;

pub use lookup::{find_plugin, split_path};

use crate::command::Command;
use crate::error::{Code, ErrorObject};
use crate::version::Version;
use child::{Limits, Outcome};
use nix::errno::Errno;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A plugin printing more than this on stdout is killed: no CNI result comes near it.
pub const STDOUT_LIMIT: usize = 1 << 20;
/// How much of a plugin's stderr is kept for error messages (the end, where the cause usually is).
pub const STDERR_TAIL: usize = 4 << 10;
/// The only `PATH` a plugin sees; plugins that call `iptables` or `ip` find them here.
pub const PLUGIN_PATH_ENV: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// One invocation, already resolved to CNI environment values.
#[derive(Debug, Clone, Copy)]
pub struct ExecRequest<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// `CNI_NETNS`, unset when `None` (DEL, GC, STATUS may run without one).
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a str,
    pub cni_path: &'a str,
    /// The network configuration, written to the plugin's stdin.
    pub stdin: &'a [u8],
    /// Counted from just before the spawn; the whole process group is killed when it runs out.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("plugin type {plugin_type:?} refused: {reason}")]
    BadType {
        plugin_type: String,
        reason: &'static str,
    },
    #[error("plugin type {plugin_type:?} refused: it would run this plugin again (recursion)")]
    ForbiddenType { plugin_type: String },
    #[error(
        "plugin type {plugin_type:?} refused: {} is the running executable under another name (recursion)",
        .path.display()
    )]
    RunsItself { plugin_type: String, path: PathBuf },
    #[error(
        "plugin type {plugin_type:?} not found in [{}]{}",
        join_paths(.searched),
        skipped_note(.skipped)
    )]
    NotFound {
        plugin_type: String,
        /// The directories that passed the ownership and mode checks.
        searched: Vec<PathBuf>,
        /// `"<path>: <reason>"` for each directory or candidate file that was refused.
        skipped: Vec<String>,
    },
    #[error("plugin {} {command}: not executable", .plugin.display())]
    NotExecutable {
        plugin: PathBuf,
        command: Command,
        #[source]
        source: io::Error,
    },
    #[error("plugin {} {command}: text file busy (being replaced?)", .plugin.display())]
    TextBusy {
        plugin: PathBuf,
        command: Command,
        #[source]
        source: io::Error,
    },
    #[error("plugin {} {command}: spawn", .plugin.display())]
    Spawn {
        plugin: PathBuf,
        command: Command,
        #[source]
        source: io::Error,
    },
    #[error("plugin {} {command}: {step}", .plugin.display())]
    Io {
        plugin: PathBuf,
        command: Command,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("plugin {} {command}: timed out after {timeout:?}, process group killed", .plugin.display())]
    Timeout {
        plugin: PathBuf,
        command: Command,
        timeout: Duration,
        /// The end of what the plugin wrote on stderr, when its stderr closed in time.
        stderr: String,
    },
    #[error("plugin {} {command}: output too large (over {limit} bytes), process group killed", .plugin.display())]
    OutputTooLarge {
        plugin: PathBuf,
        command: Command,
        limit: usize,
    },
    #[error("plugin {} {command}: failed with code {}: {}", .plugin.display(), .error.code, .error.msg)]
    Plugin {
        plugin: PathBuf,
        command: Command,
        /// The plugin's own error object, code and all.
        error: Box<ErrorObject>,
    },
    #[error("plugin {} {command}: {status} without a CNI error on stdout", .plugin.display())]
    Exit {
        plugin: PathBuf,
        command: Command,
        status: ExitStatus,
        /// The end of the plugin's stderr.
        stderr: String,
    },
    #[error("plugin {} {command}: decode output", .plugin.display())]
    Decode {
        plugin: PathBuf,
        command: Command,
        #[source]
        source: serde_json::Error,
    },
}

impl ExecError {
    /// The CNI error code this failure maps to for the caller: a plugin that cannot be found
    /// or run is a configuration error (7), one that hangs or is being replaced is worth
    /// retrying (11), one that fails is a delegate failure (100), and the caller's own I/O
    /// is 5.
    pub fn code(&self) -> Code {
        match self {
            ExecError::BadType { .. }
            | ExecError::ForbiddenType { .. }
            | ExecError::RunsItself { .. }
            | ExecError::NotFound { .. }
            | ExecError::NotExecutable { .. } => Code::InvalidConfig,
            ExecError::Timeout { .. } | ExecError::TextBusy { .. } => Code::TryAgainLater,
            ExecError::Plugin { .. }
            | ExecError::Exit { .. }
            | ExecError::OutputTooLarge { .. }
            | ExecError::Decode { .. } => Code::DelegateFailed,
            ExecError::Spawn { .. } | ExecError::Io { .. } => Code::Io,
        }
    }

    /// Text for the CNI error's `details`: the delegate's own `code N: msg (details)` for
    /// [`ExecError::Plugin`], its stderr tail for exits and timeouts, the OS error otherwise.
    pub fn details(&self) -> String {
        match self {
            ExecError::Plugin { error, .. } => error.to_string(),
            ExecError::Exit { stderr, .. } | ExecError::Timeout { stderr, .. } => {
                stderr.trim().to_string()
            }
            ExecError::NotExecutable { source, .. }
            | ExecError::TextBusy { source, .. }
            | ExecError::Spawn { source, .. }
            | ExecError::Io { source, .. } => source.to_string(),
            ExecError::Decode { source, .. } => source.to_string(),
            ExecError::BadType { .. }
            | ExecError::ForbiddenType { .. }
            | ExecError::RunsItself { .. }
            | ExecError::NotFound { .. }
            | ExecError::OutputTooLarge { .. } => String::new(),
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped {})", skipped.join("; "))
    }
}

/// Runs `plugin` once and returns its stdout when it exits 0.
///
/// The environment is cleared and holds only the `CNI_*` variables and [`PLUGIN_PATH_ENV`]. The
/// plugin leads a new process group that is SIGKILLed on timeout, on output over
/// [`STDOUT_LIMIT`], and after the plugin exits (so nothing it started outlives the call). A
/// process that escaped the group and keeps a pipe open delays the return by at most about a
/// second past the timeout.
pub fn run(plugin: &Path, req: &ExecRequest) -> Result<Vec<u8>, ExecError> {
    let deadline = Instant::now() + req.timeout;
    let mut cmd = std::process::Command::new(plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", req.command.as_str())
        .env("CNI_CONTAINERID", req.container_id)
        .env("CNI_IFNAME", req.ifname)
        .env("CNI_ARGS", req.args)
        .env("CNI_PATH", req.cni_path)
        .env("PATH", PLUGIN_PATH_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(netns) = req.netns {
        cmd.env("CNI_NETNS", netns);
    }
    let child = cmd
        .spawn()
        .map_err(|source| spawn_error(plugin, req.command, source))?;

    let limits = Limits {
        deadline,
        stdout_cap: STDOUT_LIMIT,
        stderr_tail: STDERR_TAIL,
    };
    let plugin = plugin.to_path_buf();
    let command = req.command;
    match child::supervise(child, req.stdin.to_vec(), &limits) {
        Outcome::Exited { status, stdout, .. } if status.success() => Ok(stdout),
        Outcome::Exited {
            status,
            stdout,
            stderr,
        } => Err(match serde_json::from_slice::<ErrorObject>(&stdout) {
            Ok(error) => ExecError::Plugin {
                plugin,
                command,
                error: Box::new(error),
            },
            Err(_) => ExecError::Exit {
                plugin,
                command,
                status,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            },
        }),
        Outcome::TimedOut { stderr } => Err(ExecError::Timeout {
            plugin,
            command,
            timeout: req.timeout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
        Outcome::TooLarge => Err(ExecError::OutputTooLarge {
            plugin,
            command,
            limit: STDOUT_LIMIT,
        }),
        Outcome::Failed { step, source } => Err(ExecError::Io {
            plugin,
            command,
            step,
            source,
        }),
    }
}

fn spawn_error(plugin: &Path, command: Command, source: io::Error) -> ExecError {
    let plugin = plugin.to_path_buf();
    match source.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ETXTBSY) => ExecError::TextBusy {
            plugin,
            command,
            source,
        },
        // ENOENT here means the file vanished since the lookup or its `#!` interpreter is
        // missing: either way the configured plugin cannot run, like ENOEXEC and EACCES.
        Some(Errno::ENOEXEC | Errno::EACCES | Errno::ENOENT) => ExecError::NotExecutable {
            plugin,
            command,
            source,
        },
        _ => ExecError::Spawn {
            plugin,
            command,
            source,
        },
    }
}

#[derive(serde::Deserialize)]
struct VersionInfo {
    #[serde(rename = "supportedVersions")]
    supported_versions: Vec<String>,
}

/// Asks `plugin` which spec versions it supports (the VERSION command). Versions this crate
/// does not know are skipped; the answer is sorted and without duplicates.
pub fn version(
    plugin: &Path,
    cni_path: &str,
    timeout: Duration,
) -> Result<Vec<Version>, ExecError> {
    let req = ExecRequest {
        command: Command::Version,
        container_id: "",
        netns: None,
        ifname: "",
        args: "",
        cni_path,
        stdin: br#"{"cniVersion":"1.1.0"}"#,
        timeout,
    };
    let stdout = run(plugin, &req)?;
    let info: VersionInfo =
        serde_json::from_slice(&stdout).map_err(|source| ExecError::Decode {
            plugin: plugin.to_path_buf(),
            command: req.command,
            source,
        })?;
    let mut versions: Vec<Version> = info
        .supported_versions
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect();
    versions.sort();
    versions.dedup();
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno as i32)
    }

    #[test]
    fn spawn_errors_map_to_their_codes() {
        let p = Path::new("/opt/cni/bin/x");
        assert_eq!(
            spawn_error(p, Command::Add, io_err(Errno::ETXTBSY)).code(),
            Code::TryAgainLater
        );
        assert_eq!(
            spawn_error(p, Command::Add, io_err(Errno::ENOEXEC)).code(),
            Code::InvalidConfig
        );
        assert_eq!(
            spawn_error(p, Command::Add, io_err(Errno::EACCES)).code(),
            Code::InvalidConfig
        );
        assert_eq!(
            spawn_error(p, Command::Add, io_err(Errno::ENOENT)).code(),
            Code::InvalidConfig
        );
        assert_eq!(
            spawn_error(p, Command::Add, io_err(Errno::EMFILE)).code(),
            Code::Io
        );
    }

    #[test]
    fn plugin_error_details_keep_the_delegates_code_and_msg() {
        let err = ExecError::Plugin {
            plugin: PathBuf::from("/usr/lib/cni/bridge"),
            command: Command::Add,
            error: Box::new(ErrorObject {
                cni_version: "1.0.0".to_string(),
                code: 7,
                msg: "bad bridge".to_string(),
                details: "no such master".to_string(),
            }),
        };
        assert_eq!(err.code(), Code::DelegateFailed);
        assert_eq!(err.details(), "code 7: bad bridge (no such master)");
        assert_eq!(
            err.to_string(),
            "plugin /usr/lib/cni/bridge ADD: failed with code 7: bad bridge"
        );
    }

    #[test]
    fn not_found_names_the_type_the_searched_and_the_skipped_dirs() {
        let err = ExecError::NotFound {
            plugin_type: "macvlan".to_string(),
            searched: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            skipped: vec!["/tmp: mode 1777 is writable by group or others".to_string()],
        };
        assert_eq!(err.code(), Code::InvalidConfig);
        assert_eq!(
            err.to_string(),
            "plugin type \"macvlan\" not found in [/opt/cni/bin, /usr/lib/cni] \
             (skipped /tmp: mode 1777 is writable by group or others)"
        );
    }
}
