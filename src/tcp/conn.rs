//! One connection's state machine: bytes in, replies owed, interest wanted,
//! deadline. No sockets here: it reads and writes through [`Stream`], so
//! its every transition is unit-tested with a scripted stream.
//!
//! ```text
//!   Open ──(once: first bytes / line: EOF, line too long / shutdown)──▶ Closing
//!   Closing ──(all owed bytes written)──▶ Lingering   (we shut down writing)
//!   Lingering ──(peer's EOF, or LINGER_MS elapsed)──▶ closed
//! ```
//!
//! * **Open**: reading. In line mode every complete line adds a reply to
//!   what the connection owes. Once it owes `max_owed` bytes it takes no
//!   more lines (the rest of the input waits) and reads nothing more until
//!   the owed bytes drain: backpressure.
//! * **Closing**: no more replies will be made; write what is owed. No
//!   reading: a peer that never reads cannot keep us busy discarding.
//! * **Lingering**: our FIN is sent. Read and discard until the peer
//!   closes, so that closing never meets unread input, which would make
//!   the kernel send a reset that can destroy the reply (RFC 1122
//!   4.2.2.13).
//!
//! The [crate docs](crate#the-life-of-a-connection) tell the same story
//! from the loop's side.

use std::cell::RefCell;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};

use log::warn;

use crate::config::Mode;
use crate::fault::Faults;
use crate::framing::{LineFramer, Piece};
use crate::journal::Journal;
use crate::reply::{Protocol, Replies, Request, Scripted, ask};
use crate::stats::{Counters, add};
use crate::timer::{Millis, RateLimit};
use crate::write::write_until_blocked;
use buffers::Buffers;

/// Reads per connection per turn, so one fast client cannot starve the
/// others (with 64 KiB reads, 1 MiB a turn).
pub const READS_PER_TURN: usize = 16;
/// How long a lingering close waits for the peer's EOF, in milliseconds.
pub const LINGER_MS: Millis = 2_000;
/// A connection's buffers shrink back to this after a burst, so an idle
/// connection keeps little memory.
const KEEP_CAPACITY: usize = 4 * 1024;

/// What a connection needs of a socket. [`mio::net::TcpStream`] in the
/// server; a scripted stream in the tests.
pub(crate) trait Stream: Read + Write {
    /// Sends our FIN: `shutdown(Write)`.
    fn shutdown_write(&self) -> io::Result<()>;
    /// The peer's address, for the log.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        mio::net::TcpStream::peer_addr(self)
    }
}

/// What a connection's transitions need from the loop, and nothing more.
pub(crate) struct Ctx<'a> {
    /// The turn's clock reading.
    pub now: Millis,
    pub mode: Mode,
    /// Reading pauses while more reply bytes than this are owed.
    pub max_owed: usize,
    /// The loop's one read buffer.
    pub buf: &'a mut [u8],
    pub replies: &'a mut Replies,
    pub counters: &'a Counters,
    /// Limits the over-long-line warning, shared by all connections.
    pub warnings: &'a mut RateLimit,
    /// The faults in force.
    pub faults: &'a mut Faults,
    /// The journal, if there is one: then every reply goes through the
    /// steps, to be journaled when it leaves.
    pub journal: Option<&'a RefCell<Journal>>,
}

/// Where a connection is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    Closing,
    Lingering,
    /// The `hang` fault: no replies, no close; input is read and discarded
    /// until the peer or the idle timeout ends it.
    Hanging,
}

/// Why a connection is to be closed now.
#[derive(Debug)]
pub(crate) enum Close {
    /// The exchange ended normally.
    Done,
    /// The socket failed (reset by peer, and the like).
    Failed(io::Error),
    /// The `reset` fault: close with a reset (RST).
    Reset,
}

/// How far [`Connection::advance`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Advance {
    /// Blocked on the socket: the next readiness event continues.
    Waiting,
    /// The read budget ran out with input perhaps left: serve it again
    /// next turn, since no event will report it.
    StillReady,
}

