//! The relay's UDP side: a table of flows with a clock. Each client source
//! address gets a flow, a UDP socket of its own connected to the upstream
//! and registered on the loop's poll (token [`FLOW_BASE`] plus its key), so
//! the kernel sorts the upstream's replies by client, as socat and
//! conntrack do. Replies leave from the public socket ([`udp`](crate::udp)
//! sends them), so the client hears from the address it sent to.
//!
//! The loop reaches the flows directly: a flow's events and timer come
//! here, and the flows are lent to [`Udp`] as its [`Upstreams`] when the
//! public socket is served. Every datagram either way takes UDP's one
//! fault path ([`Udp::send`]): datagrams held by a delay, either way, wait
//! in UDP's one queue, under its one bound.
//!
//! Bounded: at most `max_flows` flows (a datagram from a new source past
//! it is dropped and counted), each closed after `flow_timeout` with no
//! datagram either way, on the loop's one timer heap. A flow holding
//! datagrams back (a delay, either way) is not idle: its idle time starts
//! when the last one leaves.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Interest, Token};

use crate::config::Config;
use crate::limits::DATAGRAMS_PER_TURN;
use crate::stats::{Counters, add};
use crate::table::Table;
use crate::timer::{Armed, Due, Entry, Millis, RateLimit, Timers};
use crate::turn::{ENDPOINT_SHIFT, EndpointId, FLOW_BASE, Turn};
use crate::udp::{FlowRef, Udp, Upstreams};
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
    /// Datagrams of this flow's a delay holds, either way.
    held: u32,
    /// Its idle timer entry, if armed.
    timer: Armed,
}

/// Every UDP flow of an endpoint.
pub(crate) struct Flows {
    /// The endpoint the flows belong to: the main sockets
    /// (`--upstream udp:...`), or a named UDP endpoint (SPEC 14).
    endpoint: EndpointId,
    /// The real server every client is relayed to; `None` when a named
    /// endpoint's upstream did not resolve: every datagram is then
    /// dropped and counted as an upstream failure.
    upstream: Option<SocketAddr>,
    table: Table<Flow>,
    /// The flow of each client source.
    by_client: HashMap<SocketAddr, usize>,
    max_flows: usize,
    /// The idle timeout of a flow, in milliseconds, if any.
    flow_ms: Option<Millis>,
    next_id: u32,
    /// Datagrams from the upstreams so far: the `down` ordinal for faults.
    down_seen: u64,
    /// Flow warnings (at the bound, no socket to be had): at most one a
    /// second, whatever clients do.
    warnings: RateLimit,
}

impl Flows {
    pub fn new(upstream: SocketAddr, config: &Config) -> Flows {
        Flows::for_endpoint(EndpointId::MAIN, Some(upstream), config)
    }

    /// The flows of `endpoint`, with tokens of its own range.
    pub fn for_endpoint(
        endpoint: EndpointId,
        upstream: Option<SocketAddr>,
        config: &Config,
    ) -> Flows {
        let base = Token(FLOW_BASE.0 + endpoint.offset());
        Flows {
            endpoint,
            upstream,
            table: Table::new(
                base,
                1 << ENDPOINT_SHIFT,
                0,
                endpoint.reserve(CLOSED_PER_TURN),
            ),
            by_client: HashMap::new(),
            max_flows: config.max_flows,
            flow_ms: config.flow_timeout.map(|d| d.as_millis() as Millis),
            next_id: 0,
            down_seen: 0,
            warnings: RateLimit::default(),
        }
    }

    /// Flow `key` is readable (or was left still ready): each datagram
    /// the upstream sent on it goes to its client from the public socket,
    /// as the `down` faults say. Read a batch at a time, until a batch
    /// comes short (drained) or the budget ends; their sends are gathered
    /// with every other flow's, to leave together by the end of the turn.
    pub fn serve(&mut self, key: usize, udp: &mut Udp, t: &mut Turn<'_>) {
        // What arming a flow's idle timer needs.
        let timing = (self.endpoint, self.flow_ms);
        let mut still_ready = true;
        let mut taken = 0;
        // The calls are bounded too, whatever they return.
        for _ in 0..DATAGRAMS_PER_TURN {
            if taken >= DATAGRAMS_PER_TURN {
                break;
            }
            let Some(flow) = self.table.get_mut(key) else {
                still_ready = false;
                break;
            };
            match Udp::receive_down(&flow.socket, t) {
                Ok(down) => {
                    flow.last_active = t.now;
                    add(&t.counters.up_bytes_in, down.bytes);
                    let first = self.down_seen + 1;
                    self.down_seen += down.count as u64;
                    taken += down.count;
                    let (client, id) = (flow.client, flow.id);
                    if down.drained {
                        // The upstream's next datagram brings an event.
                        arm_timer(flow, key, timing, t);
                        still_ready = false;
                    }
                    let received = (down.count, client, first);
                    udp.relay_down(received, FlowRef { key, id }, self, t);
                    if down.drained {
                        break;
                    }
                }
                // Drained: the upstream's next datagram brings an event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    arm_timer(flow, key, timing, t);
                    still_ready = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_unreachable(&e) => {
                    add(&t.counters.upstream_failed, 1);
                    debug!("udp: flow {key} ({}): upstream error: {e}", flow.client);
                }
                // Anything else may well repeat: leave the flow for now (its
                // next event, or its idle timeout, comes back to it).
                Err(e) => {
                    debug!("udp: flow {key} ({}): receive failed: {e}", flow.client);
                    still_ready = false;
                    break;
                }
            }
        }
        udp.settle(still_ready, self.endpoint.flow_ready(key), t);
    }

