//! One direction of a relayed TCP pair: a half-pipe. No sockets here: it
//! reads and writes through [`Read`] and [`Sink`], so every transition is
//! unit-tested with scripted streams.
//!
//! A pair is two half-pipes, as haproxy's stream is two channels: client
//! to upstream (`up`) and upstream to client (`down`). Each has its own
//! rest buffer and its own shut state:
//!
//! ```text
//!   Flowing ──(source's FIN read)──▶ Draining ──(rest written, FIN sent)──▶ Ended
//!      └───────────(a read or a write fails)──────────▶ Broken (the pair resets)
//! ```
//!
//! * **Flowing**: bytes read from the source go straight to the sink from
//!   the loop's shared buffer; only what the sink would not take is kept
//!   (the *rest*). While the rest waits for a blocked sink the source is
//!   not read: backpressure. A fault that holds bytes (a delay, a
//!   dribble, a line judged) keeps reading only while the direction's
//!   *backlog*, the held bytes and each held chunk's own bookkeeping,
//!   is under the bound (`max_owed`, plus a line in line mode; while a
//!   delay holds a stream, `max_delayed`, since a delay is latency, not
//!   a bandwidth cap): the bound holds whatever the faults keep. A
//!   flowing pipe holds no buffer at all.
//! * **Draining**: the source sent its FIN; the rest is written, then the
//!   FIN is passed on (`shutdown(Write)` on the sink): a FIN reaches the
//!   other side only after the bytes before it.
//! * **Ended**: nothing more to do in this direction; the other one goes
//!   on (a half-close).
//!
//! Until the upstream's connect completes, the `up` pipe has no sink: it
//! reads what the client sends early into its rest, up to the bound.

use std::io::{self, ErrorKind, Read, Write};

use crate::fault;
use crate::journal::AppliedFaults;
use crate::timer::{Millis, at_least};
use crate::write::write_until_blocked;

/// What one chunk of held bytes costs beyond its bytes, as the bound
/// counts it (see [`HalfPipe::backlog`]).
const CHUNK_COST: usize = std::mem::size_of::<Chunk>();
/// Chunk entries an emptied direction keeps room for; a burst's room
/// beyond this goes back once its bytes are out.
const KEEP_CHUNKS: usize = 16;

pub(crate) use pump::{Broken, Doom, Pump, Pumped, READS_PER_PUMP, Sink};

/// One direction of a pair (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HalfPipe {
    /// Bytes read that the sink has not taken yet, from `rest_at` on.
    /// Empty (no allocation) while the pipe flows; within the bound, and
    /// what went out before `rest_at` never longer than what is left.
    rest: Vec<u8>,
    /// Where in `rest` the next unwritten byte is.
    rest_at: usize,
    /// The last write to the sink came up short: wait for it to drain.
    blocked: bool,
    /// The source sent its FIN: nothing more will be read.
    source_done: bool,
    /// Our FIN went to the sink: the direction is over.
    sink_shut: bool,
    /// Faults on this direction, if any (boxed: a plain pair stays small).
    /// In line mode, made when a fault first holds a line.
    shaped: Option<Box<Shaped>>,
    /// Line mode: where this direction's lines stand (a few counts).
    lines: Option<Box<lines::Lines>>,
    /// A plain direction's bulk: its kernel pipe, once it has one.
    #[cfg(target_os = "linux")]
    pipe: Option<Box<crate::relay::splice::Pipe>>,
    /// No pipe could be opened: the direction copies.
    #[cfg(target_os = "linux")]
    splice_refused: bool,
}

impl HalfPipe {
    /// A direction the faults `shape` (stream mode); a plain one if none
    /// applies.
    #[cfg(test)]
    pub fn shaped(shape: Shape) -> HalfPipe {
        HalfPipe::new(shape, false)
    }

    /// A direction the faults `shape` (stream mode), or with `lines`, one
    /// whose lines are judged one by one (line mode). Plain, with no
    /// state beyond the rest, when neither applies.
    pub fn new(shape: Shape, lines: bool) -> HalfPipe {
        let shaped = (shape != Shape::default()).then(|| Box::new(Shaped::new(shape, lines)));
        HalfPipe {
            shaped,
            lines: lines.then(Box::default),
            ..HalfPipe::default()
        }
    }

