//! A moment on the loop's clock in 32 bits, so an idle connection keeps
//! its times (and its armed deadline) in 4 bytes each rather than 8.

use std::num::NonZeroU32;

use crate::timer::Millis;

/// A moment on the loop's clock, kept as the low 32 bits of its
/// milliseconds and read back against the current time: exact for any
/// moment within [`Stamp::RANGE`] of the reading. Every moment a
/// connection keeps is that near: when bytes last moved (a connection idle
/// longer than the longest idle timeout, 23 days, is closed, and a
/// fault's wait that ends counts as movement), when its lingering began
/// (at most [`LINGER_CAP_MS`](crate::LINGER_CAP_MS) ago), and its timer
/// entry (armed at most [`Stamp::HORIZON`] ahead, as [`Armed`](super::Armed)
/// arms every entry).
///
/// Kept plus one, so that zero is free and `Option<Stamp>` is 4 bytes
/// too; the one moment in every 49 days whose stamp would be zero is kept
/// as a millisecond later. Every use is a lower bound (a deadline no
/// earlier than), which a millisecond late still keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(NonZeroU32);

impl Stamp {
    /// How far from the reading a stamp is read back exactly: 24 days.
    pub const RANGE: Millis = 1 << 31;
    /// How far ahead a timer entry is armed at most: a deadline further
    /// away is reached in hops of this, each entry re-arming the next.
    pub const HORIZON: Millis = Stamp::RANGE / 2;

    /// The stamp of `at`.
    pub const fn of(at: Millis) -> Stamp {
        // Truncation keeps the low bits: that is the stamp.
        let low = (at as u32).wrapping_add(1);
        match NonZeroU32::new(low) {
            Some(low) => Stamp(low),
            None => Stamp(NonZeroU32::MIN),
        }
    }

    /// Milliseconds from `earlier` to this moment, for two moments less
    /// than 49 days apart, this one the later.
    pub fn after(self, earlier: Stamp) -> Millis {
        Millis::from(self.0.get().wrapping_sub(earlier.0.get()))
    }

    /// The moment `ms` (less than 49 days) before this one.
    pub fn back(self, ms: Millis) -> Stamp {
        Stamp::of(Millis::from((self.0.get() - 1).wrapping_sub(ms as u32)))
    }

    /// The stamp's granule of `1 << shift` milliseconds: equal for two
    /// moments in the same granule (of two less than 49 days apart).
    pub fn granule(self, shift: u32) -> u32 {
        (self.0.get() - 1) >> shift
    }

    /// The moment within [`RANGE`](Stamp::RANGE) of `now` whose stamp this
    /// is.
    pub fn near(self, now: Millis) -> Millis {
        let offset = (self.0.get() - 1).wrapping_sub(now as u32) as i32;
        now.saturating_add_signed(i64::from(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_within_its_range_on_either_side_and_across_the_wrap() {
        // No moment here has all low bits set (see the next test).
        for now in [0, u32::MAX as Millis - 3, (7 << 32) + 10, (1 << 40) + 77] {
            for delta in [0, 1, 999, Stamp::HORIZON, Stamp::RANGE - 1] {
                let before = now.saturating_sub(delta);
                assert_eq!(Stamp::of(before).near(now), before, "{now} - {delta}");
                assert_eq!(
                    Stamp::of(now + delta).near(now),
                    now + delta,
                    "{now} + {delta}"
                );
            }
        }
    }

    #[test]
    fn a_stamp_steps_back_and_measures_from_an_earlier_one_across_the_wrap() {
        for at in [5_000, u32::MAX as Millis - 3, (7 << 32) + 10] {
            let now = Stamp::of(at);
            assert_eq!(now.back(1_000).near(at), at - 1_000, "{at}");
            assert_eq!(now.after(Stamp::of(at - 1_000)), 1_000, "{at}");
            assert_eq!(now.after(now), 0);
        }
    }

    #[test]
    fn one_moment_in_49_days_is_a_millisecond_late_and_an_option_costs_nothing() {
        let odd = u32::MAX as Millis;
        assert_eq!(Stamp::of(odd).near(odd), odd + 1);
        assert_eq!(Stamp::of(odd - 1).near(odd), odd - 1);
        assert_eq!(Stamp::of(0).near(10), 0);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 4);
    }
}
