//! The udp scenario: one datagram in flight per socket, resent when lost;
//! or, with `--rate`, an open load paced at a fixed rate.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::measure::{Stats, Window, report};
use crate::{Args, REQUEST, SETUP_LIMIT, TICK, UDP_TIMEOUT, finished, invalid, wait};

/// One UDP socket with at most one request in flight.
struct Datagram {
    socket: UdpSocket,
    sent_at: Option<Instant>,
    /// Paced (open) load only: when each datagram still unanswered was
    /// sent, oldest first. UDP on loopback keeps order, so a reply belongs
    /// to the oldest.
    in_flight: VecDeque<Instant>,
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
            in_flight: VecDeque::new(),
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

pub fn run_udp(args: &Args) -> io::Result<()> {
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

/// The paced (open) load: `rate` datagrams a second, sent in turn over the
/// sockets whatever comes back. Each poll wakes at most every millisecond
/// (epoll's resolution) and sends every datagram due by then, so the load
/// arrives in bursts of `rate / 1000`; a reply is matched with its socket's
/// oldest unanswered datagram, and one unanswered for `UDP_TIMEOUT` is lost.
pub fn run_udp_paced(args: &Args, rate: u64) -> io::Result<()> {
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(1024));
    let mut socks = (0..args.conns)
        .map(|i| Datagram::open(args.udp, poll.registry(), Token(i)))
        .collect::<io::Result<Vec<_>>>()?;
    warm_up(&mut socks, args, &mut poll)?;
    let mut stats = Stats::default();
    let window = Window::open(args.pid);
    let (start, end) = (window.started, window.started + args.duration);
    let (mut sent, mut next) = (0u64, 0usize);
    while !finished(args, &stats, end) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        for _ in sent..due {
            socks[next].send_paced(&mut stats);
            next = (next + 1) % socks.len();
        }
        sent = sent.max(due);
        let wait_for = Duration::from_millis(1).min(end.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, Some(wait_for)) {
            Err(e) if e.kind() != ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for event in &events {
            socks[event.token().0].receive_paced(&args.reply, &mut stats);
        }
        socks.iter_mut().for_each(|d| d.expire(&mut stats));
    }
    let offered = format!(" offered_per_s={rate} sent={sent}");
    report(args, &stats, window.close(stats.ops), &offered);
    Ok(())
}

impl Datagram {
    fn send_paced(&mut self, stats: &mut Stats) {
        match self.socket.send(REQUEST) {
            Ok(_) => self.in_flight.push_back(Instant::now()),
            // A full socket buffer loses the datagram, as the network would.
            Err(e) if e.kind() == ErrorKind::WouldBlock => stats.lost += 1,
            Err(e) => stats.error(e),
        }
    }

    fn receive_paced(&mut self, reply: &[u8], stats: &mut Stats) {
        let mut buf = [0; 2048];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => match (self.in_flight.pop_front(), &buf[..n] == reply) {
                    (None, _) => stats.late += 1,
                    (Some(sent), true) => stats.record(sent),
                    (Some(_), false) => stats.error(invalid("wrong reply bytes")),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return stats.error(e),
            }
        }
    }

    /// Counts datagrams unanswered for `UDP_TIMEOUT` as lost.
    fn expire(&mut self, stats: &mut Stats) {
        while self
            .in_flight
            .front()
            .is_some_and(|t| t.elapsed() >= UDP_TIMEOUT)
        {
            self.in_flight.pop_front();
            stats.lost += 1;
        }
    }
}
