//! A relayed TCP pair: a client, its upstream and a half-pipe each way.
//! No sockets here: it works through [`Endpoint`], so every transition is
//! unit-tested with scripted streams, time passed in.
//!
//! ```text
//!   Connecting ──(connect done)──▶ Relaying ──(both directions ended)──▶ closed
//!       │                             │
//!       │ refused, late               │ a side resets ─────────────────▶ reset
//!       ▼                             │ truncate's end, close fault, a
//!     client reset                    │ hang the client ended, shutdown:
//!                                     ▼ FIN both ways
//!                                  Lingering ──(both EOFs, LINGER_MS)──▶ closed
//! ```
//!
//! * **Connecting**: the upstream's non-blocking connect is in progress;
//!   what the client sends meanwhile is held, up to the bound. Writability
//!   of the upstream means "connected or failed": the status is read
//!   before the first write. A refused or late upstream resets the client.
//! * **Relaying**: the two half-pipes move bytes. A FIN travels on its own
//!   direction; the pair closes once both have. A reset from either side
//!   resets the other, even one that comes after the side's FIN (its
//!   socket is no longer read then: the reset shows as the socket's
//!   error on its next event).
//! * **Lingering**: the pair ends early (a `truncate` or `close` fault,
//!   a `hang` once the client's FIN is in, a shutdown): both sides got our FIN; input is read and discarded
//!   until both peers close or [`LINGER_MS`] passes, so that the close
//!   never meets unread input (which would reset, destroying bytes in
//!   flight: GUIDE trap 9).

use std::io::{self, ErrorKind, Read};

use log::debug;

use std::cell::RefCell;

pub(crate) use super::half::Doom;
use super::half::{Broken, HalfPipe, LineCx, Pump, Pumped, Shape, Sink};
use super::journal::{PairLog, Tap};
use crate::closing::{self, Discarded};
use crate::fault::Faults;
use crate::journal::Journal;
use crate::limits::{LINGER_MS, READS_PER_TURN};
use crate::stats::{Counters, add};
use crate::timer::{Millis, RateLimit};
pub(crate) use crate::turn::Readiness;
use crate::vocab::Direction;

/// What a pair needs of a socket: bytes both ways, a FIN, and for the
/// upstream, how its connect went.
pub(crate) trait Endpoint: Read + Sink {
    /// The outcome of a non-blocking connect: `None` while it is still in
    /// progress.
    fn connect_status(&mut self) -> Option<io::Result<()>>;
    /// The error a reset left on the socket (`SO_ERROR`), if any: after
    /// the peer's FIN a read returns 0 whatever comes later, so this is
    /// how a reset that follows a half-close is seen.
    fn reset_error(&mut self) -> Option<io::Error>;
}

impl Endpoint for mio::net::TcpStream {
    fn connect_status(&mut self) -> Option<io::Result<()>> {
        // mio's recipe: a pending error first, then the peer's address;
        // `NotConnected` means the connect is still under way.
        match self.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(e)),
            Ok(None) => {}
        }
        match self.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind() == ErrorKind::NotConnected => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn reset_error(&mut self) -> Option<io::Error> {
        self.take_error().unwrap_or_else(Some)
    }
}

/// One of a pair's two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

/// How far [`Pair::advance`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Advance {
    /// Blocked on the sockets or a deadline.
    Waiting,
    /// A read budget ran out with input perhaps left: serve it next turn.
    StillReady,
}

/// Why a pair is to be closed now.
#[derive(Debug)]
pub(crate) enum End {
    /// It ended normally (both directions, a linger, the idle timeout):
    /// close both sockets.
    Done,
    /// A side reset, or a `reset` fault: reset both (`SO_LINGER` 0).
    /// `upstream_failed`: it was the upstream that reset.
    Reset { upstream_failed: bool },
    /// The upstream refused or did not answer in time: reset the client.
    ConnectFailed(io::Error),
}

/// What the faults decided for a pair when it was accepted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// Stream mode: the faults on each direction (up, down).
    pub shapes: [Shape; 2],
    /// Stream mode: a `close` or `reset` that ends the pair at this time,
    /// before any byte is relayed.
    pub doom: Option<(Millis, Doom)>,
    /// Line mode: each line is judged on its own.
    pub lines: bool,
    /// With a journal: what the pair's lines remember.
    pub journal: Option<Box<PairLog>>,
}

/// Where a pair is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The upstream's connect is in progress until the deadline.
    Connecting {
        deadline: Millis,
    },
    Relaying,
    /// Our FINs are sent; discarding input since this time.
    Lingering {
        since: Millis,
    },
}

