//! The one path of every datagram the server sends that a fault may touch
//! (a reply; on a relay, a datagram relayed either way): a verdict, then
//! the datagram is sent, shaped, dropped, or held back by a delay; what
//! the public socket cannot take yet waits in its queue. Held and queued
//! datagrams count against one bound (`--udp-queue-len` datagrams,
//! `--udp-queue-bytes` bytes), plain and relayed together, and one timer
//! entry, due with the earliest held, releases them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::UdpSocket;

use super::journal::Datagram;
use super::{FlowRef, Sending, Udp, Upstreams, lend};
use crate::config::Config;
use crate::fault::{self, FaultKind, Verdict};
use crate::journal::{AppliedFaults, Journal, JournalDirection};
use crate::limits::DATAGRAMS_PER_TURN;
use crate::stats::{Counters, add};
use crate::timer::{Armed, Due, Millis, RateLimit, Timers, at_least};
use crate::turn::Turn;
use crate::vocab::Direction;
use crate::write::nonblocking;

/// Largest spare buffer kept for reuse (the fixed reply's limit).
const SPARE_CAPACITY: usize = crate::config::MAX_REPLY_LEN;

/// Which way a datagram leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    /// A reply, from the public socket to the client.
    Reply,
    /// Relayed from the upstream on this flow: from the public socket to
    /// the client.
    Down(FlowRef),
    /// Relayed from the client: up this flow.
    Up(FlowRef),
}

impl Way {
    /// The direction a fault's `dir=` names it by.
    pub fn direction(self) -> Direction {
        match self {
            Way::Up(_) => Direction::Up,
            Way::Reply | Way::Down(_) => Direction::Down,
        }
    }

    /// Its journal lines' `dir`.
    fn journal_direction(self) -> JournalDirection {
        match self {
            Way::Reply => JournalDirection::Out,
            Way::Down(_) => JournalDirection::Down,
            Way::Up(_) => JournalDirection::Up,
        }
    }

    /// The relayed flow it belongs to, if any.
    fn flow(self) -> Option<FlowRef> {
        match self {
            Way::Reply => None,
            Way::Down(flow) | Way::Up(flow) => Some(flow),
        }
    }
}

/// A datagram to send: whose, which way, its ordinal in that direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outgoing {
    /// Its ordinal among the datagrams going its direction (from 1).
    pub ordinal: u64,
    /// The client it is for, or on its way up from.
    pub client: SocketAddr,
    pub way: Way,
}

impl Outgoing {
    /// Its journal lines, at `now`, naming `endpoint` if it is a named
    /// one's.
    pub fn journaled<'a>(
        &self,
        journal: Option<&'a RefCell<Journal>>,
        endpoint: Option<&'a str>,
        now: Millis,
    ) -> Datagram<'a> {
        Datagram {
            journal,
            endpoint,
            now,
            ordinal: self.ordinal,
            peer: self.client,
        }
    }
}

/// A datagram the public socket could not take yet.
struct Queued {
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// A datagram a delay holds back until `at`; `serial` keeps equal times
/// in the order they were held.
struct Held {
    at: Millis,
    serial: u64,
    out: Outgoing,
    bytes: Vec<u8>,
    /// The faults applied, for its journal line.
    faults: AppliedFaults,
}

impl Held {
    fn key(&self) -> (Millis, u64) {
        (self.at, self.serial)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Held) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// What waits to be sent: queued for the public socket, or held by a
/// delay (either way, on a relay). One bound holds for both.
pub(super) struct Outbox {
    queue: VecDeque<Queued>,
    /// Earliest first.
    held: BinaryHeap<Reverse<Held>>,
    serial: u64,
    /// Sum of the queued and held datagrams' lengths.
    bytes: usize,
    /// Buffers of datagrams already sent, kept for the next queued or held
    /// one, so that queueing allocates only while the queue first fills.
    spare: Vec<Vec<u8>>,
    /// Datagrams waiting, at most (`Config::udp_queue_len`).
    max_len: usize,
    /// Bytes of datagrams waiting, at most (`Config::udp_queue_bytes`).
    max_bytes: usize,
    drop_log: RateLimit,
    /// The timer entry due with the earliest held datagram.
    timer: Armed,
    /// What that entry says is due (its socket's endpoint's delay).
    due: Due,
}

impl Outbox {
    pub fn new(config: &Config, due: Due) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            held: BinaryHeap::new(),
            serial: 0,
            bytes: 0,
            spare: Vec::new(),
            max_len: config.udp_queue_len,
            max_bytes: config.udp_queue_bytes,
            drop_log: RateLimit::default(),
            timer: Armed::default(),
            due,
        }
    }

