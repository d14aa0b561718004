//! A journal entry as DEL reads it after a crash, a full disk or a hand edit: the entry, and
//! each attachment's conflist and cached result. An entry that reads must also write and
//! read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::journal::Entry;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = serde_json::from_slice::<Entry>(data) else {
        return;
    };
    for a in &entry.attachments {
        if let serde_json::Value::Object(m) = &a.conf {
            let _ = cni::netconf::NetConfList::from_map(m.clone());
        }
        if let Some(r) = &a.result {
            let _ = cni::CniResult::parse(r, cni::Version::V1_1_0);
        }
    }
    let bytes = match serde_json::to_vec(&entry) {
        Ok(b) => b,
        Err(e) => panic!("an entry that reads does not write: {e}"),
    };
    match serde_json::from_slice::<Entry>(&bytes) {
        Ok(again) => assert_eq!(again, entry),
        Err(e) => panic!("a written entry does not read back: {e}"),
    }
});
