//! `plexus daemon`: the daemon is a binary of its own, `plexus-daemon`, installed next to
//! `plexus`. The runtime execs `plexus` for every CNI call, and a process maps the pages of
//! its binary's code around every page it runs, whether or not that code is ever reached:
//! the reflectors, the HTTP/2 client, the metrics server and the socket server in the same
//! binary made each one-shot call about 1.3 MiB larger (docs/daemon.md has the figures).
//! `plexus daemon ARGS` replaces itself with `plexus-daemon ARGS`, so the DaemonSet,
//! scripts and signals see one process under the name they know.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// The daemon binary's file name.
pub const DAEMON_BINARY: &str = "plexus-daemon";

/// Where the daemon binary is: beside the running `plexus`.
pub fn daemon_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(DAEMON_BINARY))
}

/// Replaces this process with `plexus-daemon ARGS`; returns only when that fails.
pub fn exec_daemon(args: Vec<OsString>) -> ExitCode {
    let binary = match daemon_binary() {
        Ok(b) => b,
        Err(e) => {
            crate::output::stderr(format_args!(
                "plexus: error: cannot find this binary's path to start {DAEMON_BINARY} beside it: {e}\n"
            ));
            return ExitCode::from(1);
        }
    };
    let e = std::process::Command::new(&binary).args(args).exec();
    crate::output::stderr(format_args!(
        "plexus: error: start the node daemon {}: {e} (plexus daemon runs {DAEMON_BINARY}, which must be installed next to plexus)\n",
        binary.display()
    ));
    ExitCode::from(1)
}
