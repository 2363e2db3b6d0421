//! The relay's TCP side: the table of pairs, a peer of served TCP. A
//! listener whose job is relaying hands each stream it accepted within
//! the limit to [`Pairs::admit`] (the [`Admit`] of its job); the client
//! gets a non-blocking connect to the upstream, and both sockets are
//! registered on the loop's poll, each with its own token ([`PAIR_BASE`]
//! plus its key in the table for the client, [`UPSTREAM_BASE`] plus it
//! for the upstream). The loop's dispatch hands this table every event
//! on either socket, its entries on the still-ready list and its timers
//! directly; it reaches the pair's state machine ([`pair`](super::pair))
//! and does for it what needs the loop: (re)register interest, arm its
//! timer, close or reset it.

use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::half::{Shape, Toxics};
use super::journal::{PairLog, Tap};
use super::pair::{Advance, Doom, End, Pair, PairCx, Plan, Readiness, Side};
use crate::closing;
use crate::config::{Config, Mode};
use crate::fault::{FaultKind, Verdict};
use crate::journal::AppliedFaults;
use crate::listener::Admit;
use crate::reply::Protocol;
use crate::stats::{add, sub};
use crate::table::Table;
use crate::timer::{Armed, Due, Entry, Millis, RateLimit, Timers, at_least};
use crate::turn::{ENDPOINT_SHIFT, EndpointId, PAIR_BASE, Turn, UPSTREAM_BASE, settle_writable};
use crate::vocab::Direction;

/// The main relay's pair slots allocated up front (they grow, once, past
/// this); a named endpoint's table starts empty ([`EndpointId::reserve`]).
const PREALLOCATED_PAIRS: usize = 256;
/// Pairs closed in one turn before the list of held keys grows.
const CLOSED_PER_TURN: usize = 1024;

/// A live pair and what the table keeps for it.
#[derive(Debug)]
struct Slot {
    pair: Pair<TcpStream>,
    /// `WRITABLE` is registered on the client's and the upstream's socket.
    write_interest: [bool; 2],
    /// The pair's live timer entry, if one is armed.
    timer: Armed,
}

/// Every relayed TCP pair.
pub(crate) struct Pairs {
    /// The endpoint the pairs belong to: the main sockets
    /// (`--upstream`), or a named endpoint (SPEC 14).
    endpoint: EndpointId,
    /// A named endpoint's name, for its journal lines.
    name: Option<Arc<str>>,
    /// `endpoint.offset()`: where its keys start in the pair
    /// tokens' range.
    offset: usize,
    /// The real server every client is relayed to.
    upstream: SocketAddr,
    /// Open pairs, keyed by the client socket's token.
    table: Table<Slot>,
    /// How long a connect may take, in milliseconds.
    connect_ms: Millis,
    /// The pair's idle timeout in milliseconds, if any.
    idle_ms: Option<Millis>,
    /// Bytes each direction holds at most.
    max_owed: usize,
    /// Bytes a direction a delay holds keeps at most, if larger.
    max_delayed: usize,
    /// `--mode line`: each line is a message, judged on its own.
    line_mode: bool,
    /// The longest line (line mode).
    max_line: usize,
    /// Limits the over-long-line warning.
    line_log: RateLimit,
    next_id: u32,
    /// Pairs accepted so far: a pair's ordinal for the seeded faults.
    accepted: u64,
    /// Upstream failures are logged at most once a second.
    failure_log: RateLimit,
}

impl Pairs {
    pub fn new(upstream: SocketAddr, config: &Config) -> Pairs {
        Pairs::for_endpoint(EndpointId::MAIN, None, upstream, config)
    }

    /// The pairs of endpoint `endpoint` (0: the main sockets), called
    /// `name` in the journal, with tokens of its own range.
    pub fn for_endpoint(
        endpoint: EndpointId,
        name: Option<Arc<str>>,
        upstream: SocketAddr,
        config: &Config,
    ) -> Pairs {
        // The main relay's table is allocated up front; a named
        // endpoint's grows with its pairs: 256 idle endpoints must not
        // hold 256 tables' worth of empty slots (SPEC 14, issue 21: under
        // 4 KiB each).
        let preallocated = endpoint.reserve(config.max_connections.min(PREALLOCATED_PAIRS));
        let closed = endpoint.reserve(CLOSED_PER_TURN);
        let offset = endpoint.offset();
        Pairs {
            endpoint,
            name,
            offset,
            upstream,
            table: Table::new(
                Token(PAIR_BASE.0 + offset),
                1 << ENDPOINT_SHIFT,
                preallocated,
                closed,
            ),
            connect_ms: config.connect_timeout.as_millis() as Millis,
            idle_ms: config.idle_timeout.map(|d| d.as_millis() as Millis),
            max_owed: config.max_owed,
            max_delayed: config.max_delayed,
            line_mode: config.mode == Mode::Line,
            max_line: config.max_line,
            line_log: RateLimit::default(),
            next_id: 0,
            accepted: 0,
            failure_log: RateLimit::default(),
        }
    }