/// One accepted client. Kept small: an idle connection with the fixed
/// reply is this struct and nothing else.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Serial number: tells this connection from an earlier one that had
    /// the same slab key, for timer entries and the still-ready list.
    pub id: u32,
    phase: Phase,
    /// Messages taken so far: the ordinal of the last one.
    messages: u32,
    /// The last flush stopped on `WouldBlock` with bytes left to write.
    write_blocked: bool,
    /// Reading is paused by backpressure (owed bytes at the bound).
    read_paused: bool,
    /// The peer shut down its writing side.
    peer_eof: bool,
    /// Fixed reply: bytes of the reply pattern owed, not yet written.
    /// Bounded by the owed-bytes bound plus one reply.
    owed: u32,
    /// Fixed reply: where in the pattern the next owed byte is.
    pattern_at: u32,
    /// Line mode: what the stream's open line looks like.
    framer: LineFramer,
    /// When bytes last moved, in or out; in `Lingering`, when lingering
    /// began.
    last_active: Millis,
    /// Buffers, allocated only while needed (see [`Buffers`]).
    buffers: Option<Box<Buffers>>,
}

impl Connection {
    /// A new connection at `now`. `custom_peer`: the peer's address when a
    /// custom responder makes the replies (it is given the peer), `None`
    /// for the fixed reply.
    pub fn new(
        id: u32,
        max_line: usize,
        now: Millis,
        custom_peer: Option<SocketAddr>,
    ) -> Connection {
        Connection {
            id,
            phase: Phase::Open,
            messages: 0,
            write_blocked: false,
            read_paused: false,
            peer_eof: false,
            owed: 0,
            pattern_at: 0,
            framer: LineFramer::new(max_line),
            last_active: now,
            buffers: custom_peer.map(|peer| {
                Box::new(Buffers {
                    peer: Some(peer),
                    ..Buffers::default()
                })
            }),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Reply bytes owed and not yet written, those waiting for a fault's
    /// delay included.
    pub fn owed_len(&self) -> usize {
        let own = self
            .buffers
            .as_ref()
            .map_or(0, |b| b.out.len() - b.out_at + b.step_bytes);
        self.owed as usize + own
    }

    /// Whether anything is still to be done before the phase can move on:
    /// bytes owed, or a fault's step waiting.
    fn has_pending(&self) -> bool {
        self.owed_len() > 0 || self.buffers.as_ref().is_some_and(|b| !b.steps.is_empty())
    }

    /// Whether `WRITABLE` interest is wanted: exactly while a write is
    /// blocked with bytes owed. Registered for good, a socket is reported
    /// writable after every read on some platforms, and the loop would
    /// spin (mio #1963); and a reply held back by a delay waits for its
    /// timer, not for the socket.
    pub fn wants_writable(&self) -> bool {
        self.write_blocked
    }

    /// When a fault's delayed step is due: the connection needs a turn
    /// then, with nothing happening on its socket.
    pub fn wake_at(&self) -> Option<Millis> {
        self.buffers.as_ref().and_then(|b| b.wake_at)
    }

    /// When this connection must be closed if nothing happens: the end of
    /// its lingering close, or its idle deadline (`idle_ms` after bytes
    /// last moved; `None`: never idle). A connection waiting for a delayed
    /// reply is not idle.
    pub fn expiry(&self, idle_ms: Option<Millis>) -> Option<Millis> {
        match self.phase {
            Phase::Lingering => Some(self.last_active + LINGER_MS),
            _ if self.wake_at().is_some() => None,
            Phase::Open | Phase::Closing | Phase::Hanging => {
                idle_ms.map(|idle| self.last_active + idle)
            }
        }
    }

    /// The connection's next deadline of any kind: its expiry, or the
    /// moment a delayed step is due.
    pub fn deadline(&self, idle_ms: Option<Millis>) -> Option<Millis> {
        match (self.expiry(idle_ms), self.wake_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Shutting down: take no new requests, finish what is owed, then
    /// close as any connection does (FIN, lingering close).
    pub fn stop(&mut self) {
        if matches!(self.phase, Phase::Open | Phase::Hanging) {
            self.phase = Phase::Closing;
            self.read_paused = false;
            if let Some(buffers) = self.buffers.as_mut() {
                buffers.unread = Vec::new();
            }
        }
    }

    /// Reads what may be read and writes what is owed, looping while one
    /// unblocks the other (draining owed bytes resumes a paused reader).
    /// `readable`: the event said so; a writable-only event reads nothing
    /// unless owed bytes drained.
    pub fn advance(
        &mut self,
        stream: &mut impl Stream,
        readable: bool,
        cx: &mut Ctx<'_>,
    ) -> Result<Advance, Close> {
        let mut budget = READS_PER_TURN;
        let mut may_read = readable;
        loop {
            if may_read && self.reads_wanted() {
                match self.read_until_blocked(stream, &mut budget, cx)? {
                    Reads::Blocked | Reads::Paused => {}
                    Reads::OutOfBudget => return Ok(Advance::StillReady),
                    Reads::Eof => self.on_eof(cx)?,
                }
            }
            self.flush(stream, cx)?;
            if self.has_pending() {
                // The rest waits for a writable event, or a delay's timer.
                return Ok(Advance::Waiting);
            }
            // Everything owed is written.
            may_read = match self.phase {
                Phase::Closing if self.peer_eof => return Err(Close::Done),
                Phase::Closing => {
                    stream.shutdown_write().map_err(Close::Failed)?;
                    self.phase = Phase::Lingering;
                    self.last_active = cx.now;
                    true
                }
                // Backpressure lifts: nothing will report the input we left
                // unread, so read it now.
                Phase::Open if self.read_paused => {
                    self.read_paused = false;
                    true
                }
                _ => return Ok(Advance::Waiting),
            };
        }
    }

    /// Reading is wanted while Open and not paused, and while Lingering
    /// or Hanging (to discard).
    fn reads_wanted(&self) -> bool {
        match self.phase {
            Phase::Open => !self.read_paused,
            Phase::Closing => false,
            Phase::Lingering | Phase::Hanging => true,
        }
    }

    /// Takes input until `WouldBlock`, end of stream, backpressure, a phase
    /// that wants no more, or the end of the budget. Input left over from
    /// an earlier read goes first.
    fn read_until_blocked(
        &mut self,
        stream: &mut impl Stream,
        budget: &mut usize,
        cx: &mut Ctx<'_>,
    ) -> Result<Reads, Close> {
        while self.reads_wanted() {
            if self.phase == Phase::Open && self.owed_len() >= cx.max_owed {
                self.read_paused = true;
                return Ok(Reads::Paused);
            }
            if self.phase == Phase::Open && self.has_unread() {
                self.take_unread(stream, cx);
                continue;
            }
            if *budget == 0 {
                return Ok(Reads::OutOfBudget);
            }
            *budget -= 1;
            let n = match stream.read(cx.buf) {
                Ok(0) => return Ok(Reads::Eof),
                Ok(n) => n,
                // Drained: the next bytes bring a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Reads::Blocked),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Close::Failed(e)),
            };
            add(&cx.counters.bytes_in, n as u64);
            self.last_active = cx.now;
            if self.phase == Phase::Open {
                self.take_read(stream, n, cx);
            } // Lingering or Hanging: input is read only to be discarded.
        }
        Ok(Reads::Blocked)
    }

    /// Frames the `n` bytes just read into the shared buffer; what the
    /// owed-bytes bound leaves untaken is kept for later.
    fn take_read(&mut self, stream: &impl Stream, n: usize, cx: &mut Ctx<'_>) {
        let buf = std::mem::take(&mut cx.buf);
        let used = self.take(stream, &buf[..n], cx);
        if used < n {
            self.buffers().unread.extend_from_slice(&buf[used..n]);
        }
        cx.buf = buf;
    }

    /// Frames input kept from an earlier read.
    fn take_unread(&mut self, stream: &impl Stream, cx: &mut Ctx<'_>) {
        let buffers = self.buffers();
        let unread = std::mem::take(&mut buffers.unread);
        let used = self.take(stream, &unread, cx);
        let mut unread = unread;
        unread.drain(..used);
        let buffers = self.buffers();
        buffers.unread = unread;
        buffers.unread.shrink_to(KEEP_CAPACITY);
        self.drop_idle_buffers();
    }

    /// Takes messages from `input`; returns how many bytes were used.
    fn take(&mut self, stream: &impl Stream, input: &[u8], cx: &mut Ctx<'_>) -> usize {
        match cx.mode {
            // Once mode: the first bytes are the message; answer, then close.
            Mode::Once => {
                self.owe_reply(Message::Input(input), false, b"", cx);
                if self.phase == Phase::Open {
                    self.phase = Phase::Closing;
                }
                input.len()
            }
            // A fault that ends the connection discards the rest.
            Mode::Line => match self.take_lines(input, cx) {
                Ok(_) if self.phase != Phase::Open => input.len(),
                Ok(used) => used,
                Err(TooLong) => {
                    if cx.warnings.allow(cx.now) {
                        warn!(
                            "{}: line over --max-line {}; closing after the replies owed \
                             (further warnings at most once a second)",
                            stream
                                .peer_addr()
                                .map_or_else(|_| "unknown peer".into(), |a| a.to_string()),
                            self.framer.max_line()
                        );
                    }
                    self.phase = Phase::Closing;
                    input.len()
                }
            },
        }
    }

    /// Line mode: answers the complete lines in `input` until the input
    /// ends or the owed bytes reach their bound; returns how many bytes
    /// were used. Keeps the open line's bytes only if a custom responder
    /// will want them.
    fn take_lines(&mut self, input: &[u8], cx: &mut Ctx<'_>) -> Result<usize, TooLong> {
        let mut used = 0;
        while used < input.len() && self.owed_len() < cx.max_owed && self.phase == Phase::Open {
            let (n, piece) = self.framer.next(&input[used..]);
            used += n;
            match piece {
                Piece::Line(end) => {
                    let custom = matches!(cx.replies, Replies::Custom { .. });
                    // The terminator as it came, for a journal (which
                    // makes replies come from a responder).
                    let ending = match custom {
                        true => journal::line_ending(&input[..used], end.carried_cr),
                        false => b"",
                    };
                    // A custom responder needs the line in one piece: join
                    // the bytes carried from earlier reads. Otherwise the
                    // whole line is in this input, or the reply ignores it.
                    let message = if custom && end.carried > 0 {
                        let line = &mut self.buffers().line;
                        if end.carried_cr {
                            line.pop();
                        }
                        line.extend_from_slice(end.tail);
                        Message::Buffered
                    } else {
                        Message::Input(end.tail)
                    };
                    self.owe_reply(message, true, ending, cx);
                }
                Piece::Partial(bytes) => {
                    if let Replies::Custom { .. } = cx.replies {
                        self.buffers().line.extend_from_slice(bytes);
                    }
                }
                Piece::TooLong => return Err(TooLong),
            }
        }
        Ok(used)
    }

    /// The peer shut down writing.
    fn on_eof(&mut self, cx: &mut Ctx<'_>) -> Result<(), Close> {
        self.peer_eof = true;
        match (self.phase, cx.mode) {
            // Nothing was sent, so nothing is owed; or lingering (or a
            // hang) is over.
            (Phase::Open, Mode::Once) | (Phase::Lingering | Phase::Hanging, _) => Err(Close::Done),
            (Phase::Open, Mode::Line) => {
                // A final line without '\n' is still a line.
                if let Ok(Some(_)) = self.framer.finish() {
                    self.owe_reply(Message::Buffered, true, b"", cx);
                }
                self.phase = Phase::Closing;
                Ok(())
            }
            (Phase::Closing, _) => Ok(()),
        }
    }

    /// Counts one message and owes its reply: with the fixed reply one
    /// more unit of the pattern, with a custom one whatever the responder
    /// says (plus `\n` in line mode), queued on the connection. `ending`:
    /// the line's terminator as it came, for the journal.
    fn owe_reply(&mut self, message: Message<'_>, newline: bool, ending: &[u8], cx: &mut Ctx<'_>) {
        add(&cx.counters.messages, 1);
        self.messages = self.messages.wrapping_add(1);
        if cx.faults.any(Protocol::Tcp) || self.has_steps() {
            self.journal_in(message, ending, self.journal_entry(cx));
            return self.owe_faulty_reply(message, newline, cx);
        }
        let (responder, scratch) = match cx.replies {
            Replies::Fixed(pattern) => {
                self.owed += pattern.unit() as u32;
                return;
            }
            Replies::Custom { responder, scratch } => (responder, scratch),
        };
        let entry = journal::Entry::of(cx.journal, cx.now, self.id);
        self.journal_in(message, ending, entry);
        let buffers = self.buffers();
        let reply = respond(buffers, message, responder, scratch);
        let start = buffers.out.len();
        append_reply(&mut buffers.out, reply, newline);
        // Written with what is owed before it, in this turn's flush.
        self.journal_out(start, entry);
    }

    /// Writes what is owed until it is all out, the socket would block,
    /// or a fault's step must wait: the fixed reply's count, a responder's
    /// bytes, then the steps. A short write is progress, not an error: the
    /// rest waits for the next writable event.
    fn flush(&mut self, stream: &mut impl Stream, cx: &Ctx<'_>) -> Result<(), Close> {
        self.write_blocked = self.flush_owed(stream, cx).map_err(Close::Failed)?;
        if self.write_blocked {
            return Ok(());
        }
        match self.buffers.take() {
            Some(mut buffers) if !buffers.steps.is_empty() => {
                let result = self.flush_steps(&mut buffers, stream, cx);
                self.buffers = Some(buffers);
                result
            }
            buffers => {
                self.buffers = buffers;
                Ok(())
            }
        }
    }

    /// Writes the fixed reply's owed count and a responder's owed bytes;
    /// returns whether the socket blocked.
    fn flush_owed(&mut self, stream: &mut impl Stream, cx: &Ctx<'_>) -> io::Result<bool> {
        if let Replies::Fixed(pattern) = &*cx.replies {
            // The owed bytes are the next `owed` bytes of the periodic
            // pattern, starting at `pattern_at`; write them in slices.
            while self.owed > 0 {
                let start = self.pattern_at as usize;
                let end = pattern.bytes().len().min(start + self.owed as usize);
                let slice = &pattern.bytes()[start..end];
                let (n, blocked) = self.write_owed(stream, slice, cx.now, cx.counters)?;
                self.owed -= n as u32;
                self.pattern_at = ((start + n) % pattern.bytes().len()) as u32;
                if blocked {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let Some(mut buffers) = self.buffers.take() else {
            return Ok(false);
        };
        let result = self.write_owed(stream, &buffers.out[buffers.out_at..], cx.now, cx.counters);
        if let Ok((n, _)) = result {
            buffers.out_at += n;
        }
        if buffers.out_at == buffers.out.len() {
            buffers.out.clear();
            buffers.out_at = 0;
            buffers.out.shrink_to(KEEP_CAPACITY);
            buffers
                .line
                .shrink_to(KEEP_CAPACITY.max(buffers.line.len()));
        }
        self.buffers = Some(buffers);
        result.map(|(_, blocked)| blocked)
    }

    /// Writes `bytes` until all are out or the socket would block; returns
    /// how many were written and whether it blocked. Bytes written before
    /// an error are counted too.
    fn write_owed(
        &mut self,
        stream: &mut impl Stream,
        bytes: &[u8],
        now: Millis,
        counters: &Counters,
    ) -> io::Result<(usize, bool)> {
        let (written, result) = write_until_blocked(stream, bytes);
        if written > 0 {
            add(&counters.bytes_out, written as u64);
            self.last_active = now;
        }
        result.map(|blocked| (written, blocked))
    }
}

/// Asks `responder` for the reply to `message` (whose bytes may be the
/// open line in `buffers`); the reply, if any, is in `scratch`. The open
/// line is cleared: it was this message.
fn respond<'s>(
    buffers: &mut Buffers,
    message: Message<'_>,
    responder: &mut Scripted,
    scratch: &'s mut Vec<u8>,
) -> Option<&'s [u8]> {
    let request = Request {
        protocol: Protocol::Tcp,
        peer: buffers.peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        message: match message {
            Message::Input(bytes) => bytes,
            Message::Buffered => &buffers.line,
        },
    };
    let reply = ask(responder, scratch, &request);
    buffers.line.clear();
    reply
}

/// Appends a responder's reply to `out`, with `\n` in line mode.
fn append_reply(out: &mut Vec<u8>, reply: Option<&[u8]>, newline: bool) {
    if let Some(reply) = reply {
        out.extend_from_slice(reply);
        if newline {
            out.push(b'\n');
        }
    }
}

/// Where a message's bytes are.
#[derive(Clone, Copy)]
enum Message<'a> {
    /// In the input just taken.
    Input(&'a [u8]),
    /// In the connection's line buffer (a line that spanned reads).
    Buffered,
}

/// A line exceeded `max_line`.
struct TooLong;

/// How a run of reads ended.
enum Reads {
    /// `WouldBlock`, or the phase wants no more input.
    Blocked,
    /// Backpressure: the owed bytes reached their bound.
    Paused,
    /// The peer shut down writing.
    Eof,
    /// The budget ran out with input perhaps left.
    OutOfBudget,
}

mod buffers;
mod journal;
mod steps;
#[cfg(test)]
mod tests;
