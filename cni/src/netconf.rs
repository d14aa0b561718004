//! Network configurations (`.conf`) and configuration lists (`.conflist`), read strictly.
//!
//! A conf is kept as its JSON object so that keys this crate does not know reach the plugin
//! unchanged; the accessors read the handful of keys the protocol itself defines.

use crate::version::Version;
use serde_json::{Map, Value};

/// Largest conf accepted on stdin or from a file.
pub const MAX_CONF_BYTES: usize = 1 << 20;
/// Deepest JSON nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// GC's list of the attachments that are still valid (CNI 1.1.0).
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
/// The same list under the name the 1.1.0 tag of the spec gave it.
pub const ATTACHMENTS: &str = "cni.dev/attachments";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("config is empty")]
    Empty,
    #[error("config too large: more than {MAX_CONF_BYTES} bytes")]
    TooLarge,
    #[error("config is not valid JSON: {0}")]
    Json(String),
    #[error("config is not a JSON object")]
    NotObject,
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("string contains a NUL character")]
    Nul,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("key {key:?} must be {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("key {0:?} is missing")]
    Missing(&'static str),
    #[error("unsupported cniVersion {0:?}")]
    Version(String),
    #[error("key {key:?}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Parses JSON refusing what serde_json would let through silently: duplicate keys (the last
/// one would win and hide the first), NUL in strings, and unbounded nesting.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.len() > MAX_CONF_BYTES {
        return Err(DecodeError::TooLarge);
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DecodeError::Empty);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde::de::DeserializeSeed::deserialize(StrictSeed { depth: 0 }, &mut de)
        .map_err(|e| classify(&e))?;
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(v)
}

/// Like [`parse_strict`], and the top level must be an object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match parse_strict(bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(DecodeError::NotObject),
    }
}

fn classify(e: &serde_json::Error) -> DecodeError {
    let s = e.to_string();
    if let Some(rest) = s.strip_prefix("duplicate key ") {
        let key = rest.split(" at line").next().unwrap_or(rest);
        return DecodeError::DuplicateKey(key.trim_matches('"').to_string());
    }
    if s.starts_with("nesting too deep") {
        return DecodeError::TooDeep;
    }
    if s.starts_with("NUL in string") {
        return DecodeError::Nul;
    }
    DecodeError::Json(s)
}

struct StrictSeed {
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictSeed {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(E::custom("NUL in string"));
        }
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.visit_str(&v)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(serde::de::Error::custom("nesting too deep"));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed { depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(serde::de::Error::custom("nesting too deep"));
        }
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if k.contains('\0') {
                return Err(serde::de::Error::custom("NUL in string"));
            }
            let v = map.next_value_seed(StrictSeed { depth })?;
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// One plugin's configuration, as an object. Reserved keys (`args`, `runtimeConfig`,
/// `prevResult`, `cni.dev/*`) are set through the methods below.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf(pub Map<String, Value>);

impl NetConf {
    pub fn from_map(map: Map<String, Value>) -> Self {
        NetConf(map)
    }

