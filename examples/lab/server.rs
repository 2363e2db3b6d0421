//! The lab's server: TCP line mode and UDP on one `mio::Poll`, the smallest
//! server that gets every rule of GUIDE.md right, written to be read.
//!
//! Each trap of a first mio server is this same server with one change,
//! written where it happens as a test of `self.trap == Some(Trap::X)` and
//! a `TRAP` comment; search for `TRAP` to see all ten. [`Lab::bind`] with
//! `None` builds the correct server.
//!
//! The path of a byte: `run` polls → `dispatch` by token → `serve_conn`
//! reads until `WouldBlock` (`read`), cuts lines and owes a reply for each
//! (`Conn::take`), writes until `WouldBlock` (`flush`), and registers
//! `WRITABLE` only while something is still owed (`settle_interest`).
//!
//! Simplifications against ackloop, each harmless here: deadlines are
//! found by scanning the connections (ackloop keeps a heap), a last line
//! without `\n` gets no reply, and the only reply is `Received`. The
//! [`Counters`] exist for the probes only.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

pub use crate::handles::{Counters, Stopper};
pub use crate::trap::Trap;

/// The reply to every line.
pub const REPLY: &[u8] = b"Received\n";
/// The reply to every datagram.
pub const UDP_REPLY: &[u8] = b"Received";
/// One buffer for every read; small, so that a burst takes several reads.
pub const READ_BUFFER: usize = 4096;
/// Reads per connection per turn: fairness between busy clients.
pub const READS_PER_TURN: usize = 4;
/// Datagrams per turn, for the same reason.
pub const DATAGRAMS_PER_TURN: usize = 64;
/// Accepts per turn: a storm of clients cannot starve those connected.
pub const ACCEPTS_PER_TURN: usize = 64;
/// UDP replies waiting for the socket, at most; beyond, a reply is
/// dropped (UDP may lose it anyway, and memory stays bounded).
pub const UDP_QUEUE: usize = 1024;
/// How long accepting pauses after an accept error that would fail again
/// at once (`ENOBUFS`, `ENOMEM`, `EPERM`, ...): no spin, no stall.
pub const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// Reading pauses while a connection owes more reply bytes than this.
pub const MAX_OWED: usize = 64 * 1024;
/// A longer line closes the connection (after the replies owed before it).
pub const MAX_LINE: usize = 1024;
/// A connection with no bytes moved for this long is closed. Longer than
/// a probe's client waits in silence (`client::STALL`), so a stall is
/// seen as a stall, not as an idle close; and longer than a loaded
/// machine may take to see that a server stopped reading (the
/// `write-all` probe's client is silent until then: at 1.5 s, the
/// correct server's idle close cut it once at load 12).
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long a closing connection reads and discards before it is dropped.
pub const LINGER: Duration = Duration::from_secs(2);

const LISTENER: Token = Token(usize::MAX);
const UDP: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Take no more lines; close once the owed replies are written.
    Closing,
    /// Written side shut down; read and discard until EOF or `LINGER`.
    Lingering,
    /// Dropped when the batch of events ends.
    Closed,
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// Bytes of the line not yet ended by `\n`; at most `MAX_LINE`.
    open_line: usize,
    /// Reply bytes not yet written; reading pauses above `MAX_OWED`.
    owed: Vec<u8>,
    /// The peer has shut down its side (a read returned 0).
    peer_closed: bool,
    /// Idle or linger deadline.
    deadline: Instant,
    interest: Interest,
    /// The turn of the last read and the reads made in it (for the probes:
    /// `Counters::most_reads_in_a_turn`).
    reads_in_turn: (u64, u64),
}

/// How a connection's reads stopped.
enum Stop {
    WouldBlock,
    Budget,
    Backpressure,
    Eof,
    Failed,
}

/// The server. `run` it on a thread; `stopper` ends it from another.
pub struct Lab {
    trap: Option<Trap>,
    poll: Poll,
    listener: TcpListener,
    /// Accepting waits until then after an accept error (see `ACCEPT_RETRY`).
    accept_paused_until: Option<Instant>,
    udp: UdpSocket,
    /// Whom a UDP reply is owed, oldest first; at most `UDP_QUEUE`.
    udp_owed: VecDeque<SocketAddr>,
    udp_interest: Interest,
    conns: Slab<Conn>,
    /// Turns so far: a connection's reads are counted per turn.
    turn: u64,
    /// Sources cut short by a budget: nobody will report them again, so
    /// they are served next turn (not this one: one budget a turn), and
    /// the poll meanwhile does not wait.
    still_ready: Vec<Token>,
    /// Keys freed when the batch ends, not before: a later event of the
    /// batch for the old connection must not reach a new one.
    closed: Vec<usize>,
    /// A descriptor held in reserve for shedding clients on `EMFILE`.
    spare: Option<File>,
    buffer: Vec<u8>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    counters: Arc<Counters>,
}

