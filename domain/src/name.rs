//! Instance names: DNS-1123 labels, so the same name works as a Kubernetes
//! object name, a hostname and a directory name.

use std::fmt;

/// Longest allowed name (a DNS-1123 label is at most 63 characters).
pub const MAX_NAME_LEN: usize = 63;

/// A validated instance (or organisation) name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct InstanceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name {name:?} is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong { name: String, len: usize },
    #[error("name {name:?} must consist of lower-case letters, digits and '-', start with a letter and end with a letter or digit (DNS-1123 label)")]
    Invalid { name: String },
}

impl InstanceName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        check_dns1123_label(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a DNS-1123 label that must also start with a letter (so it is a
/// valid Postgres identifier and Kubernetes name alike).
pub fn check_dns1123_label(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    let bytes = name.as_bytes();
    let ok_inner = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let first = bytes[0];
    let last = bytes[bytes.len() - 1];
    if !ok_inner || !first.is_ascii_lowercase() || last == b'-' {
        return Err(NameError::Invalid {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for InstanceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InstanceName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns1123_labels() {
        for ok in ["a", "orders", "orders-2", "a1", &"a".repeat(63)] {
            assert!(InstanceName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(InstanceName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            InstanceName::parse(&"a".repeat(64)),
            Err(NameError::TooLong { len: 64, .. })
        ));
        for bad in ["Orders", "1orders", "-a", "a-", "a_b", "a.b", "ä", "a b"] {
            assert!(
                matches!(InstanceName::parse(bad), Err(NameError::Invalid { .. })),
                "{bad}"
            );
        }
    }
}
