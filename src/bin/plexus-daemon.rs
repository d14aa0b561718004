//! `plexus-daemon`: the node daemon of thick mode (docs/daemon.md), a binary of its own so that
//! the `plexus` binary the runtime execs for every CNI call carries none of it. `plexus daemon
//! ARGS` execs this binary with the same arguments.

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "plexus daemon",
    version,
    about = "The Plexus node daemon (thick mode)"
)]
struct Cli {
    #[command(flatten)]
    args: plexus::daemon::DaemonArgs,
}

fn main() -> ExitCode {
    plexus::daemon::run(Cli::parse().args)
}
