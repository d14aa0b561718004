//! The Plexus conf on stdin: every key, every type, every size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = plexus::conf::PlexusConf::parse(data) {
        let _ = conf.delegate_path("/opt/cni/bin:/usr/lib/cni");
    }
});
