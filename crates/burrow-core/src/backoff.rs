//! Retry with exponential backoff and full jitter (issue #5), sans-IO.
//!
//! Nothing here sleeps or reads a clock: the caller passes `now_ms` (from its [`Clock`]) and an
//! [`Rng`], records failures and successes, and asks [`Backoff::ready`] / [`Backoff::next_at_ms`]
//! when the next attempt may start. One seed therefore reproduces one sequence of delays.
//!
//! The delay after a failure is *full jitter* (AWS architecture blog, "Exponential Backoff And
//! Jitter"): uniform in `[0, min(cap, base * factor^attempts)]`, where `attempts` counts the
//! failures before this one. A server's `Retry-After` (see [`parse_retry_after`]) is a floor:
//! the attempt is never scheduled earlier than the server asked, up to
//! [`BackoffConfig::retry_after_cap_ms`]. Retries never stop; there is no maximum attempt count.
//!
//! [`Clock`]: crate::env::Clock

use crate::env::Rng;

/// Backoff settings; every field is configurable, the [`Default`] values are those of issue #5.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// Upper bound of the jitter window for the first failure, in milliseconds (default 1 s).
    pub base_ms: u64,
    /// Growth of the window per consecutive failure (default 2). A factor of 0 is treated as 1,
    /// so the window never shrinks as failures accumulate.
    pub factor: u32,
    /// The window never grows beyond this many milliseconds (default 5 min).
    pub cap_ms: u64,
    /// A server's `Retry-After` is honoured up to this many milliseconds (default 1 h). It may
    /// exceed [`cap_ms`](Self::cap_ms): the cap bounds *our* guesses, not the server's request.
    pub retry_after_cap_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            factor: 2,
            cap_ms: 300_000,
            retry_after_cap_ms: 3_600_000,
        }
    }
}

/// Retry state of one queue (uploads) or one connection (live push).
///
/// The caller persists it as `(attempts(), next_at_ms())` and restores it with
/// [`Backoff::from_parts`], so a restart does not forget an ongoing backoff.
///
/// # Example
///
/// ```
/// use burrow_core::backoff::{Backoff, BackoffConfig};
/// use burrow_core::env::SeededRng;
///
/// let config = BackoffConfig::default();
/// let mut rng = SeededRng::new(42);
/// let mut backoff = Backoff::new();
/// let now = 1_000_000;
/// assert!(backoff.ready(now));
///
/// // First failure: the delay is drawn from [0, 1 s].
/// let delay = backoff.failed(now, None, &config, &mut rng);
/// assert!(delay <= 1_000);
/// assert_eq!(backoff.next_at_ms(), Some(now + delay));
/// assert!(backoff.ready(now + delay));
/// assert_eq!(backoff.window_ms(&config), 2_000); // the next failure draws from [0, 2 s]
///
/// // The server said "Retry-After: 120": never retry earlier than that.
/// let delay = backoff.failed(now, Some(120_000), &config, &mut rng);
/// assert_eq!(delay, 120_000);
/// assert!(!backoff.ready(now + 119_999));
///
/// // A success resets everything.
/// backoff.succeeded();
/// assert_eq!(backoff.attempts(), 0);
/// assert!(backoff.ready(now));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backoff {
    attempts: u32,
    next_at_ms: Option<u64>,
}

impl Backoff {
    /// A fresh state: no failures, an attempt may start now.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores state persisted as `(attempts(), next_at_ms())`.
    pub fn from_parts(attempts: u32, next_at_ms: Option<u64>) -> Self {
        Self {
            attempts,
            next_at_ms,
        }
    }

    /// Consecutive failures since the last success (saturates at `u32::MAX`).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the next attempt may start, in milliseconds since the Unix epoch (`None` = now:
    /// no failure pending, or [`wake`](Self::wake) was called).
    pub fn next_at_ms(&self) -> Option<u64> {
        self.next_at_ms
    }

    /// Whether an attempt may start at `now_ms` (true at `next_at_ms` itself).
    pub fn ready(&self, now_ms: u64) -> bool {
        self.next_at_ms.is_none_or(|at| now_ms >= at)
    }

