//! `runtimeConfig` values in the spelling the CNI conventions give them (the dynamic, runtime-supplied
//! fields).
//!
//! Runtimes written in Go fill runtimeConfig from structs without JSON tags, so containerd
//! sends `{"HostPort": 18080, "ContainerPort": 80, ...}`, `{"IngressRate": ...}`,
//! `{"Servers": [...], "Searches": [...]}` and `[[{"Subnet": ..., "RangeStart": ""}]]`. Go's
//! decoder matches keys case-insensitively, so the reference plugins read both spellings; a
//! strict decoder does not. [`canonical`] rewrites the fields of the well-known capabilities to
//! the conventions' spelling (any case in, one spelling out), so every reader of Plexus's
//! runtimeConfig, in-process or exec'd, sees one shape. Unknown keys and capabilities pass
//! through untouched.

use serde_json::{Map, Value};

const PORT_MAPPING: &[&str] = &["hostPort", "containerPort", "protocol", "hostIP"];
const BANDWIDTH: &[&str] = &["ingressRate", "ingressBurst", "egressRate", "egressBurst"];
const DNS: &[&str] = &["servers", "searches", "options", "domain"];
const IP_RANGE: &[&str] = &["subnet", "rangeStart", "rangeEnd", "gateway"];

/// Every capability of a runtimeConfig object, each in the conventions' spelling.
pub fn canonical_map(runtime: &Map<String, Value>) -> Map<String, Value> {
    runtime
        .iter()
        .map(|(k, v)| (k.clone(), canonical(k, v)))
        .collect()
}

/// One capability's value in the conventions' spelling.
pub fn canonical(capability: &str, value: &Value) -> Value {
    match capability {
        "portMappings" => each(value, |v| fields(v, PORT_MAPPING, false)),
        "bandwidth" => fields(value, BANDWIDTH, false),
        "dns" => fields(value, DNS, false),
        // A Go runtime writes unset range fields as "" (net.IP reads "" as unset).
        "ipRanges" => each(value, |set| each(set, |r| fields(r, IP_RANGE, true))),
        _ => value.clone(),
    }
}

fn each(value: &Value, f: impl Fn(&Value) -> Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(f).collect()),
        other => other.clone(),
    }
}

/// The object with every key that matches one of `known` case-insensitively renamed to it.
/// The exact spelling wins over another case of the same key, as in Go's decoder.
fn fields(value: &Value, known: &[&str], drop_empty: bool) -> Value {
    let Value::Object(m) = value else {
        return value.clone();
    };
    let mut out = Map::new();
    let mut exact = Vec::new();
    for (k, v) in m {
        if drop_empty && v.as_str() == Some("") {
            continue;
        }
        match known.iter().find(|f| f.eq_ignore_ascii_case(k)) {
            Some(f) if *f == k => exact.push((k.clone(), v.clone())),
            Some(f) => {
                out.insert((*f).to_string(), v.clone());
            }
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.extend(exact);
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containerd_spellings_become_the_conventions() {
        let runtime = json!({
            "portMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "bandwidth": {"IngressRate": 10000000, "IngressBurst": 4294967295u64,
                          "EgressRate": 20000000, "EgressBurst": 4294967295u64},
            "dns": {"Servers": ["10.96.0.10"], "Searches": ["default.svc.cluster.local"],
                    "Options": ["ndots:5"]},
            "ipRanges": [[{"Subnet": "10.1.0.0/24", "RangeStart": "", "RangeEnd": "", "Gateway": ""}]],
            "io.kubernetes.cri.pod-annotations": {"A": "b"},
            "mac": "02:00:00:00:00:01"
        });
        let out = Value::Object(canonical_map(runtime.as_object().unwrap()));
        assert_eq!(
            out,
            json!({
                "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
                "bandwidth": {"ingressRate": 10000000, "ingressBurst": 4294967295u64,
                              "egressRate": 20000000, "egressBurst": 4294967295u64},
                "dns": {"servers": ["10.96.0.10"], "searches": ["default.svc.cluster.local"],
                        "options": ["ndots:5"]},
                "ipRanges": [[{"subnet": "10.1.0.0/24"}]],
                "io.kubernetes.cri.pod-annotations": {"A": "b"},
                "mac": "02:00:00:00:00:01"
            })
        );
    }

    #[test]
    fn the_conventions_spelling_is_kept_and_wins() {
        let v = json!([{"hostport": 1, "hostPort": 2, "containerPort": 3, "x-extra": true}]);
        assert_eq!(
            canonical("portMappings", &v),
            json!([{"hostPort": 2, "containerPort": 3, "x-extra": true}])
        );
        // Shapes it does not know are left for the reader to refuse.
        assert_eq!(canonical("bandwidth", &json!("fast")), json!("fast"));
        assert_eq!(canonical("portMappings", &json!({"a": 1})), json!({"a": 1}));
    }
}
