//! One file of the manifests store: multi-document YAML or JSON, `kind: List`, Pods and
//! NADs, and the annotations a pod found there carries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(store) = plexus::store::ManifestStore::from_text("fuzz.yaml", text) else {
        return;
    };
    for pod in store.pods() {
        if let Some(n) = pod.annotations.get("k8s.v1.cni.cncf.io/networks") {
            let _ = plexus::selection::parse_networks(n, &pod.namespace);
        }
    }
    for nad in store.nads() {
        if let Some(c) = &nad.config {
            let _ = cni::netconf::parse_object(c.as_bytes());
        }
    }
});
