//! TCP: accepting clients, and the life of one connection.
//!
//! A connection moves through three phases:
//!
//! ```text
//!   Open ──(once: first bytes / line: EOF, line too long, shutdown)──▶ Closing
//!   Closing ──(all owed bytes written)──▶ Lingering   (we shut down writing)
//!   Lingering ──(peer's EOF, or LINGER elapsed)──▶ closed
//! ```
//!
//! * **Open**: reading. In line mode every complete line adds a reply to
//!   what the connection owes; reading pauses while it owes more than
//!   [`MAX_OWED`] bytes (backpressure) and resumes as they drain.
//! * **Closing**: no more replies will be made; write what is owed. No
//!   reading: a peer that never reads cannot keep us busy discarding.
//! * **Lingering**: our FIN is sent. Read and discard until the peer closes,
//!   so that closing never meets unread input, which would make the kernel
//!   send a reset that can destroy the reply (RFC 1122 4.2.2.13).
//!
//! Every read and write repeats until it returns `WouldBlock`: readiness is
//! edge-triggered, and a socket left with work undone is not reported
//! again. A connection that hits its per-turn read budget instead goes on
//! the loop's "still ready" list.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};

use log::{Level, debug, log_enabled, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::config::Mode;
use crate::framing::{LineFramer, Piece};
use crate::reply::{Protocol, Replies, Request};
use crate::server::{RateLimit, Ready, Turn};
use crate::stats::{Counters, add, sub};
use crate::timer::{Entry, Millis, NEVER, Timers};

/// A connection owing more reply bytes than this stops being read until
/// they drain: a client that sends without reading costs a fixed amount.
pub const MAX_OWED: usize = 64 * 1024;
/// Reads per connection per turn, so one fast client cannot starve the
/// others (with 64 KiB reads, 1 MiB a turn).
pub const READS_PER_TURN: usize = 16;
/// Accepts per turn, so a connection storm cannot starve served clients.
pub const ACCEPTS_PER_TURN: usize = 64;
/// How long a lingering close waits for the peer's EOF, in milliseconds.
pub const LINGER_MS: Millis = 2_000;
/// After an accept error other than `WouldBlock`, how long until the
/// listener is tried again, in milliseconds: no retry storm, no stall.
pub const ACCEPT_RETRY_MS: Millis = 1_000;
/// Connection slots allocated up front, so that ordinary concurrency never
/// grows the slab while serving (it grows, once, past this).
const PREALLOCATED_CONNECTIONS: usize = 256;
/// Stale timer entries tolerated beyond twice the open connections before
/// the heap is swept.
pub(crate) const TIMER_SLACK: usize = 1024;
/// Closed connections a turn can hold without growing the list (the
/// events of one poll); more only grow it once.
const CLOSED_PER_TURN: usize = 1024;
/// A custom responder's buffers shrink back to this after a burst, so an
/// idle connection keeps little memory.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Where a connection is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Lingering,
}

/// Why a connection closes, for the log.
#[derive(Debug)]
enum Close {
    /// The exchange ended normally.
    Done,
    /// The socket failed (reset by peer, and the like).
    Failed(io::Error),
}

/// One accepted client. Kept small: an idle connection with the fixed
/// reply is this struct and nothing else.
#[derive(Debug)]
struct Connection {
    /// `None` once closed; the slab entry is freed when the turn ends.
    stream: Option<TcpStream>,
    /// Serial number: tells this connection from an earlier one that had
    /// the same slab key, for timer entries and the still-ready list.
    id: u32,
    phase: Phase,
    /// `WRITABLE` is registered: only while reply bytes are owed.
    write_interest: bool,
    /// Reading is paused by backpressure (owed > [`MAX_OWED`]).
    read_paused: bool,
    /// The peer shut down its writing side.
    peer_eof: bool,
    /// Fixed reply: bytes of the reply pattern owed, not yet written.
    owed: u32,
    /// Fixed reply: where in the pattern the next owed byte is.
    pattern_at: u32,
    /// Line mode: what the stream's open line looks like.
    framer: LineFramer,
    /// When bytes last arrived; in `Lingering`, when lingering began.
    last_active: Millis,
    /// The deadline of this connection's live timer entry, or [`NEVER`].
    timer_at: Millis,
    /// Custom responder only: the open line and the owed reply bytes.
    custom: Option<Box<CustomState>>,
}

