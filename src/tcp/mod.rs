//! TCP: the listener and the connection table.
//!
//! The table is a [`Table`] of connections whose keys are their tokens. It
//! accepts (with a per-turn budget, the connection limit and the
//! out-of-descriptors escape), hands each readiness event to the
//! connection's state machine ([`conn`]), and does for it what needs the
//! loop: (re)register its interest, arm its timer, put it on the
//! still-ready list, close it. A closed connection's key is freed only
//! when the turn ends, so that a stale event later in the same batch
//! cannot reach a new connection that got the same key.

mod commands;
mod conn;
mod script;

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use log::{Level, debug, log_enabled, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use crate::config::{Config, Mode};
use crate::relay::pair::Side;
use crate::relay::pairs::Pairs;
use crate::reply::Replies;
use crate::stats::add;
use crate::stats::sub;
use crate::table::Table;
use crate::timer::{ACCEPT_RETRY_MS, Due, Entry, Millis, Pause, RateLimit, Timers};
use crate::turn::{Readiness, Ready, Turn, UPSTREAM_BASE, settle_writable};
use crate::vocab::Protocol;
use conn::{Advance, Close, Connection, Ctx, Phase, Stamp};

pub use conn::{LINGER_CAP_MS, LINGER_MS, READS_PER_TURN};

/// Accepts per turn, so a connection storm cannot starve served clients.
pub const ACCEPTS_PER_TURN: usize = 64;
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
    /// The deadline of this connection's live timer entry, if one is
    /// armed (entries are armed at most [`Stamp::HORIZON`] ahead).
    timer_at: Option<Stamp>,
}

/// The listener and every connection.
pub(crate) struct Tcp {
    /// `None` while refused (live control), after shutdown, or without TCP.
    listener: Option<TcpListener>,
    /// The port, bound but not listening, while refused since start-up.
    reserved: Option<socket2::Socket>,
    /// The address the listener is bound to, for listening again.
    listen_addr: Option<SocketAddr>,
    /// Listen with `SO_REUSEPORT` (`--reuse-port`).
    reuse_port: bool,
    /// Open connections; a closed one's key is freed when the turn ends.
    conns: Table<Slot>,
    mode: Mode,
    max_connections: usize,
    max_owed: usize,
    /// Idle timeout in milliseconds, if any.
    idle_ms: Option<Millis>,
    max_line: usize,
    next_id: u32,
    /// A descriptor held in reserve for when the process runs out.
    spare_fd: spare::SpareFd,
    /// Accepting is paused after an accept error.
    accept_pause: Pause,
    reject_log: RateLimit,
    line_log: RateLimit,
    /// Shutting down: no new clients; connections close once their owed
    /// bytes are out.
    stopping: bool,
    /// Sent first on every new connection (`--greeting`), bounded by
    /// `MAX_REPLY_LEN`.
    greeting: Option<Vec<u8>>,
    /// A relay (`--upstream tcp:...`): every client becomes a pair with
    /// the upstream, and `conns` stays empty.
    relay: Option<Box<Pairs>>,
}

