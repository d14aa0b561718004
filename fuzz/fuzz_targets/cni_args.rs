//! `CNI_ARGS` from the runtime: the pair grammar, what Plexus reads from it (the pod's
//! namespace, name, UID), and its printed form, which must parse back to the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;

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
    let _ = plexus::env::Invocation::from_env(|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("0123456789abcdef".into()),
        "CNI_NETNS" => Some("/proc/self/ns/net".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_PATH" => Some("/opt/cni/bin".into()),
        "CNI_ARGS" => Some(raw.to_string()),
        _ => None,
    });
});
