//! Hybrid logical clock (Kulkarni et al. 2014) packed in a `u64`: the high 48 bits are Unix
//! milliseconds, the low 16 bits a logical counter.
//!
//! The packing keeps every timestamp below `i64::MAX` until the year 10889, so it is stored as
//! a plain SQLite `INTEGER` and compared numerically. Capture triggers compute the same
//! formula in SQL (`max(last + 1, now_ms << 16)`), so an op written by any SQLite connection
//! gets a monotone HLC without a library-registered function.

use serde::{Deserialize, Serialize};

/// Bits reserved for the logical counter.
pub const COUNTER_BITS: u32 = 16;

/// A hybrid logical timestamp; larger means later.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The zero timestamp, earlier than every real one.
    pub const ZERO: Hlc = Hlc(0);

    /// The timestamp at physical time `ms` with counter 0.
    pub fn from_ms(ms: u64) -> Hlc {
        Hlc(ms << COUNTER_BITS)
    }

    /// The physical (wall-clock) part in milliseconds.
    pub fn ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The logical counter part.
    pub fn counter(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }

    /// The timestamp for a local event: strictly after `self`, and not before `now_ms`.
    pub fn tick(self, now_ms: u64) -> Hlc {
        Hlc((self.0.saturating_add(1)).max(now_ms << COUNTER_BITS))
    }

    /// The clock after observing a remote timestamp: never behind either input.
    pub fn observe(self, remote: Hlc) -> Hlc {
        self.max(remote)
    }
}

/// Moves a device's HLC into server time (see `docs/design/time.md`): the device clock was
/// measured `offset_ms` ahead of the server's (negative: behind) when it synced, so its wall
/// clock part is shifted back by the offset; the result is never later than `now` (the server's
/// clock at receipt), since no write happened in the future. The logical counter is kept.
pub fn correct_device_hlc(hlc: Hlc, offset_ms: i64, now: Hlc) -> Hlc {
    let ms = (hlc.ms() as i128 - offset_ms as i128).clamp(0, (u64::MAX >> COUNTER_BITS) as i128);
    let corrected = Hlc(((ms as u64) << COUNTER_BITS) | u64::from(hlc.counter()));
    corrected.min(Hlc(now.0 | 0xFFFF))
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.ms(), self.counter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn correction_removes_the_measured_offset_and_never_passes_now() {
        let now = Hlc::from_ms(10_000_000);
        // A device an hour ahead wrote at its 10:00 = server 09:00.
        let h = Hlc::from_ms(10_000_000 + 3_600_000 - 60_000);
        assert_eq!(
            correct_device_hlc(h, 3_600_000, now),
            Hlc::from_ms(10_000_000 - 60_000)
        );
        // A device an hour behind.
        let h = Hlc(Hlc::from_ms(10_000_000 - 3_600_000 - 5).0 | 7);
        assert_eq!(
            correct_device_hlc(h, -3_600_000, now),
            Hlc(Hlc::from_ms(9_999_995).0 | 7)
        );
        // Unmeasured future times clamp to now.
        assert!(correct_device_hlc(Hlc::from_ms(99_000_000), 0, now) <= Hlc(now.0 | 0xFFFF));
        assert_eq!(correct_device_hlc(Hlc::from_ms(5), 1_000, now), Hlc::ZERO);
    }

    #[test]
    fn tick_uses_wall_clock_when_ahead() {
        let h = Hlc::from_ms(100);
        assert_eq!(h.tick(200), Hlc::from_ms(200));
        assert_eq!(h.tick(50), Hlc(Hlc::from_ms(100).0 + 1));
    }

    proptest! {
        #[test]
        fn tick_is_strictly_monotone(start in 0u64..(1 << 47), nows in proptest::collection::vec(0u64..(1 << 47), 1..50)) {
            let mut h = Hlc::from_ms(start);
            for now in nows {
                let next = h.tick(now);
                prop_assert!(next > h);
                prop_assert!(next.ms() >= now.min(next.ms()));
                h = next;
            }
        }

        #[test]
        fn observe_then_tick_is_after_remote(local in 0u64..u64::MAX / 2, remote in 0u64..u64::MAX / 2, now in 0u64..(1 << 47)) {
            let h = Hlc(local).observe(Hlc(remote)).tick(now);
            prop_assert!(h > Hlc(remote));
            prop_assert!(h > Hlc(local));
        }
    }
}