impl Tcp {
    pub fn new(listener: Option<(TcpListener, SocketAddr)>, config: &Config) -> Tcp {
        let (listener, listen_addr) = listener.unzip();
        Tcp {
            listener,
            reserved: None,
            listen_addr,
            reuse_port: config.reuse_port,
            conns: Table::new(
                Token(0),
                UPSTREAM_BASE.0,
                config.max_connections.min(RESERVED_CONNECTIONS),
                CLOSED_PER_TURN,
            ),
            mode: config.mode,
            max_connections: config.max_connections,
            max_owed: config.max_owed,
            idle_ms: config.idle_timeout.map(|d| d.as_millis() as Millis),
            max_line: config.max_line,
            next_id: 0,
            spare_fd: spare::SpareFd::reserve(),
            accept_pause: Pause::default(),
            reject_log: RateLimit::default(),
            line_log: RateLimit::default(),
            stopping: false,
            greeting: config.greeting.clone(),
            relay: config
                .upstream_tcp
                .map(|up| Box::new(Pairs::new(up, config))),
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.conns.open() + self.relay.as_ref().map_or(0, |relay| relay.open())
    }

    // ----- accepting -------------------------------------------------------

    /// The listener is readable: accept until `WouldBlock`, or until the
    /// per-turn budget runs out (then it goes on the still-ready list).
    pub fn accept(&mut self, t: &mut Turn<'_>) {
        if self.accept_pause.holds(t.now) {
            return; // Paused after an accept error; its timer resumes it.
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, t),
                // Drained: the next connection brings a new event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if is_transient(&e) => continue,
                Err(e) if is_out_of_descriptors(&e) => return self.shed_backlog(t),
                Err(e) => {
                    warn!("accept failed: {e}; trying again in {ACCEPT_RETRY_MS} ms");
                    return self.pause_accepting(t);
                }
            }
        }
        t.ready.push(Ready::Listener);
    }

    /// Stops accepting for [`ACCEPT_RETRY_MS`]: no retry storm, no stall.
    fn pause_accepting(&mut self, t: &mut Turn<'_>) {
        self.accept_pause.start(t.now, Due::AcceptRetry, t.timers);
    }

    /// Out of file descriptors. The failed accept would fail again at
    /// once, forever, and the waiting clients would hang in the backlog.
    /// Give back the spare descriptor, then accept and close each waiting
    /// client in turn (libuv's trick), and take the spare again.
    fn shed_backlog(&mut self, t: &mut Turn<'_>) {
        let Some(listener) = &self.listener else {
            return;
        };
        let mut shed = 0u64;
        if self.spare_fd.release() {
            while (shed as usize) < ACCEPTS_PER_TURN {
                match listener.accept() {
                    Ok((stream, _)) => {
                        drop(stream);
                        shed += 1;
                    }
                    Err(e) if is_transient(&e) => continue,
                    // WouldBlock: the backlog is empty. Anything else:
                    // someone took the spare slot; retry below.
                    Err(_) => break,
                }
            }
            self.spare_fd = spare::SpareFd::reserve();
        }
        add(&t.counters.rejected, shed);
        if self.reject_log.allow(t.now) {
            warn!("out of file descriptors: closed {shed} waiting client(s) unserved");
        }
        // Not drained for sure: look again in a second rather than spin.
        self.pause_accepting(t);
    }

    /// Takes in one accepted stream, or turns it away over the limit.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, t: &mut Turn<'_>) {
        if self.open() >= self.max_connections {
            add(&t.counters.rejected, 1);
            if self.reject_log.allow(t.now) {
                warn!(
                    "rejected {peer}: at --max-connections {} (further rejections \
                     are logged at most once a second)",
                    self.max_connections
                );
            }
            return; // Dropping the stream closes it.
        }
        if let Some(relay) = &mut self.relay {
            return relay.admit(stream, peer, t);
        }
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
            timer_at: None,
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

    // ----- events ------------------------------------------------------------

    /// A readiness event for connection `key`.
    pub fn on_event(&mut self, key: usize, ready: Readiness, t: &mut Turn<'_>) {
        if let Some(relay) = &mut self.relay {
            return relay.on_event(key, Side::Client, ready, t);
        }
        // A key closed earlier in this batch has no slot: a stale event.
        if self.conns.get(key).is_some() {
            self.drive(key, ready.readable, t);
        }
    }

    /// A readiness event for the upstream socket of relayed pair `key`.
    pub fn on_upstream_event(&mut self, key: usize, ready: Readiness, t: &mut Turn<'_>) {
        if let Some(relay) = &mut self.relay {
            relay.on_event(key, Side::Upstream, ready, t);
        }
    }

    /// Serves a connection that was left still ready last turn.
    pub fn resume(&mut self, key: usize, id: u32, t: &mut Turn<'_>) {
        if let Some(relay) = &mut self.relay {
            return relay.resume(key, id, t);
        }
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
        let Some(mut slot) = self.conns.close(key) else {
            return;
        };
        match &why {
            Close::Failed(e) => debug!("conn {key}: closing on error: {e}"),
            Close::Done => debug!("conn {key}: closed"),
            Close::Reset => {
                debug!("conn {key}: reset (fault)");
                // A zero linger makes the close below send RST, not FIN.
                let _ = socket2::SockRef::from(&slot.stream).set_linger(Some(Duration::ZERO));
            }
        }
        // mio's rule: deregister before the descriptor closes, since some
        // selectors keep state per source. mio's epoll selector keeps none,
        // and closing the last descriptor of a socket removes it from every
        // epoll interest list (epoll(7)), which the drop below does. There
        // the EPOLL_CTL_DEL is a system call for nothing, measured at about
        // 6 % of a once-mode exchange's server CPU (benches/syscalls.sh,
        // benches/compare.sh). Should a copy of the descriptor live on (a
        // child forked by the host, between fork and exec), its events can
        // still come with the old token; a slab key reused by then only sees
        // a spurious event, which a read ending in `WouldBlock` absorbs.
        if !cfg!(all(
            target_os = "linux",
            not(mio_unsupported_force_poll_poll)
        )) {
            let _ = t.registry.deregister(&mut slot.stream);
        }
        drop(slot);
        sub(&t.counters.open, 1);
    }

    /// Connection `key`'s timer entry came due: close the connection if its
    /// deadline truly passed, or re-arm it at the deadline that activity
    /// moved it to. The entry is the connection's own if it is due when the
    /// connection's `timer_at` says: a closed connection's entry finds no
    /// slot or another deadline (a new connection in the same key that
    /// armed the very same moment is served by the first of the two
    /// entries, and finds the other stale).
    pub fn on_timer(&mut self, key: u32, at: Millis, t: &mut Turn<'_>) {
        let key = key as usize;
        if let Some(relay) = &mut self.relay {
            return relay.on_timer(key, at, t);
        }
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.timer_at != Some(Stamp::of(at)) {
            return; // Stale: the connection is gone or re-armed earlier.
        }
        slot.timer_at = None;
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

    /// The accept-retry entry due `at` came due.
    pub fn on_accept_retry(&mut self, at: Millis, t: &mut Turn<'_>) {
        if self.accept_pause.is_current(at) {
            self.accept(t);
        }
    }

    /// Frees the keys of connections closed this turn.
    pub fn end_turn(&mut self) {
        self.conns.end_turn();
        if let Some(relay) = &mut self.relay {
            relay.end_turn();
        }
    }

    /// Whether a timer entry of the listener or of a connection (or a
    /// relayed pair) is the one its owner armed last (see
    /// [`Timers::sweep`](crate::timer::Timers::sweep)).
    pub fn is_current(&self, entry: &Entry) -> bool {
        match (entry.due, &self.relay) {
            (Due::Conn { key }, Some(relay)) => relay.is_current(key as usize, entry.at),
            (Due::Conn { key }, None) => (self.conns.get(key as usize))
                .is_some_and(|slot| slot.timer_at == Some(Stamp::of(entry.at))),
            (Due::AcceptRetry, _) => self.accept_pause.is_current(entry.at),
            _ => false,
        }
    }

    /// Stops accepting and winds every connection down: no new requests are
    /// read; each connection writes what it owes, then closes as gracefully
    /// as any other (FIN, then a lingering close). Closing at once instead
    /// would reset connections with unread input, destroying replies the
    /// client has not read yet.
    pub fn stop(&mut self, t: &mut Turn<'_>) {
        self.stopping = true;
        if let Some(mut listener) = self.listener.take() {
            let _ = t.registry.deregister(&mut listener);
        }
        for key in self.conns.keys() {
            if let Some(slot) = self.conns.get_mut(key) {
                slot.conn.stop();
            }
            self.drive(key, false, t);
        }
        if let Some(relay) = &mut self.relay {
            relay.stop(t);
        }
    }

    /// Closes every connection at once: the shutdown grace period is over.
    pub fn close_all(&mut self, t: &mut Turn<'_>) {
        for key in self.conns.keys() {
            self.close(key, Close::Done, t);
        }
        if let Some(relay) = &mut self.relay {
            relay.close_all(t);
        }
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
    let Some(deadline) = slot.conn.deadline(now, idle_ms) else {
        return;
    };
    // A farther deadline is reached in hops, so the stamp reads back.
    let at = deadline.min(now.saturating_add(Stamp::HORIZON));
    if slot.timer_at.is_none_or(|armed| at < armed.near(now)) {
        slot.timer_at = Some(Stamp::of(at));
        timers.arm(at, Due::Conn { key: key as u32 });
    }
}

/// Accept errors that concern one client only: try the next.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

#[cfg(unix)]
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(not(unix))]
fn is_out_of_descriptors(_: &io::Error) -> bool {
    false
}

/// The descriptor kept in reserve for [`Tcp::shed_backlog`].
mod spare {
    /// Holds one open descriptor (on `/dev/null`) so that it can be given
    /// back when the process runs out. Unix only: elsewhere it holds none.
    #[derive(Debug)]
    pub struct SpareFd(#[cfg(unix)] Option<std::fs::File>);

    impl SpareFd {
        /// Takes a descriptor, if one can be had.
        pub fn reserve() -> SpareFd {
            #[cfg(unix)]
            return SpareFd(std::fs::File::open("/dev/null").ok());
            #[cfg(not(unix))]
            return SpareFd();
        }

        /// Closes the reserved descriptor; whether there was one.
        pub fn release(&mut self) -> bool {
            #[cfg(unix)]
            return self.0.take().is_some();
            #[cfg(not(unix))]
            return false;
        }
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
