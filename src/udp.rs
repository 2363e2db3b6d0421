//! UDP: one reply datagram for every datagram, with a bounded queue for
//! what the socket cannot take right now; and, on a relay, the public
//! socket's side of it.
//!
//! There are no connections: each datagram is a whole message. On Linux,
//! [`batch`] takes up to 64 datagrams per system call (`recvmmsg`): with
//! the fixed reply and no fault in force, without their payloads, and
//! answers them all with one more (`sendmmsg`); else each with its payload
//! in a slot of `--read-buffer` bytes (64 KiB by default, so the largest
//! UDP payload, 65,507 bytes, fits), answered or relayed one by one, the
//! datagrams sent gathered ([`outbound`]) to leave together. Elsewhere a
//! batch is one datagram. Only when the socket would block does a datagram
//! wait in the queue, which the next writable event drains. While the
//! queue holds anything, new replies go behind it, in order.
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
use crate::turn::{EndpointId, Ready, Turn, settle_writable};
use crate::vocab::Direction;

// The loop's one batch is lent by the turn (`Turn::batch`).
#[cfg(target_os = "linux")]
pub(crate) mod batch;
#[cfg(not(target_os = "linux"))]
#[path = "udp/portable.rs"]
pub(crate) mod batch;
pub(crate) mod journal;
mod outbound;
mod outbox;

use journal::Datagram;
use outbox::{Outgoing, Way};

/// A batch shorter than asked for means the socket was drained (see
/// [`batch`]), but while datagrams come faster than they are answered,
/// more have often arrived by the time a batch is answered: one more read
/// then takes them for one call, where going back to the poll would cost
/// it and the read too. It pays when it finds something at least half the
/// time, and how often it does follows the batch just answered: at fixed
/// offered loads (`benches/syscalls.sh udp-rates`, 10,000 to 34,000
/// datagrams/s, both servers; docs/performance.md), the read after a
/// batch of 2 found a datagram 2 to 16 % of the time, after 3, 2 to 25 %,
/// after 4 to 7, 50 to 74 %, after 8 or more, 81 to 99 %. A shorter batch
/// says the load is light: the poll waits for the next datagram. (Not on a relay, whose clients wait for
/// what the flows bring back: a short batch is all there is.)
const READ_AGAIN_FROM: usize = 4;

/// Whether a receive that took `received` of the `asked` datagrams leaves
/// the socket worth reading again once they are answered (else it counts
/// as drained, and the next datagram brings a new event; see [`batch`]):
/// a full batch always does, a short one from `read_again_from` on.
fn read_again(received: usize, asked: usize, read_again_from: usize) -> bool {
    received >= asked || received >= read_again_from
}

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
    /// The endpoint it serves: the main sockets, or a named UDP
    /// endpoint's relay (SPEC 14); names its token and entries.
    endpoint: EndpointId,
    /// A named endpoint's name, for its journal lines.
    name: Option<Box<str>>,
    /// Datagrams taken in so far: the last one's ordinal, which faults
    /// and the journal go by. Counted here: a named endpoint's counters
    /// are drained after every step of the loop.
    taken: u64,
    /// What waits to be sent: queued for the socket, or held by a delay.
    outbox: outbox::Outbox,
    /// Datagrams for the socket gathered to be sent together.
    outbound: outbound::Outbound,
    /// `WRITABLE` is registered: only while the queue holds replies.
    write_interest: bool,
    /// Every reply is the same and nothing is relayed: while no fault
    /// judges each datagram, no payload needs reading.
    fixed_reply: bool,
}

/// What [`Udp::receive_down`] read from a relayed flow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Down {
    /// Datagrams read.
    pub count: usize,
    /// Their real lengths, summed.
    pub bytes: u64,
    /// The batch was short: the flow is drained (see [`batch`]).
    pub drained: bool,
}

impl Udp {
    /// `fixed_reply`: every reply is the same, so datagrams can be taken
    /// and answered in batches without reading their payloads.
    pub fn new(socket: UdpSocket, fixed_reply: bool, config: &Config) -> Udp {
        Udp::for_endpoint(EndpointId::MAIN, None, socket, fixed_reply, config)
    }

    /// The UDP socket of `endpoint`, registered with its token, `name`d
    /// in the journal (the main socket: `None`).
    pub fn for_endpoint(
        endpoint: EndpointId,
        name: Option<&str>,
        socket: UdpSocket,
        fixed_reply: bool,
        config: &Config,
    ) -> Udp {
        Udp {
            socket,
            endpoint,
            name: name.map(Box::from),
            taken: 0,
            outbox: outbox::Outbox::new(config, endpoint.udp_delay_due()),
            outbound: outbound::Outbound::new(),
            write_interest: false,
            // A relay needs each datagram's payload.
            fixed_reply: fixed_reply && config.upstream(Protocol::Udp).is_none(),
        }
    }

    /// Datagrams still waiting to be sent, either way: gathered, queued
    /// for the socket or held by a delay.
    pub fn queued(&self) -> usize {
        self.outbox.len() + self.outbound.len()
    }

