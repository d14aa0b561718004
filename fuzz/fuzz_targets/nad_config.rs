//! A NAD's `spec.config` as an ADD resolves and plans it: a pod selects `default/fz`, whose
//! config the fuzzer writes, once plainly and once with every selection field set.
#![no_main]

use libfuzzer_sys::fuzz_target;

const RICH: &str = r#"[{"name":"fz","interface":"net7","ips":["10.1.0.9/24"],"mac":"02:00:00:00:00:09","default-route":["10.1.0.1"],"cni-args":{"k":"v"},"portMappings":[{"hostPort":81,"containerPort":80}],"bandwidth":{"ingressRate":1000,"ingressBurst":10,"egressRate":1000,"egressBurst":10}}]"#;

fuzz_target!(|data: &[u8]| {
    let config = String::from_utf8_lossy(data);
    plexus_fuzz::plan("fz", &config);
    plexus_fuzz::plan(RICH, &config);
});
