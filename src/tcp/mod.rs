//! TCP served: the connection table. The streams come from the
//! [`listener`](crate::listener) (which keeps the accept budget, the
//! connection limit and the out-of-descriptors escape) when serving is
//! its job; a relayed stream goes to [`relay`](crate::relay) instead.
//!
//! The table is a [`Table`] of connections whose keys are their tokens. It
//! takes in each stream it is handed, hands each readiness event to the
//! connection's state machine ([`conn`]), and does for it what needs the
//! loop: (re)register its interest, settle its deadline, put it on the
//! still-ready list, close it. A closed connection's key is freed only
//! when the turn ends, so that a stale event later in the same batch
//! cannot reach a new connection that got the same key.
//!
//! Between drives a connection rests in its 32-byte [`slot`]: packed
//! ([`Dormant`]), its buffers (if any) on the [`Shelf`], and its idle
//! deadline kept by the [`IdleList`] (one timer entry for all of them)
//! rather than by an entry of its own.

#[cfg(feature = "control")]
mod commands;
mod conn;
mod script;
mod slot;

use std::io;
use std::net::SocketAddr;

use log::{Level, debug, log_enabled, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::closing;
use crate::config::{Config, Mode};
use crate::listener::Admit;
use crate::reply::Replies;
use crate::stats::add;
use crate::stats::sub;
use crate::table::Table;
use crate::timer::{Due, Entry, IdleList, MAX_KEYS, Millis, Place, RateLimit};
use crate::turn::{PAIR_BASE, Readiness, Ready, Turn, settle_writable};
use crate::vocab::Protocol;
use conn::{Advance, Close, Connection, Ctx, Dormant, Phase};
use slot::{Shelf, Slot};

/// Connection slots reserved up front: `--max-connections` of them, at most
/// this many. A reservation is address space, not memory: a slot's page
/// is touched, and so resident, only once a connection takes it. And a
/// table reserved whole never copies itself while it fills: a copy
/// leaves the old block's pages behind in the allocator's heap (about 13
/// bytes per connection at 10,000 connections). Past this many it grows
/// by doubling, in place (a block this large is mapped on its own).
pub(crate) const RESERVED_CONNECTIONS: usize = 65_536;
/// Closed connections a turn can hold without growing the list (the
/// events of one poll); more only grow it once.
const CLOSED_PER_TURN: usize = 1024;

/// The key of the idle list's timer entry (`Due::Conn`): no connection
/// has it (see [`MAX_KEYS`]).
const IDLE_LIST: u32 = u32::MAX;

/// Every served connection.
pub(crate) struct Tcp {
    /// Open connections; a closed one's key is freed when the turn ends.
    conns: Table<Slot>,
    /// The buffers of the connections at rest that have any.
    shelf: Shelf,
    /// The idle deadlines, in the order of last activity.
    idle: IdleList,
    mode: Mode,
    max_owed: usize,
    /// Idle timeout in milliseconds, if any.
    idle_ms: Option<Millis>,
    max_line: usize,
    next_id: u32,
    line_log: RateLimit,
    /// Sent first on every new connection (`--greeting`), bounded by
    /// `MAX_REPLY_LEN`.
    greeting: Option<Vec<u8>>,
}

impl Tcp {
    pub fn new(config: &Config) -> Tcp {
        let idle_ms = config.idle_timeout.map(|d| d.as_millis() as Millis);
        let list_due = Due::Conn { key: IDLE_LIST };
        Tcp {
            conns: Table::new(
                Token(0),
                PAIR_BASE.0.min(MAX_KEYS),
                config.max_connections.min(RESERVED_CONNECTIONS),
                CLOSED_PER_TURN,
            ),
            shelf: Shelf::default(),
            idle: IdleList::new(idle_ms.unwrap_or(Millis::MAX), list_due, |key| Due::Conn {
                key,
            }),
            mode: config.mode,
            max_owed: config.max_owed,
            idle_ms,
            max_line: config.max_line,
            next_id: 0,
            line_log: RateLimit::default(),
            greeting: config.tcp_greeting(),
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.conns.open()
    }

    // ----- events ------------------------------------------------------------

    /// A readiness event for connection `key`.
    pub fn on_event(&mut self, key: usize, ready: Readiness, t: &mut Turn<'_>) {
        // A key closed earlier in this batch has no slot: a stale event.
        if self.conns.get(key).is_some() {
            self.drive(key, ready.readable, t);
        }
    }

    /// Serves a connection that was left still ready last turn.
    pub fn resume(&mut self, key: usize, id: u32, t: &mut Turn<'_>) {
        if let Some(slot) = self.conns.get(key) {
            if slot.conn.id == id {
                self.drive(key, true, t);
            }
        }
    }

    /// Runs connection `key` as far as it goes without blocking, then
    /// settles its interest, its deadline and its place on the ready list.
    fn drive(&mut self, key: usize, readable: bool, t: &mut Turn<'_>) {
        let Some(slot) = self.conns.get(key) else {
            return;
        };
        let conn = self.shelf.wake(key, slot.conn);
        self.run(key, conn, readable, t);
    }

    /// Drives connection `key`, awake as `conn`: advances it, then puts it
    /// back to rest in its slot, or closes it. A connection that closes is
    /// not put to rest first: once mode's connection ends in the drive that
    /// reads its peer's EOF, and packing it then would be work for nothing.
    fn run(&mut self, key: usize, mut conn: Connection, readable: bool, t: &mut Turn<'_>) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let was_active = conn.last_active();
        let registered = conn.wants_writable();
        let before = log_enabled!(Level::Trace).then(|| t.counters.snapshot());
        let mut cx = Ctx {
            now: t.now,
            mode: self.mode,
            max_line: self.max_line,
            max_owed: self.max_owed,
            buf: t.buf,
            replies: t.replies,
            counters: t.counters,
            warnings: &mut self.line_log,
            faults: t.faults,
            journal: t.journal,
        };
        let outcome = conn.advance(&mut slot.stream, readable, &mut cx);
        if let Some(before) = before {
            let after = t.counters.snapshot();
            trace!(
                "conn {key}: read {} bytes, wrote {} bytes, owes {} ({:?})",
                after.bytes_in - before.bytes_in,
                after.bytes_out - before.bytes_out,
                conn.owed_len(),
                conn.phase(),
            );
        }
        let result = outcome.and_then(|advance| {
            if advance == Advance::StillReady {
                t.ready.push(Ready::Conn { key, id: conn.id });
            }
            settle_interest(&mut slot.stream, &conn, key, registered, t).map_err(Close::Failed)
        });
        if let Err(why) = result {
            // Awake, its buffers (if any) are its own, not the shelf's:
            // they go with it.
            return self.close(key, why, t);
        }
        let wait = conn.wait(t.now, self.idle_ms);
        let moved = self.idle.moved(was_active, conn.last_active());
        slot.conn = self.shelf.rest(key, conn);
        (self.idle).settle(key as u32, wait, moved, t.now, &mut self.conns, t.timers);
    }

    /// Wakes connection `key` for `f`, and puts it back to rest.
    fn with_conn<R>(&mut self, key: usize, f: impl FnOnce(&mut Connection) -> R) -> Option<R> {
        let slot = self.conns.get_mut(key)?;
        let mut conn = self.shelf.wake(key, slot.conn);
        let result = f(&mut conn);
        slot.conn = self.shelf.rest(key, conn);
        Some(result)
    }

    /// Closes connection `key` now; its key is freed at turn end. At
    /// rest, its buffers leave the shelf; awake (closed by its drive),
    /// the shelf holds none of them.
    fn close(&mut self, key: usize, why: Close, t: &mut Turn<'_>) {
        self.idle.remove(key as u32, &mut self.conns);
        let Some(slot) = self.conns.close(key) else {
            return;
        };
        self.shelf.forget(key, &slot.conn);
        match &why {
            Close::Failed(e) => debug!("conn {key}: closing on error: {e}"),
            Close::Done => debug!("conn {key}: closed"),
            Close::Reset => {
                debug!("conn {key}: reset (fault)");
                closing::reset_on_close(&slot.stream);
            }
        }
        closing::close(t.registry, slot.stream);
        sub(&t.counters.open, 1);
    }

    /// Connection `key`'s own timer entry came due, or the idle list's
    /// (`key` [`IDLE_LIST`]). The list's closes the connections whose idle
    /// deadline passed. A connection's own serves a fault's delayed step
    /// that is due, closes the connection if its deadline truly passed,
    /// or settles it again for the deadline it moved to. An entry is the
    /// connection's own if it is due when the connection's [`Place`] says:
    /// a closed connection's entry finds no slot or another deadline (a
    /// new connection in the same key that armed the very same moment is
    /// served by the first of the two entries, and finds the other stale).
    pub fn on_timer(&mut self, key: u32, at: Millis, t: &mut Turn<'_>) {
        if key == IDLE_LIST {
            if self.idle.fire(at) {
                while let Some(key) = (self.idle).pop_expired(t.now, &mut self.conns, t.timers) {
                    debug!("conn {key}: idle; closing");
                    self.close(key as usize, Close::Done, t);
                }
            }
            return;
        }
        if !self.idle.fire_member(key, at, &mut self.conns) {
            return; // Stale: the connection is gone or re-armed earlier.
        }
        let (now, idle_ms) = (t.now, self.idle_ms);
        let key = key as usize;
        let Some((step_due, expiry, phase, wait)) = self.with_conn(key, |conn| {
            let step_due = conn.wake_at().is_some_and(|at| at <= now);
            (
                step_due,
                conn.expiry(now, idle_ms),
                conn.phase(),
                conn.wait(now, idle_ms),
            )
        }) else {
            return;
        };
        if step_due {
            // A fault's delayed step is due: it needs a turn, not a close.
            return self.drive(key, false, t);
        }
        match expiry {
            Some(deadline) if deadline <= now => {
                let what = match phase {
                    Phase::Lingering { .. } => "linger over",
                    Phase::Open { .. } | Phase::Closing { .. } | Phase::Hanging => "idle",
                };
                debug!("conn {key}: {what}; closing");
                self.close(key, Close::Done, t);
            }
            _ => (self.idle).settle(key as u32, wait, false, now, &mut self.conns, t.timers),
        }
    }

    /// Frees the keys of connections closed this turn.
    pub fn end_turn(&mut self) {
        self.conns.end_turn();
    }

    /// Whether a connection's timer entry is the one it armed last (see
    /// [`Timers::sweep`](crate::timer::Timers::sweep)).
    pub fn is_current(&self, entry: &Entry) -> bool {
        match entry.due {
            Due::Conn { key } => self.idle.is_current(entry, key, &self.conns),
            _ => false,
        }
    }

    /// Winds every connection down (the listener stops on its own): no new requests are
    /// read; each connection writes what it owes, then closes as gracefully
    /// as any other (FIN, then a lingering close). Closing at once instead
    /// would reset connections with unread input, destroying replies the
    /// client has not read yet.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        for key in self.conns.keys() {
            self.with_conn(key, Connection::stop);
            self.drive(key, false, t);
        }
    }

    /// Closes every connection at once: the shutdown grace period is over.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        for key in self.conns.keys() {
            self.close(key, Close::Done, t);
        }
    }
}

