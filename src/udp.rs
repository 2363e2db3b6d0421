//! UDP: one reply datagram for every datagram, with a bounded queue for
//! the replies the socket cannot take right now.
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use log::{Level, debug, log_enabled, trace, warn};
use mio::Registry;
use mio::net::UdpSocket;

use crate::config::Config;
use crate::fault::{self, FaultKind, Verdict};
use crate::journal::{AppliedFaults, JournalDirection};
use crate::relay::Direction;
use crate::relay::flows::Flows;
use crate::reply::{Protocol, Replies, Request, ask};
use crate::stats::{Counters, add};
use crate::timer::{Due, Millis, NEVER, RateLimit, at_least};
use crate::turn::{Ready, Turn, UDP, settle_writable};
use crate::write::nonblocking;

#[cfg(target_os = "linux")]
mod batch;
pub(crate) mod journal;
mod relay;

use journal::{Datagram, record_released};

/// Datagrams read per turn before other sources get their turn: a flood
/// on UDP cannot starve TCP clients. Replies sent from the queue, and
/// delayed replies released, have a budget of the same size each turn.
pub const DATAGRAMS_PER_TURN: usize = 256;

/// Largest spare reply buffer kept for reuse (the fixed reply's limit).
const SPARE_CAPACITY: usize = crate::config::MAX_REPLY_LEN;

/// A reply the socket could not take yet.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    to: SocketAddr,
    bytes: Vec<u8>,
    /// With a journal, a delayed reply's line, written when it leaves.
    note: Option<journal::Note>,
}

/// The UDP socket and its reply queue.
pub(crate) struct Udp {
    socket: UdpSocket,
    queue: VecDeque<Queued>,
    /// Replies held back by a `delay` fault, earliest first, with a serial
    /// number that keeps equal times in arrival order. They count against
    /// the queue's bounds.
    delayed: BinaryHeap<Reverse<(Millis, u64, Queued)>>,
    delayed_serial: u64,
    /// The deadline of the one timer entry armed for the delayed replies:
    /// the earliest of them, or [`NEVER`] when none waits.
    delay_timer_at: Millis,
    /// Sum of the queued and delayed replies' lengths.
    queued_bytes: usize,
    /// Buffers of replies already sent, kept for the next queued reply so
    /// that queueing allocates only while the queue first fills.
    spare: Vec<Vec<u8>>,
    /// Replies waiting, at most (`Config::udp_queue_len`).
    queue_len: usize,
    /// Bytes of replies waiting, at most (`Config::udp_queue_bytes`).
    queue_bytes: usize,
    /// `WRITABLE` is registered: only while the queue holds replies.
    write_interest: bool,
    drop_log: RateLimit,
    /// A relay (`--upstream udp:...`): datagrams go to the upstream through
    /// per-client flows, and its replies come back through here.
    relay: Option<Box<Flows>>,
    /// Linux, fixed reply: sources and lengths of a `recvmmsg` batch.
    #[cfg(target_os = "linux")]
    batch: Option<Box<batch::Batch>>,
}

impl Udp {
    /// `fixed_reply`: every reply is the same, so datagrams can be taken
    /// and answered in batches without reading their payloads.
    pub fn new(socket: UdpSocket, fixed_reply: bool, config: &Config) -> Udp {
        Udp {
            queue_len: config.udp_queue_len,
            queue_bytes: config.udp_queue_bytes,
            socket,
            queue: VecDeque::new(),
            delayed: BinaryHeap::new(),
            delayed_serial: 0,
            delay_timer_at: NEVER,
            queued_bytes: 0,
            spare: Vec::new(),
            write_interest: false,
            drop_log: RateLimit::default(),
            relay: config
                .upstream_udp
                .map(|up| Box::new(Flows::new(up, config))),
            #[cfg(target_os = "linux")]
            batch: fixed_reply.then(batch::Batch::new),
        }
    }

