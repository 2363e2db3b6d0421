//! The relay's TCP side: the table of pairs. Each accepted client gets a
//! non-blocking connect to the upstream; both sockets are registered on
//! the loop's poll, each with its own token (the client's is its key in
//! the table, the upstream's is [`UPSTREAM_BASE`] plus that key). Events,
//! the still-ready list and timers reach the pair's state machine
//! ([`pair`](super::pair)) through here, which does for it what needs the
//! loop: (re)register interest, arm its timer, close or reset it.

use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::Direction;
use super::half::Shape;
use super::journal::{PairLog, Tap};
use super::pair::{Advance, Doom, End, Pair, PairCx, Plan, Readiness, Side};
use crate::config::{Config, Mode};
use crate::fault::{FaultKind, Verdict};
use crate::journal::AppliedFaults;
use crate::reply::Protocol;
use crate::stats::{add, sub};
use crate::table::Table;
use crate::timer::{Due, Millis, NEVER, RateLimit, Timers, at_least};
use crate::turn::{ENDPOINT_SHIFT, Ready, Turn, UPSTREAM_BASE, settle_writable};

/// Pair slots allocated up front (they grow, once, past this).
const PREALLOCATED_PAIRS: usize = 256;
/// Pairs closed in one turn before the list of held keys grows.
const CLOSED_PER_TURN: usize = 1024;

/// A live pair and what the table keeps for it.
#[derive(Debug)]
struct Slot {
    pair: Pair<TcpStream>,
    /// `WRITABLE` is registered on the client's and the upstream's socket.
    write_interest: [bool; 2],
    /// The deadline of the pair's live timer entry, or [`NEVER`].
    timer_at: Millis,
}

