//! SPEC 14's stream toxics on one direction: a rate (`bandwidth`), writes
//! cut to size (`slicer`), a quiet time that closes the pair (`timeout`)
//! and a reset some time after a chunk (`reset-peer`). Their settings
//! ride in the direction's [`Shape`](super::Shape), their clocks in its
//! shaped state; [`HalfPipe`](super::HalfPipe) asks this module how much
//! may go, when, and what becomes of the bytes read.
//!
//! The loop's clock counts milliseconds; a rate and a slicer's spacing
//! are kept in microseconds of virtual time, so pieces that are due
//! within one millisecond go together and the average holds.

use super::Doom;
use crate::fault::Slices;
use crate::timer::{Millis, at_least};

/// The toxics on a direction (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Toxics {
    /// `bandwidth`: at most this many bytes a millisecond (KB/s), more
    /// than 0.
    pub bandwidth: Option<u64>,
    /// `slicer`: the writes' sizes and spacing.
    pub slicer: Option<Slices>,
    /// `timeout`: nothing passes; the pair closes after this many
    /// milliseconds without bytes arriving (0: never).
    pub timeout_ms: Option<u64>,
    /// `reset-peer`: nothing passes from the first chunk on; the pair is
    /// reset this many milliseconds after it.
    pub reset_peer_ms: Option<u64>,
}

impl Toxics {
    /// Whether a rate or a slicer paces the bytes that go.
    pub fn paces(&self) -> bool {
        self.bandwidth.is_some() || self.slicer.is_some()
    }

    /// Whether the bytes read are thrown away rather than relayed.
    pub fn discards(&self) -> bool {
        self.timeout_ms.is_some() || self.reset_peer_ms.is_some()
    }
}

/// Pieces one flush writes at most: a slicer with no delay cuts a full
/// backlog into many writes, and the rest waits for the next turn.
pub(super) const PIECES_PER_FLUSH: usize = 64;

/// The toxics' clocks on a direction.
#[derive(Debug, Default)]
pub(super) struct Clocks {
    /// `bandwidth`: when the rate lets the next byte go, in µs.
    free_at_us: u64,
    /// `slicer`: when the next write may go, in µs.
    slice_at_us: u64,
    /// `slicer`: writes so far (the next one's size is drawn from it).
    slices: u64,
    /// `timeout`: the pair closes at this time unless bytes arrive.
    quiet_until: Option<Millis>,
}

/// Where a clock at `clock` goes on from at `now_us`, `by` more: an idle
/// link saves no credit, but a clock behind by less than the loop's
/// millisecond keeps its schedule (the loop woke late by its rounding).
fn advance(clock: u64, now_us: u64, by: u64) -> u64 {
    clock.max(now_us.saturating_sub(999)).saturating_add(by)
}

/// Microseconds to move `bytes` at `rate` bytes a millisecond, rounded up.
fn cost_us(bytes: usize, rate: u64) -> u64 {
    (bytes as u64).saturating_mul(1000).div_ceil(rate)
}

impl Clocks {
    /// How many of the `due` bytes one write may carry at `now`: none
    /// while the rate or the slicer's spacing holds them, at most a
    /// tenth of a second's worth of the rate, at most one slice.
    pub fn allow(&self, toxics: &Toxics, due: usize, now: Millis) -> usize {
        let now_us = now.saturating_mul(1000);
        let mut allowed = due;
        if let Some(rate) = toxics.bandwidth {
            if self.free_at_us > now_us {
                return 0;
            }
            let tenth = usize::try_from(rate.saturating_mul(100)).unwrap_or(usize::MAX);
            allowed = allowed.min(tenth);
        }
        if let Some(slices) = toxics.slicer {
            if self.slice_at_us > now_us {
                return 0;
            }
            allowed = allowed.min(slices.size(self.slices));
        }
        allowed
    }

    /// `n` bytes went out at `now` in one write: the rate's clock moves
    /// on by their time, the slicer's by its delay.
    pub fn sent(&mut self, toxics: &Toxics, n: usize, now: Millis) {
        let now_us = now.saturating_mul(1000);
        if n == 0 {
            return;
        }
        if let Some(rate) = toxics.bandwidth {
            self.free_at_us = advance(self.free_at_us, now_us, cost_us(n, rate));
        }
        if let Some(slices) = toxics.slicer {
            self.slices += 1;
            self.slice_at_us = advance(self.slice_at_us, now_us, slices.delay_us);
        }
    }