    /// Records a failed attempt at `now_ms` and schedules the next one; returns the delay
    /// chosen, in milliseconds (`next_at_ms == now_ms + delay`, saturating).
    ///
    /// The delay is full jitter: uniform over the *inclusive* range `[0, window]`, where
    /// `window` is [`window_ms`](Self::window_ms) before this failure (so the first failure
    /// draws from `[0, base]`). With a server `Retry-After` of `retry_after_ms`, the delay is
    /// `max(jittered, min(retry_after_ms, retry_after_cap_ms))`: never earlier than the server
    /// asked. The draw consumes `rng` even when `Retry-After` wins, so the random stream does
    /// not depend on server responses. Arithmetic saturates; this never panics.
    pub fn failed(
        &mut self,
        now_ms: u64,
        retry_after_ms: Option<u64>,
        config: &BackoffConfig,
        rng: &mut dyn Rng,
    ) -> u64 {
        let jittered = uniform_inclusive(rng, self.window_ms(config));
        let delay = match retry_after_ms {
            Some(asked) => jittered.max(asked.min(config.retry_after_cap_ms)),
            None => jittered,
        };
        self.attempts = self.attempts.saturating_add(1);
        self.next_at_ms = Some(now_ms.saturating_add(delay));
        delay
    }

    /// Records a success: the attempt count and any pending delay are reset.
    pub fn succeeded(&mut self) {
        *self = Self::new();
    }

    /// The network came back (or the app supplied a new token): an attempt may start
    /// immediately.
    ///
    /// The attempt count is deliberately *kept*: waking is a hint, not evidence that the server
    /// is healthy, so if the woken attempt fails the next delay continues to back off from
    /// where it was instead of restarting at `base` (a flapping network cannot turn backoff
    /// into a tight retry loop). Only [`succeeded`](Self::succeeded) resets the count.
    pub fn wake(&mut self) {
        self.next_at_ms = None;
    }

    /// The upper bound (inclusive) of the jitter window for the next failure:
    /// `min(cap_ms, base_ms * factor^attempts)`, saturating.
    pub fn window_ms(&self, config: &BackoffConfig) -> u64 {
        let factor = u64::from(config.factor.max(1));
        let growth = factor.checked_pow(self.attempts).unwrap_or(u64::MAX);
        config.base_ms.saturating_mul(growth).min(config.cap_ms)
    }
}

/// A value uniform over `[0, max]` (inclusive), unbiased (Lemire's multiply-and-reject).
fn uniform_inclusive(rng: &mut dyn Rng, max: u64) -> u64 {
    let Some(n) = max.checked_add(1) else {
        return rng.next_u64(); // the whole u64 range
    };
    // Values of the low half below `threshold` would over-represent some outputs.
    let threshold = n.wrapping_neg() % n;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(n);
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

/// Parses an HTTP `Retry-After` header value into a delay in milliseconds from `now_ms`.
///
/// Accepts delta-seconds (`"120"`, surrounding whitespace allowed; huge values saturate) or an
/// IMF-fixdate (`"Wed, 21 Oct 2015 07:28:00 GMT"`, RFC 9110 §5.6.7; names are case-sensitive,
/// the weekday is not cross-checked against the date). A date at or before `now_ms` gives
/// `Some(0)`. Anything else — signs, fractions, the obsolete RFC 850 / asctime date forms —
/// gives `None`.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.bytes().fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(secs.saturating_mul(1_000));
    }
    let at_ms = parse_imf_fixdate(value)?;
    Some(u64::try_from(at_ms).map_or(0, |at| at.saturating_sub(now_ms)))
}

/// Parses `"Sun, 06 Nov 1994 08:49:37 GMT"` into milliseconds since the Unix epoch (negative
/// before 1970).
fn parse_imf_fixdate(s: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    // "Wed, 21 Oct 2015 07:28:00 GMT"
    //  0123456789012345678901234567 8
    if b.len() != 29
        || !DAYS.iter().any(|d| d.as_bytes() == &b[0..3])
        || &b[3..5] != b", "
        || b[7] != b' '
        || b[11] != b' '
        || b[16] != b' '
        || b[19] != b':'
        || b[22] != b':'
        || &b[25..29] != b" GMT"
    {
        return None;
    }
    let day = digits(&b[5..7])?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as i64 + 1;
    let year = digits(&b[12..16])?;
    let hour = digits(&b[17..19])?;
    let minute = digits(&b[20..22])?;
    let second = digits(&b[23..25])?;
    if day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None; // second 60 is a leap second; it simply counts as the next second
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(secs * 1_000)
}

