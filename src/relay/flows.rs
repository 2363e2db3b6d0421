//! The relay's UDP side: a table of flows with a clock. Each client source
//! address gets a flow, a UDP socket of its own connected to the upstream
//! and registered on the loop's poll (token [`FLOW_BASE`] plus its key), so
//! the kernel sorts the upstream's replies by client, as socat and
//! conntrack do. Replies leave from the public socket ([`udp`](crate::udp)
//! sends them), so the client hears from the address it sent to.
//!
//! Bounded: at most `max_flows` flows (a datagram from a new source past
//! it is dropped and counted), each closed after `flow_timeout` with no
//! datagram either way, on the loop's one timer heap; datagrams held by an
//! `up` delay count against the UDP queue's bounds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use log::{debug, warn};
use mio::Interest;
use mio::net::UdpSocket;

use crate::config::Config;
use crate::fault::{self, FaultKind, Verdict};
use crate::journal::{AppliedFaults, JournalDirection};
use crate::stats::{Counters, add};
use crate::table::Table;
use crate::timer::{Due, Entry, Millis, NEVER, RateLimit, Timers, at_least};
use crate::turn::{CONTROL_BASE, FLOW_BASE, Turn};
use crate::udp::DATAGRAMS_PER_TURN;
use crate::udp::journal::{Datagram, Note, record_released};
use crate::write::nonblocking;

/// Flows closed in one turn before the list of held keys grows.
const CLOSED_PER_TURN: usize = 64;

/// One client source's flow.
#[derive(Debug)]
struct Flow {
    /// Connected to the upstream.
    socket: UdpSocket,
    /// The client this flow relays for.
    client: SocketAddr,
    /// Serial number: a held datagram finds its own flow, not a later one
    /// in the same key.
    id: u32,
    /// When a datagram last moved, either way.
    last_active: Millis,
    /// The deadline of the flow's live timer entry, or [`NEVER`].
    timer_at: Millis,
}

/// A client datagram an `up` delay holds: due at, serial (keeps arrival
/// order), flow key, flow id, bytes, and with a journal its line's note.
type Held = Reverse<(Millis, u64, usize, u32, Vec<u8>, Option<Note>)>;

/// Every UDP flow.
pub(crate) struct Flows {
    /// The real server every client is relayed to.
    upstream: SocketAddr,
    table: Table<Flow>,
    /// The flow of each client source.
    by_client: HashMap<SocketAddr, usize>,
    max_flows: usize,
    /// The idle timeout of a flow, in milliseconds, if any.
    flow_ms: Option<Millis>,
    next_id: u32,
    /// Datagrams from the upstreams so far: the `down` ordinal for faults.
    down_seen: u64,
    /// Client datagrams held by an `up` delay, earliest first.
    held: BinaryHeap<Held>,
    held_serial: u64,
    held_bytes: usize,
    /// The UDP queue's bounds, which held datagrams count against.
    queue_len: usize,
    queue_bytes: usize,
    /// Flow warnings (at the bound, no socket to be had): at most one a
    /// second, whatever clients do.
    warnings: RateLimit,
}

impl Flows {
    pub fn new(upstream: SocketAddr, config: &Config) -> Flows {
        Flows {
            upstream,
            table: Table::new(FLOW_BASE, CONTROL_BASE.0 - FLOW_BASE.0, 0, CLOSED_PER_TURN),
            by_client: HashMap::new(),
            max_flows: config.max_flows,
            flow_ms: config.flow_timeout.map(|d| d.as_millis() as Millis),
            next_id: 0,
            down_seen: 0,
            held: BinaryHeap::new(),
            held_serial: 0,
            held_bytes: 0,
            queue_len: config.udp_queue_len,
            queue_bytes: config.udp_queue_bytes,
            warnings: RateLimit::default(),
        }
    }

    /// Client datagrams held by an `up` delay.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// When the earliest held datagram is due, or [`NEVER`].
    pub fn earliest_held(&self) -> Millis {
        self.held.peek().map_or(NEVER, |Reverse((at, ..))| *at)
    }

