//! RFC 7386 merge patch and the RFC 6902 subset the fake applies.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.shift_remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902 JSON patch, the `add`, `remove`, `replace` and `test` operations.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a json patch is an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without path")?;
        let (parent, last) = match path.rfind('/') {
            Some(i) => (&path[..i], unescape_pointer(&path[i + 1..])),
            None => return Err(format!("bad pointer {path:?}")),
        };
        let value = op.get("value").cloned();
        match op["op"].as_str() {
            Some("test") => {
                if target.pointer(path) != value.as_ref() {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some(kind @ ("add" | "replace" | "remove")) => {
                let exists = target.pointer(path).is_some();
                if kind != "add" && !exists {
                    return Err(format!("{kind}: nothing at {path}"));
                }
                let p = target
                    .pointer_mut(parent)
                    .ok_or(format!("no parent for {path}"))?;
                match (p, kind) {
                    (Value::Object(m), "remove") => {
                        m.shift_remove(&last);
                    }
                    (Value::Object(m), _) => {
                        m.insert(last, value.ok_or("operation without value")?);
                    }
                    (Value::Array(a), _) => {
                        let i = if last == "-" {
                            a.len()
                        } else {
                            last.parse::<usize>().map_err(|e| e.to_string())?
                        };
                        if i > a.len() || (kind != "add" && i >= a.len()) {
                            return Err(format!("index out of range at {path}"));
                        }
                        if kind != "add" {
                            a.remove(i);
                        }
                        if kind != "remove" {
                            a.insert(i, value.ok_or("operation without value")?);
                        }
                    }
                    _ => return Err(format!("parent of {path} is not a container")),
                }
            }
            other => return Err(format!("unsupported json patch op {other:?}")),
        }
    }
    Ok(())
}

fn unescape_pointer(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}
