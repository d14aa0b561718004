//! Standalone CNI plugin: the built-in ipvlan delegate (reference `ipvlan` conf schema).

fn main() -> std::process::ExitCode {
    delegates::standalone::main(delegates::Kind::Ipvlan)
}