    /// The socket is ready (or was left still ready last turn): release
    /// the delayed datagrams that are due and send what waits, then take
    /// datagrams until the socket is drained or the budget ends: each is
    /// answered, or on a relay (`upstreams`) sent up through its client's
    /// flow. Whatever budget runs out, with work perhaps left, puts the
    /// socket on the still-ready list; when the sends run out, no datagram
    /// is read this turn (its reply would only queue behind the rest).
    pub fn serve(&mut self, mut upstreams: Option<&mut dyn Upstreams>, t: &mut Turn<'_>) {
        let mut sends = DATAGRAMS_PER_TURN;
        self.release_due(&mut sends, lend(&mut upstreams), t);
        self.send_queued(&mut sends, t.counters);
        let mut still_ready = sends == 0;
        if !still_ready {
            let mut batch = take_batch(t);
            still_ready = self.serve_batches(&mut batch, upstreams, t);
            *t.batch = Some(batch);
        }
        self.flush_outbound(t.counters, t.now);
        self.settle(still_ready, self.endpoint.udp_ready(), t);
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

    /// The end of the loop's turn: sends what was gathered (a relay's
    /// flows gather their datagrams over the turn), and settles the
    /// socket's interest.
    pub fn end_turn(&mut self, t: &mut Turn<'_>) {
        self.flush_outbound(t.counters, t.now);
        self.settle_interest(t.registry);
    }

    /// Takes the socket off the poll before it is dropped (mio's rule:
    /// some selectors keep state per source). What is gathered is sent;
    /// what still waits is dropped: counted, and journaled if held by a
    /// delay.
    pub fn close(&mut self, t: &mut Turn<'_>) {
        self.flush_outbound(t.counters, t.now);
        self.outbox
            .drop_all(t.counters, t.now, t.journal, self.name.as_deref());
        if let Err(e) = t.registry.deregister(&mut self.socket) {
            debug!("udp: cannot deregister: {e}");
        }
    }

    /// Takes datagrams a batch at a time until the socket counts as
    /// drained (see [`read_again`]) or the budget ends (returns `true`).
    /// With the fixed reply and no fault in force, a batch is answered
    /// without its payloads being read, with one more call; else each
    /// datagram is answered, or on a relay sent up its flow.
    fn serve_batches(
        &mut self,
        batch: &mut batch::Batch,
        mut upstreams: Option<&mut dyn Upstreams>,
        t: &mut Turn<'_>,
    ) -> bool {
        let fixed = self.fixed_reply && upstreams.is_none() && !t.faults.any(Protocol::Udp);
        let asked = if fixed {
            batch::BATCH
        } else {
            batch.payload_slots()
        };
        // A relay's clients wait for what the flows bring back, which
        // leaves by the end of the turn: a short batch is all there is.
        let read_again_from = match upstreams {
            Some(_) => asked,
            None => READ_AGAIN_FROM,
        };
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
            let received = socket.try_io(|| match fixed {
                true => batch.receive(socket),
                false => batch.receive_payloads(socket),
            });
            let received = match received {
                Ok(n) => n,
                // Drained: the next datagram brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An error reported for an earlier send (ICMP port
                // unreachable, say): it concerns that datagram only.
                Err(e) => {
                    debug!("udp: receive error: {e}");
                    continue;
                }
            };
            taken += received;
            if fixed {
                self.answer_batch(batch, received, t);
            } else {
                for i in 0..received {
                    self.take_one(batch, i, lend(&mut upstreams), t);
                }
            }
            if !read_again(received, asked, read_again_from) {
                return false; // Drained (see `batch`).
            }
        }
        true
    }

    /// Datagram `i` of `batch`, payload read: answered, or on a relay
    /// sent up its flow.
    fn take_one(
        &mut self,
        batch: &batch::Batch,
        i: usize,
        upstreams: Option<&mut dyn Upstreams>,
        t: &mut Turn<'_>,
    ) {
        self.taken += 1;
        add(&t.counters.datagrams, 1);
        add(&t.counters.bytes_in, batch.len(i) as u64);
        let Some(from) = batch.source(i) else {
            return debug!("udp: a datagram from a non-IP address");
        };
        trace!("udp: {} bytes from {from}", batch.len(i));
        let datagram = batch.payload(i);
        match upstreams {
            None => self.answer(datagram, from, t),
            Some(upstreams) => self.relay_up(datagram, from, upstreams, t),
        }
    }

