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

/// The text values under secret-looking keys of `value`, at any depth: what a delegate was
/// given and may repeat in its own words (an error message, its stderr).
pub fn secret_values(value: &Value) -> Vec<String> {
    fn walk(v: &Value, under_secret: bool, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(v, under_secret || looks_secret(k), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, under_secret, out)),
            Value::String(s) if under_secret => out.push(s.clone()),
            Value::Number(n) if under_secret => out.push(n.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, false, &mut out);
    // Longest first, so a secret that contains another is cut whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `text` with every occurrence of each of `secrets` replaced by [`REDACTED`]. Values shorter
/// than 4 characters are left alone: cutting every `1` or `ab` out of a message would make it
/// unreadable and hide nothing worth hiding.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.chars().count() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
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
    fn a_delegate_repeating_its_secrets_is_scrubbed_by_value() {
        let conf = json!({"type": "x", "password": "hunter2", "auth": {"token": {"v": "abcd1234"}},
                          "pin": 7, "keys": ["k-one", "ab"]});
        let secrets = secret_values(&conf);
        assert_eq!(secrets, ["abcd1234", "hunter2", "k-one", "ab"]);
        assert_eq!(
            scrub(
                "bad conf {password:hunter2,auth:{token:{v:abcd1234}},keys:[k-one,ab]}",
                &secrets
            ),
            "bad conf {password:[redacted],auth:{token:{v:[redacted]}},keys:[[redacted],ab]}"
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
