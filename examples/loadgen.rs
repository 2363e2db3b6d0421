//! A load generator on one mio poll, one thread: the client side of
//! non-blocking IO, measuring a running ackloop (or any server that speaks
//! its protocol).
//!
//! ```sh
//! cargo run --release --example loadgen -- --scenario line --tcp 127.0.0.1:8000 \
//!     --conns 64 --depth 16 --duration 5 [--pid SERVER_PID]
//! ```
//!
//! Scenarios: `once` (connect, send `Hello, Server`, read to EOF, check the
//! reply, reconnect), `line` (persistent connections, `--depth` requests in
//! flight each), `udp` (one datagram in flight per socket; no reply within
//! 200 ms is a loss), `idle` (hold `--conns` open line-mode connections,
//! each confirmed by one round trip, and report the server's RSS per
//! connection from /proc; needs `--pid`). It prints one line: rate, latency percentiles, errors,
//! losses and, with `--pid`, the server's CPU time per operation read from
//! /proc (the fair figure when the load generator is the bottleneck).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const REQUEST: &[u8] = b"Hello, Server";
const REPLY: &[u8] = b"Received";
const UDP_TIMEOUT: Duration = Duration::from_millis(200);

/// Latencies in 10 µs buckets up to 100 ms; the last bucket holds the rest.
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; 10_001],
            count: 0,
        }
    }

    fn record(&mut self, latency: Duration) {
        let bucket = (latency.as_micros() / 10).min(10_000) as usize;
        self.buckets[bucket] += 1;
        self.count += 1;
    }

    /// The latency below which `fraction` of the samples fall, in µs.
    fn percentile(&self, fraction: f64) -> u64 {
        let target = (self.count as f64 * fraction).ceil() as u64;
        let mut seen = 0;
        for (bucket, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return (bucket as u64 + 1) * 10;
            }
        }
        0
    }
}

/// One TCP client: its stream, what it still has to send, and the send
/// times of the requests whose replies have not arrived (oldest first).
struct Client {
    stream: TcpStream,
    /// Bytes to write; `out[written..]` are not written yet.
    out: Vec<u8>,
    written: usize,
    /// Send times of requests in flight, in order.
    in_flight: VecDeque<Instant>,
    /// Reply bytes received so far (checked against the expected stream).
    reply: Vec<u8>,
}

struct Options {
    scenario: String,
    tcp: SocketAddr,
    udp: SocketAddr,
    conns: usize,
    depth: usize,
    duration: Duration,
    pid: Option<u32>,
}

fn main() {
    let options = parse();
    let cpu_before = options.pid.map(cpu_ticks);
    let started = Instant::now();
    let (histogram, errors, lost) = match options.scenario.as_str() {
        "once" | "line" => run_tcp(&options),
        "udp" => run_udp(&options),
        "idle" => return run_idle(&options),
        other => fail(&format!("unknown scenario {other}")),
    };
    let secs = started.elapsed().as_secs_f64();
    let ops = histogram.count;
    let mut line = format!(
        "scenario={} conns={} depth={} ops={ops} secs={secs:.2} rate={:.0}/s \
         p50_us={} p99_us={} p999_us={} errors={errors} lost={lost}",
        options.scenario,
        options.conns,
        options.depth,
        ops as f64 / secs,
        histogram.percentile(0.5),
        histogram.percentile(0.99),
        histogram.percentile(0.999),
    );
    if let (Some(pid), Some(before)) = (options.pid, cpu_before) {
        // /proc counts in clock ticks; 100 per second on Linux (USER_HZ).
        let used_us = (cpu_ticks(pid) - before) as f64 * 10_000.0;
        line.push_str(&format!(
            " server_cpu_us_per_op={:.2}",
            used_us / ops.max(1) as f64
        ));
    }
    println!("{line}");
}

/// TCP: `once` reconnects after every reply, `line` keeps `depth` in flight.
fn run_tcp(options: &Options) -> (Histogram, u64, u64) {
    let once = options.scenario == "once";
    let depth = if once { 1 } else { options.depth.max(1) };
    let expected_reply: Vec<u8> = if once {
        REPLY.to_vec()
    } else {
        [REPLY, b"\n"].concat()
    };
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Client> = (0..options.conns)
        .map(|i| connect(&poll, options.tcp, Token(i), depth, once))
        .collect();
    let (mut histogram, mut errors) = (Histogram::new(), 0);
    let deadline = Instant::now() + options.duration;
    while Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .expect("poll");
        for event in events.iter() {
            let i = event.token().0;
            let client = &mut clients[i];
            // Edge-triggered: write and read until WouldBlock, every time.
            let mut ok = flush(client);
            let mut eof = false;
            if ok {
                (ok, eof) = read_available(client);
            }
            // Complete replies: check, time, and (line mode) ask again.
            while ok && client.reply.len() >= expected_reply.len() && !client.in_flight.is_empty() {
                if client.reply[..expected_reply.len()] != expected_reply[..] {
                    ok = false;
                    break;
                }
                client.reply.drain(..expected_reply.len());
                let sent = client.in_flight.pop_front().expect("in flight");
                histogram.record(sent.elapsed());
                if !once {
                    queue_request(client, b"\n");
                }
            }
            // All the new requests in one write, as a pipelining client does.
            ok = ok && flush(client);
            let finished = once && eof && client.in_flight.is_empty() && client.reply.is_empty();
            if !ok || (eof && !finished) {
                errors += 1;
            }
            if !ok || eof {
                // Reconnect: the once scenario's normal path, or after an error.
                let _ = poll.registry().deregister(&mut client.stream);
                *client = connect(&poll, options.tcp, Token(i), depth, once);
            }
        }
    }
    (histogram, errors, 0)
}

