//! Per-user request rate limit: a token bucket per user (token `sub`), refilled at
//! [`Limits::requests_per_second_per_user`](crate::Limits) up to
//! [`Limits::request_burst_per_user`](crate::Limits) requests.
//!
//! Time is passed in ([`RateLimiter::check`] takes `now`), as a [`tokio::time::Instant`], so
//! tests can drive it by hand or under `tokio::time::pause`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Buckets kept before full (idle) ones are dropped: a full bucket is the same as none.
const PRUNE_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by user.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter admitting `rate` requests per second per user, `burst` at once; a `rate` of 0
    /// (or less, or not finite) admits everything.
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                0.0
            },
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Whether the limiter admits everything.
    pub fn is_off(&self) -> bool {
        self.rate == 0.0
    }

    /// Takes one request from `user`'s bucket at `now`; when it is empty, `Err` holds how long
    /// until the next request would be admitted.
    pub fn check(&self, user: &str, now: Instant) -> Result<(), Duration> {
        if self.is_off() {
            return Ok(());
        }
        let mut buckets = self.lock();
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(user) {
            buckets.retain(|_, b| self.refilled(b, now) < self.burst);
        }
        let bucket = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = bucket.updated.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Buckets currently held (full ones may be dropped).
    pub fn tracked_users(&self) -> usize {
        self.lock().len()
    }

    /// The bucket's tokens at `now`.
    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        // Buckets are plain numbers: a panic elsewhere cannot leave them inconsistent.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("ann", t0).is_ok());
        }
        let wait = limiter.check("ann", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another user has a bucket of their own.
        assert!(limiter.check("bob", t0).is_ok());
        // Half a second refills one request, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.check("ann", t1).is_ok());
        assert!(limiter.check("ann", t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check("ann", t2).is_ok());
        }
        assert!(limiter.check("ann", t2).is_err());
    }

    #[test]
    fn refused_requests_do_not_drain_the_bucket_further() {
        let limiter = RateLimiter::new(1.0, 1);
        let t0 = Instant::now();
        assert!(limiter.check("ann", t0).is_ok());
        for _ in 0..10 {
            assert_eq!(
                limiter.check("ann", t0).unwrap_err(),
                Duration::from_secs(1)
            );
        }
        assert!(limiter.check("ann", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn zero_rate_admits_everything() {
        let limiter = RateLimiter::new(0.0, 0);
        assert!(limiter.is_off());
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check("ann", t0).is_ok());
        }
        assert_eq!(limiter.tracked_users(), 0);
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let limiter = RateLimiter::new(1.0, 2);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            assert!(limiter.check(&format!("u{i}"), t0).is_ok());
        }
        assert_eq!(limiter.tracked_users(), PRUNE_AT);
        // Two seconds later every bucket is full again: all dropped but the newcomer's.
        assert!(limiter.check("new", t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(limiter.tracked_users(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn paused_tokio_time_drives_the_buckets() {
        let limiter = RateLimiter::new(1.0, 1);
        assert!(limiter.check("ann", Instant::now()).is_ok());
        let wait = limiter.check("ann", Instant::now()).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        tokio::time::advance(wait).await;
        assert!(limiter.check("ann", Instant::now()).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
