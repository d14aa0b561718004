//! `CNI_ARGS`: `KEY=VALUE` pairs separated by `;` (the spec's parameters).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("CNI_ARGS entry {0:?} has no '='")]
    MissingEquals(String),
    #[error("CNI_ARGS entry has an empty key")]
    EmptyKey,
}

/// Parsed `CNI_ARGS`, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<CniArgs, ArgsError> {
        let mut pairs = Vec::new();
        for item in raw.split(';') {
            if item.is_empty() {
                continue;
            }
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| ArgsError::MissingEquals(item.to_string()))?;
            if k.is_empty() {
                return Err(ArgsError::EmptyKey);
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_string(), value.to_string()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl std::fmt::Display for CniArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_round_trips() {
        let a = CniArgs::parse("IgnoreUnknown=true;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("p"));
        assert_eq!(a.get("missing"), None);
        assert_eq!(
            a.to_string(),
            "IgnoreUnknown=true;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns"
        );
    }

    #[test]
    fn rejects_entries_without_equals() {
        assert_eq!(
            CniArgs::parse("K8S_POD_NAME"),
            Err(ArgsError::MissingEquals("K8S_POD_NAME".into()))
        );
        assert_eq!(CniArgs::parse("=x"), Err(ArgsError::EmptyKey));
    }

    proptest::proptest! {
        /// Printing is the inverse of parsing: any pairs a parse can yield (keys without `=`
        /// or `;`, values without `;`) print as text that parses back to the same pairs.
        #[test]
        fn printed_args_parse_back(
            pairs in proptest::collection::vec(("[A-Za-z0-9_.-]{1,12}", "[^;]{0,16}"), 0..8)
        ) {
            let args = CniArgs { pairs };
            let printed = args.to_string();
            proptest::prop_assert_eq!(CniArgs::parse(&printed), Ok(args));
        }
    }

    #[test]
    fn empty_is_empty() {
        assert!(CniArgs::parse("").unwrap().is_empty());
        assert!(CniArgs::parse(";;").unwrap().is_empty());
    }
}