    /// Open pairs.
    pub fn open(&self) -> usize {
        self.table.open()
    }

    /// Takes in an accepted client: starts the connect to the upstream,
    /// judges the faults of the pair's two directions, registers both
    /// sockets and reads what the client sent already.
    fn take_in(&mut self, client: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
        add(&t.counters.accepted, 1);
        let ordinal = self.accepted;
        self.accepted += 1;
        let upstream = match TcpStream::connect(self.upstream) {
            Ok(upstream) => upstream,
            Err(e) => return self.connect_failed(client, peer, e, t),
        };
        // Relayed bytes are the peers' own: pass them on without delay.
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let mut log = (t.journal).map(|_| {
            let name = self.name.clone();
            Box::new(PairLog::new(peer, name, self.line_mode))
        });
        let mut plan = match self.line_mode {
            true => Plan {
                lines: true,
                ..Plan::default()
            },
            false => judge(ordinal, log.as_deref_mut(), t),
        };
        plan.journal = log;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let times = (t.now, t.now.saturating_add(self.connect_ms));
        let registry = t.registry;
        let inserted = self.table.insert_with(|token| {
            let (mut client, mut upstream) = (client, upstream);
            registry.register(&mut client, token, Interest::READABLE)?;
            // Writable: the connect is done (or failed).
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(
                &mut upstream,
                upstream_token(token.0 - PAIR_BASE.0),
                interest,
            ) {
                let _ = registry.deregister(&mut client);
                return Err(e);
            }
            Ok(Slot {
                pair: Pair::new((id, ordinal), (client, upstream), times, plan),
                write_interest: [false, true],
                timer: Armed::default(),
            })
        });
        let key = match inserted {
            Ok(key) => key,
            Err(e) => return warn!("cannot register {peer} and its upstream: {e}"),
        };
        add(&t.counters.open, 1);
        debug!(
            "pair {key}: accepted {peer}, connecting to {}",
            self.upstream
        );
        // The request often arrives with the connection: hold it now
        // rather than wait a whole turn for the readable event.
        self.drive(key, t, |pair, cx| {
            pair.advance(Side::Client, Readiness::BOTH, cx)
        });
    }

    /// A readiness event for `side` of pair `key`.
    pub fn on_event(&mut self, key: usize, side: Side, ready: Readiness, t: &mut Turn<'_>) {
        self.drive(key, t, |pair, cx| pair.advance(side, ready, cx));
    }

    /// Serves a pair left on the still-ready list.
    pub fn resume(&mut self, key: usize, id: u32, t: &mut Turn<'_>) {
        if self.table.get(key).is_some_and(|slot| slot.pair.id == id) {
            self.drive(key, t, |pair, cx| pair.resume(cx));
        }
    }

    /// Pair `key`'s timer entry came due.
    /// The entry is the pair's own if it is due when the pair's
    /// `timer` says (as for a connection: a new pair in the same key
    /// that armed the very same moment is served by the first entry, and
    /// finds the other stale).
    pub fn on_timer(&mut self, key: u32, at: Millis, t: &mut Turn<'_>) {
        let key = key as usize;
        let Some(slot) = self.table.get_mut(key) else {
            return;
        };
        if !slot.timer.fire(at) {
            return; // Stale: the pair is gone or re-armed earlier.
        }
        let idle_ms = self.idle_ms;
        self.drive(key, t, |pair, cx| pair.on_timer(idle_ms, cx));
    }

