//! UDP: one reply datagram for every datagram, with a bounded queue for
//! what the socket cannot take right now; and, on a relay, the public
//! socket's side of it.
//!
//! There are no connections: each datagram is a whole message. With a
//! custom responder it is read into the loop's shared read buffer
//! (`--read-buffer`, 64 KiB by default, so the largest UDP payload, 65,507
//! bytes, fits) and answered with `send_to`.
//! With the fixed reply on Linux, [`batch`] takes up to 32 datagrams per
//! system call and answers them all with one more. Only when the socket
//! would block does a reply wait in the queue, which the next writable
//! event drains. While the queue holds anything, new replies go behind it,
//! in order.
//!
//! Every datagram the server sends that a fault may touch (a reply, and on
//! a relay each datagram relayed either way) takes one path, in
//! [`outbox`]: a verdict, then sent, shaped, dropped or held back by a
//! delay in one queue, under one bound (`--udp-queue-len`,
//! `--udp-queue-bytes`), released by one timer.
//!
//! The relay's flows ([`Upstreams`]) sit above this module: the loop lends
//! them to [`Udp::serve`], which sends each client datagram up through its
//! flow, and the relay hands what its flows receive to
//! [`Udp::relay_down`]. UDP itself knows no relay.

use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use log::{Level, debug, log_enabled, trace, warn};
use mio::Registry;
use mio::net::UdpSocket;

use crate::config::Config;
use crate::fault::Verdict;
use crate::journal::{AppliedFaults, Journal, JournalDirection};
use crate::limits::DATAGRAMS_PER_TURN;
use crate::reply::{Protocol, Replies, Request, ask};
use crate::stats::{Counters, add};
use crate::timer::{Millis, Timers};
use crate::turn::{Ready, Turn, UDP, settle_writable};
use crate::vocab::Direction;

#[cfg(target_os = "linux")]
mod batch;
pub(crate) mod journal;
mod outbox;

use journal::Datagram;
use outbox::{Outgoing, Way};

/// A relayed flow as UDP knows it: its key in the relay's table and the
/// serial number that tells it from a later flow in the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowRef {
    pub key: usize,
    pub id: u32,
}

/// The relay's flows as UDP sees them: where a client's datagrams go
/// upstream. Defined here, below the relay, so that UDP needs no relay:
/// the relay implements it and the loop lends it to UDP.
pub(crate) trait Upstreams {
    /// The flow of `client`'s datagrams, made now if it has none, and
    /// marked active; `None` when it cannot have one (at `--max-flows`,
    /// or no socket to be had).
    fn flow_of(&mut self, client: SocketAddr, t: &mut Turn<'_>) -> Option<FlowRef>;

    /// Sends `datagram` upstream on `flow`; whether it left (a flow gone
    /// or a full socket loses it: the caller counts it).
    fn send_up(&mut self, flow: FlowRef, datagram: &[u8], counters: &Counters, now: Millis)
    -> bool;

    /// A delay now holds one more datagram of `flow`'s (`held`), either
    /// way, or one fewer: a flow holding any is not idle, and its idle
    /// time starts when the last one leaves.
    fn hold(&mut self, flow: FlowRef, held: bool, now: Millis, timers: &mut Timers);
}

/// Lends the relay's flows on for a shorter while. (A trait object behind
/// `&mut` is shortened only where it is coerced, never inside an
/// `Option`, so `as_deref_mut` would lend them for as long as they were
/// lent here.)
fn lend<'r>(upstreams: &'r mut Option<&mut dyn Upstreams>) -> Option<&'r mut dyn Upstreams> {
    match upstreams {
        Some(upstreams) => Some(&mut **upstreams),
        None => None,
    }
}

/// The parts of a turn that sending a datagram needs, borrowed apart from
/// the reply or buffer that holds the datagram.
struct Sending<'a> {
    counters: &'a Counters,
    now: Millis,
    journal: Option<&'a RefCell<Journal>>,
    timers: &'a mut Timers,
    /// A relay's flows, lent for this turn.
    upstreams: Option<&'a mut dyn Upstreams>,
}

