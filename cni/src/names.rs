//! The two naming rules of the protocol that guard paths: libcni's rule for network names and
//! container IDs (both end up in file and directory names: host-local's data dir, libcni's
//! result cache, Plexus's journal), and the rule for a plugin `type` (it names a binary looked
//! up on `CNI_PATH`, so a path in it would escape the search: CVE-2021-20206).

/// libcni's `ValidateNetworkName` and `ValidateContainerID`, one regex:
/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`.
pub fn is_valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What libcni's name rule allows, for messages.
pub const NAME_RULE: &str =
    "must start with a letter or digit and hold only letters, digits, '_', '.' and '-'";

/// Checks a plugin `type` (or `ipam.type`): a bare file name. The reason names what is wrong.
pub fn check_plugin_type(plugin_type: &str) -> Result<(), &'static str> {
    let reason = if plugin_type.is_empty() {
        "it is empty"
    } else if plugin_type == "." || plugin_type == ".." {
        "it names a directory"
    } else if plugin_type.contains(['/', '\\']) {
        "it contains a path separator"
    } else if plugin_type.contains('\0') {
        "it contains a NUL byte"
    } else if plugin_type.chars().any(char::is_whitespace) {
        "it contains whitespace"
    } else if plugin_type.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_libcni() {
        for good in ["a", "0", "a1_b.c-d", "Net.1"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "a:b", "ü"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn plugin_types_are_bare_file_names() {
        for good in ["bridge", "host-local", "plexus-bridge", "v1.2"] {
            assert_eq!(check_plugin_type(good), Ok(()), "{good}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", "a\0b", "a b", "a\u{7}",
        ] {
            assert!(check_plugin_type(bad).is_err(), "{bad:?}");
        }
    }
}
