//! Per-client rate limits, held in memory by this gateway process.
//!
//! Each limited client has its own `governor` limiter, a GCRA token bucket:
//! `"10/s"` lets a client send a burst of 10 requests, and then one more
//! every 100 ms. A refused request takes no token. A refresh keeps the
//! bucket of every client whose limit did not change, so a refresh never
//! hands out a fresh burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::{ClientEntry, RateLimit, RatePeriod};

/// The limiters of one snapshot, keyed by clientId. Unlimited clients have none.
pub struct RateLimits {
    limiters: HashMap<Arc<str>, Arc<ClientLimiter>>,
    clock: DefaultClock,
}

/// One client's limit and the bucket that enforces it.
struct ClientLimiter {
    limit: RateLimit,
    bucket: DefaultDirectRateLimiter,
}

/// A request refused by its client's rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: RateLimit,
    /// Whole seconds until the next request can pass, at least 1: the `Retry-After` value.
    pub retry_after_seconds: u64,
}

impl RateLimits {
    /// Builds a limiter for every client whose own or default limit is not unlimited.
    pub fn new(clients: &[ClientEntry], default: Option<RateLimit>) -> Self {
        let limiters = clients
            .iter()
            .filter_map(|entry| {
                let limit = entry.rate_limit.or(default)?;
                let limiter = ClientLimiter::new(limit)?;
                Some((Arc::from(entry.client_id.as_str()), Arc::new(limiter)))
            })
            .collect();
        RateLimits {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    /// Returns whether requests of `client_id` are counted against a limit.
    pub fn limits(&self, client_id: &str) -> bool {
        self.limiters.contains_key(client_id)
    }

    /// Takes over the buckets of `previous` for clients whose limit is unchanged.
    pub fn keep_state_from(&mut self, previous: &RateLimits) {
        for (client_id, limiter) in &mut self.limiters {
            if let Some(old) = previous.limiters.get(client_id) {
                if old.limit == limiter.limit {
                    *limiter = Arc::clone(old);
                }
            }
        }
    }

    /// Returns the limit that applies to `client_id`, if any.
    pub fn limit_of(&self, client_id: &str) -> Option<RateLimit> {
        self.limiters.get(client_id).map(|limiter| limiter.limit)
    }

    /// Iterates over the clients that have a limit.
    pub fn limited_clients(&self) -> impl Iterator<Item = &str> {
        self.limiters.keys().map(|id| &**id)
    }

    /// Takes one token from the client's bucket.
    ///
    /// # Errors
    ///
    /// The bucket is empty; the request must be refused with 429.
    pub fn check(&self, client_id: &str) -> Result<(), Exceeded> {
        let Some(limiter) = self.limiters.get(client_id) else {
            return Ok(());
        };
        limiter.bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Exceeded {
                limit: limiter.limit,
                retry_after_seconds: whole_seconds_at_least_one(wait),
            }
        })
    }
}

impl ClientLimiter {
    /// Returns `None` for [`RateLimit::Unlimited`].
    fn new(limit: RateLimit) -> Option<Self> {
        let RateLimit::Limited { count, period } = limit else {
            return None;
        };
        let quota = match period {
            RatePeriod::Second => Quota::per_second(count),
            RatePeriod::Minute => Quota::per_minute(count),
        };
        Some(ClientLimiter {
            limit,
            bucket: DefaultDirectRateLimiter::direct(quota),
        })
    }
}

/// Rounds up, so a client that waits `Retry-After` seconds finds a token.
fn whole_seconds_at_least_one(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client_id: &str, rate_limit: Option<&str>) -> ClientEntry {
        ClientEntry {
            rate_limit: rate_limit.map(|text| RateLimit::parse(text).unwrap()),
            ..ClientEntry::with_key(client_id, &format!("key-of-{client_id}"))
        }
    }

    #[test]
    fn burst_then_refused() {
        let limits = RateLimits::new(&[entry("a", Some("5/min"))], None);
        for _ in 0..5 {
            assert_eq!(limits.check("a"), Ok(()));
        }
        let exceeded = limits.check("a").unwrap_err();
        assert_eq!(exceeded.limit.to_string(), "5/min");
        // One token comes back every 12 seconds.
        assert!(
            (11..=12).contains(&exceeded.retry_after_seconds),
            "{exceeded:?}"
        );
    }

    #[test]
    fn default_applies_to_clients_without_own_limit() {
        let clients = [
            entry("own", Some("2/s")),
            entry("default", None),
            entry("free", Some("unlimited")),
        ];
        let limits = RateLimits::new(&clients, RateLimit::parse("1/min").ok());
        assert_eq!(
            limits.limit_of("own").map(|l| l.to_string()),
            Some("2/s".into())
        );
        assert_eq!(
            limits.limit_of("default").map(|l| l.to_string()),
            Some("1/min".into())
        );
        assert_eq!(limits.limit_of("free"), None);
        assert_eq!(limits.check("default"), Ok(()));
        assert!(limits.check("default").is_err());
        for _ in 0..100 {
            assert_eq!(limits.check("free"), Ok(()));
        }
    }

    #[test]
    fn no_default_means_unlimited() {
        let limits = RateLimits::new(&[entry("a", None)], None);
        assert_eq!(limits.limited_clients().count(), 0);
        for _ in 0..1000 {
            assert_eq!(limits.check("a"), Ok(()));
        }
        assert_eq!(limits.check("not-configured"), Ok(()));
    }

    #[test]
    fn refresh_keeps_unchanged_buckets() {
        let old = RateLimits::new(
            &[
                entry("same", Some("1/min")),
                entry("changed", Some("1/min")),
            ],
            None,
        );
        assert_eq!(old.check("same"), Ok(()));
        assert_eq!(old.check("changed"), Ok(()));

        let mut new = RateLimits::new(
            &[
                entry("same", Some("1/min")),
                entry("changed", Some("2/min")),
            ],
            None,
        );
        new.keep_state_from(&old);
        assert!(
            new.check("same").is_err(),
            "an unchanged limit keeps its empty bucket"
        );
        assert_eq!(
            new.check("changed"),
            Ok(()),
            "a changed limit starts a new bucket"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(100)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds_at_least_one(Duration::from_secs(12)), 12);
    }
}