    /// When the rate or the slicer next lets a byte go (0: now).
    pub fn next_at(&self, toxics: &Toxics) -> Millis {
        let rate = toxics.bandwidth.map_or(0, |_| self.free_at_us);
        let slice = toxics.slicer.map_or(0, |_| self.slice_at_us);
        rate.max(slice).div_ceil(1000)
    }

    /// A `timeout` counts from now if it is not counting yet (a pair
    /// that starts relaying, or a toxic just added).
    pub fn start(&mut self, toxics: &Toxics, now: Millis) {
        match toxics.timeout_ms {
            Some(ms) if ms > 0 && self.quiet_until.is_none() => {
                self.quiet_until = Some(at_least(now, ms));
            }
            Some(_) => {}
            None => self.quiet_until = None,
        }
    }

    /// A `timeout` changed: it counts from the next [`start`](Self::start).
    pub fn restart_timeout(&mut self) {
        self.quiet_until = None;
    }

    /// When a `timeout` closes the pair, if it counts.
    pub fn quiet_until(&self) -> Option<Millis> {
        self.quiet_until
    }

    /// Bytes arrived at `now` on a direction that throws them away: a
    /// `timeout` counts again from now, a `reset-peer` dooms the pair
    /// (once). Returns the doom it sets, if any.
    pub fn arrived(
        &mut self,
        toxics: &Toxics,
        now: Millis,
        doomed: bool,
    ) -> Option<(Millis, Doom)> {
        if let Some(ms) = toxics.timeout_ms.filter(|&ms| ms > 0) {
            self.quiet_until = Some(at_least(now, ms));
        }
        match toxics.reset_peer_ms {
            Some(ms) if !doomed => Some((at_least(now, ms), Doom::Reset)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slicer(average: u32, variation: u32, delay_us: u64) -> Toxics {
        Toxics {
            slicer: Some(Slices {
                average,
                variation,
                delay_us,
                seed: 7,
            }),
            ..Toxics::default()
        }
    }

    #[test]
    fn a_rate_lets_a_tenth_of_a_second_go_then_waits_its_time() {
        let toxics = Toxics {
            bandwidth: Some(10), // 10 KB/s: 10 bytes a millisecond.
            ..Toxics::default()
        };
        let mut clocks = Clocks::default();
        assert_eq!(clocks.allow(&toxics, 5000, 0), 1000);
        clocks.sent(&toxics, 1000, 0);
        assert_eq!(clocks.next_at(&toxics), 100);
        assert_eq!(clocks.allow(&toxics, 4000, 99), 0);
        assert_eq!(clocks.allow(&toxics, 4000, 100), 1000);
        clocks.sent(&toxics, 15, 100);
        assert_eq!(clocks.next_at(&toxics), 102, "1.5 ms, rounded up");
    }

    #[test]
    fn slices_stay_within_their_variation_and_are_spaced() {
        let toxics = slicer(10, 3, 2500);
        let mut clocks = Clocks::default();
        let mut sizes = Vec::new();
        for _ in 0..200 {
            let at = clocks.next_at(&toxics);
            let size = clocks.allow(&toxics, 1000, at);
            assert!((7..=13).contains(&size), "{size}");
            clocks.sent(&toxics, size, at);
            sizes.push(size);
        }
        assert!(sizes.iter().any(|&s| s != sizes[0]), "sizes vary");
        assert_eq!(clocks.next_at(&toxics), 500, "200 slices 2.5 ms apart");
        assert_eq!(clocks.allow(&toxics, 3, 500), 3, "what is due, no more");
    }

    #[test]
    fn a_timeout_counts_again_when_bytes_arrive_and_reset_peer_dooms_once() {
        let toxics = Toxics {
            timeout_ms: Some(50),
            reset_peer_ms: Some(20),
            ..Toxics::default()
        };
        let mut clocks = Clocks::default();
        clocks.start(&toxics, 10);
        assert_eq!(clocks.quiet_until(), Some(61));
        assert_eq!(clocks.arrived(&toxics, 30, false), Some((51, Doom::Reset)));
        assert_eq!(clocks.quiet_until(), Some(81));
        assert_eq!(clocks.arrived(&toxics, 40, true), None);
        clocks.start(&Toxics::default(), 41);
        assert_eq!(clocks.quiet_until(), None, "no timeout any more");
    }
}