/// The value of a run of ASCII digits, or `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Clock, ManualClock, SeededRng};
    use proptest::prelude::*;

    const SECOND: u64 = 1_000;

    fn config() -> BackoffConfig {
        BackoffConfig::default()
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = BackoffConfig::default();
        assert_eq!(c.base_ms, 1_000);
        assert_eq!(c.factor, 2);
        assert_eq!(c.cap_ms, 300_000);
        assert_eq!(c.retry_after_cap_ms, 3_600_000);
        let b = Backoff::new();
        assert_eq!((b.attempts(), b.next_at_ms()), (0, None));
        assert!(b.ready(0));
    }

    #[test]
    fn paused_time_sequence_doubles_then_caps() {
        let config = config();
        let clock = ManualClock::new(1_700_000_000_000);
        let mut rng = SeededRng::new(5);
        let mut backoff = Backoff::new();
        let mut expected: Vec<u64> = (0..9).map(|i| (1u64 << i) * SECOND).collect();
        assert_eq!(expected.last(), Some(&(256 * SECOND)));
        expected.extend(std::iter::repeat_n(300 * SECOND, 40));

        for (i, &window) in expected.iter().enumerate() {
            assert_eq!(backoff.attempts(), i as u32);
            assert_eq!(
                backoff.window_ms(&config),
                window,
                "window before failure {}",
                i + 1
            );
            let now = clock.now_ms();
            assert!(backoff.ready(now));
            let delay = backoff.failed(now, None, &config, &mut rng);
            assert!(delay <= window, "delay {delay} outside [0, {window}]");
            assert_eq!(backoff.next_at_ms(), Some(now + delay));
            if delay > 0 {
                clock.advance(delay - 1);
                assert!(!backoff.ready(clock.now_ms()), "ready 1 ms early");
                clock.advance(1);
            }
            assert!(backoff.ready(clock.now_ms()), "not ready at next_at");
            assert!(backoff.ready(clock.now_ms() + 1));
        }
        // Capped forever, however many failures.
        assert_eq!(
            Backoff::from_parts(10_000, None).window_ms(&config),
            300 * SECOND
        );
        assert_eq!(
            Backoff::from_parts(u32::MAX, None).window_ms(&config),
            300 * SECOND
        );
    }

    #[test]
    fn window_is_inclusive_of_both_ends() {
        // base 1 ms: the first failure draws from {0, 1}; both must occur.
        let config = BackoffConfig {
            base_ms: 1,
            ..config()
        };
        let mut rng = SeededRng::new(1);
        let mut seen = [false; 2];
        for _ in 0..200 {
            let delay = Backoff::new().failed(0, None, &config, &mut rng);
            seen[delay as usize] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn zero_window_and_zero_factor_do_not_panic() {
        let mut rng = SeededRng::new(3);
        let zero = BackoffConfig {
            base_ms: 0,
            ..config()
        };
        let mut b = Backoff::new();
        assert_eq!(b.failed(10, None, &zero, &mut rng), 0);
        assert!(b.ready(10));
        let flat = BackoffConfig {
            factor: 0,
            ..config()
        };
        assert_eq!(Backoff::from_parts(5, None).window_ms(&flat), SECOND);
    }

    #[test]
    fn extreme_values_saturate() {
        let mut rng = SeededRng::new(9);
        let huge = BackoffConfig {
            base_ms: u64::MAX,
            factor: u32::MAX,
            cap_ms: u64::MAX,
            retry_after_cap_ms: u64::MAX,
        };
        let mut b = Backoff::from_parts(u32::MAX, None);
        assert_eq!(b.window_ms(&huge), u64::MAX);
        b.failed(u64::MAX, Some(u64::MAX), &huge, &mut rng);
        assert_eq!(b.attempts(), u32::MAX);
        assert_eq!(b.next_at_ms(), Some(u64::MAX));
        assert!(b.ready(u64::MAX));

        let mut b = Backoff::from_parts(10_000, None);
        let delay = b.failed(u64::MAX - 5, None, &config(), &mut rng);
        assert!(delay <= 300 * SECOND);
        assert_eq!(b.next_at_ms(), Some(u64::MAX));
    }

    #[test]
    fn retry_after_is_honoured_when_jitter_is_smaller() {
        let mut rng = SeededRng::new(11);
        let mut b = Backoff::new(); // window 1 s, far below 120 s
        let delay = b.failed(5_000, Some(120 * SECOND), &config(), &mut rng);
        assert_eq!(delay, 120 * SECOND);
        assert_eq!(b.next_at_ms(), Some(125_000));
        assert!(!b.ready(124_999));
        assert!(b.ready(125_000));
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn retry_after_above_its_cap_is_clamped() {
        let mut rng = SeededRng::new(12);
        let config = config();
        let mut b = Backoff::new();
        let delay = b.failed(0, Some(10 * 3_600 * SECOND), &config, &mut rng);
        assert_eq!(delay, config.retry_after_cap_ms);
        assert_eq!(b.next_at_ms(), Some(3_600_000));

        let tight = BackoffConfig {
            retry_after_cap_ms: 60 * SECOND,
            ..config
        };
        let delay = Backoff::new().failed(0, Some(120 * SECOND), &tight, &mut rng);
        assert_eq!(delay, 60 * SECOND);
    }

    #[test]
    fn jitter_larger_than_retry_after_is_kept() {
        let config = config();
        let start = Backoff::from_parts(20, None); // window 300 s
        // Find what the jitter alone would draw, then offer a smaller Retry-After.
        let (mut rng, mut probe) = (SeededRng::new(13), start.clone());
        let jittered = probe.failed(0, None, &config, &mut rng.clone());
        assert!(jittered > 1, "seed chosen so the jitter is non-trivial");
        let mut b = start;
        let delay = b.failed(0, Some(jittered / 2), &config, &mut rng);
        assert_eq!(delay, jittered);
        assert_eq!(b, probe);
    }

    #[test]
    fn success_resets_to_base_window() {
        let config = config();
        let mut rng = SeededRng::new(14);
        let mut b = Backoff::new();
        for _ in 0..6 {
            b.failed(0, None, &config, &mut rng);
        }
        assert_eq!(b.window_ms(&config), 64 * SECOND);
        b.succeeded();
        assert_eq!(b, Backoff::new());
        assert_eq!(b.window_ms(&config), SECOND);
        let delay = b.failed(0, None, &config, &mut rng);
        assert!(delay <= SECOND);
    }

    #[test]
    fn wake_allows_immediate_attempt_but_keeps_attempts() {
        let config = config();
        let mut rng = SeededRng::new(15);
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.failed(0, Some(60 * SECOND), &config, &mut rng);
        }
        assert!(!b.ready(1));
        b.wake();
        assert!(b.ready(1));
        assert_eq!(b.next_at_ms(), None);
        assert_eq!(b.attempts(), 5);
        assert_eq!(b.window_ms(&config), 32 * SECOND);
    }

    #[test]
    fn from_parts_round_trips() {
        let b = Backoff::from_parts(7, Some(123));
        assert_eq!((b.attempts(), b.next_at_ms()), (7, Some(123)));
        assert!(!b.ready(122));
        assert!(b.ready(123));
        assert_eq!(Backoff::from_parts(b.attempts(), b.next_at_ms()), b);
    }

    #[test]
    fn parse_retry_after_delta_seconds() {
        assert_eq!(parse_retry_after("120", 0), Some(120_000));
        assert_eq!(parse_retry_after(" 0 ", 0), Some(0));
        assert_eq!(parse_retry_after("\t7\r\n", 99), Some(7_000));
        assert_eq!(
            parse_retry_after("99999999999999999999999", 0),
            Some(u64::MAX)
        );
        for bad in ["-5", "+5", "abc", "", "   ", "1.5", "12 s", "0x10"] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_retry_after_http_date() {
        const AT: u64 = 1_445_412_480_000; // Wed, 21 Oct 2015 07:28:00 GMT
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(date, AT - 10_000), Some(10_000));
        assert_eq!(parse_retry_after(&format!("  {date} "), AT - 1), Some(1));
        assert_eq!(parse_retry_after(date, AT), Some(0));
        assert_eq!(parse_retry_after(date, AT + 86_400_000), Some(0));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 1969 23:59:59 GMT", 0),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2000 23:59:59 GMT", 0),
            Some(951_868_799_000)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", 0),
            Some(253_402_300_799_000)
        );
    }

    #[test]
    fn parse_retry_after_rejects_malformed_dates() {
        for bad in [
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wed, 21 Oct 2015 07:28:00",
            "wed, 21 Oct 2015 07:28:00 GMT",
            "Wed, 21 oct 2015 07:28:00 GMT",
            "Xyz, 21 Oct 2015 07:28:00 GMT",
            "Wed 21 Oct 2015 07:28:00 GMT ",
            "Wed, 1 Oct 2015 07:28:00 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 00 Oct 2015 07:28:00 GMT",
            "Sun, 29 Feb 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 24:00:00 GMT",
            "Wed, 21 Oct 2015 07:60:00 GMT",
            "Wed, 21 Oct 2015 07:28:61 GMT",
            "Wed, 21 Oct 20x5 07:28:00 GMT",
            "Wed, 21 Oct 2015 07-28-00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
            "Wed, 21 Oct 2015 07:28:00 GMTé",
            "Wéd, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad:?}");
        }
    }

    fn arb_config() -> impl Strategy<Value = BackoffConfig> {
        (1u64..10_000, 1u32..=4, 0u64..10_000_000, any::<u64>()).prop_map(
            |(base_ms, factor, extra, retry_after_cap_ms)| BackoffConfig {
                base_ms,
                factor,
                cap_ms: base_ms + extra,
                retry_after_cap_ms,
            },
        )
    }

    proptest! {
        #[test]
        fn prop_delays_bounded_and_deterministic(
            config in arb_config(),
            attempts in 0u32..=10_000,
            now in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let run = |seed: u64| {
                let mut rng = SeededRng::new(seed);
                let mut b = Backoff::from_parts(attempts, None);
                (0..20).map(|i| {
                    let window = b.window_ms(&config);
                    let delay = b.failed(now, None, &config, &mut rng);
                    (i, window, delay, b.clone())
                }).collect::<Vec<_>>()
            };
            let first = run(seed);
            for (i, window, delay, b) in &first {
                prop_assert!(*window <= config.cap_ms);
                prop_assert!(*delay <= *window);
                prop_assert!(*delay <= config.cap_ms);
                prop_assert_eq!(b.next_at_ms(), Some(now.saturating_add(*delay)));
                prop_assert_eq!(b.attempts(), attempts + *i + 1);
            }
            prop_assert_eq!(first, run(seed));
        }

        #[test]
        fn prop_jitter_is_full(
            config in arb_config(),
            attempts in 0u32..=10_000,
            seed in any::<u64>(),
        ) {
            let b = Backoff::from_parts(attempts, None);
            let window = b.window_ms(&config);
            let mut rng = SeededRng::new(seed);
            let delays: Vec<u64> = (0..200)
                .map(|_| b.clone().failed(0, None, &config, &mut rng))
                .collect();
            prop_assert!(delays.iter().any(|&d| d != delays[0]), "no jitter: {:?}", delays[0]);
            prop_assert!(delays.iter().any(|&d| d * 2 > window), "never above window/2");
            prop_assert!(delays.iter().all(|&d| d <= window));
        }

        #[test]
        fn prop_retry_after_is_a_floor(
            config in arb_config(),
            attempts in 0u32..=10_000,
            retry_after in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let b = Backoff::from_parts(attempts, None);
            let jittered = b.clone().failed(0, None, &config, &mut SeededRng::new(seed));
            let delay = b.clone().failed(0, Some(retry_after), &config, &mut SeededRng::new(seed));
            prop_assert_eq!(delay, jittered.max(retry_after.min(config.retry_after_cap_ms)));
        }

        #[test]
        fn prop_parse_imf_fixdate_matches_naive_day_count(
            year in 1970i64..=9999,
            month in 1i64..=12,
            day in 1i64..=31,
            (hour, minute, second) in (0i64..24, 0i64..60, 0i64..60),
        ) {
            prop_assume!(day <= days_in_month(year, month));
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let days = (1970..year).map(|y| if is_leap(y) { 366 } else { 365 }).sum::<i64>()
                + (1..month).map(|m| days_in_month(year, m)).sum::<i64>()
                + day
                - 1;
            let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
            let value = format!(
                "{weekday}, {day:02} {} {year:04} {hour:02}:{minute:02}:{second:02} GMT",
                MONTHS[(month - 1) as usize]
            );
            let at = ((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000) as u64;
            prop_assert_eq!(parse_retry_after(&value, 0), Some(at), "{}", value);
            prop_assert_eq!(parse_retry_after(&value, at), Some(0));
        }

        #[test]
        fn prop_parse_retry_after_never_panics(value in ".{0,40}", now in any::<u64>()) {
            let _ = parse_retry_after(&value, now);
        }

        #[test]
        fn prop_parse_retry_after_delta_seconds(secs in 0u64..u64::MAX / 1_000, now in any::<u64>()) {
            prop_assert_eq!(parse_retry_after(&secs.to_string(), now), Some(secs * 1_000));
        }
    }
}
