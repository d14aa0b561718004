//! `k8s.v1.cni.cncf.io/networks` in both forms (comma list and JSON), the default-network
//! annotation, and the plan an ADD makes from them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = plexus::selection::parse_networks(&text, "default");
    let _ = plexus::selection::parse_default_network(&text, "kube-system");
    plexus_fuzz::plan(&text, plexus_fuzz::GOOD_NAD);
});