    /// Datagrams waiting, queued and held.
    pub fn len(&self) -> usize {
        self.queue.len() + self.held.len()
    }

    /// Spare buffers kept.
    #[cfg(test)]
    pub fn spares(&self) -> usize {
        self.spare.len()
    }

    /// Whether nothing waits for the public socket (held ones aside).
    pub fn nothing_queued(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a datagram of `len` bytes fits the bound; if not, it is
    /// dropped and counted.
    fn has_room(&mut self, len: usize, counters: &Counters, now: Millis) -> bool {
        if self.len() < self.max_len && self.bytes + len <= self.max_bytes {
            return true;
        }
        add(&counters.replies_dropped, 1);
        if self.drop_log.allow(now) {
            warn!("udp: reply queue full; dropping datagrams (counted as replies dropped)");
        }
        false
    }

    /// A buffer holding `bytes`, a spare one if there is one.
    fn copy(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.extend_from_slice(bytes);
        copy
    }

    /// Keeps a sent datagram's buffer for reuse, if it is of ordinary
    /// size: the spares' memory stays bounded whatever went through.
    fn recycle(&mut self, mut bytes: Vec<u8>) {
        bytes.clear();
        if self.spare.len() < self.max_len && bytes.capacity() <= SPARE_CAPACITY {
            self.spare.push(bytes);
        }
    }

    /// Puts a datagram for `to` in the queue; whether it fits (if not, it
    /// is dropped and counted).
    pub fn queue(
        &mut self,
        bytes: &[u8],
        to: SocketAddr,
        counters: &Counters,
        now: Millis,
    ) -> bool {
        if !self.has_room(bytes.len(), counters, now) {
            return false;
        }
        let bytes = self.copy(bytes);
        self.bytes += bytes.len();
        self.queue.push_back(Queued { to, bytes });
        true
    }

    /// Arms the timer for the earliest held datagram, if any; never due
    /// this turn (the turn's timer pass would come round to it again):
    /// datagrams already due and left over by the budget are on the
    /// still-ready list.
    fn arm(&mut self, now: Millis, timers: &mut Timers) {
        if let Some(Reverse(earliest)) = self.held.peek() {
            let at = earliest.at.max(now + 1);
            self.timer.arm(at, now, self.due, timers);
        }
    }

    /// Drops everything waiting (the server is closing): counted, and
    /// the held ones journaled, since they never left.
    pub fn drop_all(
        &mut self,
        counters: &Counters,
        now: Millis,
        journal: Option<&RefCell<Journal>>,
        endpoint: Option<&str>,
    ) {
        add(&counters.replies_dropped, self.len() as u64);
        for Reverse(held) in self.held.drain() {
            let dir = held.out.way.journal_direction();
            held.out
                .journaled(journal, endpoint, now)
                .record(dir, &[], held.faults);
        }
        self.queue.clear();
        self.bytes = 0;
    }
}

impl Udp {
    /// Sends `datagram` `out`'s way as the `verdict` says (none: as it
    /// is): dropped, corrupted, truncated, duplicated, held back by a
    /// delay. The one fault path of UDP, for replies and relayed
    /// datagrams alike.
    pub(super) fn send(
        &mut self,
        out: Outgoing,
        datagram: &[u8],
        verdict: Option<&Verdict>,
        s: &mut Sending<'_>,
    ) {
        let Some(verdict) = verdict else {
            return self.send_now(out, datagram, AppliedFaults::default(), s);
        };
        let faults = AppliedFaults::of(&verdict.applied);
        if verdict.terminal == Some(FaultKind::Drop) {
            let dir = out.way.journal_direction();
            return out
                .journaled(s.journal, self.name.as_deref(), s.now)
                .record(dir, &[], faults);
        }
        // Copied out of the shared reply or buffer only to be corrupted.
        let mut shaped = Cow::Borrowed(datagram);
        if let Some(seed) = verdict.corrupt {
            fault::corrupt(shaped.to_mut(), seed);
        }
        if let Some(n) = verdict.truncate {
            shaped = match shaped {
                Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[..n.min(bytes.len())]),
                Cow::Owned(mut bytes) => {
                    bytes.truncate(n);
                    Cow::Owned(bytes)
                }
            };
        }
        for _ in 0..1 + usize::from(verdict.duplicate) {
            match verdict.delay_ms {
                0 => self.send_now(out, &shaped, faults, s),
                delay => self.hold(out, &shaped, faults, at_least(s.now, delay), s),
            }
        }
    }

