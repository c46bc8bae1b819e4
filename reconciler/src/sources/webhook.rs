//! The push webhook: `POST /api/v1/orgs/{org}/sources/{name}/webhook`.
//!
//! It carries no token and no trust: it only makes the control plane fetch
//! sooner. Every source has a secret, and every call must be signed with it
//! (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`). A call
//! for a source that does not exist is checked against a random key, so it
//! costs the same and answers exactly as a wrong signature does: the
//! webhook tells nobody which sources exist.
//!
//! Signed calls are rate-limited per source: at most one fetch per
//! [`PUSH_MIN_GAP`]. A call within the gap is answered 202 like any other
//! and merged into one fetch at the end of the gap, so no push is lost and
//! a flood of calls costs one fetch per gap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;

use super::SourceKey;
use crate::error::{ApiError, Result};
use crate::AppState;

/// The shortest time between two webhook-triggered fetches of one source.
pub const PUSH_MIN_GAP: Duration = Duration::from_secs(5);

/// The webhook's path for a source, under the control plane's endpoint.
pub fn path(org: &str, name: &str) -> String {
    format!("{}/orgs/{org}/sources/{name}/webhook", api::API_PREFIX)
}

/// A new random webhook secret: 32 bytes, hex.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    hex::encode(key)
}

/// Checks a webhook call and, when it is signed with the source's secret,
/// asks for a sync. Unknown sources and bad signatures are the same error.
pub async fn receive(
    state: &AppState,
    org: &str,
    name: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<()> {
    let secret: Option<String> =
        sqlx::query_scalar("select webhook_secret from sources where org = $1 and name = $2")
            .bind(org)
            .bind(name)
            .fetch_optional(&state.pool)
            .await?;
    let secret = secret
        .map(|stored| state.keyring.open(&stored))
        .transpose()?;
    let known = secret.is_some();
    let key = secret.unwrap_or_else(generate_secret);
    if !verify_signature(&key, body, signature) || !known {
        return Err(ApiError::WebhookSignature);
    }
    let now = Instant::now();
    let at = state.gitops.push(&SourceKey::new(org, name), now);
    tracing::debug!(%org, source = %name, delay = ?at.saturating_duration_since(now), "webhook: sync requested");
    Ok(())
}

/// Checks a push webhook's `X-Hub-Signature-256` (`sha256=<hex>`) against
/// `secret`, in constant time.
pub fn verify_signature(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let Some(sig) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    mac.verify_slice(&sig).is_ok()
}

/// Requested syncs and when each may run. Pure: the caller passes the time.
#[derive(Debug, Default)]
pub struct SyncRequests {
    /// Sources with a sync requested, and the earliest time it may run.
    pending: HashMap<SourceKey, Instant>,
    /// When each source's last webhook-triggered sync was (or is) due.
    last_push: HashMap<SourceKey, Instant>,
}

impl SyncRequests {
    /// A sync as soon as the loop looks after `now` (a new source); not
    /// rate-limited.
    pub fn request_now(&mut self, key: &SourceKey, now: Instant) {
        let at = self.pending.entry(key.clone()).or_insert(now);
        *at = (*at).min(now);
    }

    /// A webhook push at `now`: a sync at most once per [`PUSH_MIN_GAP`].
    /// A push while one is pending is merged into it. Returns when the sync
    /// may run.
    pub fn push(&mut self, key: &SourceKey, now: Instant) -> Instant {
        if let Some(at) = self.pending.get(key) {
            return *at;
        }
        let earliest = self
            .last_push
            .get(key)
            .map_or(now, |last| (*last + PUSH_MIN_GAP).max(now));
        self.pending.insert(key.clone(), earliest);
        self.last_push.insert(key.clone(), earliest);
        earliest
    }

    /// The sources whose sync may run at `now`, sorted; they are no longer
    /// pending.
    pub fn take_due(&mut self, now: Instant) -> Vec<SourceKey> {
        let mut due: Vec<SourceKey> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.pending.remove(k);
        }
        due.sort();
        due
    }

    /// Drops everything about a deleted source.
    pub fn forget(&mut self, key: &SourceKey) {
        self.pending.remove(key);
        self.last_push.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(org: &str, name: &str) -> SourceKey {
        SourceKey::new(org, name)
    }

    #[test]
    fn pushes_are_merged_into_one_sync_per_gap() {
        let mut r = SyncRequests::default();
        let prod = key("acme", "prod");
        let t0 = Instant::now();
        assert_eq!(r.push(&prod, t0), t0, "the first push syncs at once");
        assert_eq!(r.push(&prod, t0 + Duration::from_millis(10)), t0, "merged");
        assert_eq!(r.take_due(t0), vec![prod.clone()]);
        assert!(r.take_due(t0).is_empty(), "taken once");

        let next = t0 + PUSH_MIN_GAP;
        for ms in [100, 200, 3000] {
            assert_eq!(r.push(&prod, t0 + Duration::from_millis(ms)), next);
        }
        assert!(r.take_due(next - Duration::from_millis(1)).is_empty());
        assert_eq!(r.take_due(next), vec![prod.clone()]);

        // Long after: at once again.
        let later = t0 + PUSH_MIN_GAP * 10;
        assert_eq!(r.push(&prod, later), later);
    }

    #[test]
    fn sources_are_limited_separately_and_per_organisation() {
        let mut r = SyncRequests::default();
        let t0 = Instant::now();
        let a = key("acme", "prod");
        let b = key("globex", "prod");
        r.push(&a, t0);
        r.take_due(t0);
        assert!(r.push(&a, t0) > t0, "acme/prod is within its gap");
        assert_eq!(r.push(&b, t0), t0, "globex/prod is not");
        r.forget(&a);
        assert_eq!(r.take_due(t0), vec![b]);
        assert_eq!(r.push(&a, t0), t0, "a deleted source starts afresh");
    }

    #[test]
    fn signatures_are_checked() {
        let secret = "s3cret";
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"{}");
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(verify_signature(secret, b"{}", Some(&good)));
        assert!(!verify_signature(secret, b"{ }", Some(&good)));
        assert!(!verify_signature("other", b"{}", Some(&good)));
        assert!(!verify_signature(secret, b"{}", None));
        assert!(!verify_signature(secret, b"{}", Some("sha256=zz")));
        assert!(!verify_signature(secret, b"{}", Some(&good[7..])));
    }
}
