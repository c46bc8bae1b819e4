//! Passwords, kept out of logs and debug output.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;

/// A password. `Debug` and `Display` print `***`; use [`Secret::expose`]
/// where the plaintext is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// 32 random URL-safe characters.
    pub fn generate() -> Secret {
        let s = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SCRAM-SHA-256 verifier Postgres stores for this password, computed
    /// here so the plaintext never reaches the server.
    pub fn scram_verifier(&self) -> String {
        postgres_protocol::password::scram_sha_256(self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_generates() {
        let s = Secret::generate();
        assert_eq!(s.expose().len(), 32);
        assert!(s.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(s, Secret::generate());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let v = s.scram_verifier();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains(s.expose()));
    }
}
