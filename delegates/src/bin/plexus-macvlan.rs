//! Standalone CNI plugin: the built-in macvlan delegate (reference `macvlan` conf schema).

fn main() -> std::process::ExitCode {
    delegates::standalone::main(delegates::Kind::Macvlan)
}
