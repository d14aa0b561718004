//! Standalone CNI plugin: the built-in bridge delegate (reference `bridge` conf schema).

fn main() -> std::process::ExitCode {
    delegates::standalone::main(delegates::Kind::Bridge)
}