    /// Relays the client datagram in `t.buf[..len]` from `client` upstream,
    /// through its flow (made now if it is the source's first), as the
    /// `up` faults' `verdict` says.
    pub fn send_up(
        &mut self,
        len: usize,
        (client, ordinal): (SocketAddr, u64),
        verdict: Option<Verdict>,
        t: &mut Turn<'_>,
    ) {
        let Some(key) = self.flow_of(client, t) else {
            return add(&t.counters.replies_dropped, 1);
        };
        let Some(flow) = self.table.get_mut(key) else {
            return;
        };
        flow.last_active = t.now;
        arm_timer(flow, key, self.flow_ms, t.timers);
        let datagram = &mut t.buf[..len];
        let journaled = Datagram {
            journal: t.journal,
            now: t.now,
            ordinal,
            peer: client,
            out: JournalDirection::Up,
        };
        let Some(verdict) = verdict else {
            journaled.record(JournalDirection::Up, datagram, AppliedFaults::default());
            return send(flow, datagram, t.counters);
        };
        let faults = AppliedFaults::of(&verdict.applied);
        if verdict.terminal == Some(FaultKind::Drop) {
            return journaled.record(JournalDirection::Up, &[], faults);
        }
        if let Some(seed) = verdict.corrupt {
            fault::corrupt(datagram, seed);
        }
        let len = verdict
            .truncate
            .map_or(datagram.len(), |n| n.min(datagram.len()));
        let datagram = &datagram[..len];
        let (id, copies) = (flow.id, 1 + usize::from(verdict.duplicate));
        for _ in 0..copies {
            match verdict.delay_ms {
                0 => {
                    journaled.record(JournalDirection::Up, datagram, faults);
                    send(flow, datagram, t.counters);
                }
                delay => {
                    let at = at_least(t.now, delay);
                    if self.held.len() >= self.queue_len || self.held_bytes + len > self.queue_bytes
                    {
                        add(&t.counters.replies_dropped, 1);
                        continue;
                    }
                    self.held_serial += 1;
                    self.held_bytes += len;
                    let note = (t.journal.is_some()).then_some((ordinal, faults, journaled.out));
                    let entry = (at, self.held_serial, key, id, datagram.to_vec(), note);
                    // `udp` arms the one delay entry for it.
                    self.held.push(Reverse(entry));
                }
            }
        }
    }

    /// Sends the client datagrams whose `up` delay is over, a turn's
    /// budget of them at most: more due wait for the delay entry `udp`
    /// arms again, a millisecond later.
    pub fn release_held(&mut self, t: &mut Turn<'_>) {
        for _ in 0..DATAGRAMS_PER_TURN {
            match self.held.peek() {
                Some(Reverse((at, ..))) if *at <= t.now => {}
                _ => return,
            }
            let Some(Reverse((_, _, key, id, datagram, note))) = self.held.pop() else {
                break;
            };
            self.held_bytes -= datagram.len();
            // The flow may have closed meanwhile: the datagram goes with it.
            if let Some(flow) = self.table.get_mut(key).filter(|flow| flow.id == id) {
                record_released(t.journal, t.now, flow.client, note, &datagram);
                send(flow, &datagram, t.counters);
            }
        }
    }

    /// The flow of `client`, made now if it has none and the bound allows.
    fn flow_of(&mut self, client: SocketAddr, t: &mut Turn<'_>) -> Option<usize> {
        if let Some(&key) = self.by_client.get(&client) {
            return Some(key);
        }
        if self.table.open() >= self.max_flows {
            if self.warnings.allow(t.now) {
                warn!(
                    "udp: at --max-flows {}: dropping datagrams from new sources \
                     (further drops are logged at most once a second)",
                    self.max_flows
                );
            }
            return None;
        }
        let socket = match connected_socket(self.upstream) {
            Ok(socket) => socket,
            Err(e) => {
                if self.warnings.allow(t.now) {
                    warn!("udp: no flow for {client}: {e} (logged at most once a second)");
                }
                return None;
            }
        };
        let (id, now) = (self.next_id, t.now);
        let flow = |socket| Flow {
            socket,
            client,
            id,
            last_active: now,
            timer_at: NEVER,
        };
        let key = match self
            .table
            .insert(t.registry, socket, Interest::READABLE, flow)
        {
            Ok(key) => key,
            Err(e) => {
                warn!("udp: cannot register a flow for {client}: {e}");
                return None;
            }
        };
        self.next_id = self.next_id.wrapping_add(1);
        self.by_client.insert(client, key);
        debug!("udp: flow {key} for {client}");
        Some(key)
    }

