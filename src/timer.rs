//! Time: the loop's clock, every deadline it keeps, and a rate limit for
//! warnings.
//!
//! mio has no timers: the loop keeps its own deadlines and passes the
//! nearest one to `poll` as its timeout. An empty list of events does not
//! mean a deadline passed, so the loop reads the clock after every poll.
//!
//! Every deadline lives in one heap, [`Timers`], each entry saying what is
//! due ([`Due`]): a served connection's linger or fault-step deadline, and
//! one entry for all of their idle deadlines (the [`IdleList`]'s, see
//! below); a relayed pair's idle, linger or fault-step deadline; a relayed UDP flow's idle deadline; a listener's
//! retry after an accept error (data and control); the earliest UDP
//! datagram held back by a delay; a control connection's
//! `received` running out; the end of the shutdown grace period. So the
//! poll timeout is the heap's first entry and nothing else.
//!
//! **One entry per waiting thing.** Each owner remembers the deadline of
//! the one entry it armed, in an [`Armed`] (a connection, a relayed pair,
//! a UDP flow, the UDP delays), a control wait's deadline or a listener's
//! [`Pause`]. An entry whose owner has moved on is *stale*: a heap cannot
//! remove it cheaply, so it stays until it comes due, and is then skipped
//! by a comparison. Activity does not touch the heap: a connection only
//! records when bytes last moved; when its entry comes due the deadline is
//! recomputed from that, and the entry is pushed again if it moved. So a
//! busy connection costs one heap operation per idle period, not one per
//! read, and no turn ever scans all connections.
//!
//! **The idle list.** Served connections share one idle timeout, so their
//! idle deadlines come in the order of their last activity: the
//! [`IdleList`] keeps them in that order, linked through an 8-byte
//! [`Place`] in each connection's slot, and arms one heap entry for the
//! first. Activity moves a connection to the end of the list (O(1), no
//! heap operation); an idle connection costs its place and no entry.
//!
//! **The sweep.** Stale entries of far deadlines (a closed connection's
//! idle timeout, a `received` answered early) would pile up, so once the
//! heap holds more than twice the entries that can be current plus
//! [`SWEEP_SLACK`], [`Timers::sweep`] asks each owner which entries are
//! still its current one and drops the rest: every stale entry of every
//! kind goes, so the heap's size follows the waiting things, and the O(n)
//! pass is paid once per [`SWEEP_SLACK`] stale entries at least.
//!
//! Cost: O(log n) to arm or expire, one 16-byte entry per waiting thing;
//! O(1) and no entry for a served connection's idle deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

mod idle;
mod stamp;

pub(crate) use idle::{IdleList, MAX_KEYS, Members, Place, Wait};
pub(crate) use stamp::Stamp;

/// Milliseconds since the server started: the loop's unit of time.
pub(crate) type Millis = u64;

/// "No deadline armed."
pub(crate) const NEVER: Millis = Millis::MAX;

/// The loop's clock. One read per turn, shared by every handler.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Whole milliseconds since the start, truncated: the reading is never
    /// ahead of the real time.
    pub fn now(&self) -> Millis {
        // u64 milliseconds last 584 million years: no overflow.
        self.start.elapsed().as_millis() as Millis
    }

    /// How long from `now` until `at`. Since `now` is never ahead of the
    /// real time, a poll that sleeps this long wakes at or after `at`.
    pub fn until(now: Millis, at: Millis) -> Duration {
        Duration::from_millis(at.saturating_sub(now))
    }
}

/// The first moment on the loop's clock that is surely `ms` after `now`
/// in real time: `now` is truncated, up to a millisecond behind the real
/// time, so a wait of `ms > 0` is rounded up by one. A fault's delay or
/// gap is a lower bound, never a little short.
pub(crate) fn at_least(now: Millis, ms: Millis) -> Millis {
    match ms {
        0 => now,
        ms => now.saturating_add(ms).saturating_add(1),
    }
}

/// Stale entries tolerated beyond twice the current ones before the heap
/// is swept: a sweep is an O(n) pass, paid once per this many stale
/// entries at least.
pub(crate) const SWEEP_SLACK: usize = 1024;

/// After an accept error other than `WouldBlock`, how long until a
/// listener is tried again, in milliseconds: no retry storm, no stall.
pub const ACCEPT_RETRY_MS: Millis = 1_000;

