//! `plexus demo`, the README's main job, end to end: it must attach, ping across every
//! network, tear down, and report nothing left.
#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn demo_attaches_pings_and_leaves_nothing() {
    common::require_root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .arg("demo")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for network in ["default/cluster", "default/macvlan-a", "default/vxlan-d"] {
        let line = text
            .lines()
            .find(|l| {
                l.trim_start().starts_with(network) && (l.ends_with("ok") || l.ends_with("FAILED"))
            })
            .unwrap_or_else(|| panic!("no ping line for {network}:\n{text}"));
        assert!(line.ends_with("ok"), "{line}");
    }
    assert!(text.contains("nothing left"), "{text}");
    // The demo's namespaces are gone again.
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("plexus-demo"));
}
