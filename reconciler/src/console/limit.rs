//! Sign-in rate limits: token buckets, one per client address and one for
//! the whole control plane, so that neither one client nor many together
//! can try tokens faster than a few per second. An attempt over the limit is
//! answered 429 with `Retry-After` before the token is looked at.
//!
//! The client is the TCP peer's address: `X-Forwarded-For` is not trusted
//! (anyone can send it). Behind a proxy every client shares the proxy's
//! address, and the per-client bucket then acts as a second global one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bucket's size and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Attempts allowed at once.
    pub burst: f64,
    /// Attempts regained per second.
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignInLimits {
    pub per_client: Rate,
    pub global: Rate,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            per_client: Rate {
                burst: 10.0,
                per_second: 2.0,
            },
            global: Rate {
                burst: 50.0,
                per_second: 20.0,
            },
        }
    }
}

/// Clients remembered before full buckets are forgotten.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + gained).min(rate.burst);
        self.at = now;
    }

    /// How long until one attempt is allowed (zero: now).
    fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second)
        }
    }
}

/// The control plane's sign-in limiter.
pub struct SignInLimiter {
    limits: SignInLimits,
    state: Mutex<Buckets>,
}

struct Buckets {
    global: Bucket,
    clients: HashMap<IpAddr, Bucket>,
}

impl Default for SignInLimiter {
    fn default() -> Self {
        SignInLimiter::new(SignInLimits::default())
    }
}

impl SignInLimiter {
    pub fn new(limits: SignInLimits) -> SignInLimiter {
        SignInLimiter {
            limits,
            state: Mutex::new(Buckets {
                global: Bucket::full(limits.global, Instant::now()),
                clients: HashMap::new(),
            }),
        }
    }

    /// Takes one attempt for `client` (when its address is known), or says
    /// how long to wait; a refused attempt takes nothing.
    pub fn attempt(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let SignInLimits { per_client, global } = self.limits;
        let mut state = self.state.lock().expect("sign-in limiter lock");
        if state.clients.len() >= MAX_CLIENTS {
            state.clients.retain(|_, b| {
                b.refill(per_client, now);
                b.tokens < per_client.burst
            });
        }
        state.global.refill(global, now);
        let mut wait = state.global.wait(global);
        if let Some(ip) = client {
            let bucket = state
                .clients
                .entry(ip)
                .or_insert_with(|| Bucket::full(per_client, now));
            bucket.refill(per_client, now);
            wait = wait.max(bucket.wait(per_client));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        state.global.tokens -= 1.0;
        if let Some(bucket) = client.and_then(|ip| state.clients.get_mut(&ip)) {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn one_client_gets_its_burst_then_waits_for_the_refill() {
        let limiter = SignInLimiter::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.attempt(ip(1), t0), Ok(()));
        }
        let wait = limiter.attempt(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "2 per second");
        assert_eq!(retry_after_seconds(wait), 1);
        assert_eq!(
            limiter.attempt(ip(2), t0),
            Ok(()),
            "another client is not held up"
        );
        assert!(limiter
            .attempt(ip(1), t0 + Duration::from_millis(499))
            .is_err());
        assert_eq!(
            limiter.attempt(ip(1), t0 + Duration::from_millis(500)),
            Ok(())
        );
        assert!(limiter
            .attempt(ip(1), t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn many_clients_together_meet_the_global_limit() {
        let limiter = SignInLimiter::default();
        let t0 = Instant::now();
        for i in 0..50u8 {
            assert_eq!(limiter.attempt(ip(i), t0), Ok(()), "client {i}");
        }
        let wait = limiter.attempt(ip(200), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50), "20 per second");
        assert!(limiter.attempt(None, t0).is_err(), "unknown clients too");
        assert_eq!(
            limiter.attempt(ip(200), t0 + Duration::from_millis(50)),
            Ok(())
        );
    }

    #[test]
    fn a_refused_attempt_costs_nothing() {
        let limiter = SignInLimiter::new(SignInLimits {
            per_client: Rate {
                burst: 1.0,
                per_second: 1.0,
            },
            global: Rate {
                burst: 100.0,
                per_second: 1.0,
            },
        });
        let t0 = Instant::now();
        assert_eq!(limiter.attempt(ip(1), t0), Ok(()));
        for _ in 0..20 {
            assert!(limiter.attempt(ip(1), t0).is_err());
        }
        assert_eq!(limiter.attempt(ip(1), t0 + Duration::from_secs(1)), Ok(()));
        for i in 2..100u8 {
            assert_eq!(
                limiter.attempt(ip(i), t0),
                Ok(()),
                "the global bucket kept its tokens"
            );
        }
    }
}
