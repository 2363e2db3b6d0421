//! A load generator for ackloop (or any server speaking its protocol), and a
//! worked example of the *client* side of non-blocking IO: one thread, one
//! `mio::Poll`, many sockets, nothing but std and mio.
//!
//! ```sh
//! cargo run --release --example loadgen -- --scenario line \
//!     --tcp 127.0.0.1:8000 --conns 64 --depth 16 --duration 5 --pid "$SERVER_PID"
//! ```
//!
//! Scenarios (`--conns` clients each):
//! - `once`: connect, send `Hello, Server`, read to EOF, check the bytes are
//!   exactly the reply, start over.
//! - `line`: persistent connections keeping `--depth` requests
//!   `Hello, Server\n` in flight; each reply must be the reply text + `\n`.
//! - `udp`: one datagram in flight per socket; no reply within 200 ms is a
//!   loss, and the socket sends again.
//! - `idle`: connections to a line-mode server, each confirmed by one round
//!   trip; reports the server's RSS growth per connection (`--pid` needed;
//!   from after one warm-up connection), holds them for a second, closes
//!   them.
//! - `bulk`: one connection sends `--mib` MiB with no newline, then shuts
//!   down its sending side. A line-mode server answers that one unfinished
//!   line only at EOF, so its reply (and its close) means every byte has
//!   been read. An operation is one MiB; the latency is the whole transfer.
//!
//! It prints one line of `key=value` fields. Latency is per request, from
//! queueing it to its reply (a once request runs from connect to EOF), kept
//! in a fixed log-linear histogram. With `--pid`, the server's CPU time over
//! the measured window is reported per operation: the process's and its
//! children's (a relay such as `socat ... fork` serves each client from a
//! child process).
//!
//! The rules every handler below follows:
//! - Readiness is edge-triggered: an event says "something changed", not
//!   "one read will work". Each read and write repeats until `WouldBlock`;
//!   stopping earlier strands bytes that no later event will mention.
//! - A non-blocking connect returns at once and completes (or fails) in the
//!   background, which shows up as WRITABLE; `take_error` then says whether
//!   it failed, and `peer_addr` whether it has really finished.
//! - A write may take only part of the bytes: the rest is remembered and
//!   goes out on the next WRITABLE event.
//! - WRITABLE interest is registered only while bytes are pending: a
//!   connected socket is nearly always writable, so asking for it all the
//!   time would wake the loop for nothing.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::process::exit;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};

const USAGE: &str = "usage: loadgen --scenario once|line|udp|idle|bulk [--tcp ADDR] [--udp ADDR] \
[--conns N] [--depth D] [--duration SECS] [--requests N] [--mib N] [--reply TEXT] [--pid PID]";
const REQUEST: &[u8] = b"Hello, Server";
/// A datagram with no reply this long is counted lost and sent again.
const UDP_TIMEOUT: Duration = Duration::from_millis(200);
/// The longest poll wait: how often lost datagrams and connections that
/// failed to open are looked at again.
const TICK: Duration = Duration::from_millis(10);
/// How long connecting everything may take (line warm-up, idle).
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// Connects in progress at once (line, idle): more could overflow the
/// server's listen backlog, and a dropped SYN is retried a second later.
const MAX_CONNECTING: usize = 256;
/// /proc/PID/stat counts CPU time in ticks of 1/CLK_TCK s. std cannot call
/// sysconf(_SC_CLK_TCK); it is 100 on mainstream Linux (`getconf CLK_TCK`),
/// so we assume 100.
const CLK_TCK: f64 = 100.0;
/// Linux errno values for "out of file descriptors" (process, system).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Once,
    Line,
    Udp,
    Idle,
    Bulk,
}

struct Args {
    scenario: Scenario,
    tcp: SocketAddr,
    udp: SocketAddr,
    conns: usize,
    depth: usize,
    duration: Duration,
    requests: Option<u64>,
    mib: u64,
    reply: Vec<u8>,
    pid: Option<u32>,
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("loadgen: {e}\n{USAGE}");
        exit(2)
    });
    let result = match args.scenario {
        Scenario::Udp => run_udp(&args),
        Scenario::Bulk => run_bulk(&args),
        _ => run_tcp(&args),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        exit(1);
    }
}