    /// Replies still waiting to be sent, delayed ones included (and on a
    /// relay, client datagrams held by a delay).
    pub fn queued(&self) -> usize {
        let held = self.relay.as_ref().map_or(0, |flows| flows.held());
        self.queue.len() + self.delayed.len() + held
    }

    /// The socket is ready (or was left still ready last turn): release
    /// the delayed replies that are due and send what waits, then answer
    /// datagrams until `WouldBlock` or the budget ends. Whatever budget
    /// runs out, with work perhaps left, puts the socket on the
    /// still-ready list; when the sends run out, no datagram is read this
    /// turn (its reply would only queue behind the rest).
    pub fn serve(&mut self, t: &mut Turn<'_>) {
        let mut sends = DATAGRAMS_PER_TURN;
        self.release_due(&mut sends, t);
        self.send_queued(&mut sends, t);
        if sends == 0 {
            self.settle_interest(t.registry);
            return t.ready.push(Ready::Udp);
        }
        if self.relay.is_some() {
            let still_ready = self.serve_relay(t);
            return self.settle(still_ready, Ready::Udp, t);
        }
        #[cfg(target_os = "linux")]
        let still_ready = match self.batch.take() {
            // Faults judge each datagram: no batches while any is in force.
            Some(batch) if t.faults.any(Protocol::Udp) => {
                self.batch = Some(batch);
                self.serve_one_by_one(t)
            }
            Some(mut batch) => {
                let still_ready = self.serve_batches(&mut batch, t);
                self.batch = Some(batch);
                still_ready
            }
            None => self.serve_one_by_one(t),
        };
        #[cfg(not(target_os = "linux"))]
        let still_ready = self.serve_one_by_one(t);
        self.settle(still_ready, Ready::Udp, t);
    }

    /// Settles the socket's interest, and puts `source` on the still-ready
    /// list if its budget ran out.
    fn settle(&mut self, still_ready: bool, source: Ready, t: &mut Turn<'_>) {
        self.settle_interest(t.registry);
        if still_ready {
            t.ready.push(source);
        }
    }

    /// Takes the socket (and a relay's flows) off the poll before it is
    /// dropped (mio's rule: some selectors keep state per source).
    pub fn deregister(&mut self, t: &mut Turn<'_>) {
        if let Some(flows) = &mut self.relay {
            flows.close_all(t);
        }
        let registry = t.registry;
        if let Err(e) = registry.deregister(&mut self.socket) {
            debug!("udp: cannot deregister: {e}");
        }
    }

