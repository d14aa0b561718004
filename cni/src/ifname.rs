//! Interface names, validated once (CNI `pkg/utils` rules, Linux IFNAMSIZ).

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IfNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than 15 bytes")]
    TooLong(String),
    #[error("interface name {0:?} is not allowed")]
    Reserved(String),
    #[error("interface name {0:?} contains a character that is not allowed")]
    BadChar(String),
}

/// A Linux interface name: 1–15 bytes of printable ASCII, no `/`, `:` or whitespace, not
/// `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct IfName(String);

impl IfName {
    pub fn parse(s: &str) -> Result<IfName, IfNameError> {
        if s.is_empty() {
            return Err(IfNameError::Empty);
        }
        if s.len() > 15 {
            return Err(IfNameError::TooLong(s.to_string()));
        }
        if s == "." || s == ".." {
            return Err(IfNameError::Reserved(s.to_string()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
        {
            return Err(IfNameError::BadChar(s.to_string()));
        }
        Ok(IfName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for IfName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IfName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["eth0", "net1", "a", "abcdefghijklmno", "veth-1_x.2"] {
            assert!(IfName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "eth0:1",
            "a b",
            "a/b",
            "a\tb",
            "eth😀",
            "e\0",
            "net1\n",
        ] {
            assert!(IfName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