    /// The flow of `client`, made now if it has none and the bound allows.
    fn flow_for(&mut self, client: SocketAddr, t: &mut Turn<'_>) -> Option<usize> {
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
        let Some(upstream) = self.upstream else {
            add(&t.counters.upstream_failed, 1);
            return None;
        };
        let socket = match connected_socket(upstream) {
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
            held: 0,
            timer: Armed::default(),
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

    /// Flow `key`'s timer came due: close it if it is idle, or re-arm.
    /// The entry is the flow's own if it is the one its [`Armed`] holds
    /// (as for a connection). A flow holding datagrams back is not idle,
    /// and needs no entry: the last one to leave arms it again.
    pub fn on_timer(&mut self, key: usize, at: Millis, t: &mut Turn<'_>) {
        let Some(flow) = self.table.get_mut(key) else {
            return;
        };
        if !flow.timer.fire(at) || flow.held > 0 {
            return; // Stale (the flow is gone or re-armed earlier), or holding.
        }
        let idle = self
            .flow_ms
            .is_some_and(|ms| flow.last_active.saturating_add(ms) <= t.now);
        if !idle {
            return arm_timer(flow, key, (self.endpoint, self.flow_ms), t);
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
    }

    /// Flows open now.
    pub fn open(&self) -> usize {
        self.table.open()
    }

    /// Whether a flow's timer entry is the one it armed last.
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::Flow { key } | Due::EndpointFlow { key, .. } => {
                (self.table.get(key as usize)).is_some_and(|flow| flow.timer.is_current(entry.at))
            }
            _ => false,
        }
    }

    /// Frees the keys of flows closed this turn.
    pub fn end_turn(&mut self) {
        self.table.end_turn();
    }
}

/// Sends `datagram` upstream on `flow`; whether it left. A socket that
/// cannot take it now loses it (UDP may; the caller counts it). An ICMP
/// error from an earlier datagram may surface here: counted, and the send
/// tried once more.
fn send(flow: &mut Flow, datagram: &[u8], counters: &Counters) -> bool {
    for _ in 0..SEND_TRIES {
        match nonblocking(|| flow.socket.send(datagram)) {
            Ok(Some(n)) => {
                add(&counters.up_bytes_out, n as u64);
                return true;
            }
            Ok(None) => break, // Full: UDP may drop.
            Err(e) if is_unreachable(&e) => add(&counters.upstream_failed, 1),
            Err(e) => {
                debug!("udp: flow for {}: send failed: {e}", flow.client);
                break;
            }
        }
    }
    false
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

/// Makes sure a timer entry is armed no later than the flow's expiry
/// (`timing`: the flow's endpoint and idle timeout).
fn arm_timer(flow: &mut Flow, key: usize, timing: (EndpointId, Option<Millis>), t: &mut Turn<'_>) {
    arm(flow, key, timing, t.now, t.timers);
}

/// [`arm_timer`], with the parts of a turn it needs.
fn arm(
    flow: &mut Flow,
    key: usize,
    (endpoint, flow_ms): (EndpointId, Option<Millis>),
    now: Millis,
    timers: &mut Timers,
) {
    if let Some(ms) = flow_ms {
        let at = flow.last_active.saturating_add(ms);
        flow.timer.arm(at, now, endpoint.flow_due(key), timers);
    }
}

impl Upstreams for Flows {
    fn flow_of(&mut self, client: SocketAddr, t: &mut Turn<'_>) -> Option<FlowRef> {
        let key = self.flow_for(client, t)?;
        let flow = self.table.get_mut(key)?;
        flow.last_active = t.now;
        arm_timer(flow, key, (self.endpoint, self.flow_ms), t);
        Some(FlowRef { key, id: flow.id })
    }

    fn send_up(&mut self, to: FlowRef, datagram: &[u8], counters: &Counters, now: Millis) -> bool {
        let Some(flow) = self.table.get_mut(to.key).filter(|flow| flow.id == to.id) else {
            return false; // Closed meanwhile (shutting down).
        };
        flow.last_active = now;
        send(flow, datagram, counters)
    }

    fn hold(&mut self, to: FlowRef, held: bool, now: Millis, timers: &mut Timers) {
        let Some(flow) = self.table.get_mut(to.key).filter(|flow| flow.id == to.id) else {
            return;
        };
        if held {
            flow.held += 1;
            return;
        }
        flow.held = flow.held.saturating_sub(1);
        flow.last_active = now;
        if flow.held == 0 {
            arm(flow, to.key, (self.endpoint, self.flow_ms), now, timers);
        }
    }
}