/// Buffers a custom responder needs (the fixed reply needs none).
#[derive(Debug)]
struct CustomState {
    /// The peer, asked for once.
    peer: SocketAddr,
    /// Line mode: the bytes of the open line so far.
    line: Vec<u8>,
    /// Reply bytes owed; `out[out_at..]` are not written yet.
    out: Vec<u8>,
    out_at: usize,
}

/// The listener and every connection.
pub(crate) struct Tcp {
    listener: Option<TcpListener>,
    conns: Slab<Connection>,
    mode: Mode,
    max_connections: usize,
    /// Idle timeout in milliseconds, if any.
    idle_ms: Option<Millis>,
    max_line: usize,
    /// Keys closed during this turn; freed when it ends, so that a stale
    /// event later in the same batch cannot reach a new connection.
    closed: Vec<usize>,
    next_id: u32,
    /// A descriptor held in reserve for when the process runs out: closing
    /// it makes room to accept and close the clients waiting in the backlog.
    spare_fd: Option<File>,
    /// Accepting is paused until then after an accept error, or [`NEVER`].
    accept_retry_at: Millis,
    reject_log: RateLimit,
    /// Shutting down: close each connection once its owed bytes are out.
    stopping: bool,
}

impl Tcp {
    pub fn new(listener: Option<TcpListener>, config: &crate::Config) -> Tcp {
        Tcp {
            listener,
            conns: Slab::with_capacity(config.max_connections.min(PREALLOCATED_CONNECTIONS)),
            mode: config.mode,
            max_connections: config.max_connections,
            idle_ms: config.idle_timeout.map(|d| d.as_millis() as Millis),
            max_line: config.max_line,
            closed: Vec::with_capacity(CLOSED_PER_TURN),
            next_id: 0,
            spare_fd: File::open("/dev/null").ok(),
            accept_retry_at: NEVER,
            reject_log: RateLimit::default(),
            stopping: false,
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.conns.len() - self.closed.len()
    }

    /// The earliest moment the listener needs attention without an event.
    pub fn accept_retry_at(&self) -> Millis {
        self.accept_retry_at
    }

    // ----- accepting -------------------------------------------------------

    /// The listener is readable: accept until `WouldBlock`, or until the
    /// per-turn budget runs out (then it goes on the still-ready list).
    pub fn accept(&mut self, t: &mut Turn<'_>) {
        if self.accept_retry_at != NEVER && t.now < self.accept_retry_at {
            return; // Paused after an accept error; the retry timer resumes it.
        }
        self.accept_retry_at = NEVER;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, t),
                // Drained: the next connection brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if is_transient(&e) => continue,
                Err(e) if is_out_of_descriptors(&e) => return self.shed_backlog(t),
                Err(e) => {
                    warn!("accept failed: {e}; trying again in {ACCEPT_RETRY_MS} ms");
                    self.accept_retry_at = t.now + ACCEPT_RETRY_MS;
                    return;
                }
            }
        }
        t.ready.push(Ready::Listener);
    }

    /// Out of file descriptors. The failed accept would fail again at
    /// once, forever, and the waiting clients would hang in the backlog.
    /// Give back the spare descriptor, then accept and close each waiting
    /// client in turn (libuv's trick), and take the spare again.
    fn shed_backlog(&mut self, t: &mut Turn<'_>) {
        let Some(listener) = &self.listener else {
            return;
        };
        let mut shed = 0u64;
        if self.spare_fd.take().is_some() {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        drop(stream);
                        shed += 1;
                    }
                    Err(e) if is_transient(&e) => continue,
                    // WouldBlock: the backlog is empty. Anything else:
                    // someone took the spare slot; retry below.
                    Err(_) => break,
                }
                if shed as usize >= ACCEPTS_PER_TURN {
                    break;
                }
            }
            self.spare_fd = File::open("/dev/null").ok();
        }
        add(&t.counters.rejected, shed);
        if self.reject_log.allow(t.now) {
            warn!("out of file descriptors: closed {shed} waiting client(s) unserved");
        }
        // Not drained for sure: look again in a second rather than spin.
        self.accept_retry_at = t.now + ACCEPT_RETRY_MS;
    }

    /// Takes in one accepted stream, or turns it away over the limit.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
        if self.stopping {
            return; // Dropping it closes it.
        }
        if self.open() >= self.max_connections {
            add(&t.counters.rejected, 1);
            if self.reject_log.allow(t.now) {
                warn!(
                    "rejected {peer}: at --max-connections {} (further rejections \
                     are logged at most once a second)",
                    self.max_connections
                );
            }
            return;
        }
        // Replies are small and latency matters: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = t
            .registry
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            warn!("cannot register {peer}: {e}");
            return;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        entry.insert(Connection::new(stream, id, self.max_line, t.now));
        add(&t.counters.accepted, 1);
        add(&t.counters.open, 1);
        debug!("conn {key}: accepted {peer}");
        // The request usually arrives with the connection: read it now
        // instead of waiting a whole turn for the readable event.
        self.drive(key, true, t);
    }

    // ----- events ------------------------------------------------------------

    /// A readiness event for connection `key`.
    pub fn on_event(&mut self, key: usize, readable: bool, t: &mut Turn<'_>) {
        match self.conns.get(key) {
            Some(conn) if conn.stream.is_some() => self.drive(key, readable, t),
            // Closed earlier in this batch: a stale event, ignored.
            _ => {}
        }
    }

    /// Serves a connection that was left still ready last turn.
    pub fn resume(&mut self, key: usize, id: u32, t: &mut Turn<'_>) {
        match self.conns.get(key) {
            Some(conn) if conn.id == id && conn.stream.is_some() => self.drive(key, true, t),
            _ => {}
        }
    }

    /// Runs connection `key` as far as it goes without blocking, then
    /// settles its interest, its timer and its place on the ready list.
    fn drive(&mut self, key: usize, readable: bool, t: &mut Turn<'_>) {
        let mode = self.mode;
        let conn = &mut self.conns[key];
        let before = log_enabled!(Level::Trace).then(|| t.counters.snapshot());
        let outcome = conn.advance(readable, mode, t);
        if let Some(before) = before {
            let after = t.counters.snapshot();
            trace!(
                "conn {key}: read {} bytes, wrote {} bytes, owes {} ({:?})",
                after.bytes_in - before.bytes_in,
                after.bytes_out - before.bytes_out,
                conn.owed_len(),
                conn.phase,
            );
        }
        match outcome {
            Err(why) => self.close(key, why, t),
            Ok(still_ready) => {
                let conn = &mut self.conns[key];
                if self.stopping && conn.phase == Phase::Open {
                    conn.phase = Phase::Closing;
                    return self.drive(key, false, t);
                }
                if still_ready {
                    t.ready.push(Ready::Conn { key, id: conn.id });
                }
                if let Err(e) = conn.settle_interest(key, t.registry) {
                    return self.close(key, Close::Failed(e), t);
                }
                conn.arm_timer(key, self.idle_ms, t);
            }
        }
    }

    /// Closes connection `key` now; its slab entry is freed at turn end.
    fn close(&mut self, key: usize, why: Close, t: &mut Turn<'_>) {
        let conn = &mut self.conns[key];
        let Some(mut stream) = conn.stream.take() else {
            return;
        };
        match &why {
            Close::Failed(e) => debug!("conn {key}: closing on error: {e}"),
            Close::Done => debug!("conn {key}: closed"),
        }
        // mio's rule: deregister before the descriptor closes, since some
        // selectors keep state per source. mio's epoll selector keeps none,
        // and closing the last descriptor of a socket removes it from every
        // epoll interest list (epoll(7)), which the drop below does. There
        // the EPOLL_CTL_DEL is a system call for nothing, measured at about
        // 6 % of a once-mode exchange's server CPU (benches/syscalls.sh,
        // benches/compare.sh). Should a copy of the descriptor live on (a
        // child forked by the host, between fork and exec), its events can
        // still come with the old token; a slab key reused by then only sees
        // a spurious event, which a read ending in `WouldBlock` absorbs.
        if !cfg!(all(
            target_os = "linux",
            not(mio_unsupported_force_poll_poll)
        )) {
            let _ = t.registry.deregister(&mut stream);
        }
        drop(stream);
        conn.custom = None;
        self.closed.push(key);
        sub(&t.counters.open, 1);
    }

    /// A timer entry came due: close the connection if its deadline truly
    /// passed, or re-arm it at the deadline its activity moved it to.
    pub fn on_timer(&mut self, entry: Entry, t: &mut Turn<'_>) {
        let key = entry.key as usize;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.id != entry.id || conn.timer_at != entry.at || conn.stream.is_none() {
            return; // Stale: the connection is gone or re-armed earlier.
        }
        conn.timer_at = NEVER;
        match conn.deadline(self.idle_ms) {
            Some(at) if at <= t.now => {
                let what = if conn.phase == Phase::Lingering {
                    "linger over"
                } else {
                    "idle"
                };
                debug!("conn {key}: {what}; closing");
                self.close(key, Close::Done, t);
            }
            _ => conn.arm_timer(key, self.idle_ms, t),
        }
    }

    /// Frees the slab entries of connections closed this turn, and sweeps
    /// the timer heap when stale entries (of closed connections, or of
    /// deadlines re-armed earlier) outnumber the open connections.
    pub fn end_turn(&mut self, timers: &mut Timers) {
        for key in self.closed.drain(..) {
            self.conns.remove(key);
        }
        if timers.len() > 2 * self.conns.len() + TIMER_SLACK {
            timers.retain(|entry| {
                self.conns.get(entry.key as usize).is_some_and(|conn| {
                    conn.id == entry.id && conn.timer_at == entry.at && conn.stream.is_some()
                })
            });
        }
    }

    /// Stops accepting and winds every connection down: no new requests are
    /// read; each connection writes what it owes, then closes as gracefully
    /// as any other (FIN, then a lingering close). Closing at once instead
    /// would reset connections with unread input, destroying replies the
    /// client has not read yet.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        self.stopping = true;
        if let Some(mut listener) = self.listener.take() {
            let _ = t.registry.deregister(&mut listener);
        }
        let live: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.stream.is_some())
            .map(|(key, _)| key)
            .collect();
        for key in live {
            self.drive(key, false, t);
        }
    }

    /// Closes everything at once: the shutdown grace period is over.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, Close::Done, t);
        }
    }
}

