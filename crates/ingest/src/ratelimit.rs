//! Per-tenant rate limits in events per second, with a burst.
//!
//! A token bucket per tenant: it refills at `events_per_second` up to `burst`. A request
//! is admitted while the bucket holds anything and is charged its real event count
//! after decoding, so the bucket may go into debt; while in debt the tenant's requests
//! are refused with 429 before their bodies are read, until the refill pays it back.
//! Charging after decoding means one request's size is never guessed, and a tenant's
//! debt never affects another tenant's bucket.
//!
//! Hand-written rather than `governor`: GCRA cannot charge after the fact or go into
//! debt, which is what lets a 10,000-event request through a 1,000-event burst without
//! splitting it. Buckets exist only for tenants with keys, so their number is bounded
//! by the keyring. Time comes from a [`Clock`], so tests control it.
//!
//! The config file's `[rate_limits.default]` and `[rate_limits.tenants.NAME]` sections
//! are [`RateLimitsSection`] and [`RateLimitSection`], checked into [`RateLimit`]s here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ais_model::time::{Clock, SystemClock};
use serde::Deserialize;

/// Events per second and burst of one tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub events_per_second: f64,
    pub burst: f64,
}

/// `[rate_limits]`: the limit of tenants without their own (none: unlimited), and
/// each named tenant's own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsSection {
    pub default: Option<RateLimitSection>,
    pub tenants: BTreeMap<String, RateLimitSection>,
}

/// One limit as a file or the command line gives it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub events_per_second: f64,
    /// Absent: one second of events.
    pub burst: Option<f64>,
}

/// A limit that would refuse everything or nothing sensible.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("needs events_per_second > 0 and burst >= 1")]
pub struct InvalidRateLimit;

impl RateLimitSection {
    pub fn limit(self) -> Result<RateLimit, InvalidRateLimit> {
        let burst = self.burst.unwrap_or(self.events_per_second);
        if !(self.events_per_second > 0.0 && burst >= 1.0) {
            return Err(InvalidRateLimit);
        }
        Ok(RateLimit {
            events_per_second: self.events_per_second,
            burst,
        })
    }
}

/// Why a request was refused, and the `RateLimit-*` header values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    pub retry_after: Duration,
    pub limit: f64,
    pub remaining: u64,
    pub reset: Duration,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct TenantLimiter {
    default: Option<RateLimit>,
    per_tenant: HashMap<String, RateLimit>,
    buckets: Mutex<HashMap<String, Bucket>>,
    clock: Box<dyn Clock>,
}

impl std::fmt::Debug for TenantLimiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TenantLimiter")
            .field("default", &self.default)
            .field("tenants", &self.per_tenant.len())
            .finish()
    }
}

impl TenantLimiter {
    /// `default` applies to tenants without their own limit; `None` means unlimited.
    pub fn new(
        default: Option<RateLimit>,
        per_tenant: HashMap<String, RateLimit>,
        clock: Box<dyn Clock>,
    ) -> Self {
        Self {
            default,
            per_tenant,
            buckets: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// No limit anywhere.
    pub fn unlimited() -> Self {
        Self::new(None, HashMap::new(), Box::new(SystemClock))
    }

    fn limit_of(&self, tenant: &str) -> Option<RateLimit> {
        self.per_tenant.get(tenant).copied().or(self.default)
    }

    /// Refills and runs `use_bucket` on the tenant's bucket; `None` when unlimited.
    fn with_bucket<T>(
        &self,
        tenant: &str,
        use_bucket: impl FnOnce(&mut Bucket, RateLimit) -> T,
    ) -> Option<T> {
        let limit = self.limit_of(tenant)?;
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().ok()?;
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: limit.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.events_per_second).min(limit.burst);
        bucket.updated = now;
        Some(use_bucket(bucket, limit))
    }

    /// Before reading the body: refused while the bucket is empty or in debt.
    pub fn admit(&self, tenant: &str) -> Result<(), Refusal> {
        self.with_bucket(tenant, |bucket, limit| {
            if bucket.tokens > 0.0 {
                return Ok(());
            }
            // Time until the bucket holds at least one event again.
            let wait = (1.0 - bucket.tokens) / limit.events_per_second.max(f64::MIN_POSITIVE);
            let wait = Duration::from_secs_f64(wait.clamp(0.0, 86_400.0));
            Err(Refusal {
                retry_after: wait,
                limit: limit.events_per_second,
                remaining: 0,
                reset: wait,
            })
        })
        .unwrap_or(Ok(()))
    }

    /// After decoding: charges the accepted events (the bucket may go into debt).
    pub fn charge(&self, tenant: &str, events: usize) {
        let _ = self.with_bucket(tenant, |bucket, _| bucket.tokens -= events as f64);
    }
}

#[cfg(test)]
mod tests {
    use ais_model::time::ManualClock;

    use super::*;

    #[test]
    fn a_section_without_burst_allows_one_second_and_a_useless_limit_is_refused() {
        let section = RateLimitSection {
            events_per_second: 50.0,
            burst: None,
        };
        assert_eq!(
            section.limit(),
            Ok(RateLimit {
                events_per_second: 50.0,
                burst: 50.0
            })
        );
        let too_small = RateLimitSection {
            events_per_second: 0.5,
            burst: None,
        };
        assert_eq!(too_small.limit(), Err(InvalidRateLimit));
    }

    fn limiter(clock: &ManualClock) -> TenantLimiter {
        let mut tenants = HashMap::new();
        tenants.insert(
            "noisy".to_string(),
            RateLimit {
                events_per_second: 100.0,
                burst: 200.0,
            },
        );
        TenantLimiter::new(
            Some(RateLimit {
                events_per_second: 1000.0,
                burst: 1000.0,
            }),
            tenants,
            Box::new(clock.clone()),
        )
    }

    #[test]
    fn debt_refuses_until_the_refill_pays_it_back() {
        let clock = ManualClock::at(0);
        let limiter = limiter(&clock);
        assert_eq!(limiter.admit("noisy"), Ok(()));
        // One big request goes through and leaves 300 events of debt.
        limiter.charge("noisy", 500);
        let refusal = limiter.admit("noisy").expect_err("in debt");
        assert_eq!(refusal.remaining, 0);
        assert_eq!(refusal.limit, 100.0);
        assert!(
            (refusal.retry_after.as_secs_f64() - 3.01).abs() < 1e-6,
            "{refusal:?}"
        );
        clock.advance(Duration::from_secs(3));
        assert!(limiter.admit("noisy").is_err(), "still 0 after 3 s");
        clock.advance(Duration::from_millis(20));
        assert_eq!(limiter.admit("noisy"), Ok(()));
        // Refill stops at the burst.
        clock.advance(Duration::from_secs(3600));
        limiter.charge("noisy", 200);
        assert!(
            limiter.admit("noisy").is_err(),
            "the burst is the cap, not an hour of refill"
        );
    }

    #[test]
    fn tenants_do_not_share_buckets_and_unlimited_is_unlimited() {
        let clock = ManualClock::at(0);
        let limiter = limiter(&clock);
        limiter.charge("noisy", 10_000);
        assert!(limiter.admit("noisy").is_err());
        assert_eq!(
            limiter.admit("quiet"),
            Ok(()),
            "another tenant has its own bucket"
        );
        let open = TenantLimiter::unlimited();
        open.charge("anyone", 1_000_000);
        assert_eq!(open.admit("anyone"), Ok(()));
    }
}
