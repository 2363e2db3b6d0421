//! Counters, readable from any thread while the loop runs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::fault::{FaultCounts, KINDS};

/// A snapshot of the server's counters.
///
/// Its `Display` is the one-line summary the command line logs at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted and served.
    pub accepted: u64,
    /// TCP connections accepted and closed at once: over
    /// `max_connections`, or shed while out of file descriptors.
    pub rejected: u64,
    /// TCP connections open now.
    pub open: u64,
    /// TCP messages answered or offered to the responder: lines in line
    /// mode, first reads in once mode.
    pub messages: u64,
    /// UDP datagrams received.
    pub datagrams: u64,
    /// Bytes received, TCP and UDP.
    pub bytes_in: u64,
    /// Reply bytes sent, TCP and UDP.
    pub bytes_out: u64,
    /// UDP replies dropped because the bounded reply queue was full, and
    /// relayed datagrams from new sources past `max_flows`.
    pub replies_dropped: u64,
    /// Relay: connects the upstream refused or did not answer in time,
    /// upstream connections reset, ICMP errors on UDP flows.
    pub upstream_failed: u64,
    /// Relay: payload bytes received from the upstreams, TCP and UDP.
    pub up_bytes_in: u64,
    /// Relay: payload bytes sent to the upstreams, TCP and UDP.
    pub up_bytes_out: u64,
    /// Faults applied on purpose, by kind (`--fault`).
    pub faults: FaultCounts,
    /// Journal lines not written: its write failed, or a slow reader let
    /// more than [`MAX_JOURNAL_BUFFER`](crate::MAX_JOURNAL_BUFFER) wait.
    pub journal_lost: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            // The upstream's byte counts come before the client's, so
            // that the last "bytes in" on the line is the client's.
            "accepted {}, rejected {}, open {}, messages {}, datagrams {}, \
             upstream failed {}, up bytes in {}, up bytes out {}, \
             bytes in {}, bytes out {}, replies dropped {}, faults {}",
            self.accepted,
            self.rejected,
            self.open,
            self.messages,
            self.datagrams,
            self.upstream_failed,
            self.up_bytes_in,
            self.up_bytes_out,
            self.bytes_in,
            self.bytes_out,
            self.replies_dropped,
            self.faults.total(),
        )?;
        let mut kinds = self.faults.by_kind().into_iter().filter(|(_, n)| *n > 0);
        if let Some((name, n)) = kinds.next() {
            write!(f, " ({name} {n}")?;
            for (name, n) in kinds {
                write!(f, ", {name} {n}")?;
            }
            f.write_str(")")?;
        }
        if self.journal_lost > 0 {
            write!(f, ", journal lines lost {}", self.journal_lost)?;
        }
        Ok(())
    }
}

/// The live counters. Only the loop's thread writes them; others read.
///
/// Because there is one writer, an increment is a plain load and store
/// (no locked read-modify-write on the hot path); readers on other threads
/// see each counter's latest value, though not all counters at one instant.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub open: AtomicU64,
    pub messages: AtomicU64,
    pub datagrams: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub replies_dropped: AtomicU64,
    pub upstream_failed: AtomicU64,
    pub up_bytes_in: AtomicU64,
    pub up_bytes_out: AtomicU64,
    /// Faults applied, by [`FaultKind::index`](crate::FaultKind).
    pub faults: [AtomicU64; KINDS],
    pub journal_lost: AtomicU64,
}

/// Adds `n` to a counter written by this thread only.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Subtracts `n` from a counter written by this thread only.
#[inline]
pub(crate) fn sub(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_sub(n), Relaxed);
}

impl Counters {
    /// Adds faults applied, by kind (a verdict's `applied`).
    pub fn add_faults(&self, applied: &[u32; KINDS]) {
        for (counter, &n) in self.faults.iter().zip(applied) {
            if n > 0 {
                add(counter, u64::from(n));
            }
        }
    }

    /// Moves what these counters hold into `into` and adds it to `total`,
    /// leaving them at zero: a named endpoint counts apart, and its counts
    /// join the server's after each step (`open` goes down as well as up:
    /// wrapping sums keep it right).
    #[cfg(feature = "api")]
    pub fn drain_into(&self, into: &Counters, total: &mut Stats) {
        let mut faults = total.faults.by_kind().map(|(_, n)| n);
        let pairs = [
            (&self.accepted, &into.accepted, &mut total.accepted),
            (&self.rejected, &into.rejected, &mut total.rejected),
            (&self.open, &into.open, &mut total.open),
            (&self.messages, &into.messages, &mut total.messages),
            (&self.datagrams, &into.datagrams, &mut total.datagrams),
            (&self.bytes_in, &into.bytes_in, &mut total.bytes_in),
            (&self.bytes_out, &into.bytes_out, &mut total.bytes_out),
            (
                &self.replies_dropped,
                &into.replies_dropped,
                &mut total.replies_dropped,
            ),
            (
                &self.upstream_failed,
                &into.upstream_failed,
                &mut total.upstream_failed,
            ),
            (&self.up_bytes_in, &into.up_bytes_in, &mut total.up_bytes_in),
            (
                &self.up_bytes_out,
                &into.up_bytes_out,
                &mut total.up_bytes_out,
            ),
        ];
        let kinds = (self.faults.iter().zip(&into.faults)).zip(faults.iter_mut());
        let kinds = kinds.map(|((from, to), sum)| (from, to, sum));
        for (from, to, sum) in pairs.into_iter().chain(kinds) {
            let n = from.load(Relaxed);
            if n != 0 {
                from.store(0, Relaxed);
                add(to, n);
                *sum = sum.wrapping_add(n);
            }
        }
        total.faults = FaultCounts::from_array(faults);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            open: self.open.load(Relaxed),
            messages: self.messages.load(Relaxed),
            datagrams: self.datagrams.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            replies_dropped: self.replies_dropped.load(Relaxed),
            upstream_failed: self.upstream_failed.load(Relaxed),
            up_bytes_in: self.up_bytes_in.load(Relaxed),
            up_bytes_out: self.up_bytes_out.load(Relaxed),
            faults: FaultCounts::from_array(self.faults.each_ref().map(|n| n.load(Relaxed))),
            journal_lost: self.journal_lost.load(Relaxed),
        }
    }
}