/// Serving is a listener's job: each stream it accepted within the limit
/// becomes a connection.
impl Admit for Tcp {
    /// Takes in one accepted stream: registers it, greets it, reads what
    /// it sent already.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
        // Replies are small and latency matters: no Nagle delay. Except
        // for once mode's fixed reply, one write then FIN: Nagle never
        // holds a first segment, nor a FIN, so the system call would buy
        // nothing (about 10 % of the calls of a once-mode exchange).
        let custom = matches!(t.replies, Replies::Custom { .. });
        let scripted = custom || self.greeting.is_some();
        if self.mode == Mode::Line || scripted || t.faults.any(Protocol::Tcp) {
            let _ = stream.set_nodelay(true);
        }
        let id = self.next_id;
        let custom_peer = custom.then_some(peer);
        let mut conn = Connection::new(id, t.now, custom_peer);
        if t.journal.is_some() {
            conn.journal_peer(peer);
        }
        self.greet(&mut conn, t);
        // Awake from the start: its first drive puts it to rest.
        let slot = |stream| Slot {
            stream,
            conn: Dormant::AWAKE,
            place: Place::default(),
        };
        let key = match self
            .conns
            .insert(t.registry, stream, Interest::READABLE, slot)
        {
            Ok(key) => key,
            Err(e) => return warn!("cannot register {peer}: {e}"),
        };
        self.next_id = self.next_id.wrapping_add(1);
        add(&t.counters.accepted, 1);
        add(&t.counters.open, 1);
        debug!("conn {key}: accepted {peer}");
        if self.greeting.is_some() {
            // The greeting leaves before anything is read.
            self.run(key, conn, false, t);
            return self.drive(key, true, t);
        }
        // The request usually arrives with the connection: read it now
        // instead of waiting a whole turn for the readable event.
        self.run(key, conn, true, t);
    }
}

/// Registers `WRITABLE` interest exactly while the connection wants it;
/// `registered`: what it wanted before this drive.
fn settle_interest(
    stream: &mut TcpStream,
    conn: &Connection,
    key: usize,
    registered: bool,
    t: &Turn<'_>,
) -> io::Result<()> {
    let mut registered = registered;
    settle_writable(
        t.registry,
        stream,
        Token(key),
        &mut registered,
        conn.wants_writable(),
    )
}