impl Connection {
    fn new(stream: TcpStream, id: u32, max_line: usize, now: Millis) -> Connection {
        Connection {
            stream: Some(stream),
            id,
            phase: Phase::Open,
            write_interest: false,
            read_paused: false,
            peer_eof: false,
            owed: 0,
            pattern_at: 0,
            framer: LineFramer::new(max_line),
            last_active: now,
            timer_at: NEVER,
            custom: None,
        }
    }

    /// Reply bytes owed and not yet written.
    fn owed_len(&self) -> usize {
        let custom = self.custom.as_ref().map_or(0, |c| c.out.len() - c.out_at);
        self.owed as usize + custom
    }

    /// Reads what may be read and writes what is owed, looping while one
    /// unblocks the other (draining owed bytes resumes a paused reader).
    /// Returns whether the read budget ran out with input left unread.
    fn advance(&mut self, readable: bool, mode: Mode, t: &mut Turn<'_>) -> Result<bool, Close> {
        let mut budget = READS_PER_TURN;
        let mut may_read = readable;
        loop {
            if may_read && self.reads_wanted() {
                match self.read_until_blocked(&mut budget, mode, t)? {
                    Reads::Blocked | Reads::Paused => {}
                    Reads::OutOfBudget => return Ok(true),
                    Reads::Eof => self.on_eof(mode, t)?,
                }
            }
            self.flush(t).map_err(Close::Failed)?;
            if self.owed_len() > 0 {
                return Ok(false); // The rest waits for a writable event.
            }
            // Everything owed is written.
            may_read = match self.phase {
                Phase::Closing if self.peer_eof => return Err(Close::Done),
                Phase::Closing => {
                    self.start_lingering(t.now).map_err(Close::Failed)?;
                    true
                }
                // Backpressure lifts: nothing will report the input we left
                // unread, so read it now.
                Phase::Open if self.read_paused => {
                    self.read_paused = false;
                    true
                }
                _ => return Ok(false),
            };
        }
    }

