//! What must not reach a log: values whose key looks like a secret (`password`, `token`,
//! `key`, `secret`, in any case, anywhere in the key) are replaced before a conf or
//! `CNI_ARGS` is logged. Matching by key name over-redacts rather than under-redacts: a
//! `keyFile` path is hidden too, a password never shows.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

const SECRET_WORDS: &[&str] = &["password", "token", "key", "secret"];

/// Whether a key's value is treated as a secret.
pub fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `value` with every secret-looking key's value, at any depth, replaced by [`REDACTED`].
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if looks_secret(k) {
                        Value::from(REDACTED)
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// `CNI_ARGS` (`K=V;K=V`) with the values of secret-looking keys replaced.
pub fn redact_args(args: &str) -> String {
    args.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if looks_secret(k) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_keys_are_redacted_at_any_depth() {
        let conf = json!({
            "name": "n", "kubeconfig": "/etc/k",
            "password": "hunter2",
            "etcd": {"TLSKeyFile": "/k.pem", "endpoints": ["a"]},
            "plugins": [{"type": "wg", "privateKey": "abc=", "peers": [{"presharedKey": "x"}]}],
            "auth": {"bearerToken": {"nested": "t"}, "clientSecret": 5}
        });
        assert_eq!(
            redact(&conf),
            json!({
                "name": "n", "kubeconfig": "/etc/k",
                "password": REDACTED,
                "etcd": {"TLSKeyFile": REDACTED, "endpoints": ["a"]},
                "plugins": [{"type": "wg", "privateKey": REDACTED, "peers": [{"presharedKey": REDACTED}]}],
                "auth": {"bearerToken": REDACTED, "clientSecret": REDACTED}
            })
        );
    }

    #[test]
    fn cni_args_values_are_redacted_by_key() {
        assert_eq!(
            redact_args("IgnoreUnknown=1;K8S_POD_NAME=web;API_TOKEN=abc;novalue"),
            "IgnoreUnknown=1;K8S_POD_NAME=web;API_TOKEN=[redacted];novalue"
        );
    }
}
