//! A delegate's result in any version, and its conversion to every version Plexus answers
//! in: whatever converts must read back in that version.
#![no_main]

use cni::{CniResult, Version};
use libfuzzer_sys::fuzz_target;

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fuzz_target!(|data: &[u8]| {
    let Ok((result, _)) = CniResult::from_slice(data) else {
        return;
    };
    let _ = result.sandbox_interfaces().count();
    for v in VERSIONS {
        let Ok(version) = Version::parse(v) else {
            panic!("{v} is a version Plexus speaks");
        };
        let _ = result.project(version);
        let Ok(value) = result.try_to_value(version) else {
            continue;
        };
        if let Err(e) = CniResult::parse(&value, version) {
            panic!("converted to {v} as {value} but does not read back: {e}");
        }
    }
});
