//! CNI spec versions and their negotiation (`cniVersion`, `cniVersions`, VERSION).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A CNI spec version this crate can read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("unsupported cniVersion {0:?}")]
    Unsupported(String),
}

impl Version {
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(s: &str) -> Result<Version, VersionError> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| VersionError::Unsupported(s.to_string()))
    }

    /// CHECK exists from 0.4.0 on (in the spec).
    pub fn supports_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn supports_gc(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Results before 0.3.0 use the `ip4`/`ip6` shape.
    pub fn is_legacy_result(self) -> bool {
        self < Version::V0_3_0
    }

    /// The VERSION answer: `{"cniVersion":..., "supportedVersions":[...]}`.
    pub fn version_info(requested: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": requested,
            "supportedVersions": Version::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        })
    }

    /// `cniVersions` (the spec's negotiation): take the highest version in the list this crate supports.
    /// Entries it does not understand are skipped, as libcni does.
    pub fn pick_highest<'a>(candidates: impl IntoIterator<Item = &'a str>) -> Option<Version> {
        candidates
            .into_iter()
            .filter_map(|s| Version::parse(s).ok())
            .max()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_version_and_orders_them() {
        for (i, v) in Version::ALL.iter().enumerate() {
            assert_eq!(Version::parse(v.as_str()), Ok(*v));
            if i > 0 {
                assert!(Version::ALL[i - 1] < *v);
            }
        }
        assert!(Version::parse("9.9.9").is_err());
        assert!(Version::parse("1.0").is_err());
    }

    #[test]
    fn picks_highest_known_version() {
        assert_eq!(
            Version::pick_highest(["0.3.1", "1.0.0", "2.0.0", "bogus"]),
            Some(Version::V1_0_0)
        );
        assert_eq!(Version::pick_highest(["2.0.0"]), None);
    }
}
