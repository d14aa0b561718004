//! The committed CRD manifest is the one the Rust type generates, and `plexus gen crd` prints it.

use std::process::Command;

const COMMITTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/network-attachment-definition.yaml"
);

#[test]
fn committed_crd_matches_the_type() {
    let generated = plexus::crd::crd_yaml().unwrap();
    let committed = std::fs::read_to_string(COMMITTED).unwrap();
    assert!(
        committed == generated,
        "crds/network-attachment-definition.yaml drifted from src/crd.rs; regenerate it with\n  \
         cargo run -- gen crd > crds/network-attachment-definition.yaml\n\
         --- committed\n{committed}\n--- generated\n{generated}"
    );
}

#[test]
fn committed_crd_parses_as_a_crd_with_the_npwg_names() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let text = std::fs::read_to_string(COMMITTED).unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("network-attachment-definitions.k8s.cni.cncf.io")
    );
    assert_eq!(crd.spec.group, "k8s.cni.cncf.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "NetworkAttachmentDefinition");
    assert_eq!(crd.spec.names.plural, "network-attachment-definitions");
    let short = crd.spec.names.short_names.unwrap_or_default();
    assert!(short.iter().any(|s| s == "net-attach-def"), "{short:?}");
    let versions: Vec<_> = crd
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.served, v.storage))
        .collect();
    assert_eq!(versions, [("v1", true, true)]);
}

#[test]
fn gen_crd_prints_the_generated_manifest() {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["gen", "crd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        plexus::crd::crd_yaml().unwrap()
    );
}
