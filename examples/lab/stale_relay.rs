//! `stale-key` measured on ackloop: its relay registers two sockets per
//! pair (the client's with the pair's key as token, the upstream's with a
//! token of its own range), so one batch of epoll events can name a pair
//! closed earlier in the same batch.
//!
//! The probe drives an ackloop [`Server`] relaying TCP to an upstream of
//! its own, one turn at a time, and builds this batch between two turns:
//!
//! ```text
//! 1. pair K client    client A reset its connection: the pair closes
//! 2. listener         client B is waiting: accepted into a new pair
//! 3. pair K upstream  A's upstream reset too: a stale event of the closed pair
//! ```
//!
//! Each event is made ready (checked with a zero-timeout `poll` of the
//! server's socket) before the next is caused, so epoll reports them in
//! that order; then one turn runs them. If key K were free again at step
//! 2, B would get it and step 3 would reach B's pair. ackloop's debug log
//! says which key each pair got and which events the turn handled; the
//! probe then relays a line each way through B.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ackloop::{Config, Server};

use crate::ackloop_log::{self, Listening};
use crate::figures::Finding;
use crate::measure;

/// Every wait of the probe ends by then.
const DEADLINE: Duration = Duration::from_secs(5);

/// Runs the batch against ackloop's relay.
pub fn probe() -> io::Result<Finding> {
    let upstream = TcpListener::bind("127.0.0.1:0")?;
    upstream.set_nonblocking(true)?;
    let mut config = Config::loopback();
    config.udp = None;
    config.upstream_tcp = Some(upstream.local_addr()?);
    let mut server = Server::bind(config).map_err(io::Error::other)?;
    let tcp = server
        .tcp_addr()
        .ok_or_else(|| io::Error::other("no TCP address"))?;
    let listener = measure::listening_socket(tcp).ok_or_else(|| io::Error::other("no listener"))?;
    let _log = Listening::start(true);

    // Client A, relayed: a line reaches the upstream.
    let (a, a_up) = relayed_client(&mut server, tcp, &upstream)?;
    let a_key = pair_key(&ackloop_log::take_lines(), a.local_addr()?)?;
    let a_conn = socket_between(tcp, a.local_addr()?)?;
    let a_upstream = socket_between(a_up.peer_addr()?, upstream.local_addr()?)?;

    // Events left from setting up go first: the batch must be only ours.
    for _ in 0..2 {
        server.turn(Some(Duration::ZERO))?;
    }
    ackloop_log::take_lines();

    // The batch, in order: A resets; B connects; A's upstream resets.
    reset(a)?;
    until_ready(a_conn)?;
    let b = TcpStream::connect(tcp)?;
    until_ready(listener)?;
    reset(a_up)?;
    until_ready(a_upstream)?;
    server.turn(Some(Duration::ZERO))?;
    let batch = ackloop_log::take_lines();

    let events: Vec<&str> = (batch.iter())
        .filter_map(|line| line.strip_prefix("event "))
        .collect();
    let [first, second, third] = events[..] else {
        return Err(io::Error::other(format!("not the batch built: {events:?}")));
    };
    let built = first.starts_with(&format!("pair {a_key} client "))
        && second.starts_with("listener")
        && third.starts_with(&format!("pair {a_key} upstream "));
    if !built {
        return Err(io::Error::other(format!("not the batch built: {events:?}")));
    }
    let b_key = pair_key(&batch, b.local_addr()?)?;
    let served = relays_both_ways(&mut server, b, &upstream);
    let reused = b_key == a_key;
    let figure = format!(
        "one batch: A's pair {a_key} reset, B accepted as pair {b_key}, then an event of \
         A's upstream ({}): {}; B relayed both ways: {}",
        if reused {
            "key reused: it reached B's pair"
        } else {
            "stale: dropped"
        },
        if reused {
            "the key was freed at once"
        } else {
            "the key stays held until the batch ends"
        },
        if served.is_ok() { "yes" } else { "no" },
    );
    Ok(Finding {
        symptom: reused || served.is_err(),
        figure,
    })
}

/// A client whose first line the relay has passed to `upstream`; returns
/// it and the upstream's end of its pair.
fn relayed_client(
    server: &mut Server,
    tcp: SocketAddr,
    upstream: &TcpListener,
) -> io::Result<(TcpStream, TcpStream)> {
    let mut client = TcpStream::connect(tcp)?;
    client.write_all(b"a\n")?;
    let mut accepted = None;
    turn_until(server, || {
        accepted = accepted.take().or_else(|| upstream.accept().ok());
        accepted.is_some()
    })?;
    let (mut up, _) = accepted.expect("accepted: turn_until returned Ok");
    up.set_nonblocking(true)?;
    let mut line = Vec::new();
    turn_until(server, || read_some(&mut up, &mut line) && line == b"a\n")?;
    Ok((client, up))
}

/// Sends a line each way through the pair of `client`.
fn relays_both_ways(
    server: &mut Server,
    mut client: TcpStream,
    upstream: &TcpListener,
) -> io::Result<()> {
    client.write_all(b"b\n")?;
    client.set_nonblocking(true)?;
    let mut accepted = None;
    turn_until(server, || {
        accepted = accepted.take().or_else(|| upstream.accept().ok());
        accepted.is_some()
    })?;
    let (mut up, _) = accepted.expect("accepted: turn_until returned Ok");
    up.set_nonblocking(true)?;
    let mut line = Vec::new();
    turn_until(server, || read_some(&mut up, &mut line) && line == b"b\n")?;
    up.write_all(b"u\n")?;
    line.clear();
    turn_until(server, || {
        read_some(&mut client, &mut line) && line == b"u\n"
    })
}

/// Runs turns until `done`, or fails at the deadline.
fn turn_until(server: &mut Server, mut done: impl FnMut() -> bool) -> io::Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > DEADLINE {
            return Err(io::Error::other("the relay did not get there in 5 s"));
        }
        server.turn(Some(Duration::from_millis(10)))?;
    }
    Ok(())
}

/// Appends what a non-blocking stream has; true if anything came.
fn read_some(stream: &mut TcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(n) => {
            into.extend_from_slice(&buf[..n]);
            n > 0
        }
        Err(_) => false,
    }
}

/// Closes with a reset (SO_LINGER 0), not a FIN.
fn reset(stream: TcpStream) -> io::Result<()> {
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))
}

/// Waits until the server's socket `fd` has an event to report.
fn until_ready(fd: RawFd) -> io::Result<()> {
    let start = Instant::now();
    while !measure::ready(fd) {
        if start.elapsed() > DEADLINE {
            return Err(io::Error::other("a socket of the batch never became ready"));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// The server's socket from `local` to `peer`.
fn socket_between(local: SocketAddr, peer: SocketAddr) -> io::Result<RawFd> {
    measure::connected_socket(local, peer)
        .ok_or_else(|| io::Error::other(format!("no socket from {local} to {peer}")))
}

/// The key of the pair that accepted `peer`, from ackloop's debug line
/// `pair K: accepted PEER, connecting to ...`.
fn pair_key(lines: &[String], peer: SocketAddr) -> io::Result<usize> {
    let accepted = format!(": accepted {peer},");
    (lines.iter())
        .find_map(|line| {
            let (pair, _) = line.split_once(&accepted)?;
            pair.strip_prefix("pair ")?.parse().ok()
        })
        .ok_or_else(|| io::Error::other(format!("no log line tells the pair of {peer}")))
}