/// The UDP socket, its reply queue and the datagrams delays hold.
pub(crate) struct Udp {
    socket: UdpSocket,
    /// What waits to be sent: queued for the socket, or held by a delay.
    outbox: outbox::Outbox,
    /// `WRITABLE` is registered: only while the queue holds replies.
    write_interest: bool,
    /// Linux, fixed reply: sources and lengths of a `recvmmsg` batch.
    #[cfg(target_os = "linux")]
    batch: Option<Box<batch::Batch>>,
}

impl Udp {
    /// `fixed_reply`: every reply is the same, so datagrams can be taken
    /// and answered in batches without reading their payloads.
    pub fn new(socket: UdpSocket, fixed_reply: bool, config: &Config) -> Udp {
        // A relay needs each datagram's payload: no batches for it.
        let batches = fixed_reply && config.upstream(Protocol::Udp).is_none();
        #[cfg(not(target_os = "linux"))]
        let _ = batches;
        Udp {
            socket,
            outbox: outbox::Outbox::new(config),
            write_interest: false,
            #[cfg(target_os = "linux")]
            batch: batches.then(batch::Batch::new),
        }
    }

    /// Datagrams still waiting to be sent, either way: queued for the
    /// socket or held by a delay.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// The socket is ready (or was left still ready last turn): release
    /// the delayed datagrams that are due and send what waits, then take
    /// datagrams until `WouldBlock` or the budget ends: each is answered,
    /// or on a relay (`upstreams`) sent up through its client's flow.
    /// Whatever budget runs out, with work perhaps left, puts the socket
    /// on the still-ready list; when the sends run out, no datagram is
    /// read this turn (its reply would only queue behind the rest).
    pub fn serve(&mut self, mut upstreams: Option<&mut dyn Upstreams>, t: &mut Turn<'_>) {
        let mut sends = DATAGRAMS_PER_TURN;
        self.release_due(&mut sends, lend(&mut upstreams), t);
        self.send_queued(&mut sends, t.counters);
        if sends == 0 {
            self.settle_interest(t.registry);
            return t.ready.push(Ready::Udp);
        }
        let still_ready = match upstreams {
            Some(upstreams) => self.serve_one_by_one(Some(upstreams), t),
            None => self.serve_plain(t),
        };
        self.settle(still_ready, Ready::Udp, t);
    }