/// Starts a non-blocking connect with the first requests already queued:
/// they go out on the first writable event, which also says the connect
/// finished.
fn connect(poll: &Poll, addr: SocketAddr, token: Token, depth: usize, once: bool) -> Client {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("connect: {e}")));
    let _ = stream.set_nodelay(true);
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    let mut client = Client {
        stream,
        out: Vec::new(),
        written: 0,
        in_flight: VecDeque::new(),
        reply: Vec::new(),
    };
    for _ in 0..depth {
        queue_request(&mut client, if once { b"" } else { b"\n" });
    }
    client
}

fn queue_request(client: &mut Client, terminator: &[u8]) {
    client.out.extend_from_slice(REQUEST);
    client.out.extend_from_slice(terminator);
    client.in_flight.push_back(Instant::now());
}

/// Writes pending bytes until done or `WouldBlock`; a short write is
/// progress, remembered in `written`. False on error.
fn flush(client: &mut Client) -> bool {
    while client.written < client.out.len() {
        match client.stream.write(&client.out[client.written..]) {
            Ok(n) => client.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            // Still connecting: the writable event will come.
            Err(e) if e.kind() == ErrorKind::NotConnected => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    client.out.clear();
    client.written = 0;
    true
}

/// Reads until `WouldBlock` or EOF. Returns (no error, saw EOF).
fn read_available(client: &mut Client) -> (bool, bool) {
    let mut buf = [0; 16 * 1024];
    loop {
        match client.stream.read(&mut buf) {
            Ok(0) => return (true, true),
            Ok(n) => client.reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (true, false),
            Err(e) if e.kind() == ErrorKind::NotConnected => return (true, false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return (false, false),
        }
    }
}

/// UDP: each socket keeps one datagram in flight; a reply that does not
/// come within `UDP_TIMEOUT` is a loss, and the socket sends again.
fn run_udp(options: &Options) -> (Histogram, u64, u64) {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut sockets: Vec<(UdpSocket, Instant)> = (0..options.conns)
        .map(|i| {
            let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)
                .expect("register");
            socket.send_to(REQUEST, options.udp).expect("send");
            (socket, Instant::now())
        })
        .collect();
    let (mut histogram, mut errors, mut lost) = (Histogram::new(), 0, 0);
    let mut buf = [0; 2048];
    let deadline = Instant::now() + options.duration;
    while Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .expect("poll");
        for event in events.iter() {
            let (socket, sent) = &mut sockets[event.token().0];
            // Receive until WouldBlock: one event may stand for several.
            while let Ok(n) = socket.recv(&mut buf) {
                if &buf[..n] == REPLY {
                    histogram.record(sent.elapsed());
                } else {
                    errors += 1;
                }
                *sent = Instant::now();
                let _ = socket.send_to(REQUEST, options.udp);
            }
        }
        for (socket, sent) in &mut sockets {
            if sent.elapsed() > UDP_TIMEOUT {
                lost += 1;
                *sent = Instant::now();
                let _ = socket.send_to(REQUEST, options.udp);
            }
        }
    }
    (histogram, errors, lost)
}

/// Idle: open `conns` connections to a line-mode server, one round trip
/// each, and report how much the server's RSS grew per connection. Plain
/// blocking sockets: here nothing is measured but memory.
fn run_idle(options: &Options) {
    use std::net::TcpStream as BlockingStream;
    let pid = options.pid.unwrap_or_else(|| fail("idle needs --pid"));
    let before = rss_bytes(pid);
    let mut held = Vec::with_capacity(options.conns);
    for _ in 0..options.conns {
        let mut stream = BlockingStream::connect(options.tcp)
            .unwrap_or_else(|e| fail(&format!("connect: {e} (raise ulimit -n?)")));
        let mut reply = [0; 9];
        stream.write_all(b"x\n").expect("write");
        stream.read_exact(&mut reply).expect("reply");
        held.push(stream);
    }
    let grown = rss_bytes(pid).saturating_sub(before);
    println!(
        "scenario=idle conns={} rss_bytes_per_conn={:.1}",
        options.conns,
        grown as f64 / options.conns.max(1) as f64
    );
}

/// VmRSS of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

/// utime + stime of a process, in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| fail(&format!("/proc/{pid}/stat: {e}")));
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |s| s.1)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn parse() -> Options {
    let mut options = Options {
        scenario: "line".into(),
        tcp: "127.0.0.1:8000".parse().unwrap(),
        udp: "127.0.0.1:8000".parse().unwrap(),
        conns: 32,
        depth: 1,
        duration: Duration::from_secs(5),
        pid: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--scenario" => options.scenario = value.clone(),
            "--tcp" => options.tcp = number(&flag, &value),
            "--udp" => options.udp = number(&flag, &value),
            "--conns" => options.conns = number(&flag, &value),
            "--depth" => options.depth = number(&flag, &value),
            "--duration" => options.duration = Duration::from_secs_f64(number(&flag, &value)),
            "--pid" => options.pid = Some(number(&flag, &value)),
            _ => fail(&format!("unknown option {flag}")),
        }
    }
    options
}

/// Parses an option's value, or exits with a message naming it.
fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| fail(&format!("{flag}: bad value '{value}'")))
}

fn fail(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(2)
}
