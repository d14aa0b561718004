//! Crash points for tests: [`point`] aborts the process when `PLEXUS_FAULT` names it, so a
//! test can kill Plexus at an exact step (after the journal write, between attachments,
//! between two netlink requests, ...) and prove that DEL still undoes everything.
//!
//! Only debug builds look at the variable: in a release build [`point`] is an empty inline
//! function, so no environment can crash a production binary on purpose.
//!
//! Every call site is listed in [`POINTS`]; a test reads the sources of the workspace and
//! fails when a call names a point the list lacks or the list names one no call has, so the
//! test that walks the list covers a new point without being told.

/// The variable naming the point to abort at.
pub const ENV: &str = "PLEXUS_FAULT";

/// A crash point and the command that passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub name: &'static str,
    /// `ADD`, `DEL` or `GC` (a CNI command), `ADD after DEL` (an ADD on networks another
    /// pod's DEL has just released addresses of), or `demo` (`plexus demo`).
    pub during: &'static str,
}

const fn p(name: &'static str, during: &'static str) -> Point {
    Point { name, during }
}

/// Every crash point, in the order a command reaches them.
pub const POINTS: &[Point] = &[
    p("journal-before-rename", "ADD"),
    p("add-after-journal", "ADD"),
    p("bridge-after-veth", "ADD"),
    p("host-local-before-key", "ADD"),
    p("host-local-spare-before-claim", "ADD after DEL"),
    p("host-local-after-reserve", "ADD"),
    p("bridge-after-ipam", "ADD"),
    p("add-between-attachments", "ADD"),
    p("sublink-after-ipam", "ADD"),
    p("sublink-after-configure", "ADD"),
    p("add-before-status", "ADD"),
    p("add-before-result", "ADD"),
    p("del-after-masquerade-removed", "DEL"),
    p("del-after-links-removed", "DEL"),
    p("del-between-attachments", "DEL"),
    p("del-before-journal-remove", "DEL"),
    p("gc-between-entries", "GC"),
    p("demo-after-del", "demo"),
];

/// Aborts the process (SIGABRT, no unwinding, no destructors: as abrupt as a `kill -9`) when
/// this is a debug build and `PLEXUS_FAULT` equals `name`.
#[inline(always)]
pub fn point(name: &'static str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        eprintln!("plexus: {ENV}={name}: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The names passed to `fault::point("...")` in every `.rs` file under `dir`.
    fn calls(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                calls(&path, out);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") || path.ends_with("cni/src/fault.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, m) in text.match_indices("fault::point(\"") {
                let name = text[i + m.len()..].split('"').next().unwrap_or_default();
                assert!(
                    out.insert(name.to_string()),
                    "crash point {name:?} is called twice ({})",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn the_list_is_exactly_the_points_in_the_code() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = BTreeSet::new();
        for dir in ["src", "cni/src", "delegates/src"] {
            calls(&root.join(dir), &mut found);
        }
        let listed: BTreeSet<String> = POINTS.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(listed.len(), POINTS.len(), "a point is listed twice");
        assert_eq!(found, listed, "fault::point calls vs POINTS");
        for p in POINTS {
            assert!(
                ["ADD", "ADD after DEL", "DEL", "GC", "demo"].contains(&p.during),
                "{p:?}"
            );
        }
    }

    #[test]
    fn an_unnamed_point_does_nothing() {
        // The variable is not set in the test environment: passing a point is a no-op.
        assert!(std::env::var_os(ENV).is_none());
        point("demo-after-del");
    }
}
