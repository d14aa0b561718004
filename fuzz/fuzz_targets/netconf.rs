//! A delegate's net conf or conflist: decoding, the list form, version negotiation, and the
//! per-plugin conf Plexus hands each delegate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cni::netconf::parse_strict(data);
    let Ok(map) = cni::netconf::parse_object(data) else {
        return;
    };
    let _ = cni::netconf::negotiate_version(&map);
    let Ok(list) = cni::netconf::NetConfList::from_map(map) else {
        return;
    };
    for i in 0..list.plugins.len() {
        if let Some(conf) = list.plugin_conf(i) {
            let _ = conf.plugin_type();
            let _ = conf.ipam_type();
            let _ = conf.capabilities();
            // What a delegate gets on stdin must read back as the same object.
            let bytes = conf.to_bytes();
            assert!(
                cni::netconf::parse_object(&bytes).is_ok(),
                "plugin {i}'s conf does not read back: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // The journal stores this form; DEL rebuilds the list from it.
    let again = list.to_value();
    let serde_json::Value::Object(m) = again else {
        panic!("to_value is not an object");
    };
    if let Err(e) = cni::netconf::NetConfList::from_map(m) {
        panic!("a conflist's journaled form does not read back: {e}");
    }
});
