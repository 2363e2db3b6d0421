//! TCP connections for the once, line and idle scenarios: each keeps its
//! requests in flight and checks every reply.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::measure::{Stats, Window, report, rss_kib};
use crate::{Args, MAX_CONNECTING, REQUEST, SETUP_LIMIT, Scenario, eof, finished, invalid, wait};

/// What all TCP connections of a run share: the registry (an owned clone,
/// usable while `Poll::poll` borrows the poll), the request stream, the
/// expected reply and one read buffer.
struct Io {
    registry: Registry,
    /// The request repeated `depth + 1` times, so the unsent part of the
    /// request stream (at most `depth` requests, starting anywhere within
    /// one) is always a single slice of it.
    pattern: Vec<u8>,
    unit: usize,
    reply: Vec<u8>,
    buf: Vec<u8>,
}

/// What one event's reads brought: whole replies, and whether EOF came.
#[derive(Default)]
struct Progress {
    replies: usize,
    eof: bool,
}

struct Conn {
    stream: TcpStream,
    token: Token,
    connected: bool,
    /// Request bytes queued but not yet written, starting at `phase` within
    /// one request: this is where a partial write is remembered.
    unsent: usize,
    phase: usize,
    /// Whether WRITABLE is in the registered interest right now.
    writable: bool,
    /// Bytes of the reply being received that have arrived so far.
    matched: usize,
    replies: u64,
    /// When each request awaiting its reply was queued, oldest first:
    /// replies come back in order, so the front is the one answered next.
    sent_at: VecDeque<Instant>,
}

