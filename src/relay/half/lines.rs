//! Line mode on a relay (SPEC 11): each line in a direction is a message,
//! judged as section 8 judges one, its ordinal the pair's and the line's
//! on it; `first`, `after` and `every` count that direction's lines
//! across connections (each fault counts the messages it judged).
//!
//! With no TCP fault in force, lines go straight through and are only
//! counted (a client's lines are `messages`) and measured (a line over
//! `--max-line` closes the pair). With faults, the bytes of a line are
//! held until its `\n` arrives; then the verdict says when it goes
//! (`delay`), how (`dribble`), changed (`corrupt`, the `\n` kept), cut
//! (`truncate`: its first bytes, then the FIN), or that it and all after
//! it go nowhere (`hang`), or that the pair ends once the lines before it
//! are out (`close`, `reset`; `slow-close` after the line, that much
//! later).

use log::{debug, warn};
use memchr::{memchr, memchr_iter};

use super::{CHUNK_COST, Doom, HalfPipe, Shaped};
use crate::fault::{self, FaultKind, Faults};
use crate::journal::AppliedFaults;
use crate::reply::Protocol;
use crate::stats::{Counters, add};
use crate::timer::{Millis, RateLimit, at_least};
use crate::vocab::Direction;

/// What judging a direction's lines needs from the loop.
pub(crate) struct LineCx<'a> {
    pub faults: &'a mut Faults,
    pub counters: &'a Counters,
    /// The direction the lines travel.
    pub dir: Direction,
    /// The pair's ordinal (accept order), the first of a line's ordinals.
    pub conn: u64,
    /// The longest line, terminator excluded.
    pub max_line: usize,
    /// Limits the over-long-line warning, shared by all pairs.
    pub warnings: &'a mut RateLimit,
}

impl LineCx<'_> {
    /// Whether lines must be held to be judged: a TCP fault is in force.
    pub fn holding(&self) -> bool {
        self.faults.any(Protocol::Tcp)
    }
}

/// Where one direction's lines stand.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    /// Bytes of the open line that already went out (straight through,
    /// before a fault asked for holding).
    passed: usize,
    /// Bytes of the open line held at the end of the rest, not judged yet.
    pending: usize,
    /// Lines completed on this connection in this direction.
    seen: u64,
    /// Complete lines wait in `pending`, not judged yet: the direction
    /// was at its bound (a judged line is a chunk, and chunks count).
    unjudged: bool,
}

/// Runs `step` on the pipe's line state and the pipe; `otherwise` for a
/// pipe that judges no lines.
fn with_lines<T>(
    pipe: &mut HalfPipe,
    otherwise: T,
    step: impl FnOnce(&mut Lines, &mut HalfPipe) -> T,
) -> T {
    let Some(mut lines) = pipe.lines.take() else {
        return otherwise;
    };
    let result = step(&mut lines, pipe);
    pipe.lines = Some(lines);
    result
}

/// No fault in force: `bytes` go straight through. Counts the complete
/// lines among them and measures the open one; returns how many of them
/// may go (those before a line over `--max-line`, which ends the pair).
pub(super) fn pass(pipe: &mut HalfPipe, bytes: &[u8], now: Millis, lx: &mut LineCx<'_>) -> usize {
    with_lines(pipe, bytes.len(), |lines, pipe| {
        let mut start = 0;
        for nl in memchr_iter(b'\n', bytes) {
            if lines.passed + (nl - start) > lx.max_line {
                return over_long(pipe.shaped_and_rest().0, start, now, lx);
            }
            lines.passed = 0;
            lines.seen += 1;
            count_message(lx);
            start = nl + 1;
        }
        lines.passed += bytes.len() - start;
        if lines.passed > lx.max_line {
            return over_long(pipe.shaped_and_rest().0, start, now, lx);
        }
        bytes.len()
    })
}

/// Faults in force: the last `appended` bytes of the rest are new. Judges
/// every line they complete, in order, while the direction's backlog is
/// under `bound`; the lines past it wait, unjudged, for [`catch_up`].
pub(super) fn judge(
    pipe: &mut HalfPipe,
    appended: usize,
    now: Millis,
    lx: &mut LineCx<'_>,
    bound: usize,
) {
    let rest_at = pipe.rest_at;
    with_lines(pipe, (), |lines, pipe| {
        let (shaped, rest) = pipe.shaped_and_rest();
        lines.pending += appended;
        lines.unjudged = false;
        loop {
            let start = rest.len() - lines.pending;
            let nl = memchr(b'\n', &rest[start..]);
            // The line's length so far, terminator excluded.
            let len = lines.passed + nl.unwrap_or(lines.pending);
            if len > lx.max_line {
                rest.truncate(start);
                lines.pending = 0;
                over_long(shaped, 0, now, lx);
                return;
            }
            let Some(nl) = nl else {
                return; // The open line waits for its newline.
            };
            let backlog = rest.len() - rest_at + shaped.chunks.len() * CHUNK_COST;
            if backlog >= bound && !shaped.chunks.is_empty() {
                // Judged, the line would be one more chunk past the
                // bound: it waits until held chunks go out (and some
                // will: one is held).
                lines.unjudged = true;
                return;
            }
            let ordinal = lines.seen;
            lines.seen += 1;
            lines.pending -= nl + 1;
            lines.passed = 0;
            count_message(lx);
            if !apply(shaped, rest, (start, nl + 1), ordinal, now, lx) {
                // The line ended the direction: `apply` dropped what followed.
                lines.pending = 0;
                return;
            }
        }
    })
}