    /// Answers datagrams: in batches with the fixed reply on Linux, while
    /// no fault judges each datagram; else one by one. Whether the budget
    /// ran out.
    fn serve_plain(&mut self, t: &mut Turn<'_>) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(mut batch) = self.batch.take() {
            // Faults judge each datagram: no batches while any is in force.
            let still_ready = if t.faults.any(Protocol::Udp) {
                self.serve_one_by_one(None, t)
            } else {
                self.serve_batches(&mut batch, t)
            };
            self.batch = Some(batch);
            return still_ready;
        }
        self.serve_one_by_one(None, t)
    }

    /// Settles the socket's interest, and puts `source` (the socket, or a
    /// relayed flow that sends through it) on the still-ready list if its
    /// budget ran out.
    pub fn settle(&mut self, still_ready: bool, source: Ready, t: &mut Turn<'_>) {
        self.settle_interest(t.registry);
        if still_ready {
            t.ready.push(source);
        }
    }

    /// Takes the socket off the poll before it is dropped (mio's rule:
    /// some selectors keep state per source). What still waits is
    /// dropped: counted, and journaled if held by a delay.
    pub fn close(&mut self, t: &mut Turn<'_>) {
        self.outbox.drop_all(t.counters, t.now, t.journal);
        if let Err(e) = t.registry.deregister(&mut self.socket) {
            debug!("udp: cannot deregister: {e}");
        }
    }

    /// Reads datagrams one at a time: each is answered, or on a relay
    /// sent up.
    fn serve_one_by_one(
        &mut self,
        mut upstreams: Option<&mut dyn Upstreams>,
        t: &mut Turn<'_>,
    ) -> bool {
        for _ in 0..DATAGRAMS_PER_TURN {
            match receive(&self.socket, t.buf) {
                Ok((len, from)) => {
                    trace!("udp: {len} bytes from {from}");
                    add(&t.counters.datagrams, 1);
                    add(&t.counters.bytes_in, len as u64);
                    // A read buffer smaller than the datagram holds its start.
                    let len = len.min(t.buf.len());
                    match lend(&mut upstreams) {
                        None => self.answer(len, from, t),
                        Some(upstreams) => self.relay_up(len, from, upstreams, t),
                    }
                }
                // Drained: the next datagram brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An error reported for an earlier send (ICMP port
                // unreachable, say): it concerns that datagram only.
                Err(e) => debug!("udp: receive error: {e}"),
            }
        }
        true
    }

    /// Fixed reply on Linux: takes datagrams [`batch::BATCH`] at a time and
    /// answers each batch with one `sendmmsg`; what the socket cannot take
    /// waits in the queue.
    #[cfg(target_os = "linux")]
    fn serve_batches(&mut self, batch: &mut batch::Batch, t: &mut Turn<'_>) -> bool {
        let Replies::Fixed(pattern) = &*t.replies else {
            // A responder needs each payload: no batches for it.
            return self.serve_one_by_one(None, t);
        };
        let reply = pattern.text();
        // The budget counts datagrams, not calls: under steady load each
        // call finds the few that arrived during the last one, and going on
        // costs less than waking the poll again. The calls are bounded too,
        // whatever they return.
        let mut taken = 0;
        for _ in 0..DATAGRAMS_PER_TURN {
            if taken >= DATAGRAMS_PER_TURN {
                break;
            }
            // Through `try_io`: a call mio does not make itself must still
            // tell mio's selector when it hits `WouldBlock` (epoll needs
            // nothing; mio's poll(2) selector re-arms the socket then).
            let socket = &self.socket;
            let received = match socket.try_io(|| batch.receive(socket)) {
                Ok(n) => n,
                // Drained: the next datagram brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("udp: receive error: {e}");
                    continue;
                }
            };
            taken += received;
            add(&t.counters.datagrams, received as u64);
            for i in 0..received {
                add(&t.counters.bytes_in, batch.len(i) as u64);
                if log_enabled!(Level::Trace) {
                    trace!("udp: {} bytes from {:?}", batch.len(i), batch.source(i));
                }
            }
            let mut next = 0;
            while next < received && self.outbox.nothing_queued() {
                let socket = &self.socket;
                match socket.try_io(|| batch.send(socket, reply, next..received)) {
                    Ok(sent) => {
                        add(&t.counters.bytes_out, (sent * reply.len()) as u64);
                        next += sent;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!("udp: send to {:?} failed: {e}", batch.source(next));
                        add(&t.counters.replies_dropped, 1);
                        next += 1;
                    }
                }
            }
            // What the socket would not take waits, in order.
            for i in next..received {
                match batch.source(i) {
                    Some(to) => {
                        self.outbox.queue(reply, to, t.counters, t.now);
                    }
                    None => add(&t.counters.replies_dropped, 1),
                }
            }
        }
        true
    }

    /// Makes the reply to the datagram in `t.buf[..len]` and sends it as
    /// the faults say.
    fn answer(&mut self, len: usize, from: SocketAddr, t: &mut Turn<'_>) {
        let ordinal = t.counters.datagrams.load(Relaxed);
        let out = Outgoing {
            ordinal,
            client: from,
            way: Way::Reply,
        };
        if t.journal.is_some() {
            let datagram = &t.buf[..len];
            let clean = AppliedFaults::default();
            out.journaled(t.journal, t.now)
                .record(JournalDirection::In, datagram, clean);
        }
        let verdict = judge((out.way.direction(), ordinal), out.client, len, t);
        let reply: Option<&[u8]> = match t.replies {
            Replies::Fixed(pattern) => Some(pattern.text()),
            Replies::Custom { responder, scratch } => {
                let request = Request {
                    protocol: Protocol::Udp,
                    peer: from,
                    message: &t.buf[..len],
                };
                ask(responder, scratch, &request)
            }
        };
        // The reply is borrowed from the turn's replies: the rest of the
        // turn is lent apart from it.
        let mut sending = Sending {
            counters: t.counters,
            now: t.now,
            journal: t.journal,
            timers: t.timers,
            upstreams: None,
        };
        if let Some(reply) = reply {
            self.send(out, reply, verdict.as_ref(), &mut sending);
        } // Else the responder sends nothing.
    }

    /// Relay: sends the client datagram in `t.buf[..len]` upstream through
    /// its flow, as the `up` faults say.
    fn relay_up(
        &mut self,
        len: usize,
        from: SocketAddr,
        upstreams: &mut dyn Upstreams,
        t: &mut Turn<'_>,
    ) {
        let ordinal = t.counters.datagrams.load(Relaxed);
        // Judged before its flow is found: a datagram with no flow to be
        // had is judged all the same, so that the faults' choices stay a
        // function of the ordinal.
        let verdict = judge((Direction::Up, ordinal), from, len, t);
        let Some(flow) = upstreams.flow_of(from, t) else {
            add(&t.counters.replies_dropped, 1);
            let faults = verdict.as_ref().map(|v| AppliedFaults::of(&v.applied));
            let journaled = Datagram {
                journal: t.journal,
                now: t.now,
                ordinal,
                peer: from,
            };
            return journaled.record(JournalDirection::Up, &[], faults.unwrap_or_default());
        };
        let out = Outgoing {
            ordinal,
            client: from,
            way: Way::Up(flow),
        };
        let mut sending = Sending {
            counters: t.counters,
            now: t.now,
            journal: t.journal,
            timers: t.timers,
            upstreams: Some(upstreams),
        };
        self.send(out, &t.buf[..len], verdict.as_ref(), &mut sending);
    }

    /// Relay: the datagram in `t.buf[..len]` came from the upstream on
    /// `flow`, the `ordinal`th down; it goes to `client` from the public
    /// socket, as the `down` faults say.
    pub fn relay_down(
        &mut self,
        (len, client, ordinal): (usize, SocketAddr, u64),
        flow: FlowRef,
        upstreams: &mut dyn Upstreams,
        t: &mut Turn<'_>,
    ) {
        let out = Outgoing {
            ordinal,
            client,
            way: Way::Down(flow),
        };
        let len = len.min(t.buf.len());
        let verdict = judge((out.way.direction(), ordinal), out.client, len, t);
        let mut sending = Sending {
            counters: t.counters,
            now: t.now,
            journal: t.journal,
            timers: t.timers,
            upstreams: Some(upstreams),
        };
        self.send(out, &t.buf[..len], verdict.as_ref(), &mut sending);
    }

    /// `WRITABLE` interest exactly while replies wait for the socket.
    fn settle_interest(&mut self, registry: &Registry) {
        let want = !self.outbox.nothing_queued();
        let registered = &mut self.write_interest;
        if let Err(e) = settle_writable(registry, &mut self.socket, UDP, registered, want) {
            warn!("udp: cannot change interest: {e}");
        }
    }
}