impl Conn {
    /// Starts a non-blocking connect with `requests` requests queued; they
    /// are written once the connection is up.
    fn open(addr: SocketAddr, io: &Io, token: Token, requests: usize) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(addr)?;
        // The connect's completion is reported as WRITABLE, so ask for it.
        let interest = Interest::READABLE | Interest::WRITABLE;
        io.registry.register(&mut stream, token, interest)?;
        let mut conn = Conn {
            stream,
            token,
            connected: false,
            unsent: 0,
            phase: 0,
            writable: true,
            matched: 0,
            replies: 0,
            sent_at: VecDeque::with_capacity(io.pattern.len() / io.unit),
        };
        conn.queue(io.unit, requests, Instant::now());
        Ok(conn)
    }

    fn queue(&mut self, unit: usize, requests: usize, now: Instant) {
        self.unsent += unit * requests;
        self.sent_at.extend(std::iter::repeat_n(now, requests));
    }

    /// One readiness event: finish connecting, write what waits, read what
    /// arrived. Whatever the event's flags say, trying costs one syscall.
    fn on_event(&mut self, io: &mut Io) -> io::Result<Progress> {
        if !self.connected {
            if !self.finish_connect()? {
                return Ok(Progress::default());
            }
            self.connected = true;
            // With requests pipelined, Nagle's algorithm would hold a new
            // one back until the previous ones are acknowledged.
            if io.pattern.len() > 2 * io.unit {
                self.stream.set_nodelay(true)?;
            }
        }
        self.flush(io)?;
        self.read(io)
    }

    /// Whether the background connect has finished. WRITABLE alone does not
    /// say: a failed connect is "writable" too, and wakeups can be spurious.
    fn finish_connect(&mut self) -> io::Result<bool> {
        // SO_ERROR: a refused or unreachable connect is reported here.
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        // Only a connected socket has a peer; NotConnected means "still in
        // progress": another event will come.
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes queued bytes until none are left or `WouldBlock`; wants
    /// WRITABLE only while some remain.
    fn flush(&mut self, io: &Io) -> io::Result<()> {
        while self.unsent > 0 {
            let pending = &io.pattern[self.phase..self.phase + self.unsent];
            match self.stream.write(pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => (self.unsent, self.phase) = (self.unsent - n, (self.phase + n) % io.unit),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if (self.unsent > 0) != self.writable {
            self.writable = self.unsent > 0;
            let interest = match self.writable {
                true => Interest::READABLE | Interest::WRITABLE,
                false => Interest::READABLE,
            };
            io.registry
                .reregister(&mut self.stream, self.token, interest)?;
        }
        Ok(())
    }

    /// Reads until `WouldBlock` or EOF, checking each byte against the reply
    /// however the replies were split into reads.
    fn read(&mut self, io: &mut Io) -> io::Result<Progress> {
        let mut progress = Progress::default();
        loop {
            match self.stream.read(&mut io.buf) {
                Ok(0) => {
                    progress.eof = true;
                    return Ok(progress);
                }
                Ok(n) => progress.replies += self.check(&io.buf[..n], &io.reply)?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn check(&mut self, mut data: &[u8], reply: &[u8]) -> io::Result<usize> {
        let mut whole = 0;
        while !data.is_empty() {
            let n = (reply.len() - self.matched).min(data.len());
            if data[..n] != reply[self.matched..self.matched + n] {
                return Err(invalid("wrong reply bytes"));
            }
            (self.matched, data) = (self.matched + n, &data[n..]);
            if self.matched == reply.len() {
                (self.matched, whole, self.replies) = (0, whole + 1, self.replies + 1);
            }
        }
        Ok(whole)
    }
}

/// The TCP side of a run: a fixed number of slots, a slot's index being its
/// connection's token.
struct Pool {
    /// Where the slots connect: slot `i` to the `i % len`th.
    addrs: Vec<SocketAddr>,
    io: Io,
    slots: Vec<Option<Conn>>,
    /// Slots to (re)open once the current batch of events is handled.
    empty: Vec<usize>,
    stats: Stats,
}

impl Pool {
    fn new(poll: &Poll, args: &Args, line: bool) -> io::Result<Pool> {
        let (mut request, mut reply) = (REQUEST.to_vec(), args.reply.clone());
        if line {
            request.push(b'\n');
            reply.push(b'\n');
        }
        let io = Io {
            registry: poll.registry().try_clone()?,
            pattern: request.repeat(args.depth + 1),
            unit: request.len(),
            reply,
            buf: vec![0; 64 * 1024],
        };
        let slots = (0..args.conns).map(|_| None).collect();
        Ok(Pool {
            addrs: args.tcps.clone(),
            io,
            slots,
            empty: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Opens slot `i` with `requests` requests queued; false if it failed.
    fn open(&mut self, i: usize, requests: usize) -> bool {
        let addr = self.addrs[i % self.addrs.len()];
        match Conn::open(addr, &self.io, Token(i), requests) {
            Ok(conn) => self.slots[i] = Some(conn),
            Err(e) => self.stats.connect_error(e),
        }
        self.slots[i].is_some()
    }

    /// Reopens closed slots with `requests` requests each. This runs
    /// between batches of events, never within one: an event later in the
    /// same batch for a token just closed would otherwise be taken for the
    /// new connection's.
    fn reopen(&mut self, requests: usize) {
        for i in std::mem::take(&mut self.empty) {
            if !self.open(i, requests) {
                self.empty.push(i);
            }
        }
    }

    /// Frees slot `i`, counting `result`'s error. Dropping the stream closes
    /// the socket, which also takes it out of the poll.
    fn close(&mut self, i: usize, result: io::Result<()>) {
        self.slots[i] = None;
        self.empty.push(i);
        if let Err(e) = result {
            self.stats.error(e);
        }
    }

    /// Handles an event for slot `i`, closing the connection when it is
    /// done (once) or failed.
    fn on_event(&mut self, i: usize, scenario: Scenario) {
        let Some(conn) = self.slots[i].as_mut() else {
            return;
        };
        match progress(conn, &mut self.io, &mut self.stats, scenario) {
            Ok(false) => {}
            Ok(true) => self.close(i, Ok(())),
            Err(e) => self.close(i, Err(e)),
        }
    }
}

// ----------------------------------------------------------------- TCP runs

/// once, line and idle: the same connections, differing in what ends an
/// operation and what follows it.
pub fn run_tcp(args: &Args) -> io::Result<()> {
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(1024));
    let (scenario, idle) = (args.scenario, args.scenario == Scenario::Idle);
    let mut pool = Pool::new(&poll, args, scenario != Scenario::Once)?;
    let baseline = match (idle, args.pid) {
        (true, Some(pid)) => {
            warm_up_server(args)?;
            rss_kib(pid)? // before the measured connections
        }
        _ => 0,
    };
    // once connects inside the measured window (connecting is half of its
    // work); line and idle connect everything first.
    match scenario {
        Scenario::Once => pool.empty = (0..args.conns).collect(),
        _ => connect_all(&mut pool, &mut poll, &mut events)?,
    }
    let window = Window::open(args.pid);
    let end = window.started + if idle { SETUP_LIMIT } else { args.duration };
    for i in 0..args.conns {
        let Some(conn) = pool.slots[i].as_mut() else {
            continue;
        };
        conn.queue(pool.io.unit, args.depth, Instant::now());
        if let Err(e) = conn.flush(&pool.io) {
            pool.close(i, Err(e));
        }
    }
    while !finished(args, &pool.stats, end) {
        if idle && pool.slots.iter().flatten().all(|c| c.sent_at.is_empty()) {
            break; // every connection has had its round trip
        }
        if !idle {
            pool.reopen(args.depth);
        }
        wait(&mut poll, &mut events, end)?;
        for event in &events {
            pool.on_event(event.token().0, scenario);
        }
    }
    let measured = window.close(pool.stats.ops);
    let mut extra = String::new();
    if let (true, Some(pid)) = (idle, args.pid) {
        // RSS growth per open connection; then hold them for a second (a
        // server dropping idle connections shows up as errors) and close.
        let after = rss_kib(pid)?;
        let open = pool.slots.iter().flatten().count();
        let per_conn = (after as i64 - baseline as i64) * 1024 / open.max(1) as i64;
        extra = format!(" open={open} rss_base_kib={baseline} rss_after_kib={after}");
        extra += &format!(" rss_per_conn_b={per_conn}");
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            wait(&mut poll, &mut events, end)?;
            for event in &events {
                pool.on_event(event.token().0, scenario);
            }
        }
    }
    report(args, &pool.stats, measured, &extra);
    Ok(())
}

/// idle: one connection and one round trip before the baseline, so that
/// what the server touches once (code first run, first allocations: about
/// 70 KiB) is not counted per connection.
fn warm_up_server(args: &Args) -> io::Result<()> {
    let mut stream = std::net::TcpStream::connect_timeout(&args.tcp, SETUP_LIMIT)?;
    stream.set_read_timeout(Some(SETUP_LIMIT))?;
    stream.write_all(REQUEST)?;
    stream.write_all(b"\n")?;
    let mut reply = vec![0; args.reply.len() + 1];
    stream.read_exact(&mut reply)?;
    match reply.strip_suffix(b"\n") == Some(&args.reply[..]) {
        true => Ok(()),
        false => Err(invalid("wrong reply bytes")),
    }
}

/// Opens every slot with no request queued, at most `MAX_CONNECTING` at a
/// time, and waits until each connect has finished or failed.
fn connect_all(pool: &mut Pool, poll: &mut Poll, events: &mut Events) -> io::Result<()> {
    let end = Instant::now() + SETUP_LIMIT;
    let (mut next, mut connecting) = (0, 0);
    while (next < pool.slots.len() || connecting > 0) && Instant::now() < end {
        while next < pool.slots.len() && connecting < MAX_CONNECTING {
            match pool.open(next, 0) {
                true => connecting += 1,
                false => pool.empty.push(next), // for line to retry later
            }
            next += 1;
        }
        wait(poll, events, end)?;
        for event in events.iter() {
            let i = event.token().0;
            let Some(conn) = pool.slots[i].as_mut() else {
                continue;
            };
            let was_connected = conn.connected;
            let result = conn.on_event(&mut pool.io);
            if !was_connected && (conn.connected || result.is_err()) {
                connecting -= 1;
            }
            if let Err(e) = result {
                pool.close(i, Err(e));
            }
        }
    }
    Ok(())
}

/// Handles one event for `conn`; true when it is done (once mode only).
fn progress(
    conn: &mut Conn,
    io: &mut Io,
    stats: &mut Stats,
    scenario: Scenario,
) -> io::Result<bool> {
    let p = conn.on_event(io)?;
    if scenario == Scenario::Once {
        // The server answers once and closes: the operation ends at EOF,
        // having brought exactly one whole reply.
        return match (p.eof, conn.replies, conn.matched) {
            (_, 2.., _) => Err(invalid("more than one reply")),
            (false, ..) => Ok(false),
            (true, 1, 0) => {
                stats.record(conn.sent_at.pop_front().expect("queued at open"));
                Ok(true)
            }
            (true, ..) => Err(eof("server closed before the whole reply")),
        };
    }
    // Line mode: each reply answers the oldest request in flight.
    for _ in 0..p.replies {
        let sent = conn.sent_at.pop_front();
        stats.record(sent.ok_or_else(|| invalid("a reply nobody asked for"))?);
    }
    if p.eof {
        return Err(eof("server closed the connection"));
    }
    // Each answered request is replaced, so `depth` stay in flight. (In
    // idle, a connection keeps quiet after its one round trip.)
    if scenario == Scenario::Line {
        conn.queue(io.unit, p.replies, Instant::now());
        conn.flush(io)?;
    }
    Ok(false)
}