/// Before a pump moves bytes: judges the lines left unjudged at the bound,
/// as far as the bound now lets; then, once the source's FIN is in and
/// every complete line is judged, the open line as the last one.
pub(super) fn catch_up(pipe: &mut HalfPipe, now: Millis, lx: &mut LineCx<'_>, bound: usize) {
    let unjudged = |pipe: &HalfPipe| pipe.lines.as_ref().is_some_and(|l| l.unjudged);
    if unjudged(pipe) {
        judge(pipe, 0, now, lx, bound);
    }
    if pipe.source_done && !unjudged(pipe) {
        judge_last(pipe, now, lx);
    }
}

/// The source's FIN came after an open line held for judging: it is
/// judged as the last line, as section 3 answers one.
fn judge_last(pipe: &mut HalfPipe, now: Millis, lx: &mut LineCx<'_>) {
    with_lines(pipe, (), |lines, pipe| {
        if lines.pending == 0 {
            return;
        }
        let (shaped, rest) = pipe.shaped_and_rest();
        let start = rest.len() - lines.pending;
        let ordinal = lines.seen;
        lines.seen += 1;
        let len = lines.pending;
        lines.pending = 0;
        lines.passed = 0;
        count_message(lx);
        apply(shaped, rest, (start, len), ordinal, now, lx);
    });
}

/// Shutting down: an open line held for judging goes as it is (and so do
/// complete lines still waiting to be judged).
pub(super) fn release_open(pipe: &mut HalfPipe) {
    with_lines(pipe, (), |lines, pipe| {
        if lines.pending > 0 {
            pipe.shaped_and_rest().0.push_chunk(0, lines.pending, None);
            lines.pending = 0;
            lines.unjudged = false;
        }
    });
}

/// Judges the line `rest[start..start + len]` (its `\n` included, if it
/// has one) and does
/// what the verdict says. Whether later lines may follow it.
fn apply(
    shaped: &mut Shaped,
    rest: &mut Vec<u8>,
    (start, len): (usize, usize),
    ordinal: u64,
    now: Millis,
    lx: &mut LineCx<'_>,
) -> bool {
    // `match=` sees the line without its terminator, as section 12 says.
    let line = &rest[start..start + len];
    let text =
        (line.strip_suffix(b"\n")).map_or(line, |text| text.strip_suffix(b"\r").unwrap_or(text));
    let verdict = (lx.faults).judge_message(Protocol::Tcp, lx.dir, [lx.conn, ordinal], text);
    if !verdict.is_clean() {
        lx.counters.add_faults(&verdict.applied);
        debug!(
            "pair {} {}: line {ordinal}: fault {verdict}",
            lx.conn, lx.dir
        );
    }
    // In order: a line never overtakes the one before it.
    let after = shaped.chunks.back().map_or(now, |c| c.at);
    let at = after.max(at_least(now, verdict.delay_ms));
    let faults = AppliedFaults::of(&verdict.applied);
    let end = |shaped: &mut Shaped, rest: &mut Vec<u8>, doom| {
        rest.truncate(start);
        shaped.stopped = Some((ordinal + 1, faults));
        shaped.doom = Some((at, doom));
        shaped.cut = true;
        false
    };
    match verdict.terminal {
        Some(FaultKind::Hang) => {
            rest.truncate(start);
            shaped.stopped = Some((ordinal + 1, faults));
            shaped.shape.hang = true;
            return false;
        }
        Some(FaultKind::Close) => return end(shaped, rest, Doom::Close),
        Some(FaultKind::Reset) => return end(shaped, rest, Doom::Reset),
        _ => {}
    }
    if let Some(seed) = verdict.corrupt {
        // The newline stays, so corrupted lines still split.
        let line = &mut rest[start..start + len];
        let text = line.strip_suffix(b"\n").map_or(len, <[u8]>::len);
        fault::corrupt(&mut line[..text], seed);
    }
    let kept = verdict.truncate.map_or(len, |n| n.min(len));
    shaped.push_lines(at, kept, verdict.dribble, faults);
    if kept < len || verdict.truncate.is_some() {
        rest.truncate(start + kept);
        shaped.cut = true;
        return false;
    }
    if let Some(ms) = verdict.slow_close_ms {
        rest.truncate(start + len);
        shaped.doom = Some((at_least(at, ms), Doom::Close));
        shaped.cut = true;
        return false;
    }
    true
}

/// A client's line is a message (`messages`, and `received N` waits on
/// them).
fn count_message(lx: &LineCx<'_>) {
    if lx.dir == Direction::Up {
        add(&lx.counters.messages, 1);
    }
}

/// A line over `--max-line`: the bytes before it go, then the pair
/// closes. Returns how many of the bytes at hand may still go.
fn over_long(shaped: &mut Shaped, before: usize, now: Millis, lx: &mut LineCx<'_>) -> usize {
    if lx.warnings.allow(now) {
        warn!(
            "pair {} {}: a line over --max-line; closing the pair (further \
             ones are logged at most once a second)",
            lx.conn, lx.dir
        );
    }
    let after = shaped.chunks.back().map_or(now, |c| c.at);
    shaped.doom = Some((after, Doom::Close));
    shaped.cut = true;
    before
}

#[cfg(test)]
mod tests;
