//! Standalone CNI plugin: the built-in vxlan overlay delegate (conf keys in `delegates::vxlan`).

fn main() -> std::process::ExitCode {
    delegates::standalone::main(delegates::Kind::Vxlan)
}
