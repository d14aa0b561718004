//! Standalone CNI IPAM plugin: the built-in host-local (reference `host-local` conf schema,
//! and its dataDir format and lock, so it can share a network with the reference binary).

fn main() -> std::process::ExitCode {
    delegates::standalone::main_ipam(delegates::standalone::IpamKind::HostLocal)
}
