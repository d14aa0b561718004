//! `plexus`: a CNI plugin when the runtime sets `CNI_COMMAND`, a command-line tool otherwise.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A runtime always sets CNI_COMMAND; one that set the other CNI variables but forgot it
    // gets a CNI error (code 4) rather than the CLI's usage text.
    let cni_mode = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
        .iter()
        .any(|k| std::env::var_os(k).is_some());
    if cni_mode {
        return plexus::cli::cni_process();
    }
    plexus::cli::main()
}