    pub fn str_key(&self, key: &str) -> Result<Option<&str>, ConfError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ConfError::WrongType {
                key: key.to_string(),
                expected: "a string",
            }),
        }
    }

    pub fn plugin_type(&self) -> Result<&str, ConfError> {
        self.str_key("type")?.ok_or(ConfError::Missing("type"))
    }

    pub fn name(&self) -> Result<Option<&str>, ConfError> {
        self.str_key("name")
    }

    /// `ipam.type`, when the plugin has an `ipam` section.
    pub fn ipam_type(&self) -> Result<Option<&str>, ConfError> {
        match self.0.get("ipam") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => match m.get("type") {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(ConfError::WrongType {
                    key: "ipam.type".into(),
                    expected: "a string",
                }),
            },
            Some(_) => Err(ConfError::WrongType {
                key: "ipam".into(),
                expected: "an object",
            }),
        }
    }

    /// Capabilities the plugin declares with `"capabilities": {"ips": true, ...}`.
    pub fn capabilities(&self) -> Vec<String> {
        match self.0.get("capabilities") {
            Some(Value::Object(m)) => m
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn cni_version(&self) -> Result<Option<&str>, ConfError> {
        self.str_key("cniVersion")
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // A map of JSON values always serializes.
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
}

/// A conflist's `plugins`: a non-empty list of objects, each with a string `type` and a
/// well-formed `ipam.type`.
fn plugin_list(value: Option<Value>) -> Result<Vec<NetConf>, ConfError> {
    let list = match value {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(ConfError::WrongType {
                key: "plugins".into(),
                expected: "a list",
            });
        }
    };
    if list.is_empty() {
        return Err(ConfError::Invalid {
            key: "plugins".into(),
            reason: "the list is empty".into(),
        });
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let Value::Object(m) = p else {
            return Err(ConfError::WrongType {
                key: format!("plugins[{i}]"),
                expected: "an object",
            });
        };
        let pc = NetConf(m);
        pc.plugin_type().map_err(|_| ConfError::Invalid {
            key: format!("plugins[{i}].type"),
            reason: "must be a string".into(),
        })?;
        pc.ipam_type()?;
        out.push(pc);
    }
    Ok(out)
}

/// A configuration list: a network `name`, a `cniVersion` and a chain of plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    pub name: String,
    pub cni_version: Version,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<NetConf>,
    /// The list's own keys other than `plugins`, kept for lossless journaling.
    pub raw: Map<String, Value>,
}

impl NetConfList {
    /// Reads a conflist (`plugins`) or a single conf (`type`), the latter as a chain of one.
    /// Exactly one of the two must be present.
    pub fn from_map(mut map: Map<String, Value>) -> Result<NetConfList, ConfError> {
        let has_plugins = map.contains_key("plugins");
        let has_type = map.contains_key("type");
        if has_plugins == has_type {
            return Err(ConfError::Invalid {
                key: "plugins".into(),
                reason: "exactly one of \"type\" and \"plugins\" must be set".into(),
            });
        }
        let version = negotiate_version(&map)?;
        let name = match map.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(ConfError::WrongType {
                    key: "name".into(),
                    expected: "a string",
                });
            }
            None => return Err(ConfError::Missing("name")),
        };
        let flag = |m: &Map<String, Value>, k: &str| -> Result<bool, ConfError> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(ConfError::WrongType {
                    key: k.into(),
                    expected: "a boolean",
                }),
            }
        };
        let disable_check = flag(&map, "disableCheck")?;
        let disable_gc = flag(&map, "disableGC")?;
        let plugins = if has_plugins {
            plugin_list(map.remove("plugins"))?
        } else {
            let pc = NetConf(map.clone());
            pc.plugin_type()?;
            pc.ipam_type()?;
            map.retain(|k, _| matches!(k.as_str(), "cniVersion" | "cniVersions" | "name"));
            vec![pc]
        };
        Ok(NetConfList {
            name,
            cni_version: version,
            disable_check,
            disable_gc,
            plugins,
            raw: map,
        })
    }

    /// The conf each plugin of the chain receives: the list's `name` and `cniVersion`
    /// injected, as the spec's execution of a network configuration list says.
    pub fn plugin_conf(&self, index: usize) -> Option<NetConf> {
        let mut c = self.plugins.get(index)?.clone();
        c.set("name", Value::String(self.name.clone()));
        c.set(
            "cniVersion",
            Value::String(self.cni_version.as_str().to_string()),
        );
        c.remove("cniVersions");
        Some(c)
    }

    /// The list back as one JSON object, exactly as it will be journaled.
    pub fn to_value(&self) -> Value {
        let mut m = self.raw.clone();
        m.insert(
            "cniVersion".into(),
            Value::String(self.cni_version.as_str().into()),
        );
        m.insert("name".into(), Value::String(self.name.clone()));
        m.insert(
            "plugins".into(),
            Value::Array(
                self.plugins
                    .iter()
                    .map(|p| Value::Object(p.0.clone()))
                    .collect(),
            ),
        );
        Value::Object(m)
    }
}