    /// Reading is wanted while Open and not paused, and while Lingering.
    fn reads_wanted(&self) -> bool {
        match self.phase {
            Phase::Open => !self.read_paused,
            Phase::Closing => false,
            Phase::Lingering => true,
        }
    }

    /// Reads until `WouldBlock`, end of stream, backpressure, a phase that
    /// wants no more input, or the end of the budget.
    fn read_until_blocked(
        &mut self,
        budget: &mut usize,
        mode: Mode,
        t: &mut Turn<'_>,
    ) -> Result<Reads, Close> {
        while self.reads_wanted() {
            if self.phase == Phase::Open && self.owed_len() >= MAX_OWED {
                self.read_paused = true;
                return Ok(Reads::Paused);
            }
            if *budget == 0 {
                return Ok(Reads::OutOfBudget);
            }
            *budget -= 1;
            let stream = self.stream.as_mut().expect("live connection");
            let n = match stream.read(t.buf) {
                Ok(0) => return Ok(Reads::Eof),
                Ok(n) => n,
                // Drained: the next bytes bring a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Reads::Blocked),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Close::Failed(e)),
            };
            add(&t.counters.bytes_in, n as u64);
            if self.phase == Phase::Open {
                self.last_active = t.now;
                let input = &t.buf[..n];
                match mode {
                    Mode::Once => self.take_once(input, t.replies, t.counters),
                    Mode::Line => self.take_lines(input, t.replies, t.counters),
                }
            } // Lingering: input is read only to be discarded.
        }
        Ok(Reads::Blocked)
    }

