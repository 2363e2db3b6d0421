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
//!   loss, and the socket sends again. With `--rate R` the load is open
//!   instead: R datagrams a second in all, paced, spread over the sockets
//!   in turn whether or not replies came back, so two servers measured at
//!   the same rate see the same offered load (a closed loop offers more to
//!   a faster server, which then drains smaller batches).
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
//! The rules every handler (in tcp.rs, bulk.rs, udp.rs) follows:
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

mod bulk;
mod measure;
mod tcp;
mod udp;

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::exit;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use bulk::run_bulk;
use measure::Stats;
use tcp::run_tcp;
use udp::{run_udp, run_udp_paced};

const USAGE: &str = "usage: loadgen --scenario once|line|udp|idle|bulk [--tcp ADDR[,ADDR...]] [--udp ADDR] \
[--conns N] [--depth D] [--duration SECS] [--requests N] [--mib N] [--reply TEXT] [--pid PID] \
[--rate DATAGRAMS_PER_SEC]";
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
    /// The first of `tcps`: where bulk and the idle warm-up connect.
    tcp: SocketAddr,
    /// `--tcp A,B,...`: connection `i` goes to the `i % len`th (many
    /// endpoints of one relay, each with its share of the clients).
    tcps: Vec<SocketAddr>,
    udp: SocketAddr,
    conns: usize,
    depth: usize,
    duration: Duration,
    requests: Option<u64>,
    mib: u64,
    reply: Vec<u8>,
    pid: Option<u32>,
    /// Datagrams a second, paced (udp only); `None` is the closed loop.
    rate: Option<u64>,
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("loadgen: {e}\n{USAGE}");
        exit(2)
    });
    let result = match args.scenario {
        Scenario::Udp => match args.rate {
            Some(rate) => run_udp_paced(&args, rate),
            None => run_udp(&args),
        },
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
        tcps: vec![loopback],
        udp: loopback,
        conns: 32,
        depth: 1,
        duration: Duration::from_secs(5),
        requests: None,
        mib: 1024,
        reply: b"Received".to_vec(),
        pid: None,
        rate: None,
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
            "--tcp" => {
                let addrs = value.split(',').map(resolve);
                args.tcps = addrs.collect::<Result<_, _>>()?;
                args.tcp = args.tcps[0];
            }
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
            "--rate" => args.rate = Some(number(&flag, &value)?),
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
    if args.rate == Some(0) || (args.rate.is_some() && args.scenario != Scenario::Udp) {
        return Err("--rate is a positive number of datagrams a second, for --scenario udp".into());
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

/// Whether a run is over: out of time, or `--requests` replies counted
/// (the last batch of events may add a few more).
fn finished(args: &Args, stats: &Stats, end: Instant) -> bool {
    Instant::now() >= end || args.requests.is_some_and(|r| stats.ops >= r)
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
