//! One connection's state machine: bytes in, replies owed, interest wanted,
//! deadline. No sockets here: it reads and writes through [`Stream`], so
//! its every transition is unit-tested with a scripted stream and time
//! passed in.
//!
//! ```text
//!   Open ──(once: first bytes / line: line too long, a fault's end / stop)──▶ Closing
//!   Open ──(line: the peer's EOF)──▶ Closing, peer gone
//!   Open ◀──(owed bytes at the bound / drained)──▶ Open, paused
//!   Open ──(the hang fault)──▶ Hanging ──(the peer's EOF, idle timeout)──▶ closed
//!   Closing ──(all owed bytes written)──▶ Lingering   (we shut down writing)
//!   Closing, peer gone ──(all owed bytes written)──▶ closed
//!   Lingering ──(peer's EOF, LINGER_MS of silence, or LINGER_CAP_MS in all)──▶ closed
//! ```
//!
//! * **Open**: reading. In line mode every complete line adds a reply to
//!   what the connection owes. Once it owes `max_owed` bytes it takes no
//!   more lines (the rest of the input waits) and, *paused*, reads nothing
//!   more until the owed bytes drain: backpressure.
//! * **Closing**: no more replies will be made; write what is owed. No
//!   reading: a peer that never reads cannot keep us busy discarding.
//! * **Lingering**: our FIN is sent. Read and discard until the peer
//!   closes, so that closing never meets unread input, which would make
//!   the kernel send a reset that can destroy the reply (RFC 1122
//!   4.2.2.13). A peer that goes quiet for [`LINGER_MS`], or keeps sending
//!   for [`LINGER_CAP_MS`], is closed anyway (nginx's `lingering_timeout`
//!   and `lingering_time`).
//!
//! Whether a write is blocked is not a state of its own: it is "bytes are
//! owed that the socket is due to take", which [`Connection::wants_writable`]
//! reads off what is owed.
//!
//! The [crate docs](crate#the-life-of-a-connection) tell the same story
//! from the loop's side.

use std::cell::RefCell;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};

use log::warn;

use crate::closing::{self, Discarded};
use crate::config::Mode;
use crate::fault::Faults;
use crate::framing::{OpenLine, Piece};
use crate::journal::Journal;
pub(crate) use crate::limits::{LINGER_CAP_MS, LINGER_MS, READS_PER_TURN};
use crate::reply::Replies;
use crate::stats::{Counters, add};
pub(crate) use crate::timer::Stamp;
use crate::timer::{Millis, RateLimit, Wait};
pub(crate) use buffers::Buffers;
pub(crate) use dormant::Dormant;
use write::Message;

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
    /// Longest line in line mode, terminator excluded.
    pub max_line: usize,
    /// Reading pauses while a connection holds this many bytes for its
    /// peer (see [`Connection::backlog`]).
    pub max_owed: usize,
    /// The loop's one read buffer.
    pub buf: &'a mut [u8],
    pub replies: &'a mut Replies,
    pub counters: &'a Counters,
    /// Limits the over-long-line warning, shared by all connections.
    pub warnings: &'a mut RateLimit,
    /// The faults in force.
    pub faults: &'a mut Faults,
    /// The journal, if there is one (then replies come from a responder).
    pub journal: Option<&'a RefCell<Journal>>,
}

/// Where a connection is in its life (see the module docs), with what
/// only that part of its life needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading and answering. `line`: line mode's open line so far.
    /// `paused`: not reading, the owed bytes being at their bound.
    Open { line: OpenLine, paused: bool },
    /// No more replies: writing what is owed, reading nothing. Then our
    /// FIN and a lingering close; or, if the peer's EOF came already
    /// (`peer_eof`), the close itself.
    Closing { peer_eof: bool },
    /// Our FIN is sent; reading and discarding until the peer's EOF. Began
    /// `since`, for [`LINGER_CAP_MS`].
    Lingering { since: Stamp },
    /// The `hang` fault: no replies, no close; input is read and discarded
    /// until the peer or the idle timeout ends it.
    Hanging,
}