/// What comes due when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// Connection `key`: its idle, linger or fault-step deadline. No
    /// serial: the connection tells its own entry by the deadline it
    /// armed, which keeps an entry at 16 bytes, one per idle connection.
    Conn { key: u32 },
    /// Relayed TCP pair `key`: its connect, fault, linger or idle
    /// deadline, told from a stale one the same way.
    Pair { key: u32 },
    /// The data listener may be tried again after an accept error.
    AcceptRetry,
    /// Relayed UDP flow `key`: its idle deadline.
    Flow { key: u32 },
    /// The control listener may be tried again after an accept error.
    ControlAcceptRetry,
    /// The earliest UDP datagram held back by a `delay` fault (a reply,
    /// or on a relay one relayed either way) is due.
    UdpDelay,
    /// Control connection `key`'s `received` times out.
    ControlWait { key: u32 },
    /// API connection `key`: its idle deadline.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    Api { key: u32 },
    /// The API listener may be tried again after an accept error.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    ApiAcceptRetry,
    /// Named endpoint `endpoint`'s pair `key`: as `Pair` for the main
    /// sockets' pairs.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointPair { endpoint: u16, key: u32 },
    /// Named endpoint `endpoint`'s listener may be tried again.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointAcceptRetry { endpoint: u16 },
    /// Named endpoint `endpoint`'s UDP flow `key`: as `Flow` for the main
    /// sockets' flows.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointFlow { endpoint: u16, key: u32 },
    /// Named endpoint `endpoint`'s UDP socket: as `UdpDelay` for the main
    /// socket.
    #[cfg_attr(not(feature = "api"), allow(dead_code))]
    EndpointUdpDelay { endpoint: u16 },
    /// The shutdown grace period is over: close everything.
    ShutdownGrace,
}

/// One armed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub at: Millis,
    pub due: Due,
}