impl Lab {
    /// Binds TCP and UDP on `127.0.0.1:0`; `trap: None` is the correct server.
    pub fn bind(trap: Option<Trap>) -> io::Result<Lab> {
        let poll = Poll::new()?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut listener = TcpListener::bind(loopback)?;
        let mut udp = UdpSocket::bind(loopback)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let udp_interest = interest(trap, false);
        poll.registry().register(&mut udp, UDP, udp_interest)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Lab {
            trap,
            poll,
            listener,
            accept_paused_until: None,
            udp,
            udp_owed: VecDeque::new(),
            udp_interest,
            conns: Slab::new(),
            turn: 0,
            still_ready: Vec::new(),
            closed: Vec::new(),
            spare: File::open("/dev/null").ok(),
            buffer: vec![0; READ_BUFFER],
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            counters: Arc::default(),
        })
    }

    pub fn tcp_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper::new(Arc::clone(&self.stop), Arc::clone(&self.waker))
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Turns until stopped. Returns an error only if the poll fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Relaxed) {
            match self.poll.poll(&mut events, self.poll_timeout()) {
                Ok(()) => {}
                // TRAP interrupted: the first signal to reach this thread
                // while it waits ends the server.
                Err(e)
                    if e.kind() == ErrorKind::Interrupted
                        && self.trap == Some(Trap::Interrupted) =>
                {
                    return Err(e);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: poll again
                Err(e) => return Err(e),
            }
            self.turn += 1;
            // Last turn's list; what this turn finds goes on a new one.
            let still_ready = std::mem::take(&mut self.still_ready);
            for event in &events {
                self.counters.events.fetch_add(1, Relaxed);
                self.dispatch(event.token());
            }
            for token in still_ready {
                if events.iter().all(|event| event.token() != token) {
                    self.dispatch(token); // unless its event served it already
                }
            }
            self.expire(Instant::now());
            for key in self.closed.drain(..) {
                self.conns.remove(key); // dropping the stream closes it
            }
        }
        Ok(())
    }

    /// Zero while a source is still ready; else until the nearest deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.still_ready.is_empty() {
            return Some(Duration::ZERO);
        }
        if self.trap == Some(Trap::NoDeadlineTimeout) {
            // TRAP no-deadline-timeout: mio has no timers; an idle client
            // is only noticed if some other event happens to wake the loop.
            return None;
        }
        let deadlines = self.conns.iter().map(|(_, conn)| conn.deadline);
        let nearest = deadlines.chain(self.accept_paused_until).min()?;
        Some(nearest.saturating_duration_since(Instant::now()))
    }

    /// Serves `token` next turn, once however often it is asked.
    fn still_ready(&mut self, token: Token) {
        if !self.still_ready.contains(&token) {
            self.still_ready.push(token);
        }
    }

    fn dispatch(&mut self, token: Token) {
        match token {
            LISTENER => self.accept(),
            UDP => self.serve_udp(),
            WAKER => {} // `run` checks the stop flag
            Token(key) => self.serve_conn(key),
        }
    }

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return; // `expire` resumes accepting when the pause ends
        }
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, _)) => self.add(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return, // drained
                // That client is gone (ECONNABORTED): the next may be fine.
                Err(e) if concerns_one_client(&e) => continue,
                Err(e) if out_of_descriptors(&e) => {
                    self.counters.out_of_descriptors.fetch_add(1, Relaxed);
                    if self.trap == Some(Trap::EmfileSpin) {
                        // TRAP emfile-spin: no spare descriptor, so the error
                        // is taken for a client gone before its accept: try
                        // the next. It fails again at once, forever.
                        continue;
                    }
                    return self.shed_waiting_clients();
                }
                // Anything else (ENOBUFS, ENOMEM, EPERM) fails again at
                // once: retrying now would spin. Look again after a pause.
                Err(_) => {
                    self.counters.accept_errors.fetch_add(1, Relaxed);
                    return self.pause_accepting();
                }
            }
        }
        self.still_ready(LISTENER); // budget spent, not drained
    }

    fn pause_accepting(&mut self) {
        self.accept_paused_until = Some(Instant::now() + ACCEPT_RETRY);
    }

    /// Out of descriptors: frees the spare, accepts and closes each waiting
    /// client with it (they see their connection end, not a hang), then
    /// takes the spare back. Unless that drained the backlog, accepting
    /// pauses: with no spare, or with more clients than the budget, the
    /// next accept would fail again at once.
    fn shed_waiting_clients(&mut self) {
        if self.spare.take().is_some() {
            for _ in 0..ACCEPTS_PER_TURN {
                match self.listener.accept() {
                    Ok(_) => {} // dropped at once: closed
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.spare = File::open("/dev/null").ok();
                        return; // drained: the next client brings an event
                    }
                    Err(e) if concerns_one_client(&e) => {}
                    Err(_) => break,
                }
            }
            self.spare = File::open("/dev/null").ok();
        }
        self.pause_accepting();
    }

    fn add(&mut self, mut stream: TcpStream) {
        let entry = self.conns.vacant_entry();
        let interest = interest(self.trap, false);
        let token = Token(entry.key());
        if self
            .poll
            .registry()
            .register(&mut stream, token, interest)
            .is_err()
        {
            return; // dropped: closed
        }
        entry.insert(Conn {
            stream,
            state: State::Open,
            open_line: 0,
            owed: Vec::new(),
            peer_closed: false,
            deadline: Instant::now() + IDLE_TIMEOUT,
            interest,
            reads_in_turn: (0, 0),
        });
        // Bytes may have arrived before registration: read now.
        self.serve_conn(token.0);
    }

    /// Receives up to the budget, owing a reply for each datagram, and
    /// sends what is owed until the socket takes no more.
    fn serve_udp(&mut self) {
        self.flush_udp();
        let mut drained = false;
        for _ in 0..DATAGRAMS_PER_TURN {
            match self.udp.recv_from(&mut self.buffer) {
                Ok((_, from)) if self.udp_owed.len() < UDP_QUEUE => {
                    self.udp_owed.push_back(from);
                    self.flush_udp();
                }
                Ok(_) => {} // the queue is full: this reply is dropped
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(_) => {} // an ICMP error from an earlier send
            }
        }
        if !drained {
            self.still_ready(UDP); // budget spent, not drained
        }
        let wanted = interest(self.trap, !self.udp_owed.is_empty());
        if wanted != self.udp_interest {
            // A failure leaves the old interest: at worst a wake-up for nothing.
            let registry = self.poll.registry();
            if registry.reregister(&mut self.udp, UDP, wanted).is_ok() {
                self.udp_interest = wanted;
            }
        }
    }

    /// Sends the owed UDP replies until done or `WouldBlock`.
    fn flush_udp(&mut self) {
        while let Some(&to) = self.udp_owed.front() {
            match self.udp.send_to(UDP_REPLY, to) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => break, // the rest waits for WRITABLE
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Sent, or this peer cannot be sent to: either way, done.
                _ => drop(self.udp_owed.pop_front()),
            }
        }
    }

    /// Reads, answers, writes, and settles what the connection waits for.
    fn serve_conn(&mut self, key: usize) {
        let Some(state) = self.conns.get(key).map(|conn| conn.state) else {
            return; // a stale event: nothing has this key
        };
        let stop = match state {
            State::Closed => return,
            State::Lingering => self.discard(key),
            State::Open => self.read(key),
            State::Closing => Stop::WouldBlock, // the lines after it are not wanted
        };
        match stop {
            Stop::Eof if state == State::Lingering => return self.drop_conn(key),
            Stop::Failed => return self.drop_conn(key),
            // TRAP no-still-ready: a connection cut short by the budget is
            // not reported again by epoll; without the list it waits forever.
            Stop::Budget if self.trap == Some(Trap::NoStillReady) => {}
            Stop::Budget => self.still_ready(Token(key)),
            _ => {}
        }
        if state == State::Lingering {
            return;
        }
        if self.flush(key).is_err() {
            return self.drop_conn(key);
        }
        let conn = &mut self.conns[key];
        let owes = !conn.owed.is_empty();
        if !owes && (conn.state == State::Closing || conn.peer_closed) {
            return self.close(key);
        }
        if matches!(stop, Stop::Backpressure) && conn.owed.len() <= MAX_OWED {
            // Drained below the bound: read again now, because the input
            // left unread will not be reported again.
            self.still_ready(Token(key));
        }
        self.settle_interest(key, owes);
    }

    /// Reads until `WouldBlock`, EOF, the budget or backpressure.
    fn read(&mut self, key: usize) -> Stop {
        let conn = &mut self.conns[key];
        for _ in 0..READS_PER_TURN {
            if conn.owed.len() > MAX_OWED && self.trap != Some(Trap::NoBackpressure) {
                // TRAP no-backpressure: without this check a client that
                // never reads makes the server owe without bound.
                return Stop::Backpressure;
            }
            match conn.stream.read(&mut self.buffer) {
                Ok(0) if self.trap != Some(Trap::OkZero) => {
                    conn.peer_closed = true;
                    return Stop::Eof;
                }
                // TRAP ok-zero: `Ok(0)` taken as "nothing yet", not as the
                // end of the stream; the reads repeat 0 for good.
                Ok(0) => {}
                Ok(n) => {
                    self.counters.bytes_read.fetch_add(n as u64, Relaxed);
                    let (turn, reads) = conn.reads_in_turn;
                    let reads = if turn == self.turn { reads + 1 } else { 1 };
                    conn.reads_in_turn = (self.turn, reads);
                    self.counters.most_reads_in_a_turn.fetch_max(reads, Relaxed);
                    conn.take(&self.buffer[..n]);
                    if self.trap == Some(Trap::NoDrain) {
                        // TRAP no-drain: one read per event; the rest of
                        // the burst is never reported again.
                        return Stop::WouldBlock;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Stop::WouldBlock, // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Stop::Failed,
            }
        }
        Stop::Budget
    }

    /// A lingering connection: read and throw away until EOF.
    fn discard(&mut self, key: usize) -> Stop {
        let conn = &mut self.conns[key];
        for _ in 0..READS_PER_TURN {
            match conn.stream.read(&mut self.buffer) {
                Ok(0) => return Stop::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Stop::WouldBlock, // drained
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Stop::Failed,
            }
        }
        Stop::Budget
    }

    /// Writes what is owed until done or `WouldBlock`.
    fn flush(&mut self, key: usize) -> io::Result<()> {
        let conn = &mut self.conns[key];
        let mut written = 0;
        if self.trap == Some(Trap::WriteAll) {
            // TRAP write-all: on a non-blocking socket `write_all` fails
            // with WouldBlock as soon as the send buffer is full, and the
            // error ends the connection with its replies cut short.
            conn.stream.write_all(&conn.owed)?;
            written = conn.owed.len();
        }
        while written < conn.owed.len() {
            match conn.stream.write(&conn.owed[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break, // the rest waits for WRITABLE
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e), // the connection is dropped
            }
        }
        if written > 0 {
            conn.owed.drain(..written); // a short write is progress: keep the rest
            conn.deadline = Instant::now() + IDLE_TIMEOUT;
        }
        Ok(())
    }

    /// Reregisters the connection if what it waits for changed.
    fn settle_interest(&mut self, key: usize, owes: bool) {
        let conn = &mut self.conns[key];
        let wanted = interest(self.trap, owes);
        if wanted != conn.interest {
            conn.interest = wanted;
            let registry = self.poll.registry();
            if registry
                .reregister(&mut conn.stream, Token(key), wanted)
                .is_err()
            {
                self.drop_conn(key);
            }
        }
    }

    /// Closes with a lingering drain unless the peer is already done.
    fn close(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.peer_closed || self.trap == Some(Trap::CloseWithoutLinger) {
            // TRAP close-without-linger: closing with unread input makes
            // the kernel send a reset, and discard the replies not yet
            // delivered.
            return self.drop_conn(key);
        }
        let _ = conn.stream.shutdown(Shutdown::Write); // FIN after the replies
        conn.state = State::Lingering;
        conn.deadline = Instant::now() + LINGER;
        self.still_ready(Token(key)); // input may already be waiting
    }

    fn drop_conn(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let _ = self.poll.registry().deregister(&mut conn.stream);
        conn.state = State::Closed;
        self.closed.push(key);
    }

    /// Closes idle connections, drops lingering ones whose time is up,
    /// and accepts again when a pause ends.
    fn expire(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
            self.accept(); // the clients waiting meanwhile bring no new event
        }
        let due: Vec<usize> = (self.conns.iter())
            .filter(|(_, conn)| conn.deadline <= now && conn.state != State::Closed)
            .map(|(key, _)| key)
            .collect();
        for key in due {
            match self.conns[key].state {
                State::Lingering => self.drop_conn(key),
                _ => self.close(key),
            }
        }
    }
}

impl Conn {
    /// Frames `bytes` into lines and owes a reply for each.
    fn take(&mut self, bytes: &[u8]) {
        self.deadline = Instant::now() + IDLE_TIMEOUT;
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let ended = piece.ends_with(b"\n");
            self.open_line += piece.len() - usize::from(ended);
            if self.open_line > MAX_LINE {
                self.state = State::Closing; // answer the lines before it, then close
                return;
            }
            if ended {
                self.open_line = 0;
                self.owed.extend_from_slice(REPLY);
            }
        }
    }
}

/// What a socket waits for, TCP connection or UDP socket alike:
/// `WRITABLE` only while bytes are owed.
fn interest(trap: Option<Trap>, owes: bool) -> Interest {
    // TRAP writable-for-life: a socket is writable nearly always, and
    // whenever its send buffer frees room it "becomes" writable again: a
    // wake-up for nothing (on a level-triggered poll, a busy loop).
    if owes || trap == Some(Trap::WritableForLife) {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// Accept errors that concern one client only: try the next.
fn concerns_one_client(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
