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
//!   (the *rest*). While a rest is held the source is not read:
//!   backpressure, so the rest never exceeds `max_owed`. A flowing pipe
//!   holds no buffer at all.
//! * **Draining**: the source sent its FIN; the rest is written, then the
//!   FIN is passed on (`shutdown(Write)` on the sink): a FIN reaches the
//!   other side only after the bytes before it.
//! * **Ended**: nothing more to do in this direction; the other one goes
//!   on (a half-close).
//!
//! Until the upstream's connect completes, the `up` pipe has no sink: it
//! reads what the client sends early into its rest, up to the bound.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use crate::fault;
use crate::timer::{Millis, at_least};

/// Reads per half-pipe per pump, so one fast pair cannot starve the others
/// (with 64 KiB reads, 1 MiB a turn), as for an ordinary connection.
pub(crate) const READS_PER_PUMP: usize = crate::tcp::READS_PER_TURN;

/// What a half-pipe needs of the socket it writes to: bytes, and a FIN.
pub(crate) trait Sink: Write {
    /// Sends our FIN: `shutdown(Write)`.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Sink for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// How far one pump got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// Blocked on a socket (the source has nothing, or the sink takes
    /// nothing now: then [`HalfPipe::wants_writable`] says so), or waiting
    /// for a fault's time ([`HalfPipe::wake_at`]). An event continues it.
    Waiting,
    /// The read budget ran out with input perhaps left: pump it again next
    /// turn, since no event will report it.
    StillReady,
    /// The source's FIN was passed on: this direction is over.
    Ended,
    /// A `truncate` fault's bytes are out and the FIN with them: the pair
    /// ends.
    Cut,
}

/// Why a half-pipe cannot go on: the pair is reset.
#[derive(Debug)]
pub(crate) enum Broken {
    /// Reading the source failed: it reset (or worse).
    Source(io::Error),
    /// Writing to the sink failed: it reset, or closed while bytes were
    /// still coming.
    Sink(io::Error),
}

/// What a pump lends a half-pipe and what it learns back.
pub(crate) struct Pump<'a> {
    /// The turn's clock reading.
    pub now: Millis,
    /// The loop's one read buffer.
    pub buf: &'a mut [u8],
    /// Bytes held for the sink at most; past it the source is not read.
    pub max_owed: usize,
    /// Bytes read from the source during this pump.
    pub read: u64,
    /// Bytes written to the sink during this pump.
    pub written: u64,
}

impl<'a> Pump<'a> {
    pub fn new(now: Millis, buf: &'a mut [u8], max_owed: usize) -> Pump<'a> {
        Pump {
            now,
            buf,
            max_owed,
            read: 0,
            written: 0,
        }
    }
}

/// What the faults do to one direction of one pair, judged once when the
/// pair was accepted (SPEC 11, stream mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Every byte is held this long after it arrived (latency).
    pub delay_ms: u64,
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
}

/// A shaped direction's own state: the fault and its clocks.
#[derive(Debug)]
struct Shaped {
    shape: Shape,
    /// The release times of the held bytes, oldest first, as `(at,
    /// bytes)`; kept only with a delay. Bytes read in one millisecond
    /// share an entry, so there are at most `delay_ms + 1` of them.
    chunks: VecDeque<(Millis, usize)>,
    /// Dribble: when the next piece may go.
    next_piece_at: Millis,
    /// Bytes taken from the source so far: a corrupted byte's offset, and
    /// the count `truncate` stops at.
    taken: u64,
    /// The `truncate` count is reached: nothing more is taken.
    cut: bool,
    /// Slow close: when the FIN may go, once it is due.
    fin_at: Option<Millis>,
}

/// One direction of a pair (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HalfPipe {
    /// Bytes read that the sink has not taken yet, from `rest_at` on.
    /// Empty (no allocation) while the pipe flows; at most `max_owed`.
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
    shaped: Option<Box<Shaped>>,
}

impl HalfPipe {
    /// A direction the faults `shape`; a plain one if none applies.
    pub fn shaped(shape: Shape) -> HalfPipe {
        let shaped = (shape != Shape::default()).then(|| {
            Box::new(Shaped {
                shape,
                chunks: VecDeque::new(),
                next_piece_at: 0,
                taken: 0,
                cut: false,
                fin_at: None,
            })
        });
        HalfPipe {
            shaped,
            ..HalfPipe::default()
        }
    }

    /// Bytes held for the sink.
    pub fn held(&self) -> usize {
        self.rest.len() - self.rest_at
    }

    /// Whether the direction is over: the FIN was passed on.
    pub fn ended(&self) -> bool {
        self.sink_shut
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
        if self.held() > 0 {
            let due = shaped.chunks.front().map_or(0, |&(at, _)| at);
            return Some(due.max(shaped.next_piece_at));
        }
        shaped.fin_at
    }

