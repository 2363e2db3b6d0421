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

use std::io::{self, ErrorKind, Read, Write};

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
    /// Blocked on a socket: the source has nothing, or the sink takes
    /// nothing now (then [`HalfPipe::wants_writable`] says so). An event
    /// continues it.
    Waiting,
    /// The read budget ran out with input perhaps left: pump it again next
    /// turn, since no event will report it.
    StillReady,
    /// The source's FIN was passed on: this direction is over.
    Ended,
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
    pub fn new(buf: &'a mut [u8], max_owed: usize) -> Pump<'a> {
        Pump {
            buf,
            max_owed,
            read: 0,
            written: 0,
        }
    }
}

/// One direction of a pair (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HalfPipe {
    /// Bytes read that the sink has not taken yet, from `rest_at` on.
    /// Empty (no allocation) while the pipe flows; at most `max_owed`.
    rest: Vec<u8>,
    /// Where in `rest` the next unwritten byte is.
    rest_at: usize,
    /// The source sent its FIN: nothing more will be read.
    source_done: bool,
    /// Our FIN went to the sink: the direction is over.
    sink_shut: bool,
}

impl HalfPipe {
    /// Bytes held for the sink.
    pub fn held(&self) -> usize {
        self.rest.len() - self.rest_at
    }

    /// Whether the direction is over: the FIN was passed on.
    pub fn ended(&self) -> bool {
        self.sink_shut
    }

    /// Whether `WRITABLE` interest on the sink is wanted: exactly while
    /// bytes wait for it (or the FIN does, behind them).
    pub fn wants_writable(&self) -> bool {
        self.held() > 0
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
                if !self.flush(sink, cx)? {
                    return Ok(Pumped::Waiting);
                }
                if self.source_done {
                    sink.shutdown_write().map_err(Broken::Sink)?;
                    self.sink_shut = true;
                    return Ok(Pumped::Ended);
                }
            }
            if self.source_done {
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
            let written = match sink.as_deref_mut() {
                Some(sink) => write_some(sink, &cx.buf[..n]).map_err(Broken::Sink)?,
                None => 0,
            };
            cx.written += written as u64;
            // Only what the sink would not take is copied.
            self.rest.extend_from_slice(&cx.buf[written..n]);
        }
    }

    /// Writes the rest to `sink`; whether it is all out. Once it is, its
    /// memory goes back: a flowing pipe holds none.
    fn flush(&mut self, sink: &mut impl Sink, cx: &mut Pump<'_>) -> Result<bool, Broken> {
        if self.held() == 0 {
            return Ok(true);
        }
        let written = write_some(sink, &self.rest[self.rest_at..]).map_err(Broken::Sink)?;
        cx.written += written as u64;
        self.rest_at += written;
        if self.held() > 0 {
            return Ok(false);
        }
        self.rest = Vec::new();
        self.rest_at = 0;
        Ok(true)
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
