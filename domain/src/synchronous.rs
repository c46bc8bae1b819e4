//! Synchronous replication: how many standbys confirm a commit before the
//! client is told it committed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `spec.synchronous`: `off` (the default; standbys replay asynchronously,
/// and a failover can lose the last commits the primary acknowledged),
/// `on` (any one standby has the commit on disk before it is
/// acknowledged), or a number `n` (any `n` standbys have). With it on, a
/// commit waits while fewer than `n` standbys are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Synchronous {
    #[default]
    Off,
    /// Any `n` standbys, `n` ≥ 1 (`on` is 1).
    Standbys(u32),
}

impl Synchronous {
    /// `off`, `on`, or a count of standbys; `0` is `off`, `1` is `on`.
    pub fn parse(text: &str) -> Result<Synchronous, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "0" => Ok(Synchronous::Off),
            "on" | "true" => Ok(Synchronous::Standbys(1)),
            n => match n.parse::<u32>() {
                Ok(n) => Ok(Synchronous::Standbys(n)),
                Err(_) => Err(format!(
                    "expected off, on, or how many standbys confirm each commit (got {text:?})"
                )),
            },
        }
    }

    /// How many standbys confirm each commit; `None` when off.
    pub fn standbys(self) -> Option<u32> {
        match self {
            Synchronous::Off => None,
            Synchronous::Standbys(n) => Some(n),
        }
    }

    pub fn is_off(&self) -> bool {
        self.standbys().is_none()
    }

    /// The `synchronous_standby_names` that means it: a quorum of any
    /// standbys, whichever members they are after failovers.
    pub fn standby_names(self) -> Option<String> {
        self.standbys().map(|n| format!("ANY {n} (*)"))
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Synchronous::Off => f.write_str("off"),
            Synchronous::Standbys(1) => f.write_str("on"),
            Synchronous::Standbys(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Synchronous {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Synchronous {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Synchronous, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Synchronous;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("off, on, or how many standbys confirm each commit")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Synchronous, E> {
                Synchronous::parse(v).map_err(E::custom)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Synchronous, E> {
                Ok(match v {
                    true => Synchronous::Standbys(1),
                    false => Synchronous::Off,
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Synchronous, E> {
                match u32::try_from(v) {
                    Ok(0) => Ok(Synchronous::Off),
                    Ok(n) => Ok(Synchronous::Standbys(n)),
                    Err(_) => Err(E::custom(format!("{v} standbys is too many"))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Synchronous, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "expected off, on, or how many standbys confirm each commit (got {v})"
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_read_and_print_back() {
        for (text, want, shown) in [
            ("off", Synchronous::Off, "off"),
            ("on", Synchronous::Standbys(1), "on"),
            ("ON", Synchronous::Standbys(1), "on"),
            ("1", Synchronous::Standbys(1), "on"),
            ("2", Synchronous::Standbys(2), "2"),
            ("0", Synchronous::Off, "off"),
        ] {
            let got = Synchronous::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), shown);
        }
        let err = Synchronous::parse("sometimes").unwrap_err();
        assert!(err.contains("\"sometimes\""), "{err}");
    }

    #[test]
    fn json_takes_strings_numbers_and_booleans() {
        for (json, want) in [
            ("\"on\"", Synchronous::Standbys(1)),
            ("2", Synchronous::Standbys(2)),
            ("true", Synchronous::Standbys(1)),
            ("false", Synchronous::Off),
        ] {
            assert_eq!(
                serde_json::from_str::<Synchronous>(json).unwrap(),
                want,
                "{json}"
            );
        }
        assert!(serde_json::from_str::<Synchronous>("-1").is_err());
        assert_eq!(
            serde_json::to_string(&Synchronous::Standbys(2)).unwrap(),
            "\"2\""
        );
        assert_eq!(
            Synchronous::Standbys(2).standby_names().unwrap(),
            "ANY 2 (*)"
        );
    }
}