    /// Once mode: the first bytes are the message; answer, then close.
    fn take_once(&mut self, input: &[u8], replies: &mut Replies, counters: &Counters) {
        self.owe_reply(Message::Input(input), false, replies, counters);
        self.phase = Phase::Closing;
    }

    /// Line mode: answer every complete line in `input`; keep the open
    /// line's bytes only if a custom responder will want them.
    fn take_lines(&mut self, mut input: &[u8], replies: &mut Replies, counters: &Counters) {
        while !input.is_empty() {
            let (used, piece) = self.framer.next(input);
            input = &input[used..];
            match piece {
                Piece::Line(end) => {
                    let message = match replies {
                        // A custom responder needs the line in one piece:
                        // join the bytes carried from earlier reads.
                        Replies::Custom { .. } if end.carried > 0 => {
                            let line = &mut self.custom_state().line;
                            if end.carried_cr {
                                line.pop();
                            }
                            line.extend_from_slice(end.tail);
                            Message::Buffered
                        }
                        // The whole line is in this input (or the reply is
                        // fixed and ignores it): no copy.
                        _ => Message::Input(end.tail),
                    };
                    self.owe_reply(message, true, replies, counters);
                }
                Piece::Partial(bytes) => {
                    if let Replies::Custom { .. } = replies {
                        self.custom_state().line.extend_from_slice(bytes);
                    }
                }
                Piece::TooLong => {
                    warn!(
                        "{}: line over --max-line {}; closing after the replies owed",
                        peer_of(self.stream.as_ref().expect("live connection")),
                        self.framer.max_line()
                    );
                    self.phase = Phase::Closing;
                    return;
                }
            }
        }
    }

    /// The peer shut down writing.
    fn on_eof(&mut self, mode: Mode, t: &mut Turn<'_>) -> Result<(), Close> {
        self.peer_eof = true;
        match (self.phase, mode) {
            // Nothing was sent, so nothing is owed; or lingering is over.
            (Phase::Open, Mode::Once) | (Phase::Lingering, _) => Err(Close::Done),
            (Phase::Open, Mode::Line) => {
                // A final line without '\n' is still a line.
                if let Ok(Some(_)) = self.framer.finish() {
                    self.owe_reply(Message::Buffered, true, t.replies, t.counters);
                }
                self.phase = Phase::Closing;
                Ok(())
            }
            (Phase::Closing, _) => Ok(()),
        }
    }

    /// Counts one message and owes its reply: with the fixed reply one
    /// more unit of the pattern, with a custom one whatever the responder
    /// says (plus `\n` in line mode), queued on the connection.
    fn owe_reply(
        &mut self,
        message: Message<'_>,
        newline: bool,
        replies: &mut Replies,
        counters: &Counters,
    ) {
        add(&counters.messages, 1);
        let (responder, scratch) = match replies {
            Replies::Fixed(pattern) => {
                self.owed += pattern.unit() as u32;
                return;
            }
            Replies::Custom { responder, scratch } => (responder, scratch),
        };
        let custom = self.custom_state();
        let bytes = match message {
            Message::Input(bytes) => bytes,
            Message::Buffered => &custom.line,
        };
        let request = Request {
            protocol: Protocol::Tcp,
            peer: custom.peer,
            message: bytes,
        };
        scratch.clear();
        if responder.respond(&request, scratch) {
            custom.out.extend_from_slice(scratch);
            if newline {
                custom.out.push(b'\n');
            }
        }
        custom.line.clear();
    }

    /// The custom responder's state, made on first use.
    fn custom_state(&mut self) -> &mut CustomState {
        let stream = self.stream.as_ref();
        self.custom.get_or_insert_with(|| {
            let peer = stream.and_then(|s| s.peer_addr().ok());
            Box::new(CustomState {
                peer: peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                line: Vec::new(),
                out: Vec::new(),
                out_at: 0,
            })
        })
    }

