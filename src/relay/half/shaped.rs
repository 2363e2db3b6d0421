//! A shaped direction's state: the faults on it ([`Shape`], judged once
//! in stream mode) and the clocks that release its held bytes, in chunks
//! (a delay, and every judged line in line mode).

use std::collections::VecDeque;

use super::Doom;
use super::toxics::{Clocks, Toxics};
use crate::journal::AppliedFaults;
use crate::timer::{Millis, at_least};

/// What the faults do to one direction of one pair, judged once when the
/// pair was accepted (SPEC 11, stream mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Every byte is held at least this long after it arrived (latency).
    pub delay_ms: u64,
    /// With a spread (`latency` ± `jitter`, SPEC 14), each chunk read is
    /// held for a delay drawn in this range instead (its least is
    /// `delay_ms`).
    pub jitter: Option<crate::fault::DelayRange>,
    /// `(bytes, every_ms)`: the stream goes out that many bytes at a time.
    pub dribble: Option<(u32, u64)>,
    /// Only this many bytes are relayed; then the FIN, and the pair ends.
    pub truncate: Option<u64>,
    /// Every byte is changed, from this seed and the byte's offset.
    pub corrupt: Option<u64>,
    /// Read and discard; the FIN is never passed on.
    pub hang: bool,
    /// The FIN is held this long once it is due.
    pub slow_close_ms: Option<u64>,
    /// SPEC 14's stream toxics: a rate, slices, a timeout, a reset.
    pub toxics: Toxics,
}

/// Held bytes that go out together: no earlier than `at`, `pace`d if a
/// dribble says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) at: Millis,
    pub(super) len: usize,
    pub(super) pace: Option<(u32, u64)>,
    /// Line mode: the faults applied to its lines, for the journal.
    pub(super) faults: AppliedFaults,
}

/// A shaped direction's own state: the fault and its clocks.
#[derive(Debug)]
pub(super) struct Shaped {
    pub(super) shape: Shape,
    /// The held bytes' release, oldest first; kept with a delay and in
    /// line mode (where the open line's bytes, not yet judged, are in no
    /// chunk). Neighbours released at the same time and pace share an
    /// entry, but in line mode lines with different faults do not, so
    /// a chunk may hold a single short line: each entry's size counts
    /// against the direction's bound ([`HalfPipe::backlog`]), which
    /// stops reading (and judging lines) at it.
    ///
    /// [`HalfPipe::backlog`]: super::HalfPipe::backlog
    pub(super) chunks: VecDeque<Chunk>,
    /// Dribble: when the next piece may go.
    pub(super) next_piece_at: Millis,
    /// Jitter: chunks whose delay was drawn so far.
    pub(super) drawn: u64,
    /// Bytes taken from the source so far: a corrupted byte's offset, and
    /// the count `truncate` stops at.
    pub(super) taken: u64,
    /// The `truncate` count is reached: nothing more is taken.
    pub(super) cut: bool,
    /// Slow close: when the FIN may go, once it is due.
    pub(super) fin_at: Option<Millis>,
    /// Line mode: a fault that ends the pair at this time, once the bytes
    /// before it are out.
    pub(super) doom: Option<(Millis, Doom)>,
    /// Line mode: held bytes go out only as judged lines, in chunks.
    pub(super) in_lines: bool,
    /// Line mode: the line a fault kept from going (its ordinal from 1)
    /// and the faults, journaled once the lines before it are out.
    pub(super) stopped: Option<(u64, AppliedFaults)>,
    /// The stream toxics' clocks (a rate, slices, a timeout).
    pub(super) clocks: Clocks,
}

impl Shaped {
    pub(super) fn new(shape: Shape, in_lines: bool) -> Shaped {
        Shaped {
            shape,
            chunks: VecDeque::new(),
            next_piece_at: 0,
            drawn: 0,
            taken: 0,
            cut: false,
            fin_at: None,
            doom: None,
            in_lines,
            stopped: None,
            clocks: Clocks::default(),
        }
    }

    /// Whether held bytes wait in chunks (rather than all going at once).
    pub(super) fn uses_chunks(&self) -> bool {
        self.shape.delays() || self.in_lines
    }

    /// When bytes read at `now` may go: each chunk later by the delay,
    /// its jitter drawn for it, and never before an earlier chunk (the
    /// stream keeps its order, as toxiproxy's latency does).
    pub(super) fn release_at(&mut self, now: Millis) -> Millis {
        let delay = match self.shape.jitter {
            Some(range) => {
                self.drawn += 1;
                range.draw(self.drawn - 1)
            }
            None => self.shape.delay_ms,
        };
        let at = at_least(now, delay);
        self.chunks.back().map_or(at, |last| at.max(last.at))
    }
}

impl Shape {
    /// Whether a delay holds the bytes (stream mode): latency, which keeps
    /// the direction reading up to `--max-delayed`.
    pub(crate) fn delays(&self) -> bool {
        self.delay_ms > 0 || self.jitter.is_some()
    }

    /// The longest a byte may be held for its delay.
    pub(super) fn longest_delay(&self) -> u64 {
        (self.jitter).map_or(self.delay_ms, |r| r.least_ms.saturating_add(r.spread_ms))
    }
}

impl Shaped {
    /// Holds `len` more bytes until `at`, paced by `pace`.
    pub(super) fn push_chunk(&mut self, at: Millis, len: usize, pace: Option<(u32, u64)>) {
        self.push_lines(at, len, pace, AppliedFaults::default());
    }

    /// Holds `len` more bytes of lines `faults` were applied to until
    /// `at`, paced by `pace`.
    pub(super) fn push_lines(
        &mut self,
        at: Millis,
        len: usize,
        pace: Option<(u32, u64)>,
        faults: AppliedFaults,
    ) {
        match self.chunks.back_mut() {
            Some(last) if last.at == at && last.pace == pace && last.faults == faults => {
                last.len += len
            }
            _ => self.chunks.push_back(Chunk {
                at,
                len,
                pace,
                faults,
            }),
        }
    }

    /// `n` held bytes went out at `now`, `pace`d: their chunks go, and a
    /// dribble waits its gap before the next piece.
    pub(super) fn sent(&mut self, mut n: usize, pace: Option<(u32, u64)>, now: Millis) {
        if n == 0 {
            return;
        }
        self.clocks.sent(&self.shape.toxics, n, now);
        if let Some((_, every_ms)) = pace {
            self.next_piece_at = at_least(now, every_ms);
        }
        while n > 0 {
            let Some(chunk) = self.chunks.front_mut() else {
                return;
            };
            let done = n.min(chunk.len);
            chunk.len -= done;
            n -= done;
            if chunk.len == 0 {
                self.chunks.pop_front();
            }
        }
    }
}