    /// Reads and answers one datagram at a time.
    fn serve_one_by_one(&mut self, t: &mut Turn<'_>) -> bool {
        for _ in 0..DATAGRAMS_PER_TURN {
            match receive(&self.socket, t.buf) {
                Ok((len, from)) => {
                    trace!("udp: {len} bytes from {from}");
                    add(&t.counters.datagrams, 1);
                    add(&t.counters.bytes_in, len as u64);
                    // A read buffer smaller than the datagram holds its start.
                    self.answer(len.min(t.buf.len()), from, t);
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
            return self.serve_one_by_one(t);
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
            while next < received && self.queue.is_empty() {
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
                    Some(to) => self.queue_reply(reply, to, t.counters, t.now),
                    None => add(&t.counters.replies_dropped, 1),
                }
            }
        }
        true
    }

    /// Makes the reply to the datagram in `t.buf[..len]` and sends or
    /// queues it.
    fn answer(&mut self, len: usize, from: SocketAddr, t: &mut Turn<'_>) {
        let ordinal = t.counters.datagrams.load(Relaxed);
        let journaled = Datagram {
            journal: t.journal,
            now: t.now,
            ordinal,
            peer: from,
            out: JournalDirection::Out,
        };
        let clean = AppliedFaults::default();
        journaled.record(JournalDirection::In, &t.buf[..len], clean);
        let verdict = judge(from, (Direction::Down, ordinal), len, t);
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
        match (reply, verdict) {
            (None, _) => {} // The responder sends nothing.
            (Some(reply), None) => {
                journaled.record(JournalDirection::Out, reply, clean);
                self.send_or_queue(reply, from, t.counters, t.now);
            }
            // Shaped, so copied out of the shared reply.
            (Some(reply), Some(verdict)) => {
                let reply = reply.to_vec();
                self.answer_faulty(reply, &verdict, journaled, t);
            }
        }
    }

    /// Drops, shapes, duplicates or delays a reply as the verdict says.
    fn answer_faulty(
        &mut self,
        mut reply: Vec<u8>,
        verdict: &Verdict,
        journaled: Datagram<'_>,
        t: &mut Turn<'_>,
    ) {
        let (from, faults) = (journaled.peer, AppliedFaults::of(&verdict.applied));
        if verdict.terminal == Some(FaultKind::Drop) {
            return journaled.record(journaled.out, &[], faults);
        }
        if let Some(seed) = verdict.corrupt {
            fault::corrupt(&mut reply, seed);
        }
        if let Some(n) = verdict.truncate {
            reply.truncate(n);
        }
        for _ in 0..1 + usize::from(verdict.duplicate) {
            match verdict.delay_ms {
                0 => {
                    journaled.record(journaled.out, &reply, faults);
                    self.send_or_queue(&reply, from, t.counters, t.now);
                }
                delay => {
                    let note =
                        (t.journal.is_some()).then_some((journaled.ordinal, faults, journaled.out));
                    self.delay_reply(&reply, from, at_least(t.now, delay), note, t);
                }
            }
        }
    }

    /// Holds a reply back until `at`, within the queue's bounds.
    fn delay_reply(
        &mut self,
        reply: &[u8],
        to: SocketAddr,
        at: Millis,
        note: Option<journal::Note>,
        t: &mut Turn<'_>,
    ) {
        if !self.has_room(reply.len(), t.counters, t.now) {
            return;
        }
        self.queued_bytes += reply.len();
        self.delayed_serial += 1;
        let bytes = reply.to_vec();
        self.delayed.push(Reverse((
            at,
            self.delayed_serial,
            Queued { to, bytes, note },
        )));
        self.arm_delay_timer(t);
    }

    /// Keeps one timer entry for all the delayed replies, due with the
    /// earliest: an entry armed before for a later one becomes stale. An
    /// entry is never due this turn (the turn's timer pass would come
    /// round to it again): replies already due and left over by the
    /// budget are on the still-ready list.
    fn arm_delay_timer(&mut self, t: &mut Turn<'_>) {
        let replies = self.delayed.peek().map_or(NEVER, |Reverse((at, _, _))| *at);
        // A relay's client datagrams held by an `up` delay share the entry.
        let held = self
            .relay
            .as_ref()
            .map_or(NEVER, |flows| flows.earliest_held());
        let earliest = replies.min(held);
        let earliest = earliest.max(t.now + 1);
        if earliest < self.delay_timer_at {
            t.timers.arm(earliest, Due::UdpDelay);
        }
        self.delay_timer_at = earliest;
    }

    /// Whether a delay entry due `at` is the current one.
    pub fn is_current_delay(&self, at: Millis) -> bool {
        self.delay_timer_at == at
    }

    /// The delay entry came due: sends (or queues) the replies it held,
    /// [`DATAGRAMS_PER_TURN`] at most; more due go on next turn.
    pub fn release_delayed(&mut self, t: &mut Turn<'_>) {
        self.delay_timer_at = NEVER;
        if let Some(flows) = &mut self.relay {
            flows.release_held(t);
        }
        let mut sends = DATAGRAMS_PER_TURN;
        self.release_due(&mut sends, t);
        if sends == 0 {
            t.ready.push(Ready::Udp);
        }
        self.arm_delay_timer(t);
        self.settle_interest(t.registry);
    }

    /// Sends (or queues) the delayed replies that are due, one `sends`
    /// each, while any are left.
    fn release_due(&mut self, sends: &mut usize, t: &mut Turn<'_>) {
        while *sends > 0 {
            match self.delayed.peek() {
                Some(Reverse((at, _, _))) if *at <= t.now => {}
                _ => return,
            }
            let Some(Reverse((_, _, reply))) = self.delayed.pop() else {
                return;
            };
            *sends -= 1;
            self.queued_bytes -= reply.bytes.len();
            record_released(t.journal, t.now, reply.to, reply.note, &reply.bytes);
            self.send_or_queue(&reply.bytes, reply.to, t.counters, t.now);
        }
    }

    /// Sends a reply now, or queues it behind those already waiting.
    fn send_or_queue(&mut self, reply: &[u8], from: SocketAddr, counters: &Counters, now: Millis) {
        if self.queue.is_empty() {
            match send(&self.socket, reply, from) {
                Ok(Some(n)) => return add(&counters.bytes_out, n as u64),
                Ok(None) => {} // Would block: queue it.
                Err(e) => {
                    debug!("udp: send to {from} failed: {e}");
                    return add(&counters.replies_dropped, 1);
                }
            }
        }
        self.queue_reply(reply, from, counters, now);
    }

    /// Puts a reply in the queue, or drops it (counted) when the queue is
    /// full.
    fn queue_reply(&mut self, reply: &[u8], to: SocketAddr, counters: &Counters, now: Millis) {
        if !self.has_room(reply.len(), counters, now) {
            return;
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.extend_from_slice(reply);
        self.queued_bytes += bytes.len();
        self.queue.push_back(Queued {
            to,
            bytes,
            note: None,
        });
    }

    /// Whether a reply of `len` bytes fits the queue's bounds; if not, it
    /// is dropped and counted.
    fn has_room(&mut self, len: usize, counters: &Counters, now: Millis) -> bool {
        if self.queued() < self.queue_len && self.queued_bytes + len <= self.queue_bytes {
            return true;
        }
        add(&counters.replies_dropped, 1);
        if self.drop_log.allow(now) {
            warn!("udp: reply queue full; dropping replies (counted as replies dropped)");
        }
        false
    }

    /// Sends queued replies, oldest first, until the queue is empty, the
    /// socket would block or the `sends` run out.
    fn send_queued(&mut self, sends: &mut usize, t: &mut Turn<'_>) {
        while *sends > 0 {
            let Some(next) = self.queue.front() else {
                return;
            };
            match send(&self.socket, &next.bytes, next.to) {
                Ok(None) => break, // Still full: wait for the next writable event.
                Ok(Some(n)) => add(&t.counters.bytes_out, n as u64),
                Err(e) => {
                    debug!("udp: send to {} failed: {e}", next.to);
                    add(&t.counters.replies_dropped, 1);
                }
            }
            *sends -= 1;
            let mut sent = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= sent.bytes.len();
            sent.bytes.clear();
            // Keep only buffers of ordinary size: the spares' memory stays
            // bounded whatever replies went through.
            if self.spare.len() < self.queue_len && sent.bytes.capacity() <= SPARE_CAPACITY {
                self.spare.push(sent.bytes);
            }
        }
    }

    /// `WRITABLE` interest exactly while replies wait.
    fn settle_interest(&mut self, registry: &Registry) {
        let want = !self.queue.is_empty();
        let registered = &mut self.write_interest;
        if let Err(e) = settle_writable(registry, &mut self.socket, UDP, registered, want) {
            warn!("udp: cannot change interest: {e}");
        }
    }
}

/// Judges a datagram of `peer`'s (the `ordinal`th travelling in `dir`:
/// `Down` for a reply, `Up` for a relayed request), which is
/// `t.buf[..len]`, with UDP faults in
/// force: the verdict if any fault applies (counted and logged), else
/// `None`, and the datagram goes out as it is.
fn judge(
    peer: SocketAddr,
    (dir, ordinal): (Direction, u64),
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
    debug!("udp: datagram {ordinal} {dir} for {peer}: fault {verdict}");
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

/// One `send_to`: `Ok(Some(n))` sent, `Ok(None)` would block.
fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<Option<usize>> {
    nonblocking(|| socket.send_to(bytes, to))
}

#[cfg(test)]
mod tests;