fn parse_args() -> Result<Args, String> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 8000));
    let mut scenario = None;
    let mut args = Args {
        scenario: Scenario::Once,
        tcp: loopback,
        udp: loopback,
        conns: 32,
        depth: 1,
        duration: Duration::from_secs(5),
        requests: None,
        mib: 1024,
        reply: b"Received".to_vec(),
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--scenario" => scenario = Some(value.clone()),
            "--tcp" => args.tcp = resolve(&value)?,
            "--udp" => args.udp = resolve(&value)?,
            "--conns" => args.conns = number(&flag, &value)?,
            "--depth" => args.depth = number(&flag, &value)?,
            "--duration" => {
                let secs = number(&flag, &value)?;
                args.duration =
                    Duration::try_from_secs_f64(secs).map_err(|e| format!("{flag}: {e}"))?
            }
            "--requests" => args.requests = Some(number(&flag, &value)?),
            "--mib" => args.mib = number(&flag, &value)?,
            "--reply" => args.reply = value.into_bytes(),
            "--pid" => args.pid = Some(number(&flag, &value)?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    args.scenario = match scenario.as_deref() {
        Some("once") => Scenario::Once,
        Some("line") => Scenario::Line,
        Some("udp") => Scenario::Udp,
        Some("idle") => Scenario::Idle,
        Some("bulk") => Scenario::Bulk,
        _ => return Err("--scenario must be once, line, udp, idle or bulk".into()),
    };
    if args.conns == 0 || args.depth == 0 || args.mib == 0 || args.reply.is_empty() {
        return Err("--conns, --depth, --mib and --reply must not be zero or empty".into());
    }
    if args.scenario != Scenario::Line {
        args.depth = 1; // one request in flight per client
    }
    if args.scenario == Scenario::Bulk {
        args.conns = 1; // one stream
    }
    if args.scenario == Scenario::Idle && args.pid.is_none() {
        return Err("--scenario idle needs --pid: the server's RSS is what it measures".into());
    }
    Ok(args)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a number: {value}"))
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    let addr = s.to_socket_addrs().map_err(|e| format!("{s}: {e}"))?.next();
    addr.ok_or(format!("{s} resolves to no address"))
}

// ------------------------------------------------------------------ counting

/// Latencies in nanoseconds, log-linear: values under 32 have a bucket each,
/// then each power of two is split into 16 equal steps. Any value is kept
/// to within 1/16, in 1024 buckets, however many samples come.
struct Histogram(Vec<u64>);

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram(vec![0; 1024])
    }
}

impl Histogram {
    fn bucket(ns: u64) -> usize {
        if ns < 32 {
            return ns as usize;
        }
        let shift = 63 - ns.leading_zeros() - 4; // keep the top 5 bits
        shift as usize * 16 + (ns >> shift) as usize
    }

    /// The middle of bucket `i`, in nanoseconds.
    fn middle(i: usize) -> f64 {
        if i < 32 {
            return i as f64;
        }
        let shift = i / 16 - 1;
        ((i % 16 + 16) << shift) as f64 + (1u64 << shift) as f64 / 2.0
    }

    fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0[Self::bucket(ns)] += 1;
    }

    /// The `q` quantile (0 to 1), in microseconds.
    fn quantile_us(&self, q: f64) -> f64 {
        let rank = (q * self.0.iter().sum::<u64>() as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.0.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::middle(i) / 1000.0;
            }
        }
        0.0
    }
}

/// What a run counts. Errors are counted, never panicked on; the first is
/// kept to be shown on stderr.
#[derive(Default)]
struct Stats {
    ops: u64,
    errors: u64,
    lost: u64,
    late: u64,
    first_error: Option<String>,
    latency: Histogram,
}

impl Stats {
    fn record(&mut self, sent: Instant) {
        self.ops += 1;
        self.latency.record(sent.elapsed());
    }

    fn error(&mut self, e: io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// A connect that failed at once: out of descriptors is fatal (and the
    /// user's to fix), anything else is one more error.
    fn connect_error(&mut self, e: io::Error) {
        if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
            eprintln!("loadgen: out of file descriptors ({e}); raise the limit: ulimit -n 20000");
            exit(1);
        }
        self.error(e);
    }
}