    /// Writes owed bytes until done or `WouldBlock`. A short write is
    /// progress, not an error: the rest waits for the next writable event.
    fn flush(&mut self, t: &mut Turn<'_>) -> io::Result<()> {
        let stream = self.stream.as_mut().expect("live connection");
        if let Replies::Fixed(pattern) = t.replies {
            // The owed bytes are the next `owed` bytes of the periodic
            // pattern, starting at `pattern_at`; write them in slices.
            while self.owed > 0 {
                let start = self.pattern_at as usize;
                let end = pattern.bytes().len().min(start + self.owed as usize);
                let n = write_until_blocked(stream, &pattern.bytes()[start..end], t.counters)?;
                self.owed -= n as u32;
                self.pattern_at = ((start + n) % pattern.bytes().len()) as u32;
                if n < end - start {
                    return Ok(()); // WouldBlock.
                }
            }
        }
        if let Some(custom) = self.custom.as_mut() {
            let n = write_until_blocked(stream, &custom.out[custom.out_at..], t.counters)?;
            custom.out_at += n;
            if custom.out_at == custom.out.len() {
                custom.out.clear();
                custom.out_at = 0;
                custom.out.shrink_to(KEEP_CAPACITY);
                custom.line.shrink_to(KEEP_CAPACITY.max(custom.line.len()));
            }
        }
        Ok(())
    }

    /// All owed bytes are out: send our FIN and linger for the peer's.
    fn start_lingering(&mut self, now: Millis) -> io::Result<()> {
        let stream = self.stream.as_ref().expect("live connection");
        match stream.shutdown(Shutdown::Write) {
            Ok(()) => {}
            // The peer is already gone: nothing to linger for.
            Err(e) if e.kind() == ErrorKind::NotConnected => return Err(e),
            Err(e) => return Err(e),
        }
        self.phase = Phase::Lingering;
        self.last_active = now;
        Ok(())
    }

    /// Registers `WRITABLE` interest exactly while bytes are owed. Kept on
    /// for good, some platforms report writable after every read and a
    /// naive loop spins (mio #1963).
    fn settle_interest(&mut self, key: usize, registry: &Registry) -> io::Result<()> {
        let want = self.owed_len() > 0;
        if want == self.write_interest {
            return Ok(());
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let stream = self.stream.as_mut().expect("live connection");
        registry.reregister(stream, Token(key), interest)?;
        self.write_interest = want;
        Ok(())
    }

    /// When this connection must be closed if nothing happens: the end of
    /// its lingering close, or its idle deadline.
    fn deadline(&self, idle_ms: Option<Millis>) -> Option<Millis> {
        match self.phase {
            Phase::Lingering => Some(self.last_active + LINGER_MS),
            Phase::Open | Phase::Closing => idle_ms.map(|idle| self.last_active + idle),
        }
    }

    /// Makes sure a timer entry is armed no later than the deadline. A
    /// deadline that moved later needs nothing: the earlier entry re-arms
    /// itself when it comes due.
    fn arm_timer(&mut self, key: usize, idle_ms: Option<Millis>, t: &mut Turn<'_>) {
        if let Some(at) = self.deadline(idle_ms) {
            if at < self.timer_at {
                self.timer_at = at;
                t.timers.arm(Entry {
                    at,
                    key: key as u32,
                    id: self.id,
                });
            }
        }
    }
}

/// Where a message's bytes are.
enum Message<'a> {
    /// In the input just read.
    Input(&'a [u8]),
    /// In the connection's line buffer (a line that spanned reads).
    Buffered,
}

/// Writes `bytes` until all are written or the socket would block, and
/// returns how many were written.
fn write_until_blocked(
    stream: &mut TcpStream,
    bytes: &[u8],
    counters: &Counters,
) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            // The socket buffer is full: remember where we stopped.
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    add(&counters.bytes_out, written as u64);
    Ok(written)
}

/// How a run of reads ended.
enum Reads {
    /// `WouldBlock`, or the phase wants no more input.
    Blocked,
    /// Backpressure: too many reply bytes owed.
    Paused,
    /// The peer shut down writing.
    Eof,
    /// The budget ran out with input perhaps left.
    OutOfBudget,
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn peer_of(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".into(), |a| a.to_string())
}
