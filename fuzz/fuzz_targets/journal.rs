//! A journal entry as DEL reads it after a crash, a full disk or a hand edit: the file's
//! versions (the last whole one in force), the entry, and each attachment's conflist and
//! cached result. An entry that reads must also write and read back unchanged, and a version
//! appended after whatever the file holds must be the one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::journal::{Entry, Lookup};

fuzz_target!(|data: &[u8]| {
    if let Lookup::Found(last) = plexus::journal::parse(data) {
        // Another version than the last, so that a reader ignoring appends is caught.
        let mut next = *last;
        next.created = next.created.wrapping_add(1);
        let encoded = match serde_json::to_vec(&next) {
            Ok(b) => b,
            Err(e) => panic!("an entry that reads does not write: {e}"),
        };
        let mut appended = data.to_vec();
        appended.push(b'\n');
        appended.extend(encoded);
        appended.push(b'\n');
        match plexus::journal::parse(&appended) {
            Lookup::Found(again) => assert_eq!(*again, next),
            other => panic!("an appended version is not the one read: {other:?}"),
        }
    }
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
