//! TCP served: the connection table. The streams come from the
//! [`listener`](crate::listener) (which keeps the accept budget, the
//! connection limit and the out-of-descriptors escape) when serving is
//! its job; a relayed stream goes to [`relay`](crate::relay) instead.
//!
//! The table is a [`Table`] of connections whose keys are their tokens. It
//! takes in each stream it is handed, hands each readiness event to the
//! connection's state machine ([`conn`]), and does for it what needs the
//! loop: (re)register its interest, arm its timer, put it on the
//! still-ready list, close it. A closed connection's key is freed only
//! when the turn ends, so that a stale event later in the same batch
//! cannot reach a new connection that got the same key.

#[cfg(feature = "control")]
mod commands;
mod conn;
mod script;

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
use crate::timer::{Armed, Due, Entry, Millis, RateLimit, Timers};
use crate::turn::{PAIR_BASE, Readiness, Ready, Turn, settle_writable};
use crate::vocab::Protocol;
use conn::{Advance, Close, Connection, Ctx, Phase};

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

/// A live connection: its socket, its state machine, and its armed timer:
/// 40 bytes, which with its timer entry is an idle connection's whole cost.
///
/// The interest registered is not kept: it is what
/// [`Connection::wants_writable`] said when the connection was last
/// driven, since every drive settles it (or closes the connection), and
/// nothing between drives changes what a connection wants.
#[derive(Debug)]
struct Slot {
    stream: TcpStream,
    conn: Connection,
    /// Its live timer entry, if one is armed.
    timer: Armed,
}

/// Every served connection.
pub(crate) struct Tcp {
    /// Open connections; a closed one's key is freed when the turn ends.
    conns: Table<Slot>,
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
        Tcp {
            conns: Table::new(
                Token(0),
                PAIR_BASE.0,
                config.max_connections.min(RESERVED_CONNECTIONS),
                CLOSED_PER_TURN,
            ),
            mode: config.mode,
            max_owed: config.max_owed,
            idle_ms: config.idle_timeout.map(|d| d.as_millis() as Millis),
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
    /// settles its interest, its timer and its place on the ready list.
    fn drive(&mut self, key: usize, readable: bool, t: &mut Turn<'_>) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let registered = slot.conn.wants_writable();
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
        let outcome = slot.conn.advance(&mut slot.stream, readable, &mut cx);
        if let Some(before) = before {
            let after = t.counters.snapshot();
            trace!(
                "conn {key}: read {} bytes, wrote {} bytes, owes {} ({:?})",
                after.bytes_in - before.bytes_in,
                after.bytes_out - before.bytes_out,
                slot.conn.owed_len(),
                slot.conn.phase(),
            );
        }
        let result = outcome.and_then(|advance| {
            if advance == Advance::StillReady {
                t.ready.push(Ready::Conn {
                    key,
                    id: slot.conn.id,
                });
            }
            settle_interest(slot, key, registered, t).map_err(Close::Failed)
        });
        match result {
            Ok(()) => arm_timer(slot, key, self.idle_ms, t.now, t.timers),
            Err(why) => self.close(key, why, t),
        }
    }

    /// Closes connection `key` now; its key is freed at turn end.
    fn close(&mut self, key: usize, why: Close, t: &mut Turn<'_>) {
        let Some(slot) = self.conns.close(key) else {
            return;
        };
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

    /// Connection `key`'s timer entry came due: close the connection if its
    /// deadline truly passed, or re-arm it at the deadline that activity
    /// moved it to. The entry is the connection's own if it is due when the
    /// connection's `timer` says: a closed connection's entry finds no
    /// slot or another deadline (a new connection in the same key that
    /// armed the very same moment is served by the first of the two
    /// entries, and finds the other stale).
    pub fn on_timer(&mut self, key: u32, at: Millis, t: &mut Turn<'_>) {
        let key = key as usize;
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if !slot.timer.fire(at) {
            return; // Stale: the connection is gone or re-armed earlier.
        }
        if slot.conn.wake_at().is_some_and(|at| at <= t.now) {
            // A fault's delayed step is due: it needs a turn, not a close.
            return self.drive(key, false, t);
        }
        match slot.conn.expiry(t.now, self.idle_ms) {
            Some(deadline) if deadline <= t.now => {
                let what = match slot.conn.phase() {
                    Phase::Lingering { .. } => "linger over",
                    Phase::Open { .. } | Phase::Closing { .. } | Phase::Hanging => "idle",
                };
                debug!("conn {key}: {what}; closing");
                self.close(key, Close::Done, t);
            }
            _ => arm_timer(slot, key, self.idle_ms, t.now, t.timers),
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
            Due::Conn { key } => {
                (self.conns.get(key as usize)).is_some_and(|slot| slot.timer.is_current(entry.at))
            }
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
            if let Some(slot) = self.conns.get_mut(key) {
                slot.conn.stop();
            }
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
        let slot = |stream| Slot {
            stream,
            conn,
            timer: Armed::default(),
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
            self.drive(key, false, t);
        }
        // The request usually arrives with the connection: read it now
        // instead of waiting a whole turn for the readable event.
        self.drive(key, true, t);
    }
}

/// Registers `WRITABLE` interest exactly while the connection wants it;
/// `registered`: what it wanted before this drive.
fn settle_interest(slot: &mut Slot, key: usize, registered: bool, t: &Turn<'_>) -> io::Result<()> {
    let want = slot.conn.wants_writable();
    let mut registered = registered;
    settle_writable(
        t.registry,
        &mut slot.stream,
        Token(key),
        &mut registered,
        want,
    )
}

/// Makes sure a timer entry is armed no later than the connection's
/// deadline. A deadline that moved later needs nothing: the earlier entry
/// re-arms itself when it comes due.
fn arm_timer(
    slot: &mut Slot,
    key: usize,
    idle_ms: Option<Millis>,
    now: Millis,
    timers: &mut Timers,
) {
    if let Some(deadline) = slot.conn.deadline(now, idle_ms) {
        slot.timer
            .arm(deadline, now, Due::Conn { key: key as u32 }, timers);
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's cost is this slot and its timer entry, 56
    /// bytes: pinned, so that a new field is a decision, not an accident.
    #[test]
    fn a_slot_is_40_bytes_and_a_timer_entry_16() {
        assert_eq!(std::mem::size_of::<crate::timer::Entry>(), 16);
        use std::mem::size_of;
        /// Slab's own entry type, as the slab declares it.
        #[allow(dead_code)]
        enum SlabEntry<T> {
            Vacant(usize),
            Occupied(T),
        }
        // mio keeps a selector id beside each socket in debug builds.
        let debug_extra = if cfg!(debug_assertions) { 16 } else { 0 };
        assert_eq!(size_of::<Option<super::Slot>>(), 40 + debug_extra);
        assert_eq!(
            size_of::<SlabEntry<Option<super::Slot>>>(),
            40 + debug_extra
        );
    }
}