    /// Runs `step` on pair `key`, then settles both sockets' interest, the
    /// pair's timer and its place on the still-ready list, or closes it.
    fn drive(
        &mut self,
        key: usize,
        t: &mut Turn<'_>,
        step: impl FnOnce(&mut Pair<TcpStream>, &mut PairCx<'_>) -> Result<Advance, End>,
    ) {
        let (endpoint, offset) = (self.endpoint, self.offset);
        let Some(slot) = self.table.get_mut(key) else {
            return; // Closed earlier in this batch: a stale event.
        };
        let mut cx = PairCx {
            now: t.now,
            buf: t.buf,
            max_owed: self.max_owed,
            max_delayed: self.max_delayed,
            counters: t.counters,
            faults: t.faults,
            max_line: self.max_line,
            warnings: &mut self.line_log,
            journal: t.journal,
        };
        let result = step(&mut slot.pair, &mut cx).and_then(|advance| {
            if advance == Advance::StillReady {
                let id = slot.pair.id;
                t.ready.push(endpoint.pair_ready(key, id));
            }
            settle_interest(slot, key + offset, t).map_err(|e| {
                debug!("pair {key}: cannot change interest: {e}");
                End::Done
            })
        });
        match result {
            Ok(()) => {
                let due = endpoint.pair_due(key);
                arm_timer(slot, due, self.idle_ms, t.now, t.timers)
            }
            Err(end) => self.close(key, end, t),
        }
    }

    /// Closes pair `key` as `end` says; its key is freed at turn end.
    fn close(&mut self, key: usize, end: End, t: &mut Turn<'_>) {
        let Some(slot) = self.table.close(key) else {
            return;
        };
        sub(&t.counters.open, 1);
        let Pair {
            client, upstream, ..
        } = slot.pair;
        match end {
            End::Done => debug!("pair {key}: closed"),
            End::Reset { upstream_failed } => {
                debug!("pair {key}: reset");
                closing::reset_on_close(&client);
                closing::reset_on_close(&upstream);
                if upstream_failed {
                    self.count_failure("reset the connection", t);
                }
            }
            End::ConnectFailed(e) => {
                closing::reset_on_close(&client);
                self.count_failure(&format!("connect failed: {e}"), t);
            }
        }
        closing::close(t.registry, client);
        closing::close(t.registry, upstream);
    }

    /// A client whose upstream could not even be asked: reset it.
    fn connect_failed(
        &mut self,
        client: TcpStream,
        peer: SocketAddr,
        e: std::io::Error,
        t: &mut Turn<'_>,
    ) {
        closing::reset_on_close(&client);
        debug!("{peer}: reset: no connect to the upstream");
        self.count_failure(&format!("connect failed: {e}"), t);
    }

    /// Counts an upstream failure and warns, at most once a second.
    fn count_failure(&mut self, what: &str, t: &mut Turn<'_>) {
        add(&t.counters.upstream_failed, 1);
        if self.failure_log.allow(t.now) {
            warn!(
                "upstream {}: {what}; the client is reset (further failures are \
                 logged at most once a second)",
                self.upstream
            );
        }
    }

    /// The faults changed (a named endpoint's toxics, SPEC 14): every
    /// open pair is judged again, as at its accept, and its directions
    /// take the new shapes from their next bytes on; held bytes a fault
    /// no longer delays go now. A `close` or `reset` acts on new pairs
    /// only.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    pub fn reshape(&mut self, t: &mut Turn<'_>) {
        if self.line_mode {
            return;
        }
        // In accept order, as at their accepts: a `first=` or `every=`
        // counts the open pairs the same way every run.
        let mut keys = self.table.keys();
        keys.sort_by_key(|&key| self.table.get(key).map(|slot| slot.pair.ordinal()));
        for key in keys {
            let Some(slot) = self.table.get_mut(key) else {
                continue;
            };
            let plan = judge(slot.pair.ordinal(), None, t);
            slot.pair.reshape(plan.shapes);
            self.drive(key, t, |pair, cx| pair.resume(cx));
        }
    }

    /// Shutting down: every pair writes what it holds, then closes.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        for key in self.table.keys() {
            if let Some(slot) = self.table.get_mut(key) {
                slot.pair.stop();
            }
            self.drive(key, t, |pair, cx| pair.resume(cx));
        }
    }

    /// Closes every pair at once: the shutdown grace period is over.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        for key in self.table.keys() {
            self.close(key, End::Done, t);
        }
    }

    /// Frees the keys of pairs closed this turn.
    pub fn end_turn(&mut self) {
        self.table.end_turn();
    }

    /// Whether a pair's timer entry is still its current one (for the
    /// sweep).
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::Pair { key } | Due::EndpointPair { key, .. } => {
                (self.table.get(key as usize)).is_some_and(|slot| slot.timer.is_current(entry.at))
            }
            _ => false,
        }
    }
}

/// Relaying is a listener's job: each stream it accepted within the
/// limit becomes a pair.
impl Admit for Pairs {
    fn admit(&mut self, client: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
        self.take_in(client, peer, t);
    }
}

/// The token of pair `key`'s upstream socket.
fn upstream_token(key: usize) -> Token {
    Token(UPSTREAM_BASE.0 + key)
}