/// Judges the datagram `t.buf[..len]`, the `ordinal`th going `dir`, of
/// `client`'s, with the UDP faults in force: the verdict if any fault
/// applies (counted and logged), else `None`, and the datagram goes out
/// as it is.
fn judge(
    (dir, ordinal): (Direction, u64),
    client: SocketAddr,
    len: usize,
    t: &mut Turn<'_>,
) -> Option<Verdict> {
    if !t.faults.any(Protocol::Udp) {
        return None;
    }
    let datagram = &t.buf[..len];
    let verdict = t
        .faults
        .judge_message(Protocol::Udp, dir, [ordinal, 0], datagram);
    if verdict.is_clean() {
        return None;
    }
    t.counters.add_faults(&verdict.applied);
    debug!("udp: datagram {ordinal} {dir} for {client}: fault {verdict}");
    Some(verdict)
}

/// Receives one datagram into `buf`; returns its real length, which is
/// more than `buf` holds when the buffer is the smaller (`MSG_TRUNC` on
/// Linux; elsewhere the length read), and its source.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    #[cfg(target_os = "linux")]
    {
        use std::mem::MaybeUninit;
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and
        // the callee only writes initialized bytes into it (the kernel
        // copies the datagram), so `buf` stays initialized.
        let uninit = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
        let sock = socket2::SockRef::from(socket);
        // Through `try_io`, as for the batches: mio must see `WouldBlock`.
        let (len, from) = socket.try_io(|| sock.recv_from_with_flags(uninit, libc::MSG_TRUNC))?;
        let from = from
            .as_socket()
            .ok_or_else(|| io::Error::other("a datagram from a non-IP address"))?;
        Ok((len, from))
    }
    #[cfg(not(target_os = "linux"))]
    socket.recv_from(buf)
}

#[cfg(test)]
mod tests;