    /// Stream mode: the faults `shape` from now on (a named endpoint's
    /// toxics changed, SPEC 14), acting from the next bytes read; bytes
    /// held for a delay that shrank or went go at once, a `truncate`
    /// counts from now. Line mode keeps its judged lines as they are.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    pub fn reshape(&mut self, mut shape: Shape) {
        if self.lines.is_some() {
            return;
        }
        let held = self.held();
        let shaped = match &mut self.shaped {
            Some(shaped) => shaped,
            None if shape == Shape::default() => return,
            None => self
                .shaped
                .insert(Box::new(Shaped::new(Shape::default(), false))),
        };
        if shaped.shape.truncate.is_none() {
            shape.truncate = shape.truncate.map(|n| shaped.taken + n);
        }
        let old_spread = shaped.shape.jitter.map_or(0, |range| range.spread_ms);
        let (had_chunks, old_delay) = (shaped.uses_chunks(), shaped.shape.delay_ms);
        let old_timeout = shaped.shape.toxics.timeout_ms;
        shaped.shape = shape;
        match (old_timeout, shaped.shape.toxics.timeout_ms) {
            // As toxiproxy's: a timeout taken away closes what it held.
            (Some(_), None) => shaped.doom = Some((0, Doom::Close)),
            // A changed one counts from now.
            (old, new) if old != new => shaped.clocks.restart_timeout(),
            _ => {}
        }
        match (had_chunks, shaped.uses_chunks()) {
            // What is held already goes as it would have; later bytes wait.
            (false, true) if held > 0 => shaped.push_chunk(0, held, None),
            // No delay any more: everything held goes now.
            (true, false) => shaped.chunks.clear(),
            (true, true) if shaped.shape.longest_delay() < old_delay.saturating_add(old_spread) => {
                shaped.chunks.iter_mut().for_each(|chunk| chunk.at = 0);
            }
            _ => {}
        }
    }

    /// Whether this direction's lines are judged one by one (line mode).
    pub fn judges_lines(&self) -> bool {
        self.lines.is_some()
    }

    /// The faults' state, made now if this is the first time a fault
    /// needs it (line mode): bytes held already go first, as they are.
    /// With it, the rest.
    fn shaped_and_rest(&mut self) -> (&mut Shaped, &mut Vec<u8>) {
        let held = self.held();
        let in_lines = self.lines.is_some();
        let shaped = self.shaped.get_or_insert_with(|| {
            let mut shaped = Shaped::new(Shape::default(), in_lines);
            if held > 0 {
                shaped.push_chunk(0, held, None);
            }
            Box::new(shaped)
        });
        (shaped, &mut self.rest)
    }

    /// Bytes held for the sink.
    pub fn held(&self) -> usize {
        self.rest.len() - self.rest_at
    }

    /// What the direction holds for the sink in memory: the bytes, and
    /// for each chunk of them its own bookkeeping (a chunk per held line
    /// in line mode: short lines would otherwise hold many times their
    /// bytes). The bound counts this, so it holds whatever the faults do.
    pub fn backlog(&self) -> usize {
        let chunks = self.shaped.as_ref().map_or(0, |s| s.chunks.len());
        self.held() + chunks * CHUNK_COST
    }

    /// What the direction may hold ([`backlog`](HalfPipe::backlog))
    /// before its source is not read: the pump's bound, larger while a
    /// delay holds the bytes of a stream (a delay is latency, not a
    /// bandwidth cap: the direction reads on while they wait, up to
    /// `--max-delayed`). A dribble alone or judged lines keep `--max-owed`.
    fn bound(&self, cx: &Pump<'_>) -> usize {
        let delayed =
            self.lines.is_none() && self.shaped.as_ref().is_some_and(|s| s.shape.delays());
        cx.bound(delayed)
    }

    /// Whether the direction is over: the FIN was passed on.
    pub fn ended(&self) -> bool {
        self.sink_shut
    }

    /// Whether the source's FIN was taken (or a shutdown stopped taking):
    /// the source is not read again, so a reset it sends later shows only
    /// as its socket's error.
    pub fn source_ended(&self) -> bool {
        self.source_done
    }

    /// Whether a `hang` fault holds this direction: read and discarded,
    /// no FIN passed on.
    pub fn hangs(&self) -> bool {
        self.shaped.as_ref().is_some_and(|s| s.shape.hang)
    }

    /// Whether `WRITABLE` interest on the sink is wanted: exactly while a
    /// write to it came up short.
    pub fn wants_writable(&self) -> bool {
        self.blocked
    }

    /// When a fault's clock next lets this direction move (a delayed byte
    /// comes due, the next dribbled piece, a slow close), if it waits on
    /// one. The pair pumps it again then.
    pub fn wake_at(&self) -> Option<Millis> {
        let shaped = self.shaped.as_ref()?;
        if self.sink_shut || self.blocked {
            return None;
        }
        let quiet = shaped.clocks.quiet_until();
        if self.held() == 0 {
            let ends = shaped.doom.map(|(at, _)| at).or(shaped.fin_at);
            return [ends, quiet].into_iter().flatten().min();
        }
        let (at, pace) = match shaped.uses_chunks() {
            true => shaped
                .chunks
                .front()
                .map(|c| (c.at, c.pace.or(shaped.shape.dribble)))?,
            false if shaped.shape.dribble.is_none() && !shaped.shape.toxics.paces() => {
                return quiet;
            }
            false => (0, shaped.shape.dribble),
        };
        let at = match pace {
            Some(_) => at.max(shaped.next_piece_at),
            None => at,
        };
        let at = at.max(shaped.clocks.next_at(&shaped.shape.toxics));
        Some(quiet.map_or(at, |quiet| quiet.min(at)))
    }

    /// Takes nothing more from the source (shutting down): what is held
    /// goes out, then the FIN.
    pub fn finish(&mut self) {
        self.source_done = true;
        lines::release_open(self);
        // A hang holds the FIN back from the peers, not from a shutdown.
        if let Some(shaped) = self.shaped.as_deref_mut() {
            shaped.shape.hang = false;
        }
    }

    /// Whether nothing more will be taken from the source.
    fn taking_done(&self) -> bool {
        self.source_done || self.shaped.as_ref().is_some_and(|s| s.cut)
    }

    /// Moves bytes from `source` to `sink` until one of them blocks, the
    /// read budget runs out, or the FIN has been passed on. `sink` is
    /// `None` while it is not connected yet: bytes read are held.
    pub fn pump<S: Sink>(
        &mut self,
        source: &mut impl Read,
        mut sink: Option<&mut S>,
        cx: &mut Pump<'_>,
    ) -> Result<Pumped, Broken> {
        if self.sink_shut {
            return Ok(Pumped::Ended);
        }
        if let Some(shaped) = self.shaped.as_deref_mut() {
            shaped.clocks.start(&shaped.shape.toxics, cx.now);
        }
        let mut reads = 0;
        loop {
            let bound = self.bound(cx);
            if let Some(lx) = cx.lines.as_mut() {
                lines::catch_up(self, cx.now, lx, bound);
            }
            if let Some(sink) = sink.as_deref_mut() {
                if let Some(over) = self.drain_into(sink, cx)? {
                    return Ok(over);
                }
            }
            if self.taking_done() {
                return Ok(Pumped::Waiting); // The FIN waits for the sink.
            }
            let room = bound.saturating_sub(self.backlog());
            if room == 0 {
                // Full: backpressure. A delay or a dribble at the bound
                // reads again only as its held bytes go out.
                return Ok(Pumped::Waiting);
            }
            if reads == READS_PER_PUMP {
                return Ok(Pumped::StillReady);
            }
            reads += 1;
            let len = room.min(cx.buf.len());
            let n = match source.read(&mut cx.buf[..len]) {
                Ok(n) => n,
                // Drained: the source's next bytes bring a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Pumped::Waiting),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Broken::Source(e)),
            };
            if n == 0 {
                // A last line without its newline is a line too: the
                // loop's catch-up judges it.
                self.source_done = true;
                continue;
            }
            cx.read += n as u64;
            if self.pass_on(n, sink.as_deref_mut(), cx)? {
                return Ok(Pumped::Waiting); // The sink blocked.
            }
        }
    }

    /// Writes to `sink` what may go now; then, with nothing held, a fault
    /// that ends the pair or the FIN. `Some` when this pump is over.
    fn drain_into(
        &mut self,
        sink: &mut impl Sink,
        cx: &mut Pump<'_>,
    ) -> Result<Option<Pumped>, Broken> {
        self.flush(sink, cx)?;
        if self.blocked {
            return Ok(Some(Pumped::Waiting));
        }
        let quiet = self.shaped.as_ref().and_then(|s| s.clocks.quiet_until());
        if quiet.is_some_and(|at| at <= cx.now) {
            return Ok(Some(Pumped::Doom(Doom::Close))); // A timeout's end.
        }
        if self.held() > 0 {
            return Ok(None);
        }
        if let Some((msg, faults)) = self.shaped.as_mut().and_then(|s| s.stopped.take()) {
            if let Some(tap) = cx.tap.as_mut() {
                tap.stopped(msg, faults);
            }
        }
        if let Some((at, doom)) = self.shaped.as_ref().and_then(|s| s.doom) {
            return Ok(Some(match at <= cx.now {
                true => Pumped::Doom(doom),
                false => Pumped::Waiting,
            }));
        }
        match self.taking_done() {
            true => self.pass_fin(sink, cx.now).map(Some),
            false => Ok(None),
        }
    }

    /// The `n` bytes just read into the buffer: what the faults and the
    /// lines make of them, written straight to `sink` when nothing holds
    /// them, and only what it would not take kept. Whether the sink
    /// blocked.
    fn pass_on<S: Sink>(
        &mut self,
        n: usize,
        sink: Option<&mut S>,
        cx: &mut Pump<'_>,
    ) -> Result<bool, Broken> {
        let mut kept = self.take(&mut cx.buf[..n], cx.now);
        let holding = cx.lines.as_ref().is_some_and(LineCx::holding);
        let straight = self.held() == 0 && !holding && self.passes_straight();
        let bound = self.bound(cx);
        if let Some(lx) = cx.lines.as_mut() {
            if !straight {
                // Held until each line is complete and judged (what was
                // held before goes first, as it is).
                let (_, rest) = self.shaped_and_rest();
                rest.extend_from_slice(&cx.buf[..kept]);
                lines::judge(self, kept, cx.now, lx, bound);
                return Ok(false);
            }
            kept = lines::pass(self, &cx.buf[..kept], cx.now, lx);
        }
        let connected = sink.is_some();
        let written = match sink {
            Some(sink) if straight => write_some(sink, &cx.buf[..kept]).map_err(Broken::Sink)?,
            _ => 0,
        };
        cx.written += written as u64;
        if let Some(tap) = cx.tap.as_mut().filter(|_| written > 0) {
            tap.written(&cx.buf[..written], AppliedFaults::default());
        }
        // Only what the sink would not take is copied.
        self.rest.extend_from_slice(&cx.buf[written..kept]);
        if let Some(shaped) = self.shaped.as_deref_mut().filter(|s| s.uses_chunks()) {
            // Line mode: a line that passed may go as soon as the sink
            // takes it.
            if straight && kept > written {
                shaped.push_chunk(cx.now, kept - written, None);
            }
        }
        self.blocked = straight && written < kept && connected;
        Ok(self.blocked)
    }

    /// Whether bytes just read may go straight to the sink: no fault
    /// holds them and nothing is waiting in chunks.
    fn passes_straight(&self) -> bool {
        self.shaped.as_ref().is_none_or(|s| {
            let plain = Shape {
                truncate: None,
                corrupt: None,
                ..s.shape.clone()
            };
            plain == Shape::default() && s.chunks.is_empty()
        })
    }

    /// Applies the faults to `bytes` just read at `now`: how many of them
    /// to keep (`hang` keeps none, `truncate` stops at its count), the
    /// kept ones corrupted if so asked, their release time noted.
    fn take(&mut self, bytes: &mut [u8], now: Millis) -> usize {
        let Some(shaped) = self.shaped.as_deref_mut() else {
            return bytes.len();
        };
        let shape = &shaped.shape;
        if shape.hang {
            return 0;
        }
        if shape.toxics.discards() {
            let doomed = shaped.doom.is_some();
            if let Some(doom) = shaped.clocks.arrived(&shape.toxics, now, doomed) {
                shaped.doom = Some(doom);
            }
            return 0;
        }
        let mut kept = bytes.len();
        if let Some(limit) = shape.truncate {
            let left = limit.saturating_sub(shaped.taken);
            kept = kept.min(usize::try_from(left).unwrap_or(usize::MAX));
            shaped.cut = shaped.taken + kept as u64 >= limit;
        }
        if let Some(seed) = shape.corrupt {
            fault::corrupt_at(&mut bytes[..kept], seed, shaped.taken);
        }
        shaped.taken += kept as u64;
        if shaped.shape.delays() && kept > 0 {
            let at = shaped.release_at(now);
            shaped.push_chunk(at, kept, None);
        }
        kept
    }

    /// Writes what may go now of the rest to `sink`: all of it, or with
    /// faults, the bytes whose delay is over, a dribbled piece at a time.
    /// Once all is out its memory goes back: a flowing pipe holds none.
    fn flush(&mut self, sink: &mut impl Sink, cx: &mut Pump<'_>) -> Result<(), Broken> {
        // A slicer's writes are pieces of their own; a budget keeps a
        // long backlog of small ones from holding the loop.
        for _ in 0..toxics::PIECES_PER_FLUSH {
            if !self.flush_piece(sink, cx)? {
                break;
            }
        }
        Ok(())
    }

    /// Writes one piece of what may go now (see [`flush`](Self::flush)):
    /// whether another may follow at once.
    fn flush_piece(&mut self, sink: &mut impl Sink, cx: &mut Pump<'_>) -> Result<bool, Broken> {
        let (may_go, pace) = self.may_go(cx.now);
        if may_go == 0 {
            return Ok(false);
        }
        let piece = &self.rest[self.rest_at..self.rest_at + may_go];
        let written = write_some(sink, piece).map_err(Broken::Sink)?;
        cx.written += written as u64;
        // Nothing written journals nothing (`written_held` of no bytes).
        if let Some(tap) = cx.tap.as_mut() {
            let shaped = self.shaped.as_deref().filter(|s| s.in_lines);
            let chunks = shaped.into_iter().flat_map(|s| &s.chunks);
            tap.written_held(&piece[..written], chunks.map(|c| (c.len, c.faults)));
        }
        self.rest_at += written;
        self.blocked = written < may_go;
        if let Some(shaped) = self.shaped.as_deref_mut() {
            shaped.sent(written, pace, cx.now);
        }
        if self.held() == 0 {
            self.rest = Vec::new();
            self.rest_at = 0;
            if let Some(shaped) = self.shaped.as_deref_mut() {
                shaped.chunks.shrink_to(KEEP_CHUNKS);
            }
        } else if self.rest_at >= self.held() {
            // A delay or a dribble may never let the rest run dry: drop
            // what went out once it is as long as what is left (a copy
            // of the held bytes per as many written, no more), so the
            // rest is at most twice what is held, not all ever relayed.
            self.rest.drain(..self.rest_at);
            self.rest_at = 0;
        }
        Ok(!self.blocked && self.held() > 0)
    }

    /// How many held bytes may be written at `now`, and the dribble that
    /// paces them, if any.
    fn may_go(&self, now: Millis) -> (usize, Option<(u32, u64)>) {
        let held = self.held();
        let Some(shaped) = self.shaped.as_deref() else {
            return (held, None);
        };
        let (due, pace) = match shaped.chunks.front() {
            Some(front) => {
                let same = |c: &&Chunk| c.at <= now && c.pace == front.pace;
                let due = shaped.chunks.iter().take_while(same).map(|c| c.len).sum();
                (due, front.pace.or(shaped.shape.dribble))
            }
            None if shaped.uses_chunks() => (0, None),
            None => (held, shaped.shape.dribble),
        };
        let due = match pace {
            Some(_) if now < shaped.next_piece_at => 0,
            Some((bytes, _)) => due.min(bytes as usize),
            None => due,
        };
        (shaped.clocks.allow(&shaped.shape.toxics, due, now), pace)
    }

    /// The source's FIN (or a truncate's end) reached the sink's turn:
    /// send it, unless a fault holds it.
    fn pass_fin(&mut self, sink: &mut impl Sink, now: Millis) -> Result<Pumped, Broken> {
        let mut cut = false;
        if let Some(shaped) = self.shaped.as_deref_mut() {
            if shaped.shape.hang {
                return Ok(Pumped::Waiting); // Hanging: never a FIN.
            }
            if shaped.shape.toxics.timeout_ms.is_some() {
                // As toxiproxy's: the stream's end closes the connection.
                return Ok(Pumped::Doom(Doom::Close));
            }
            if let Some(ms) = shaped.shape.slow_close_ms {
                let fin_at = *shaped.fin_at.get_or_insert(at_least(now, ms));
                if now < fin_at {
                    return Ok(Pumped::Waiting);
                }
            }
            cut = shaped.cut;
        }
        sink.shutdown_write().map_err(Broken::Sink)?;
        self.sink_shut = true;
        Ok(if cut { Pumped::Cut } else { Pumped::Ended })
    }
}

/// Writes as much of `bytes` as `sink` takes now, through the crate's one
/// write loop: the count written, short when the sink blocked (the rest
/// waits for its writable event).
fn write_some(sink: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let (written, blocked) = write_until_blocked(sink, bytes);
    blocked.map(|_| written)
}

mod lines;
mod pump;
mod shaped;
/// A plain direction's bulk goes by `splice(2)` on Linux; elsewhere every
/// direction copies.
#[cfg_attr(not(target_os = "linux"), path = "half/copying.rs")]
mod spliced;
mod toxics;

pub(crate) use lines::LineCx;
pub(crate) use shaped::Shape;
use shaped::{Chunk, Shaped};
pub(crate) use toxics::Toxics;

#[cfg(test)]
pub(super) mod tests;