impl Phase {
    /// Open, reading.
    const OPEN: Phase = Phase::Open {
        line: OpenLine::EMPTY,
        paused: false,
    };
    /// Closing with the peer still sending.
    const CLOSING: Phase = Phase::Closing { peer_eof: false };
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
/// reply is this struct (32 bytes) and nothing else; buffers come only
/// while a custom responder, kept input or a fault's step needs them.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Serial number: tells this connection from an earlier one that had
    /// the same slab key, for timer entries and the still-ready list; and
    /// its ordinal for the faults' seeded choices.
    pub id: u32,
    /// Messages taken so far: the ordinal of the last one.
    messages: u32,
    /// Fixed reply: bytes of the reply pattern owed, not yet written.
    /// Replies are owed whole and written from the front, so these are the
    /// last `owed` bytes of whole replies: where they start in the pattern
    /// follows from the count. Bounded by the owed-bytes bound plus one
    /// reply.
    owed: u32,
    /// When bytes last moved, in or out, or a fault's wait ended.
    last_active: Stamp,
    phase: Phase,
    /// Buffers, allocated only while needed (see [`Buffers`]).
    buffers: Option<Box<Buffers>>,
}

impl Connection {
    /// A new connection at `now`. `custom_peer`: the peer's address when a
    /// custom responder makes the replies (it is given the peer), `None`
    /// for the fixed reply.
    pub fn new(id: u32, now: Millis, custom_peer: Option<SocketAddr>) -> Connection {
        Connection {
            id,
            messages: 0,
            owed: 0,
            last_active: Stamp::of(now),
            phase: Phase::OPEN,
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

    /// When bytes last moved, in or out, or a fault's wait ended.
    pub fn last_active(&self) -> Stamp {
        self.last_active
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

    /// What the connection holds for its peer, in bytes of memory: the
    /// owed reply bytes, and for each fault step its own size too (a
    /// delayed empty reply is no byte, but it is a step). Reading pauses
    /// at `max_owed` of it, so a peer that never reads holds little
    /// whatever the faults do.
    pub fn backlog(&self) -> usize {
        let steps = self.buffers.as_ref().map_or(0, |b| b.steps.len());
        self.owed_len() + steps * steps::STEP_COST
    }

    /// Whether anything is still to be done before the phase can move on:
    /// bytes owed, or a fault's step waiting.
    fn has_pending(&self) -> bool {
        self.owed_len() > 0 || self.has_steps()
    }

    /// Whether `WRITABLE` interest is wanted: exactly while owed bytes
    /// wait for the socket. Every flush writes until all is out or the
    /// socket would block, so bytes still owed mean it blocked; bytes
    /// held back by a delay wait for their timer, not for the socket.
    /// Registered for good, a socket is reported writable after every
    /// read on some platforms, and the loop would spin (mio #1963).
    pub fn wants_writable(&self) -> bool {
        self.owed > 0
            || self
                .buffers
                .as_ref()
                .is_some_and(|b| b.out_at < b.out.len() || b.steps_blocked)
    }

    /// When a fault's delayed step is due: the connection needs a turn
    /// then, with nothing happening on its socket.
    pub fn wake_at(&self) -> Option<Millis> {
        self.buffers.as_ref().and_then(|b| b.wake_at)
    }

    /// When this connection must be closed if nothing happens, seen at
    /// `now`: the end of its lingering close, or its idle deadline
    /// (`idle_ms` after bytes last moved; `None`: never idle). A
    /// connection waiting for a delayed reply is not idle.
    pub fn expiry(&self, now: Millis, idle_ms: Option<Millis>) -> Option<Millis> {
        let last_active = self.last_active.near(now);
        match self.phase {
            Phase::Lingering { since } => {
                let quiet = last_active.saturating_add(LINGER_MS);
                Some(quiet.min(since.near(now).saturating_add(LINGER_CAP_MS)))
            }
            _ if self.wake_at().is_some() => None,
            Phase::Open { .. } | Phase::Closing { .. } | Phase::Hanging => {
                idle_ms.map(|idle| last_active.saturating_add(idle))
            }
        }
    }

    /// The connection's next deadline of any kind, seen at `now`: its
    /// expiry, or the moment a delayed step is due.
    pub fn deadline(&self, now: Millis, idle_ms: Option<Millis>) -> Option<Millis> {
        match (self.expiry(now, idle_ms), self.wake_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the connection waits for, seen at `now`: its idle deadline
    /// (`idle_ms` after bytes last moved), which the idle list keeps, or
    /// another (the end of its lingering close, a delayed step), or
    /// nothing.
    pub fn wait(&self, now: Millis, idle_ms: Option<Millis>) -> Wait {
        match (self.phase, self.wake_at()) {
            (Phase::Lingering { .. }, _) | (_, Some(_)) => {
                self.deadline(now, idle_ms).map_or(Wait::Nothing, Wait::At)
            }
            _ if idle_ms.is_some() => Wait::Idle,
            _ => Wait::Nothing,
        }
    }

    /// Shutting down: take no new requests, finish what is owed, then
    /// close as any connection does (FIN, lingering close).
    pub fn stop(&mut self) {
        if let Phase::Open { .. } | Phase::Hanging = self.phase {
            self.phase = Phase::CLOSING;
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
            let mut still_ready = false;
            if may_read && self.reads_wanted() {
                match self.read_until_blocked(stream, &mut budget, cx)? {
                    Reads::Blocked | Reads::Paused => {}
                    Reads::OutOfBudget => still_ready = true,
                    Reads::Eof => self.on_eof(cx)?,
                }
            }
            // Written before anything returns: bytes still owed after a
            // flush mean the socket blocked (see `wants_writable`).
            self.flush(stream, cx)?;
            if still_ready {
                return Ok(Advance::StillReady);
            }
            if self.has_pending() {
                // The rest waits for a writable event, or a delay's timer.
                return Ok(Advance::Waiting);
            }
            // Everything owed is written.
            may_read = match self.phase {
                Phase::Closing { peer_eof: true } => return Err(Close::Done),
                Phase::Closing { peer_eof: false } => {
                    stream.shutdown_write().map_err(Close::Failed)?;
                    self.phase = Phase::Lingering {
                        since: Stamp::of(cx.now),
                    };
                    self.last_active = Stamp::of(cx.now);
                    true
                }
                // Backpressure lifts: nothing will report the input we left
                // unread, so read it now.
                Phase::Open { line, paused: true } => {
                    self.phase = Phase::Open {
                        line,
                        paused: false,
                    };
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
            Phase::Open { paused, .. } => !paused,
            Phase::Closing { .. } => false,
            Phase::Lingering { .. } | Phase::Hanging => true,
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
            if let Phase::Open { line, .. } = self.phase {
                if self.backlog() >= cx.max_owed {
                    self.phase = Phase::Open { line, paused: true };
                    return Ok(Reads::Paused);
                }
                if self.has_unread() {
                    self.take_unread(stream, cx);
                    continue;
                }
            }
            if !matches!(self.phase, Phase::Open { .. }) {
                return self.discard(stream, budget, cx);
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
            self.last_active = Stamp::of(cx.now);
            self.take_read(stream, n, cx);
        }
        Ok(Reads::Blocked)
    }

    /// Lingering or Hanging: input is read only to be discarded, and
    /// counted; bytes keep the connection from being quiet.
    fn discard(
        &mut self,
        stream: &mut impl Stream,
        budget: &mut usize,
        cx: &mut Ctx<'_>,
    ) -> Result<Reads, Close> {
        let (read, discarded) = closing::discard(stream, cx.buf, budget);
        if read > 0 {
            add(&cx.counters.bytes_in, read);
            self.last_active = Stamp::of(cx.now);
        }
        match discarded {
            Discarded::Eof => Ok(Reads::Eof),
            Discarded::Failed(e) => Err(Close::Failed(e)),
            Discarded::Drained => Ok(Reads::Blocked),
            Discarded::OutOfBudget => Ok(Reads::OutOfBudget),
        }
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
                if let Phase::Open { .. } = self.phase {
                    self.phase = Phase::CLOSING;
                }
                input.len()
            }
            Mode::Line => match self.take_lines(input, cx) {
                // A fault that ends the connection discards the rest.
                Ok(_) if !matches!(self.phase, Phase::Open { .. }) => input.len(),
                Ok(used) => used,
                Err(TooLong) => {
                    if cx.warnings.allow(cx.now) {
                        warn!(
                            "{}: line over --max-line {}; closing after the replies owed \
                             (further warnings at most once a second)",
                            stream
                                .peer_addr()
                                .map_or_else(|_| "unknown peer".into(), |a| a.to_string()),
                            cx.max_line
                        );
                    }
                    self.phase = Phase::CLOSING;
                    input.len()
                }
            },
        }
    }

    /// Line mode: answers the complete lines in `input` until the input
    /// ends, the backlog reaches its bound or the phase moves on; returns
    /// how many bytes were used. Keeps the open line's bytes only if a
    /// custom responder will want them.
    fn take_lines(&mut self, input: &[u8], cx: &mut Ctx<'_>) -> Result<usize, TooLong> {
        if let Some(unit) = self.fixed_unit(cx) {
            return self.owe_fixed_lines(input, unit, cx);
        }
        let mut used = 0;
        while used < input.len() && self.backlog() < cx.max_owed {
            let Phase::Open { mut line, paused } = self.phase else {
                break;
            };
            let (n, piece) = line.next(&input[used..], cx.max_line);
            self.phase = Phase::Open { line, paused };
            used += n;
            let custom = matches!(cx.replies, Replies::Custom { .. });
            match piece {
                Piece::Line(end) => {
                    // The terminator as it came, for a journal (which
                    // makes replies come from a responder).
                    let ending = match custom {
                        true => journal::line_ending(&input[..used], end.carried_cr),
                        false => b"",
                    };
                    // A custom responder needs the line in one piece: join
                    // the bytes carried from earlier reads. Otherwise the
                    // whole line is in this input, or the reply ignores it.
                    let message = match custom && end.carried > 0 {
                        true => self.join_line(&end),
                        false => Message::Input(end.tail),
                    };
                    self.owe_reply(message, true, ending, cx);
                }
                Piece::Partial(bytes) if custom => self.buffers().line.extend_from_slice(bytes),
                Piece::Partial(_) => {}
                Piece::TooLong => return Err(TooLong),
            }
        }
        Ok(used)
    }

    /// The peer shut down writing.
    fn on_eof(&mut self, cx: &mut Ctx<'_>) -> Result<(), Close> {
        match (self.phase, cx.mode) {
            // Nothing was sent, so nothing is owed; or lingering (or a
            // hang) is over.
            (Phase::Open { .. }, Mode::Once) | (Phase::Lingering { .. } | Phase::Hanging, _) => {
                Err(Close::Done)
            }
            (Phase::Open { mut line, .. }, Mode::Line) => {
                // A final line without '\n' is still a line.
                if let Ok(Some(_)) = line.finish(cx.max_line) {
                    self.owe_reply(self.open_line(), true, b"", cx);
                }
                self.phase = Phase::Closing { peer_eof: true };
                Ok(())
            }
            (Phase::Closing { .. }, _) => {
                self.phase = Phase::Closing { peer_eof: true };
                Ok(())
            }
        }
    }
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
mod dormant;
mod journal;
mod steps;
#[cfg(test)]
mod tests;
mod write;