/// What a pair's transitions need from the loop.
pub(crate) struct PairCx<'a> {
    pub now: Millis,
    /// The loop's one read buffer.
    pub buf: &'a mut [u8],
    /// Bytes each direction holds at most.
    pub max_owed: usize,
    /// Bytes a direction holds at most while a delay holds them (stream
    /// mode), if larger.
    pub max_delayed: usize,
    pub counters: &'a Counters,
    /// The faults in force, for line mode's per-line verdicts.
    pub faults: &'a mut Faults,
    /// The longest line (line mode).
    pub max_line: usize,
    /// Limits the over-long-line warning, shared by all pairs.
    pub warnings: &'a mut RateLimit,
    /// The journal, if any.
    pub journal: Option<&'a RefCell<Journal>>,
}

/// A client, its upstream, and a half-pipe each way.
#[derive(Debug)]
pub(crate) struct Pair<S> {
    /// Serial number: tells this pair from an earlier one that had the same
    /// table key, for timer entries and the still-ready list.
    pub id: u32,
    /// Its place in accept order: the first of its messages' ordinals.
    ordinal: u64,
    pub client: S,
    pub upstream: S,
    /// Client to upstream.
    up: HalfPipe,
    /// Upstream to client.
    down: HalfPipe,
    phase: Phase,
    /// A `close` or `reset` fault ends the pair at this time; until then
    /// nothing is relayed (bytes are held, within the bound).
    doom: Option<(Millis, Doom)>,
    /// In `Lingering`: which peers have closed (client, upstream).
    eof: [bool; 2],
    /// When bytes last moved, either way.
    last_active: Millis,
    /// Shutting down: the sources are no longer read, so once both
    /// directions are out the pair lingers rather than closing at once.
    stopping: bool,
    /// Stream mode: the client's first bytes arrived, and were counted as
    /// the pair's one message (as once mode counts its first read).
    counted: bool,
    /// With a journal: what the pair's journal lines remember.
    journal: Option<Box<PairLog>>,
}

impl<S: Endpoint> Pair<S> {
    /// A pair, the `ordinal`th accepted, whose upstream's connect was
    /// just started at `now`, to fail at `connect_deadline`, with the
    /// faults `plan` decided.
    pub fn new(
        (id, ordinal): (u32, u64),
        (client, upstream): (S, S),
        (now, connect_deadline): (Millis, Millis),
        plan: Plan,
    ) -> Pair<S> {
        let Plan {
            shapes: [up, down],
            doom,
            lines,
            journal,
        } = plan;
        Pair {
            id,
            ordinal,
            client,
            upstream,
            up: HalfPipe::new(up, lines),
            down: HalfPipe::new(down, lines),
            phase: Phase::Connecting {
                deadline: connect_deadline,
            },
            doom,
            eof: [false; 2],
            last_active: now,
            stopping: false,
            counted: false,
            journal,
        }
    }

    /// Whether `side`'s socket wants `WRITABLE` interest: a connect in
    /// progress, or a direction whose last write into it came up short.
    pub fn wants_writable(&self, side: Side) -> bool {
        match (side, self.phase) {
            (Side::Upstream, Phase::Connecting { .. }) => true,
            (Side::Upstream, _) => self.up.wants_writable(),
            (Side::Client, _) => self.down.wants_writable(),
        }
    }

