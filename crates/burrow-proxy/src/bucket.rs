//! A token bucket: the bandwidth cap of one direction of one connection.

use std::time::{Duration, Instant};

/// Lets bytes through at `rate` bytes per second on average, with bursts of up to `burst`
/// bytes after an idle period.
///
/// The bucket may go into debt: [`TokenBucket::take`] always takes the bytes and answers how
/// long the caller must wait before sending them, so chunks larger than the burst still pass,
/// just later. Time is passed in by the caller, which keeps the bucket deterministic in tests.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `bytes_per_sec` (at least 1) and holding at most
    /// `burst_bytes` (at least 1).
    pub fn new(bytes_per_sec: u64, burst_bytes: u64, now: Instant) -> Self {
        let burst = burst_bytes.max(1) as f64;
        TokenBucket {
            rate: bytes_per_sec.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The refill rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Changes the rate and burst, keeping the current balance (capped at the new burst).
    pub fn set_rate(&mut self, bytes_per_sec: u64, burst_bytes: u64, now: Instant) {
        self.refill(now);
        self.rate = bytes_per_sec.max(1) as f64;
        self.burst = burst_bytes.max(1) as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes `bytes` out of the bucket at time `now` and returns how long to wait before
    /// sending them (zero when the balance covered them).
    pub fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_through_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.take(300, t0), Duration::ZERO);
        assert_eq!(b.take(200, t0), Duration::ZERO);
        // Empty now: 100 more bytes need 100 ms at 1000 B/s.
        assert_eq!(b.take(100, t0), Duration::from_millis(100));
    }

    #[test]
    fn debt_accumulates_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        assert_eq!(b.take(100, t0), Duration::ZERO);
        assert_eq!(b.take(500, t0), Duration::from_millis(500));
        // After waiting the 500 ms, the debt is paid: the next 250 bytes wait 250 ms.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(250, t1), Duration::from_millis(250));
    }

    #[test]
    fn idle_time_refills_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 200, t0);
        assert_eq!(b.take(200, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(200, later), Duration::ZERO);
        assert_eq!(b.take(100, later), Duration::from_millis(100));
    }

    #[test]
    fn long_run_throughput_matches_the_rate() {
        // Send 1 MB in 1 KiB chunks, waiting as told: it takes bytes / rate seconds.
        let t0 = Instant::now();
        let mut now = t0;
        let mut b = TokenBucket::new(30_000, 1024, t0);
        let mut sent = 0usize;
        while sent < 1_000_000 {
            now += b.take(1024, now);
            sent += 1024;
        }
        let secs = now.duration_since(t0).as_secs_f64();
        let expected = (sent - 1024) as f64 / 30_000.0;
        assert!(
            (secs - expected).abs() < 0.01,
            "took {secs} s, expected {expected} s"
        );
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(100, 100, t1);
        assert_eq!(b.take(100, t1), Duration::ZERO);
        assert_eq!(b.take(50, t0), Duration::from_millis(500));
    }

    #[test]
    fn rate_changes_apply_to_later_takes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        assert_eq!(b.take(100, t0), Duration::ZERO);
        b.set_rate(10_000, 100, t0);
        assert_eq!(b.rate(), 10_000);
        assert_eq!(b.take(1000, t0), Duration::from_millis(100));
    }
}
