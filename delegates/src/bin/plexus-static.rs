//! Standalone CNI IPAM plugin: the built-in static IPAM (reference `static` conf schema:
//! addresses, routes, dns, `IP=`/`GATEWAY=` in CNI_ARGS).

fn main() -> std::process::ExitCode {
    delegates::standalone::main_ipam(delegates::standalone::IpamKind::Static)
}