    /// Bytes held in both directions.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.up.owed() + self.down.owed()
    }

    /// The pair's next deadline: the connect's, a fault's time, the end of
    /// the linger, or the idle timeout (`idle_ms` after bytes last moved;
    /// a pair holding bytes for a fault's time is not idle).
    pub fn deadline(&self, idle_ms: Option<Millis>) -> Option<Millis> {
        // A direction's clock matters only while it can write: before
        // that (connecting, doomed) its due bytes would wake it for nothing.
        let writing = self.phase == Phase::Relaying && self.doom.is_none();
        let pipes = [self.up.wake_at(), self.down.wake_at()]
            .into_iter()
            .flatten()
            .min();
        let wake = [pipes.filter(|_| writing), self.doom.map(|d| d.0)]
            .into_iter()
            .flatten()
            .min();
        let end = match self.phase {
            Phase::Connecting { deadline } => Some(deadline),
            Phase::Lingering { since } => Some(since.saturating_add(LINGER_MS)),
            Phase::Relaying if wake.is_some() => None,
            Phase::Relaying => idle_ms.map(|idle| self.last_active.saturating_add(idle)),
        };
        [wake, end].into_iter().flatten().min()
    }

    /// A deadline may have passed at `cx.now`: act on what is due (a
    /// failed connect, a fault's end, a linger or idle timeout over), and
    /// move the bytes a fault's clock lets go.
    pub fn on_timer(
        &mut self,
        idle_ms: Option<Millis>,
        cx: &mut PairCx<'_>,
    ) -> Result<Advance, End> {
        let now = cx.now;
        let waking = self.up.wake_at().is_some() || self.down.wake_at().is_some();
        let idle = idle_ms.is_some_and(|idle| self.last_active.saturating_add(idle) <= now);
        match self.phase {
            Phase::Connecting { deadline } if deadline <= now => {
                return Err(End::ConnectFailed(ErrorKind::TimedOut.into()));
            }
            Phase::Relaying if idle && !waking && self.doom.is_none() => return Err(End::Done),
            _ => {}
        }
        self.resume(cx)
    }

    /// Stream mode: each direction's faults from now on, `[up, down]`
    /// (see [`HalfPipe::reshape`]); the caller pumps it again.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    pub fn reshape(&mut self, [up, down]: [Shape; 2]) {
        self.up.reshape(up);
        self.down.reshape(down);
    }

    /// Its place in accept order.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    pub fn ordinal(&self) -> u64 {
        self.ordinal
    }

    /// Moves what can be moved both ways: for a pair left on the
    /// still-ready list, or woken by its timer.
    pub fn resume(&mut self, cx: &mut PairCx<'_>) -> Result<Advance, End> {
        // The upstream's side, both ways, covers every direction and the
        // connect's status.
        self.advance(Side::Upstream, Readiness::BOTH, cx)
    }

    /// Shutting down: nothing more is taken from either side; what each
    /// direction holds is written, then the FINs, then a lingering close.
    pub fn stop(&mut self) {
        self.stopping = true;
        self.up.finish();
        self.down.finish();
    }

    /// `side`'s socket is ready as `ready` says: move what can be moved.
    pub fn advance(
        &mut self,
        side: Side,
        ready: Readiness,
        cx: &mut PairCx<'_>,
    ) -> Result<Advance, End> {
        if let Some(doom) = self.doom_due(cx.now) {
            return match doom {
                Doom::Reset => Err(End::Reset {
                    upstream_failed: false,
                }),
                Doom::Close => self.begin_linger(cx),
            };
        }
        // Which directions this event can move: reading `side` feeds the
        // direction out of it, writing `side` drains the one into it.
        let (mut up, mut down) = match side {
            Side::Client => (ready.readable, ready.writable),
            Side::Upstream => (ready.writable, ready.readable),
        };
        match self.phase {
            Phase::Lingering { since } => return self.linger(since, cx),
            Phase::Connecting { .. } if side == Side::Upstream => {
                match self.upstream.connect_status() {
                    None => {}
                    Some(Err(e)) => return Err(End::ConnectFailed(e)),
                    Some(Ok(())) => {
                        self.phase = Phase::Relaying;
                        (up, down) = (true, true);
                    }
                }
            }
            _ => {}
        }
        if ready.readable && self.source_ended(side) {
            // Its FIN came earlier, so it is not read again: a reset it
            // sent since shows only as its socket's error.
            let socket = match side {
                Side::Client => &mut self.client,
                Side::Upstream => &mut self.upstream,
            };
            if let Some(e) = socket.reset_error() {
                debug!(
                    "pair {}: the {side:?} side failed after its FIN: {e}",
                    self.id
                );
                return Err(End::Reset {
                    upstream_failed: side == Side::Upstream,
                });
            }
        }
        let mut advance = Advance::Waiting;
        if up {
            advance = self.pump(Side::Client, cx)?;
        }
        let relaying = self.phase == Phase::Relaying && self.doom.is_none();
        if down && relaying && self.pump(Side::Upstream, cx)? == Advance::StillReady {
            advance = Advance::StillReady;
        }
        let lingering = matches!(self.phase, Phase::Lingering { .. });
        if self.up.ended() && self.down.ended() && !lingering {
            return match self.stopping {
                // Unread input may wait on either side: a plain close
                // would reset, destroying what was just flushed.
                true => self.begin_linger(cx),
                false => Err(End::Done),
            };
        }
        if self.hang_ended() && !lingering {
            return self.begin_linger(cx);
        }
        Ok(advance)
    }

    /// Whether `side` sent its FIN (or a shutdown stopped reading it): the
    /// direction out of it takes nothing more.
    fn source_ended(&self, side: Side) -> bool {
        match side {
            Side::Client => self.up.source_ended(),
            Side::Upstream => self.down.source_ended(),
        }
    }

    /// A `hang` lasts until the client ends it (SPEC 8), relayed as
    /// served: once the client's FIN is in and what either direction
    /// holds is out (the client's bytes and FIN passed on, unless they
    /// hang too), the pair ends, gracefully.
    fn hang_ended(&self) -> bool {
        let hanging = self.up.hangs() || self.down.hangs();
        let up_out = self.up.ended() || self.up.hangs();
        let nothing_held = self.up.owed() == 0 && self.down.owed() == 0;
        hanging && self.up.source_ended() && up_out && nothing_held
    }

    /// Pumps the direction out of `from`, counting what moved.
    fn pump(&mut self, from: Side, cx: &mut PairCx<'_>) -> Result<Advance, End> {
        let relaying = self.phase == Phase::Relaying && self.doom.is_none();
        let mut pump = Pump::new(cx.now, cx.buf, cx.max_owed);
        pump.max_delayed = cx.max_delayed;
        let (pipe, source, sink, dir) = match from {
            Side::Client => (
                &mut self.up,
                &mut self.client,
                &mut self.upstream,
                Direction::Up,
            ),
            Side::Upstream => (
                &mut self.down,
                &mut self.upstream,
                &mut self.client,
                Direction::Down,
            ),
        };
        if pipe.judges_lines() {
            pump.lines = Some(LineCx {
                faults: cx.faults,
                counters: cx.counters,
                dir,
                conn: self.ordinal,
                max_line: cx.max_line,
                warnings: cx.warnings,
            });
        }
        if let (Some(journal), Some(log)) = (cx.journal, self.journal.as_deref_mut()) {
            let (now, conn) = (cx.now, self.ordinal + 1);
            pump.tap = Some(Tap {
                journal,
                now,
                conn,
                dir,
                log,
            });
        }
        let result = pipe.relay(source, relaying.then_some(sink), &mut pump);
        let (read, written) = (pump.read, pump.written);
        let counters = cx.counters;
        let (bytes_read, bytes_written) = match from {
            Side::Client => (&counters.bytes_in, &counters.up_bytes_out),
            Side::Upstream => (&counters.up_bytes_in, &counters.bytes_out),
        };
        add(bytes_read, read);
        add(bytes_written, written);
        if from == Side::Client && read > 0 && !self.counted && !self.up.judges_lines() {
            // The message is the connection (line mode counts lines).
            self.counted = true;
            add(&counters.messages, 1);
        }
        if read + written > 0 {
            self.last_active = cx.now;
        }
        match result {
            Ok(Pumped::Waiting | Pumped::Ended) => Ok(Advance::Waiting),
            Ok(Pumped::StillReady) => Ok(Advance::StillReady),
            Ok(Pumped::Cut | Pumped::Doom(Doom::Close)) => self.begin_linger(cx),
            Ok(Pumped::Doom(Doom::Reset)) => Err(End::Reset {
                upstream_failed: false,
            }),
            // The side that failed is the source when a read failed, the
            // sink when a write did.
            Err(broken) => {
                let (failed, e) = match (broken, from) {
                    (Broken::Source(e), side) => (side, e),
                    (Broken::Sink(e), Side::Client) => (Side::Upstream, e),
                    (Broken::Sink(e), Side::Upstream) => (Side::Client, e),
                };
                debug!("pair {}: the {failed:?} side failed: {e}", self.id);
                Err(End::Reset {
                    upstream_failed: failed == Side::Upstream,
                })
            }
        }
    }

    /// A `close` or `reset` fault whose time has come: taken, once.
    fn doom_due(&mut self, now: Millis) -> Option<Doom> {
        match self.doom {
            Some((at, doom)) if at <= now => {
                self.doom = None;
                Some(doom)
            }
            _ => None,
        }
    }

    /// Ends the pair early but gracefully: our FIN to both sides (a side
    /// that is gone already cannot take one: nothing is lost), then a
    /// lingering close, starting with what is unread now (no event would
    /// report it again).
    fn begin_linger(&mut self, cx: &mut PairCx<'_>) -> Result<Advance, End> {
        let _ = self.client.shutdown_write();
        if !matches!(self.phase, Phase::Connecting { .. }) {
            let _ = self.upstream.shutdown_write();
        }
        self.phase = Phase::Lingering { since: cx.now };
        self.linger(cx.now, cx)
    }

    /// Lingering: read and discard until both peers closed, or the linger
    /// is over.
    fn linger(&mut self, since: Millis, cx: &mut PairCx<'_>) -> Result<Advance, End> {
        let mut advance = Advance::Waiting;
        for (index, side) in [Side::Client, Side::Upstream].into_iter().enumerate() {
            if self.eof[index] {
                continue;
            }
            let socket = match side {
                Side::Client => &mut self.client,
                Side::Upstream => &mut self.upstream,
            };
            let mut budget = READS_PER_TURN;
            match closing::discard(socket, cx.buf, &mut budget).1 {
                Discarded::Eof | Discarded::Failed(_) => self.eof[index] = true,
                Discarded::Drained => {}
                Discarded::OutOfBudget => advance = Advance::StillReady,
            }
        }
        if self.eof == [true, true] || since.saturating_add(LINGER_MS) <= cx.now {
            return Err(End::Done);
        }
        Ok(advance)
    }
}

#[cfg(test)]
mod tests;