/// Every relayed TCP pair.
pub(crate) struct Pairs {
    /// The endpoint the pairs belong to: 0 for the main sockets
    /// (`--upstream`), else a named endpoint's (SPEC 14), whose tokens
    /// are shifted by `endpoint << ENDPOINT_SHIFT`.
    endpoint: u16,
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
        Pairs::for_endpoint(0, upstream, config)
    }

    /// The pairs of endpoint `endpoint` (0: the main sockets).
    pub fn for_endpoint(endpoint: u16, upstream: SocketAddr, config: &Config) -> Pairs {
        let preallocated = config.max_connections.min(PREALLOCATED_PAIRS);
        let (base, max_keys) = match endpoint {
            0 => (0, UPSTREAM_BASE.0),
            e => ((e as usize) << ENDPOINT_SHIFT, 1 << ENDPOINT_SHIFT),
        };
        Pairs {
            endpoint,
            upstream,
            table: Table::new(Token(base), max_keys, preallocated, CLOSED_PER_TURN),
            connect_ms: config.connect_timeout.as_millis() as Millis,
            idle_ms: config.idle_timeout.map(|d| d.as_millis() as Millis),
            max_owed: config.max_owed,
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
    pub fn admit(&mut self, client: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
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
        let mut log = (t.journal).map(|_| Box::new(PairLog::new(peer, self.line_mode)));
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
            if let Err(e) = registry.register(&mut upstream, upstream_token(token), interest) {
                let _ = registry.deregister(&mut client);
                return Err(e);
            }
            Ok(Slot {
                pair: Pair::new((id, ordinal), (client, upstream), times, plan),
                write_interest: [false, true],
                timer_at: NEVER,
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
    /// `timer_at` says (as for a connection: a new pair in the same key
    /// that armed the very same moment is served by the first entry, and
    /// finds the other stale).
    pub fn on_timer(&mut self, key: usize, at: Millis, t: &mut Turn<'_>) {
        let Some(slot) = self.table.get_mut(key) else {
            return;
        };
        if slot.timer_at != at {
            return; // Stale: the pair is gone or re-armed earlier.
        }
        slot.timer_at = NEVER;
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
        let token = self.table.token(key);
        let Some(slot) = self.table.get_mut(key) else {
            return; // Closed earlier in this batch: a stale event.
        };
        let mut cx = PairCx {
            now: t.now,
            buf: t.buf,
            max_owed: self.max_owed,
            counters: t.counters,
            faults: t.faults,
            max_line: self.max_line,
            warnings: &mut self.line_log,
            journal: t.journal,
        };
        let result = step(&mut slot.pair, &mut cx).and_then(|advance| {
            if advance == Advance::StillReady {
                let id = slot.pair.id;
                t.ready.push(match self.endpoint {
                    0 => Ready::Conn { key, id },
                    endpoint => Ready::Pair { endpoint, key, id },
                });
            }
            settle_interest(slot, token, t).map_err(|e| {
                debug!("pair {key}: cannot change interest: {e}");
                End::Done
            })
        });
        let due = match self.endpoint {
            0 => Due::Conn { key: key as u32 },
            endpoint => Due::Pair {
                endpoint,
                key: key as u32,
            },
        };
        match result {
            Ok(()) => arm_timer(slot, due, self.idle_ms, t.timers),
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
                reset(&client);
                reset(&upstream);
                if upstream_failed {
                    self.count_failure("reset the connection", t);
                }
            }
            End::ConnectFailed(e) => {
                reset(&client);
                self.count_failure(&format!("connect failed: {e}"), t);
            }
        }
        // Closing a descriptor takes it off epoll; elsewhere mio needs a
        // deregister first (see `Tcp::close`).
        if !cfg!(all(
            target_os = "linux",
            not(mio_unsupported_force_poll_poll)
        )) {
            let (mut client, mut upstream) = (client, upstream);
            let _ = t.registry.deregister(&mut client);
            let _ = t.registry.deregister(&mut upstream);
        }
    }

    /// A client whose upstream could not even be asked: reset it.
    fn connect_failed(
        &mut self,
        client: TcpStream,
        peer: SocketAddr,
        e: std::io::Error,
        t: &mut Turn<'_>,
    ) {
        reset(&client);
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

    /// Whether a timer entry is still its pair's current one (for the
    /// sweep).
    pub fn is_current(&self, key: usize, at: Millis) -> bool {
        self.table.get(key).is_some_and(|slot| slot.timer_at == at)
    }
}

/// The token of the upstream socket of the pair whose client has `token`.
fn upstream_token(token: Token) -> Token {
    Token(UPSTREAM_BASE.0 + token.0)
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
    let shape = Shape {
        delay_ms: verdict.delay_ms,
        dribble: verdict.dribble,
        truncate: verdict.truncate.map(|n| n as u64),
        corrupt: verdict.corrupt,
        hang: verdict.terminal == Some(FaultKind::Hang),
        slow_close_ms: verdict.slow_close_ms,
    };
    (shape, None)
}

/// Registers `WRITABLE` on each socket of the pair exactly while it is
/// wanted.
fn settle_interest(slot: &mut Slot, token: Token, t: &Turn<'_>) -> std::io::Result<()> {
    let pair = &mut slot.pair;
    let [client_wants, upstream_wants] =
        [Side::Client, Side::Upstream].map(|s| pair.wants_writable(s));
    let [client_registered, upstream_registered] = &mut slot.write_interest;
    settle_writable(
        t.registry,
        &mut pair.client,
        token,
        client_registered,
        client_wants,
    )?;
    let token = upstream_token(token);
    settle_writable(
        t.registry,
        &mut pair.upstream,
        token,
        upstream_registered,
        upstream_wants,
    )
}

/// Makes sure a timer entry is armed no later than the pair's deadline.
fn arm_timer(slot: &mut Slot, due: Due, idle_ms: Option<Millis>, timers: &mut Timers) {
    if let Some(at) = slot.pair.deadline(idle_ms) {
        if at < slot.timer_at {
            slot.timer_at = at;
            timers.arm(at, due);
        }
    }
}

/// A zero linger makes the coming close send RST, not FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    /// An idle pair holds no buffer: its memory is its slot (192 bytes on
    /// 64-bit Linux today) and the kernel's two sockets.
    #[test]
    fn an_idle_pair_is_small() {
        let slot = std::mem::size_of::<super::Slot>();
        assert!(slot <= 256, "a pair's slot is {slot} bytes");
    }
}