/// The faults of a pair's two directions, judged once, in accept order
/// (SPEC 11, stream mode): each direction's shape, and a `close` or
/// `reset` that ends the pair (after any delay of its direction). With a
/// journal, `log` keeps each direction's faults, and a direction they
/// keep from sending anything (`close`, `reset`, `hang`) has its line of
/// `len` 0 now.
fn judge(ordinal: u64, mut log: Option<&mut PairLog>, t: &mut Turn<'_>) -> Plan {
    let mut plan = Plan::default();
    if !t.faults.any(Protocol::Tcp) {
        return plan;
    }
    for (i, dir) in [Direction::Up, Direction::Down].into_iter().enumerate() {
        let verdict = t.faults.judge_in(Protocol::Tcp, dir, [ordinal, 0]);
        if verdict.is_clean() {
            continue;
        }
        t.counters.add_faults(&verdict.applied);
        debug!("pair {ordinal} {dir}: fault {verdict}");
        let (shape, ends) = shape_of(&verdict, t.now);
        plan.shapes[i] = shape;
        plan.doom = plan.doom.or(ends);
        if let (Some(journal), Some(log)) = (t.journal, log.as_deref_mut()) {
            let faults = AppliedFaults::of(&verdict.applied);
            log.faults[i] = faults;
            let stops = [FaultKind::Close, FaultKind::Reset, FaultKind::Hang];
            if verdict.terminal.is_some_and(|kind| stops.contains(&kind)) {
                let (now, conn) = (t.now, ordinal + 1);
                let mut tap = Tap {
                    journal,
                    now,
                    conn,
                    dir,
                    log,
                };
                tap.stopped(1, faults);
            }
        }
    }
    plan
}

/// What a verdict does to one direction of a stream.
fn shape_of(verdict: &Verdict, now: Millis) -> (Shape, Option<(Millis, Doom)>) {
    let ends_at = at_least(now, verdict.delay_ms);
    match verdict.terminal {
        Some(FaultKind::Close) => return (Shape::default(), Some((ends_at, Doom::Close))),
        Some(FaultKind::Reset) => return (Shape::default(), Some((ends_at, Doom::Reset))),
        _ => {}
    }
    // A stream draws each chunk's delay in the range (jitter).
    let range = verdict.delay_range;
    let shape = Shape {
        delay_ms: range.least_ms,
        jitter: (range.spread_ms > 0).then_some(range),
        dribble: verdict.dribble,
        truncate: verdict.truncate.map(|n| n as u64),
        corrupt: verdict.corrupt,
        hang: verdict.terminal == Some(FaultKind::Hang),
        slow_close_ms: verdict.slow_close_ms,
        toxics: Toxics {
            bandwidth: verdict.bandwidth,
            slicer: verdict.slicer,
            timeout_ms: verdict.timeout_ms,
            reset_peer_ms: verdict.reset_peer_ms,
        },
    };
    (shape, None)
}

/// Registers `WRITABLE` on each socket of the pair exactly while it is
/// wanted; `key` is the pair's key in the token range (its endpoint's
/// offset included).
fn settle_interest(slot: &mut Slot, key: usize, t: &Turn<'_>) -> std::io::Result<()> {
    let pair = &mut slot.pair;
    let [client_wants, upstream_wants] =
        [Side::Client, Side::Upstream].map(|s| pair.wants_writable(s));
    let [client_registered, upstream_registered] = &mut slot.write_interest;
    settle_writable(
        t.registry,
        &mut pair.client,
        Token(PAIR_BASE.0 + key),
        client_registered,
        client_wants,
    )?;
    let token = upstream_token(key);
    settle_writable(
        t.registry,
        &mut pair.upstream,
        token,
        upstream_registered,
        upstream_wants,
    )
}

/// Makes sure a timer entry is armed no later than the pair's deadline
/// (the one rule every source keeps, [`Armed`]).
fn arm_timer(slot: &mut Slot, due: Due, idle_ms: Option<Millis>, now: Millis, timers: &mut Timers) {
    if let Some(at) = slot.pair.deadline(idle_ms) {
        slot.timer.arm(at, now, due, timers);
    }
}

#[cfg(test)]
mod tests {
    /// An idle pair holds no buffer and no pipe: its memory is its slot
    /// (216 bytes on 64-bit Linux today) and the kernel's two sockets.
    #[test]
    fn an_idle_pair_is_small() {
        let slot = std::mem::size_of::<super::Slot>();
        assert!(slot <= 256, "a pair's slot is {slot} bytes");
    }
}
