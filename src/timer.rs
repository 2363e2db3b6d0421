//! Deadlines for idle connections and lingering closes.
//!
//! mio has no timers: the loop keeps its own deadlines and passes the
//! nearest one to `poll` as its timeout. An empty list of events does not
//! mean a deadline passed, so the loop checks the clock after every poll.
//!
//! Cost: a binary heap, O(log n) to arm or expire, one 16-byte entry per
//! connection. Activity does not touch the heap: a connection only records
//! when it last received bytes. When its entry comes due the deadline is
//! recomputed from that, and the entry is pushed again if it moved. So a
//! busy connection costs one heap operation per idle period, not one per
//! read, and no turn ever scans all connections. Entries of closed
//! connections are swept out in one pass once they outnumber the live ones,
//! so the heap's size follows the open connections, not the closed ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

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

    pub fn now(&self) -> Millis {
        // Truncation is fine: u64 milliseconds last 584 million years.
        self.start.elapsed().as_millis() as Millis
    }

    /// How long from `now` until `at`, rounded up so a poll that sleeps this
    /// long wakes at or after the deadline, never a little before it.
    pub fn until(now: Millis, at: Millis) -> Duration {
        Duration::from_millis(at.saturating_sub(now))
    }
}

/// One armed deadline: connection `key` (serial `id`) is due at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub at: Millis,
    pub key: u32,
    pub id: u32,
}

/// A min-heap of deadlines. Entries may be stale (the connection closed,
/// or its deadline moved); the owner checks each one as it comes due.
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

    pub fn arm(&mut self, entry: Entry) {
        self.heap.push(Reverse(entry));
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries `live` rejects. The heap never removes an entry
    /// when its connection closes (a heap can't, cheaply), so the owner
    /// calls this when stale entries outnumber live ones: O(n), amortized
    /// O(1) per closed connection, and the heap stays within a constant
    /// factor of the open connections.
    pub fn retain(&mut self, mut live: impl FnMut(&Entry) -> bool) {
        self.heap.retain(|Reverse(entry)| live(entry));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_deadline_order() {
        let mut timers = Timers::default();
        for (at, key) in [(30, 1), (10, 2), (20, 3)] {
            timers.arm(Entry { at, key, id: 0 });
        }
        assert_eq!(timers.next_at(), Some(10));
        assert_eq!(timers.pop_due(9), None);
        assert_eq!(timers.pop_due(25).map(|e| e.key), Some(2));
        assert_eq!(timers.pop_due(25).map(|e| e.key), Some(3));
        assert_eq!(timers.pop_due(25), None);
        assert_eq!(timers.next_at(), Some(30));
    }
}