    /// Receives the next datagram the upstream sent on flow `key` into
    /// `t.buf`. An upstream error (ICMP port unreachable) is counted, and
    /// the flow goes on.
    pub fn receive(&mut self, key: usize, t: &mut Turn<'_>) -> Received {
        let Some(flow) = self.table.get_mut(key) else {
            return Received::Drained;
        };
        match flow.socket.recv(t.buf) {
            Ok(n) => {
                flow.last_active = t.now;
                add(&t.counters.up_bytes_in, n as u64);
                self.down_seen += 1;
                Received::Datagram(n, flow.client, self.down_seen)
            }
            // Drained: the upstream's next datagram brings an event.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                arm_timer(flow, key, self.flow_ms, t.timers);
                Received::Drained
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Received::Again,
            Err(e) if is_unreachable(&e) => {
                add(&t.counters.upstream_failed, 1);
                debug!("udp: flow {key} ({}): upstream error: {e}", flow.client);
                Received::Again
            }
            // Anything else may well repeat: leave the flow for now (its
            // next event, or its idle timeout, comes back to it).
            Err(e) => {
                debug!("udp: flow {key} ({}): receive failed: {e}", flow.client);
                Received::Drained
            }
        }
    }

    /// Flow `key`'s timer came due: close it if it is idle, or re-arm.
    /// The entry is the flow's own if it is due when the flow's
    /// `timer_at` says (as for a connection).
    pub fn on_timer(&mut self, key: usize, at: Millis, t: &mut Turn<'_>) {
        let Some(flow) = self.table.get_mut(key) else {
            return;
        };
        if flow.timer_at != at {
            return; // Stale: the flow is gone or re-armed earlier.
        }
        flow.timer_at = NEVER;
        let idle = self
            .flow_ms
            .is_some_and(|ms| flow.last_active.saturating_add(ms) <= t.now);
        if !idle {
            return arm_timer(flow, key, self.flow_ms, t.timers);
        }
        debug!("udp: flow {key} ({}) idle; closing", flow.client);
        self.close(key, t);
    }

    fn close(&mut self, key: usize, t: &mut Turn<'_>) {
        let Some(mut flow) = self.table.close(key) else {
            return;
        };
        self.by_client.remove(&flow.client);
        let _ = t.registry.deregister(&mut flow.socket);
    }

    /// Closes every flow (shutting down).
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        for key in self.table.keys() {
            self.close(key, t);
        }
        self.held.clear();
        self.held_bytes = 0;
    }

    /// Flows open now.
    pub fn open(&self) -> usize {
        self.table.open()
    }

    /// Whether a flow's timer entry is the one it armed last.
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::Flow { key } => {
                (self.table.get(key as usize)).is_some_and(|flow| flow.timer_at == entry.at)
            }
            _ => false,
        }
    }

    /// Frees the keys of flows closed this turn.
    pub fn end_turn(&mut self) {
        self.table.end_turn();
    }
}

/// What [`Flows::receive`] found.
pub(crate) enum Received {
    /// A datagram of this length in the buffer, for this client, with
    /// this `down` ordinal.
    Datagram(usize, SocketAddr, u64),
    /// An error taken (and counted if the upstream's): try again.
    Again,
    /// Nothing more now.
    Drained,
}

/// Sends `datagram` upstream on `flow`; a socket that cannot take it now
/// drops it (UDP may), counted. An ICMP error from an earlier datagram
/// may surface here: counted, and the send tried once more.
fn send(flow: &mut Flow, datagram: &[u8], counters: &Counters) {
    for _ in 0..SEND_TRIES {
        match nonblocking(|| flow.socket.send(datagram)) {
            Ok(Some(n)) => return add(&counters.up_bytes_out, n as u64),
            Ok(None) => break, // Full: UDP may drop.
            Err(e) if is_unreachable(&e) => add(&counters.upstream_failed, 1),
            Err(e) => {
                debug!("udp: flow for {}: send failed: {e}", flow.client);
                break;
            }
        }
    }
    add(&counters.replies_dropped, 1);
}

/// Sends tried per datagram: a stale ICMP error costs one more try, never
/// a loop.
const SEND_TRIES: usize = 3;

/// An error the upstream caused: an ICMP "port unreachable" (and its
/// cousins) reported for an earlier datagram.
fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
    )
}

/// A UDP socket connected to `upstream`, bound to a free port on the
/// loopback address if the upstream is local, on every address otherwise.
fn connected_socket(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let ip = match (upstream.ip(), upstream.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.connect(upstream)?;
    Ok(socket)
}

/// Makes sure a timer entry is armed no later than the flow's expiry.
fn arm_timer(flow: &mut Flow, key: usize, flow_ms: Option<Millis>, timers: &mut Timers) {
    let Some(ms) = flow_ms else {
        return;
    };
    let at = flow.last_active.saturating_add(ms);
    if at < flow.timer_at {
        flow.timer_at = at;
        timers.arm(at, Due::Flow { key: key as u32 });
    }
}