    /// Fixed reply, no fault: answers the `received` datagrams of `batch`
    /// with one `sendmmsg`; what the socket cannot take waits in the
    /// queue.
    fn answer_batch(&mut self, batch: &mut batch::Batch, received: usize, t: &mut Turn<'_>) {
        let Replies::Fixed(pattern) = &*t.replies else {
            return; // `fixed_reply` says it is.
        };
        let reply = pattern.text();
        self.taken += received as u64;
        add(&t.counters.datagrams, received as u64);
        for i in 0..received {
            add(&t.counters.bytes_in, batch.len(i) as u64);
            if log_enabled!(Level::Trace) {
                trace!("udp: {} bytes from {:?}", batch.len(i), batch.source(i));
            }
        }
        // Anything gathered before goes first.
        self.flush_outbound(t.counters, t.now);
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

    /// Makes the reply to `datagram` and sends it as the faults say.
    fn answer(&mut self, datagram: &[u8], from: SocketAddr, t: &mut Turn<'_>) {
        let ordinal = self.taken;
        let out = Outgoing {
            ordinal,
            client: from,
            way: Way::Reply,
        };
        if t.journal.is_some() {
            let clean = AppliedFaults::default();
            out.journaled(t.journal, self.name.as_deref(), t.now)
                .record(JournalDirection::In, datagram, clean);
        }
        let verdict = judge((out.way.direction(), ordinal), out.client, datagram, t);
        let reply: Option<&[u8]> = match t.replies {
            Replies::Fixed(pattern) => Some(pattern.text()),
            Replies::Custom { responder, scratch } => {
                let request = Request {
                    protocol: Protocol::Udp,
                    peer: from,
                    message: datagram,
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

    /// Relay: sends the client's `datagram` upstream through its flow, as
    /// the `up` faults say.
    fn relay_up(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        upstreams: &mut dyn Upstreams,
        t: &mut Turn<'_>,
    ) {
        let ordinal = self.taken;
        // Judged before its flow is found: a datagram with no flow to be
        // had is judged all the same, so that the faults' choices stay a
        // function of the ordinal.
        let verdict = judge((Direction::Up, ordinal), from, datagram, t);
        let Some(flow) = upstreams.flow_of(from, t) else {
            add(&t.counters.replies_dropped, 1);
            let faults = verdict.as_ref().map(|v| AppliedFaults::of(&v.applied));
            let journaled = Datagram {
                journal: t.journal,
                endpoint: self.name.as_deref(),
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
        self.send(out, datagram, verdict.as_ref(), &mut sending);
    }

    /// Relay: reads the next batch the upstream sent on a flow's `socket`
    /// into the turn's batch, for [`relay_down`](Udp::relay_down).
    ///
    /// # Errors
    ///
    /// As `recv`'s: `WouldBlock` when nothing waits; an upstream error
    /// (ICMP port unreachable) for an earlier datagram.
    pub fn receive_down(socket: &UdpSocket, t: &mut Turn<'_>) -> io::Result<Down> {
        let slot = t.buf.len();
        let batch = t.batch.get_or_insert_with(|| batch::Batch::new(slot));
        let count = socket.try_io(|| batch.receive_payloads(socket))?;
        let bytes = (0..count).map(|i| batch.len(i) as u64).sum();
        Ok(Down {
            count,
            bytes,
            drained: count < batch.payload_slots(),
        })
    }

    /// Relay: the `count` datagrams [`receive_down`](Udp::receive_down)
    /// read (into the turn's batch: nothing reads between) came from the upstream on `flow`, the first of them the
    /// `first`th down; each goes to `client` from the public socket, as
    /// the `down` faults say (gathered, to leave together by the end of
    /// the turn).
    pub fn relay_down(
        &mut self,
        (count, client, first): (usize, SocketAddr, u64),
        flow: FlowRef,
        upstreams: &mut dyn Upstreams,
        t: &mut Turn<'_>,
    ) {
        let Some(batch) = t.batch.take() else {
            return;
        };
        for (i, ordinal) in (0..count).zip(first..) {
            let datagram = batch.payload(i);
            let out = Outgoing {
                ordinal,
                client,
                way: Way::Down(flow),
            };
            let verdict = judge((out.way.direction(), ordinal), out.client, datagram, t);
            let mut sending = Sending {
                counters: t.counters,
                now: t.now,
                journal: t.journal,
                timers: t.timers,
                upstreams: Some(&mut *upstreams),
            };
            self.send(out, datagram, verdict.as_ref(), &mut sending);
        }
        *t.batch = Some(batch);
    }

    /// `WRITABLE` interest exactly while replies wait for the socket.
    fn settle_interest(&mut self, registry: &Registry) {
        let want = !self.outbox.nothing_queued();
        let (registered, token) = (&mut self.write_interest, self.endpoint.udp_token());
        if let Err(e) = settle_writable(registry, &mut self.socket, token, registered, want) {
            warn!("udp: cannot change interest: {e}");
        }
    }
}

/// The loop's one batch, taken out of the turn while a socket's
/// datagrams are worked through (put it back after): made on first use,
/// its payload slots as long as the read buffer (`--read-buffer`), which
/// is what a datagram would be read into without batches.
fn take_batch(t: &mut Turn<'_>) -> batch::Batch {
    let slot = t.buf.len();
    t.batch.take().unwrap_or_else(|| batch::Batch::new(slot))
}

/// Judges `datagram`, the `ordinal`th going `dir`, of `client`'s, with
/// the UDP faults in force: the verdict if any fault applies (counted and
/// logged), else `None`, and the datagram goes out as it is.
fn judge(
    (dir, ordinal): (Direction, u64),
    client: SocketAddr,
    datagram: &[u8],
    t: &mut Turn<'_>,
) -> Option<Verdict> {
    if !t.faults.any(Protocol::Udp) {
        return None;
    }
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

#[cfg(test)]
mod tests;
