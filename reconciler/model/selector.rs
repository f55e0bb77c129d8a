//! A label selector, `K=V,…` (SPEC §8 `watch --selector`, and `plan` and
//! `status`): the sites whose labels hold every pair. One fleet repo can
//! so be sharded over hosts (`--selector host=web1`). Parsing and matching
//! only; which command uses it is the caller's business.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Label pairs a site must all carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(BTreeMap<String, String>);

/// Why a selector does not parse. The messages say what a good one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing was given.
    #[error(
        "the selector is empty (hint: give KEY=VALUE pairs separated by commas, such as host=web1,env=production)"
    )]
    Empty,
    /// A pair has no `=`.
    #[error("{0:?} is not KEY=VALUE (hint: such as host=web1; separate pairs with commas)")]
    NotAPair(String),
    /// A pair has an empty key or value.
    #[error("{0:?} has an empty key or value (hint: labels need both, such as host=web1)")]
    Blank(String),
    /// A key is given twice (with any values: no label can hold both).
    #[error(
        "the key {0:?} is given twice (hint: a site's label has one value; give each key once)"
    )]
    Twice(String),
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut pairs = BTreeMap::new();
        for pair in text.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(SelectorError::NotAPair(pair.to_owned()));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(SelectorError::Blank(pair.to_owned()));
            }
            if pairs.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(SelectorError::Twice(key.to_owned()));
            }
        }
        Ok(Self(pairs))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (key, value) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

impl Selector {
    /// Whether `labels` hold every pair.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_pair_must_match() {
        let s: Selector = "host=a, env=prod".parse().unwrap();
        assert_eq!(s.to_string(), "env=prod,host=a");
        assert!(s.matches(&labels(&[("host", "a"), ("env", "prod"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("host", "a")])));
        assert!(!s.matches(&labels(&[("host", "b"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn malformed_selectors_say_why() {
        for (text, want) in [
            ("", SelectorError::Empty),
            (" ", SelectorError::Empty),
            ("host", SelectorError::NotAPair("host".into())),
            ("host=a,", SelectorError::NotAPair("".into())),
            ("=a", SelectorError::Blank("=a".into())),
            ("host=", SelectorError::Blank("host=".into())),
            ("host=a,host=b", SelectorError::Twice("host".into())),
        ] {
            assert_eq!(text.parse::<Selector>(), Err(want), "{text:?}");
        }
        // A value may hold `=`: only the first splits.
        let s: Selector = "k=a=b".parse().unwrap();
        assert!(s.matches(&labels(&[("k", "a=b")])));
    }
}