    /// Sends `datagram` now (or queues it for the public socket), and
    /// journals it as it leaves: with length 0 if it was dropped.
    fn send_now(
        &mut self,
        out: Outgoing,
        datagram: &[u8],
        faults: AppliedFaults,
        s: &mut Sending<'_>,
    ) {
        let sent = match out.way {
            Way::Reply | Way::Down(_) => {
                self.send_or_queue(datagram, out.client, s.counters, s.now)
            }
            Way::Up(flow) => {
                let upstreams = lend(&mut s.upstreams);
                let sent =
                    upstreams.is_some_and(|up| up.send_up(flow, datagram, s.counters, s.now));
                if !sent {
                    add(&s.counters.replies_dropped, 1);
                }
                sent
            }
        };
        if s.journal.is_some() {
            let bytes = if sent { datagram } else { &[] };
            let dir = out.way.journal_direction();
            out.journaled(s.journal, self.name.as_deref(), s.now)
                .record(dir, bytes, faults);
        }
    }

    /// Holds `datagram` back until `at`, within the bound (a datagram past
    /// it is dropped, counted and journaled); a relayed one's flow knows
    /// it holds one more.
    fn hold(
        &mut self,
        out: Outgoing,
        datagram: &[u8],
        faults: AppliedFaults,
        at: Millis,
        s: &mut Sending<'_>,
    ) {
        let outbox = &mut self.outbox;
        if !outbox.has_room(datagram.len(), s.counters, s.now) {
            let dir = out.way.journal_direction();
            return out
                .journaled(s.journal, self.name.as_deref(), s.now)
                .record(dir, &[], faults);
        }
        let bytes = outbox.copy(datagram);
        outbox.bytes += bytes.len();
        outbox.serial += 1;
        let serial = outbox.serial;
        outbox.held.push(Reverse(Held {
            at,
            serial,
            out,
            bytes,
            faults,
        }));
        outbox.timer.arm(at, s.now, outbox.due, s.timers);
        if let (Some(flow), Some(upstreams)) = (out.way.flow(), lend(&mut s.upstreams)) {
            upstreams.hold(flow, true, s.now, s.timers);
        }
    }

    /// The delay's timer entry due `at` came due: if it is the current
    /// one, sends (or queues) the held datagrams that are due,
    /// [`DATAGRAMS_PER_TURN`] at most (more due: the socket goes on the
    /// still-ready list), and arms the entry for the next.
    pub fn on_delay_timer(
        &mut self,
        at: Millis,
        upstreams: Option<&mut dyn Upstreams>,
        t: &mut Turn<'_>,
    ) {
        if !self.outbox.timer.fire(at) {
            return; // Stale: an earlier entry took its place.
        }
        let mut sends = DATAGRAMS_PER_TURN;
        self.release_due(&mut sends, upstreams, t);
        if sends == 0 {
            t.ready.push(self.endpoint.udp_ready());
        }
        self.outbox.arm(t.now, t.timers);
        self.flush_outbound(t.counters, t.now);
        self.settle_interest(t.registry);
    }

    /// Whether a delay entry due `at` is the current one.
    pub fn is_current_delay(&self, at: Millis) -> bool {
        self.outbox.timer.is_current(at)
    }