/// Whether a run is over: out of time, or `--requests` replies counted
/// (the last batch of events may add a few more).
fn finished(args: &Args, stats: &Stats, end: Instant) -> bool {
    Instant::now() >= end || args.requests.is_some_and(|r| stats.ops >= r)
}

/// utime + stime of a process in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    stat_ticks(pid, 2)
}

/// The sum of the first `n` of utime, stime, cutime, cstime (fields 14 to
/// 17 of /proc/PID/stat, counted after the `(comm)` field, which may hold
/// spaces), in clock ticks.
fn stat_ticks(pid: &str, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    fields.take(n).map(|f| f.parse::<u64>().ok()).sum()
}

/// The CPU ticks of a process and all its descendants: children that have
/// exited and been waited for are in its cutime + cstime, running ones are
/// listed in /proc/PID/task/TID/children. A child that exits while being
/// read is skipped (its time moves to the parent).
fn tree_ticks(pid: &str) -> Option<u64> {
    let mut ticks = stat_ticks(pid, 4)?;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        ticks += children
            .split_whitespace()
            .filter_map(tree_ticks)
            .sum::<u64>();
    }
    Some(ticks)
}

/// Resident memory of a process in KiB (the VmRSS line of /proc/PID/status).
fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    let kib = line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// The measured stretch of a run: when it started, and the CPU ticks the
/// server (with `--pid`; with its children) and this process had used by
/// then.
struct Window {
    started: Instant,
    server: Option<(String, u64)>,
    client: Option<u64>,
}

impl Window {
    fn open(pid: Option<u32>) -> Window {
        let server = pid.and_then(|p| Some((p.to_string(), tree_ticks(&p.to_string())?)));
        let client = cpu_ticks("self");
        Window {
            started: Instant::now(),
            server,
            client,
        }
    }

    /// Ends the window: its length and the CPU report fields.
    fn close(&self, ops: u64) -> (f64, String) {
        let secs = self.started.elapsed().as_secs_f64();
        let us = |t0: u64, t1: u64| t1.saturating_sub(t0) as f64 * 1e6 / CLK_TCK;
        let mut fields = String::new();
        if let Some((pid, t0)) = &self.server {
            let used = us(*t0, tree_ticks(pid).unwrap_or(*t0));
            let per_op = if ops > 0 { used / ops as f64 } else { f64::NAN };
            fields += &format!(" server_cpu_us_per_op={per_op:.3}");
            fields += &format!(" server_cpu_pct={:.0}", used / secs / 1e4);
        }
        if let (Some(t0), Some(t1)) = (self.client, cpu_ticks("self")) {
            fields += &format!(" client_cpu_pct={:.0}", us(t0, t1) / secs / 1e4);
        }
        (secs, fields)
    }
}

fn report(args: &Args, stats: &Stats, (secs, cpu): (f64, String), extra: &str) {
    let name = ["once", "line", "udp", "idle", "bulk"][args.scenario as usize];
    let (ops, h) = (stats.ops, &stats.latency);
    let (p50, p99, p999) = (
        h.quantile_us(0.5),
        h.quantile_us(0.99),
        h.quantile_us(0.999),
    );
    println!(
        "scenario={name} conns={} depth={} ops={ops} secs={secs:.2} rate={:.0}/s \
         p50_us={p50:.1} p99_us={p99:.1} p999_us={p999:.1} errors={} lost={} late={}{cpu}{extra}",
        args.conns,
        args.depth,
        ops as f64 / secs,
        stats.errors,
        stats.lost,
        stats.late,
    );
    if let Some(e) = &stats.first_error {
        eprintln!("loadgen: {} errors, the first: {e}", stats.errors);
    }
}

/// Polls for events, waiting at most `TICK` and not past `end`; a signal
/// interrupting the wait is not an error.
fn wait(poll: &mut Poll, events: &mut Events, end: Instant) -> io::Result<()> {
    let timeout = end.saturating_duration_since(Instant::now()).min(TICK);
    match poll.poll(events, Some(timeout)) {
        Err(e) if e.kind() != ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what)
}