    /// Takes nothing more from the source (shutting down): what is held
    /// goes out, then the FIN.
    pub fn finish(&mut self) {
        self.source_done = true;
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
        let mut reads = 0;
        loop {
            if let Some(sink) = sink.as_deref_mut() {
                self.flush(sink, cx)?;
                if self.blocked {
                    return Ok(Pumped::Waiting);
                }
                if self.held() == 0 && self.taking_done() {
                    return self.pass_fin(sink, cx.now);
                }
            }
            if self.taking_done() {
                return Ok(Pumped::Waiting); // The FIN waits for the sink.
            }
            let room = cx.max_owed - self.held();
            if room == 0 {
                return Ok(Pumped::Waiting); // Full: backpressure.
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
                self.source_done = true;
                continue;
            }
            cx.read += n as u64;
            let kept = self.take(&mut cx.buf[..n], cx.now);
            let straight = self.held() == 0 && self.shaped.is_none();
            let written = match sink.as_deref_mut() {
                Some(sink) if straight => {
                    write_some(sink, &cx.buf[..kept]).map_err(Broken::Sink)?
                }
                _ => 0,
            };
            cx.written += written as u64;
            // Only what the sink would not take is copied.
            self.rest.extend_from_slice(&cx.buf[written..kept]);
            if straight && written < kept && sink.is_some() {
                self.blocked = true;
                return Ok(Pumped::Waiting);
            }
        }
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
        if shape.delay_ms > 0 && kept > 0 {
            let at = at_least(now, shape.delay_ms);
            match shaped.chunks.back_mut() {
                Some((last, len)) if *last == at => *len += kept,
                _ => shaped.chunks.push_back((at, kept)),
            }
        }
        kept
    }

    /// Writes what may go now of the rest to `sink`: all of it, or with
    /// faults, the bytes whose delay is over, a dribbled piece at a time.
    /// Once all is out its memory goes back: a flowing pipe holds none.
    fn flush(&mut self, sink: &mut impl Sink, cx: &mut Pump<'_>) -> Result<(), Broken> {
        let may_go = self.may_go(cx.now);
        if may_go == 0 {
            return Ok(());
        }
        let piece = &self.rest[self.rest_at..self.rest_at + may_go];
        let written = write_some(sink, piece).map_err(Broken::Sink)?;
        cx.written += written as u64;
        self.rest_at += written;
        self.blocked = written < may_go;
        if let Some(shaped) = self.shaped.as_deref_mut() {
            shaped.sent(written, cx.now);
        }
        if self.held() == 0 {
            self.rest = Vec::new();
            self.rest_at = 0;
        }
        Ok(())
    }

    /// How many held bytes may be written at `now`.
    fn may_go(&self, now: Millis) -> usize {
        let held = self.held();
        let Some(shaped) = self.shaped.as_deref() else {
            return held;
        };
        let mut due = if shaped.shape.delay_ms > 0 {
            let ready = shaped.chunks.iter().take_while(|&&(at, _)| at <= now);
            ready.map(|&(_, len)| len).sum()
        } else {
            held
        };
        if let Some((bytes, _)) = shaped.shape.dribble {
            due = match now >= shaped.next_piece_at {
                true => due.min(bytes as usize),
                false => 0,
            };
        }
        due
    }

    /// The source's FIN (or a truncate's end) reached the sink's turn:
    /// send it, unless a fault holds it.
    fn pass_fin(&mut self, sink: &mut impl Sink, now: Millis) -> Result<Pumped, Broken> {
        let mut cut = false;
        if let Some(shaped) = self.shaped.as_deref_mut() {
            if shaped.shape.hang {
                return Ok(Pumped::Waiting); // Hanging: never a FIN.
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

impl Shaped {
    /// `n` held bytes went out at `now`: their release entries go, and a
    /// dribble waits its gap before the next piece.
    fn sent(&mut self, mut n: usize, now: Millis) {
        if n == 0 {
            return;
        }
        if let Some((_, every_ms)) = self.shape.dribble {
            self.next_piece_at = at_least(now, every_ms);
        }
        while n > 0 {
            let Some((_, len)) = self.chunks.front_mut() else {
                return;
            };
            let done = n.min(*len);
            *len -= done;
            n -= done;
            if *len == 0 {
                self.chunks.pop_front();
            }
        }
    }
}

/// Writes as much of `bytes` as `sink` takes now: the count written, which
/// is short when the sink blocked. A short write is progress, not an error.
fn write_some(sink: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < bytes.len() {
        match sink.write(&bytes[at..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            // Full: the rest waits for the sink's writable event.
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests;
