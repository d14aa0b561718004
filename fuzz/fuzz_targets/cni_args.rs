//! `CNI_ARGS` from the runtime: the pair grammar, what Plexus reads from it (the pod's
//! namespace, name, UID), and its printed form, which must parse back to the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A conf that parses, so what the target reaches is the environment's reading.
const CONF: &[u8] =
    br#"{"cniVersion":"1.1.0","name":"p","type":"plexus","clusterNetwork":"/etc/cni/net.d/c.conf"}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(args) = cni::args::CniArgs::parse(raw) {
        let printed = args.to_string();
        match cni::args::CniArgs::parse(&printed) {
            Ok(again) => assert_eq!(
                again.iter().collect::<Vec<_>>(),
                args.iter().collect::<Vec<_>>(),
                "{raw:?} printed as {printed:?}"
            ),
            Err(e) => panic!("{raw:?} printed as {printed:?}, which does not parse: {e}"),
        }
    }
    let _ = plexus::flow::Request::parse(
        |k| match k {
            "CNI_COMMAND" => Some("DEL".into()),
            "CNI_CONTAINERID" => Some("0123456789abcdef".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            "CNI_ARGS" => Some(raw.to_string()),
            _ => None,
        },
        &mut &CONF[..],
    );
});