fn eof(what: &str) -> io::Error {
    io::Error::new(ErrorKind::UnexpectedEof, what)
}

// ----------------------------------------------------------- TCP connections

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
    addr: SocketAddr,
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
            addr: args.tcp,
            io,
            slots,
            empty: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Opens slot `i` with `requests` requests queued; false if it failed.
    fn open(&mut self, i: usize, requests: usize) -> bool {
        match Conn::open(self.addr, &self.io, Token(i), requests) {
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
fn run_tcp(args: &Args) -> io::Result<()> {
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

// ---------------------------------------------------------------- TCP bulk

/// The one connection of a bulk run.
struct Bulk {
    stream: TcpStream,
    /// Payload bytes still to send; then the sending side is shut down.
    unsent: u64,
    /// What has arrived of the reply (a line-mode server's one line).
    received: Vec<u8>,
    eof: bool,
}

impl Bulk {
    /// Writes until everything is sent or `WouldBlock`, then shuts down the
    /// sending side (once). The payload has no newline: it is one unfinished
    /// line, answered at EOF.
    fn send(&mut self, chunk: &[u8], registry: &Registry) -> io::Result<()> {
        while self.unsent > 0 {
            let n = chunk
                .len()
                .min(usize::try_from(self.unsent).unwrap_or(usize::MAX));
            match self.stream.write(&chunk[..n]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.unsent -= n as u64;
                    if self.unsent == 0 {
                        self.stream.shutdown(std::net::Shutdown::Write)?;
                        // Nothing more to write: only the reply is awaited.
                        registry.reregister(&mut self.stream, Token(0), Interest::READABLE)?;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until `WouldBlock` or EOF; the reply may come in any split,
    /// and anything past its length is an error.
    fn receive(&mut self, buf: &mut [u8], reply: &[u8]) -> io::Result<()> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) if self.received.len() + n > reply.len() => {
                    return Err(invalid("more than one reply"));
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// bulk: connect, then (in the window) send `--mib` MiB and wait for the
/// server's one reply line and its close.
fn run_bulk(args: &Args) -> io::Result<()> {
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(16));
    let mut stream = TcpStream::connect(args.tcp)?;
    let interest = Interest::READABLE | Interest::WRITABLE;
    poll.registry().register(&mut stream, Token(0), interest)?;
    let end = Instant::now() + SETUP_LIMIT;
    while stream.peer_addr().is_err() {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        if Instant::now() >= end {
            return Err(io::Error::new(ErrorKind::TimedOut, "connect timed out"));
        }
        wait(&mut poll, &mut events, end)?;
    }
    let mut reply = args.reply.clone();
    reply.push(b'\n');
    let (chunk, mut buf) = (vec![b'x'; 64 * 1024], vec![0; 64 * 1024]);
    let mut bulk = Bulk {
        stream,
        unsent: args.mib << 20,
        received: Vec::new(),
        eof: false,
    };
    let mut stats = Stats::default();
    let window = Window::open(args.pid);
    let end = window.started + SETUP_LIMIT;
    let mut result = Ok(());
    while result.is_ok() && !bulk.eof && Instant::now() < end {
        result = bulk.send(&chunk, poll.registry());
        if result.is_ok() {
            result = bulk.receive(&mut buf, &reply);
        }
        if result.is_ok() && !bulk.eof {
            wait(&mut poll, &mut events, end)?;
        }
    }
    match (result, bulk.eof && bulk.received == reply) {
        (Err(e), _) => stats.error(e),
        (Ok(()), true) => {
            stats.record(window.started);
            stats.ops = args.mib; // an operation is one MiB
        }
        (Ok(()), false) if !bulk.eof => stats.error(eof("no reply within the time limit")),
        (Ok(()), false) => stats.error(eof("closed before the whole reply")),
    }
    report(
        args,
        &stats,
        window.close(stats.ops),
        &format!(" mib={}", args.mib),
    );
    Ok(())
}

// ----------------------------------------------------------------------- UDP

/// One UDP socket with at most one request in flight.
struct Datagram {
    socket: UdpSocket,
    sent_at: Option<Instant>,
}

impl Datagram {
    fn open(server: SocketAddr, registry: &Registry, token: Token) -> io::Result<Datagram> {
        let any: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut socket = UdpSocket::bind(any)?;
        // A connected UDP socket sends without an address, and the kernel
        // drops datagrams from anyone but the server.
        socket.connect(server)?;
        // READABLE only: a datagram is sent whole or not at all, so there
        // is never a partial write to finish. When the socket buffer is
        // full (`WouldBlock`), the request is simply lost: the timeout
        // sends it again, as it would after any loss.
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(Datagram {
            socket,
            sent_at: None,
        })
    }

    /// Sends the request (again, after a loss), remembering when.
    fn send(&mut self, stats: &mut Stats) {
        self.sent_at = Some(Instant::now());
        match self.socket.send(REQUEST) {
            Err(e) if e.kind() != ErrorKind::WouldBlock => stats.error(e),
            _ => {}
        }
    }

    /// Receives until `WouldBlock`; with `again`, each reply is answered by
    /// the next request. A reply arriving with none in flight is late, for a
    /// request already counted lost (and a late one arriving after the
    /// resend is taken for the resend's: the protocol has no sequence
    /// numbers).
    fn receive(&mut self, reply: &[u8], stats: &mut Stats, again: bool) {
        let mut buf = [0; 2048];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let Some(sent) = self.sent_at.take() else {
                        stats.late += 1;
                        continue;
                    };
                    match &buf[..n] == reply {
                        true => stats.record(sent),
                        false => stats.error(invalid("wrong reply bytes")),
                    }
                    if again {
                        self.send(stats);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP port unreachable: nobody listens. The request is
                // lost, and the timeout sends it again.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => stats.error(e),
                Err(e) => return stats.error(e),
            }
        }
    }
}

/// Counts a request with no reply in time as lost and sends it again.
fn resend_lost(socks: &mut [Datagram], stats: &mut Stats) {
    let now = Instant::now();
    for d in socks {
        if d.sent_at.is_some_and(|t| now - t >= UDP_TIMEOUT) {
            stats.lost += 1;
            d.send(stats);
        }
    }
}

/// Gives every socket one round trip before the measured window opens, so
/// that a relay setting up a flow on a client's first datagram (a socket of
/// its own, or a forked process) does so outside it. A socket still without
/// a reply after `SETUP_LIMIT` is left to the run, which counts its losses.
fn warm_up(socks: &mut [Datagram], args: &Args, poll: &mut Poll) -> io::Result<()> {
    let (mut events, mut stats) = (Events::with_capacity(1024), Stats::default());
    let end = Instant::now() + SETUP_LIMIT;
    socks.iter_mut().for_each(|d| d.send(&mut stats));
    while Instant::now() < end && socks.iter().any(|d| d.sent_at.is_some()) {
        wait(poll, &mut events, end)?;
        for event in &events {
            socks[event.token().0].receive(&args.reply, &mut stats, false);
        }
        resend_lost(socks, &mut stats);
    }
    socks.iter_mut().for_each(|d| d.sent_at = None);
    Ok(())
}

fn run_udp(args: &Args) -> io::Result<()> {
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(1024));
    let mut socks = (0..args.conns)
        .map(|i| Datagram::open(args.udp, poll.registry(), Token(i)))
        .collect::<io::Result<Vec<_>>>()?;
    warm_up(&mut socks, args, &mut poll)?;
    let mut stats = Stats::default();
    let window = Window::open(args.pid);
    let end = window.started + args.duration;
    socks.iter_mut().for_each(|d| d.send(&mut stats));
    let mut next_sweep = Instant::now() + TICK;
    while !finished(args, &stats, end) {
        wait(&mut poll, &mut events, end)?;
        for event in &events {
            socks[event.token().0].receive(&args.reply, &mut stats, true);
        }
        if Instant::now() >= next_sweep {
            resend_lost(&mut socks, &mut stats);
            next_sweep = Instant::now() + TICK;
        }
    }
    report(args, &stats, window.close(stats.ops), "");
    Ok(())
}