    /// Sends (or queues) the held datagrams that are due, one `sends`
    /// each, while any are left. The timer entry stays armed: it is due
    /// no later than the earliest left.
    pub(super) fn release_due(
        &mut self,
        sends: &mut usize,
        upstreams: Option<&mut dyn Upstreams>,
        t: &mut Turn<'_>,
    ) {
        let mut s = Sending {
            counters: t.counters,
            now: t.now,
            journal: t.journal,
            timers: t.timers,
            upstreams: upstreams.map(|up| -> &mut dyn Upstreams { up }),
        };
        while *sends > 0 {
            match self.outbox.held.peek() {
                Some(Reverse(held)) if held.at <= s.now => {}
                _ => return,
            }
            let Some(Reverse(held)) = self.outbox.held.pop() else {
                return;
            };
            *sends -= 1;
            self.outbox.bytes -= held.bytes.len();
            if let (Some(flow), Some(upstreams)) = (held.out.way.flow(), lend(&mut s.upstreams)) {
                upstreams.hold(flow, false, s.now, s.timers);
            }
            self.send_now(held.out, &held.bytes, held.faults, &mut s);
            self.outbox.recycle(held.bytes);
        }
    }

    /// Gathers a datagram for the public socket, to leave with the others
    /// gathered ([`flush_outbound`](Udp::flush_outbound)), or queues it
    /// behind those already waiting; whether it is on its way (if not, it
    /// was dropped, and counted).
    fn send_or_queue(
        &mut self,
        bytes: &[u8],
        to: SocketAddr,
        counters: &Counters,
        now: Millis,
    ) -> bool {
        if self.outbox.nothing_queued() {
            if self.outbound.is_full_for(bytes.len()) {
                self.flush_outbound(counters, now);
            }
            // Nothing gathered is ever behind the queue: only what the
            // socket refused is queued, and then nothing more is gathered.
            if self.outbox.nothing_queued() {
                self.outbound.push(to, bytes);
                return true;
            }
        }
        self.outbox.queue(bytes, to, counters, now)
    }

    /// Sends the datagrams gathered, in order, as many per call as the
    /// socket takes; what it refuses is queued (within the bound: past it,
    /// dropped and counted) for the next writable event.
    pub(super) fn flush_outbound(&mut self, counters: &Counters, now: Millis) {
        let total = self.outbound.len();
        let mut next = 0;
        // Bounded whatever the calls return (each error costs one
        // datagram; an interrupted call is tried again, a few times).
        for _ in 0..2 * total {
            if next == total {
                break;
            }
            let (socket, outbound) = (&self.socket, &self.outbound);
            match socket.try_io(|| outbound.send(socket, next)) {
                Ok(sent) => {
                    let bytes: usize = (next..next + sent).map(|i| outbound.get(i).1.len()).sum();
                    add(&counters.bytes_out, bytes as u64);
                    next += sent;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("udp: send to {} failed: {e}", outbound.get(next).0);
                    add(&counters.replies_dropped, 1);
                    next += 1;
                }
            }
        }
        for i in next..total {
            let (to, bytes) = self.outbound.get(i);
            self.outbox.queue(bytes, to, counters, now);
        }
        self.outbound.clear();
    }

    /// Sends queued datagrams, oldest first, until the queue is empty, the
    /// socket would block or the `sends` run out.
    pub(super) fn send_queued(&mut self, sends: &mut usize, counters: &Counters) {
        while *sends > 0 {
            let Some(next) = self.outbox.queue.front() else {
                return;
            };
            match send(&self.socket, &next.bytes, next.to) {
                Ok(None) => break, // Still full: wait for the next writable event.
                Ok(Some(n)) => add(&counters.bytes_out, n as u64),
                Err(e) => {
                    debug!("udp: send to {} failed: {e}", next.to);
                    add(&counters.replies_dropped, 1);
                }
            }
            *sends -= 1;
            let sent = self.outbox.queue.pop_front().expect("front exists");
            self.outbox.bytes -= sent.bytes.len();
            self.outbox.recycle(sent.bytes);
        }
    }
}

/// One `send_to`: `Ok(Some(n))` sent, `Ok(None)` would block.
fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<Option<usize>> {
    nonblocking(|| socket.send_to(bytes, to))
}