/// The version a conf asks for: the highest supported entry of `cniVersions` when present,
/// else `cniVersion`.
pub fn negotiate_version(map: &Map<String, Value>) -> Result<Version, ConfError> {
    if let Some(v) = map.get("cniVersions") {
        let Value::Array(list) = v else {
            return Err(ConfError::WrongType {
                key: "cniVersions".into(),
                expected: "a list of strings",
            });
        };
        let strs: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        if strs.len() != list.len() {
            return Err(ConfError::WrongType {
                key: "cniVersions".into(),
                expected: "a list of strings",
            });
        }
        if let Some(best) = Version::pick_highest(strs.iter().copied()) {
            return Ok(best);
        }
        if !map.contains_key("cniVersion") {
            return Err(ConfError::Version(strs.join(",")));
        }
    }
    match map.get("cniVersion") {
        Some(Value::String(s)) => Version::parse(s).map_err(|_| ConfError::Version(s.clone())),
        Some(_) => Err(ConfError::WrongType {
            key: "cniVersion".into(),
            expected: "a string",
        }),
        None => Err(ConfError::Missing("cniVersion")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parser_refuses_what_serde_lets_through() {
        assert_eq!(
            parse_strict(br#"{"a":1,"a":2}"#),
            Err(DecodeError::DuplicateKey("a".into()))
        );
        assert_eq!(parse_strict(b"{\"a\":\"x\\u0000\"}"), Err(DecodeError::Nul));
        assert_eq!(parse_strict(b"  "), Err(DecodeError::Empty));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(parse_strict(deep.as_bytes()), Err(DecodeError::TooDeep));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse_strict(ok.as_bytes()).is_ok());
        assert!(matches!(
            parse_strict(br#"{"a":"\ud800"}"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            parse_strict(b"{\"a\":\"\xff\"}"),
            Err(DecodeError::Json(_))
        ));
        assert_eq!(parse_object(b"[1]"), Err(DecodeError::NotObject));
        assert!(parse_strict(&vec![b' '; MAX_CONF_BYTES + 1]).is_err());
    }

    #[test]
    fn conf_becomes_chain_of_one_and_list_injects_name_and_version() {
        let m =
            parse_object(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","x":1}"#).unwrap();
        let l = NetConfList::from_map(m).unwrap();
        assert_eq!(l.plugins.len(), 1);
        let m = parse_object(
            br#"{"cniVersions":["0.4.0","1.0.0","9.0.0"],"name":"n","plugins":[{"type":"macvlan"},{"type":"tuning"}]}"#,
        )
        .unwrap();
        let l = NetConfList::from_map(m).unwrap();
        assert_eq!(l.cni_version, Version::V1_0_0);
        let p = l.plugin_conf(1).unwrap();
        assert_eq!(p.0["name"], "n");
        assert_eq!(p.0["cniVersion"], "1.0.0");
    }

    #[test]
    fn conf_list_errors_name_the_key() {
        let bad = |s: &str| NetConfList::from_map(parse_object(s.as_bytes()).unwrap()).unwrap_err();
        assert!(matches!(
            bad(r#"{"cniVersion":"1.0.0","name":"n"}"#),
            ConfError::Invalid { .. }
        ));
        assert!(matches!(
            bad(r#"{"cniVersion":"1.0.0","name":"n","type":"a","plugins":[]}"#),
            ConfError::Invalid { .. }
        ));
        assert!(matches!(
            bad(r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#),
            ConfError::Invalid { .. }
        ));
        assert_eq!(
            bad(r#"{"name":"n","type":"a"}"#),
            ConfError::Missing("cniVersion")
        );
        assert_eq!(
            bad(r#"{"cniVersion":"9.9.9","name":"n","type":"a"}"#),
            ConfError::Version("9.9.9".into())
        );
        assert!(matches!(
            bad(r#"{"cniVersion":1.0,"name":"n","type":"a"}"#),
            ConfError::WrongType { .. }
        ));
    }
}