/// A min-heap of deadlines. Entries may be stale (the connection closed,
/// or its deadline moved); whoever handles one checks it is still current.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// A heap with room for `capacity` entries before it grows.
    pub fn with_capacity(capacity: usize) -> Timers {
        Timers {
            heap: BinaryHeap::with_capacity(capacity),
        }
    }

    /// Arms `due` at `at`.
    pub fn arm(&mut self, at: Millis, due: Due) {
        self.heap.push(Reverse(Entry { at, due }));
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the stale entries once they may outnumber the current ones:
    /// `current` is how many entries can be current at most (one per
    /// waiting thing), `is_current` asks the owner of an entry whether it
    /// is still the one it armed. Every stale entry goes, so the next sweep
    /// waits for at least [`SWEEP_SLACK`] more.
    pub fn sweep(&mut self, current: usize, mut is_current: impl FnMut(&Entry) -> bool) {
        if self.heap.len() > 2 * current + SWEEP_SLACK {
            self.heap.retain(|Reverse(entry)| is_current(entry));
        }
    }

    /// The earliest deadline, stale or not.
    pub fn next_at(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// Removes and returns an entry due at or before `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(entry)) if entry.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

/// The one timer entry a source keeps armed (a connection, a relayed pair
/// or flow, the UDP delays): the deadline of the entry it armed last, as
/// long as that entry has not come due. An entry is armed only when it
/// would come due earlier than the armed one: a deadline that moved
/// later needs nothing, since the earlier entry comes due first and its
/// owner then arms again for what is left. So the owner must arm again
/// whenever an entry [fires](Armed::fire), for whatever it still waits
/// for. 4 bytes: an idle connection's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Armed(Option<Stamp>);

impl Armed {
    /// Makes sure an entry for `due` comes due no later than `at`: arms
    /// one unless the armed one is as early. A deadline further than
    /// [`Stamp::HORIZON`] from `now` is reached in hops, an entry at the
    /// horizon whose owner arms again when it fires.
    pub fn arm(&mut self, at: Millis, now: Millis, due: Due, timers: &mut Timers) {
        let at = at.min(now.saturating_add(Stamp::HORIZON));
        if self.0.is_none_or(|armed| at < armed.near(now)) {
            self.0 = Some(Stamp::of(at));
            timers.arm(at, due);
        }
    }

    /// An entry due `at` came due: whether it is the armed one. If it is,
    /// it is forgotten, and nothing is armed until the owner arms again;
    /// if not, it is stale, and the owner skips it.
    pub fn fire(&mut self, at: Millis) -> bool {
        let current = self.is_current(at);
        if current {
            self.0 = None;
        }
        current
    }

    /// Whether an entry due `at` is the armed one (for
    /// [`Timers::sweep`]).
    pub fn is_current(&self, at: Millis) -> bool {
        self.0 == Some(Stamp::of(at))
    }
}

/// A pause after an error, with its one timer entry: a listener whose
/// accept failed waits [`ACCEPT_RETRY_MS`] before trying again. Readiness
/// is edge-triggered, so a listener left with clients waiting would not be
/// reported again: the timer is what tries it again.
#[derive(Debug, Default)]
pub(crate) struct Pause {
    /// When the pause ends, and its entry is due; `None`: not paused.
    until: Option<Millis>,
}

impl Pause {
    /// Pauses until `ACCEPT_RETRY_MS` after `now`, arming `due` then.
    pub fn start(&mut self, now: Millis, due: Due, timers: &mut Timers) {
        let at = now.saturating_add(ACCEPT_RETRY_MS);
        self.until = Some(at);
        timers.arm(at, due);
    }

    /// Whether the pause still holds at `now`; one that is over is
    /// forgotten.
    pub fn holds(&mut self, now: Millis) -> bool {
        match self.until {
            Some(at) if now < at => true,
            _ => {
                self.until = None;
                false
            }
        }
    }

    /// Whether an entry due `at` is this pause's current one.
    pub fn is_current(&self, at: Millis) -> bool {
        self.until == Some(at)
    }
}

/// Lets a warning through at most once a second, so that a client
/// misbehaving in a loop cannot flood the log.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    next_at: Millis,
}

impl RateLimit {
    /// The minimum time between two warnings let through.
    pub const PERIOD_MS: Millis = 1_000;

    /// Whether a warning may be logged at `now`; if so, the next one waits
    /// a period.
    pub fn allow(&mut self, now: Millis) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + Self::PERIOD_MS;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(key: u32) -> Due {
        Due::Conn { key }
    }

    #[test]
    fn entries_come_due_in_deadline_order() {
        let mut timers = Timers::default();
        for (at, key) in [(30, 1), (10, 2), (20, 3)] {
            timers.arm(at, conn(key));
        }
        assert_eq!(timers.len(), 3);
        assert_eq!(timers.next_at(), Some(10));
        assert_eq!(timers.pop_due(9), None);
        assert_eq!(timers.pop_due(25).map(|e| e.due), Some(conn(2)));
        assert_eq!(timers.pop_due(25).map(|e| e.due), Some(conn(3)));
        assert_eq!(timers.pop_due(25), None);
        assert_eq!(timers.next_at(), Some(30));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn an_entry_is_due_exactly_at_its_deadline() {
        let mut timers = Timers::default();
        timers.arm(10, Due::AcceptRetry);
        assert_eq!(timers.pop_due(10).map(|e| e.at), Some(10));
        assert_eq!(timers.next_at(), None);
        assert_eq!(timers.pop_due(Millis::MAX), None, "empty");
    }

    #[test]
    fn a_sweep_waits_for_the_slack_then_drops_every_stale_entry() {
        let mut timers = Timers::with_capacity(4);
        let stale = |e: &Entry| matches!(e.due, Due::ControlWait { .. });
        for key in 0..SWEEP_SLACK as u32 {
            timers.arm(u64::from(key), Due::ControlWait { key });
        }
        timers.arm(2, Due::ShutdownGrace);
        timers.sweep(1, |e| !stale(e));
        assert_eq!(timers.len(), SWEEP_SLACK + 1, "within the slack: no sweep");
        timers.sweep(1, |e| !stale(e));
        timers.arm(3, Due::UdpDelay);
        timers.arm(4, Due::ControlWait { key: 0 });
        timers.sweep(1, |e| !stale(e));
        assert_eq!(timers.len(), 2, "every stale entry of any kind goes");
        let order: Vec<Due> = std::iter::from_fn(|| timers.pop_due(10).map(|e| e.due)).collect();
        assert_eq!(order, [Due::ShutdownGrace, Due::UdpDelay]);
    }

    #[test]
    fn a_pause_holds_until_its_entry_is_due() {
        let mut timers = Timers::default();
        let mut pause = Pause::default();
        assert!(!pause.holds(0));
        pause.start(5, Due::AcceptRetry, &mut timers);
        assert_eq!(timers.next_at(), Some(5 + ACCEPT_RETRY_MS));
        assert!(pause.holds(5 + ACCEPT_RETRY_MS - 1));
        assert!(pause.is_current(5 + ACCEPT_RETRY_MS));
        assert!(!pause.holds(5 + ACCEPT_RETRY_MS));
        assert!(!pause.is_current(5 + ACCEPT_RETRY_MS), "over: forgotten");
    }

    /// Arms `at` on `armed` at `now`; whether an entry was pushed.
    fn arm(armed: &mut Armed, timers: &mut Timers, at: Millis, now: Millis) -> bool {
        let before = timers.len();
        armed.arm(at, now, Due::UdpDelay, timers);
        timers.len() > before
    }

    #[test]
    fn an_armed_deadline_is_armed_again_only_when_earlier() {
        let (mut timers, mut armed) = (Timers::default(), Armed::default());
        assert!(arm(&mut armed, &mut timers, 50, 0), "nothing armed yet");
        assert!(!arm(&mut armed, &mut timers, 80, 10), "later: no entry");
        assert!(!arm(&mut armed, &mut timers, 50, 10), "as early: no entry");
        assert!(arm(&mut armed, &mut timers, 30, 10), "earlier: an entry");
        assert!(armed.is_current(30) && !armed.is_current(50));
        assert_eq!(timers.next_at(), Some(30));
    }

    #[test]
    fn a_fired_entry_is_forgotten_and_a_stale_one_skipped() {
        let (mut timers, mut armed) = (Timers::default(), Armed::default());
        arm(&mut armed, &mut timers, 50, 0);
        arm(&mut armed, &mut timers, 30, 0);
        let first = timers.pop_due(100).unwrap();
        assert_eq!(first.at, 30);
        assert!(armed.fire(first.at), "the armed entry");
        assert!(!armed.is_current(30), "forgotten once fired");
        // The owner still waits for 80: armed again, since nothing is.
        assert!(arm(&mut armed, &mut timers, 80, 30));
        let stale = timers.pop_due(100).unwrap();
        assert_eq!(stale.at, 50);
        assert!(!armed.fire(stale.at), "stale: skipped");
        assert!(armed.is_current(80), "and the armed one kept");
    }

    /// Defect 1 of issue 20: an owner that served what was due itself,
    /// before its entry came due, then waits for something later. The
    /// entry still pending is earlier, so nothing new is armed; when it
    /// fires it is still the current one, and the owner arms for what is
    /// left: nothing waits without an entry.
    #[test]
    fn a_pending_entry_that_was_served_early_still_fires() {
        let (mut timers, mut armed) = (Timers::default(), Armed::default());
        arm(&mut armed, &mut timers, 50, 0);
        // At 60, before the timer pass, the owner serves the 50 itself
        // and then waits for 110.
        assert!(!arm(&mut armed, &mut timers, 110, 60));
        let pending = timers.pop_due(60).unwrap();
        assert!(armed.fire(pending.at), "still current");
        assert!(arm(&mut armed, &mut timers, 110, 60));
        assert_eq!(timers.next_at(), Some(110));
    }

    #[test]
    fn a_far_deadline_is_armed_at_the_horizon() {
        let (mut timers, mut armed) = (Timers::default(), Armed::default());
        let now = 1_000;
        arm(&mut armed, &mut timers, Millis::MAX, now);
        assert_eq!(timers.next_at(), Some(now + Stamp::HORIZON));
        assert!(armed.is_current(now + Stamp::HORIZON));
        assert_eq!(std::mem::size_of::<Armed>(), 4);
    }

    #[test]
    fn clock_starts_near_zero_and_until_never_underflows() {
        let clock = Clock::new();
        assert!(clock.now() < 1_000, "a fresh clock reads {}", clock.now());
        assert_eq!(Clock::until(5, 12), Duration::from_millis(7));
        assert_eq!(Clock::until(12, 5), Duration::ZERO);
    }

    #[test]
    fn clock_moves_forward() {
        let clock = Clock::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(3) {
            std::hint::spin_loop();
        }
        assert!(
            clock.now() >= 2,
            "3 ms later the clock reads {}",
            clock.now()
        );
    }

    #[test]
    fn at_least_rounds_a_wait_up_and_saturates() {
        assert_eq!(at_least(10, 0), 10, "no wait: now");
        assert_eq!(at_least(10, 5), 16, "now may be a millisecond behind");
        assert_eq!(at_least(10, Millis::MAX), Millis::MAX);
    }

    #[test]
    fn rate_limit_lets_one_warning_through_per_period() {
        let mut limit = RateLimit::default();
        assert!(limit.allow(0));
        assert!(!limit.allow(1));
        assert!(!limit.allow(RateLimit::PERIOD_MS - 1));
        assert!(limit.allow(RateLimit::PERIOD_MS));
        assert!(!limit.allow(RateLimit::PERIOD_MS + 1));
    }
}
