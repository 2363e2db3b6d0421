//! A relayed pair in the journal (SPEC 13): one line for every chunk of
//! bytes as it is written to its receiving side, after any fault shaped
//! it, `dir` `up` or `down`. In stream mode a chunk is one write, its
//! `msg` the write's ordinal in that direction, and every line of a
//! direction names the faults judged on it when the pair was accepted.
//! In line mode `msg` is the line's ordinal in that direction and `fault`
//! what its verdict applied; a write that holds several lines gives one
//! journal line each, and a line a short write split gives two with the
//! same `msg`. A line a fault kept from going (`close`, `reset`, `hang`)
//! has a line of `len` 0 naming it, once the lines before it are out.
//!
//! Runs only with a journal: a pair without one holds `None` and each
//! write tests it once.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::journal::{AppliedFaults, Journal, JournalDirection, JournalEvent};
use crate::reply::Protocol;
use crate::timer::Millis;
use crate::vocab::Direction;

/// What a pair's journal lines need to remember.
#[derive(Debug, Clone, Default)]
pub(crate) struct PairLog {
    /// The client, named on the pair's first line (then taken).
    pub peer: Option<SocketAddr>,
    /// The named endpoint the pair belongs to, on every line; `None` on
    /// the main sockets' relay (`--upstream`).
    pub endpoint: Option<Arc<str>>,
    /// Line mode: `msg` counts lines, not writes.
    pub lines: bool,
    /// Per direction (`up`, `down`): writes journaled (stream mode), or
    /// lines whose `\n` went out (line mode).
    pub sent: [u64; 2],
    /// Stream mode, per direction: the faults shaping it.
    pub faults: [AppliedFaults; 2],
}

impl PairLog {
    /// The log of a pair from `peer` on `endpoint`; `lines` in line mode.
    pub fn new(peer: SocketAddr, endpoint: Option<Arc<str>>, lines: bool) -> PairLog {
        PairLog {
            peer: Some(peer),
            endpoint,
            lines,
            ..PairLog::default()
        }
    }
}

/// One direction of a pair, as a pump journals it.
pub(crate) struct Tap<'a> {
    pub journal: &'a RefCell<Journal>,
    pub now: Millis,
    /// The pair's accept ordinal (from 1).
    pub conn: u64,
    pub dir: Direction,
    pub log: &'a mut PairLog,
}

impl Tap<'_> {
    fn index(&self) -> usize {
        match self.dir {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }

    /// `bytes` were just written to the receiving side; in line mode,
    /// `line_faults` were applied to the lines they belong to.
    pub fn written(&mut self, bytes: &[u8], line_faults: AppliedFaults) {
        let i = self.index();
        if !self.log.lines {
            self.log.sent[i] += 1;
            return self.record(self.log.sent[i], bytes, self.log.faults[i]);
        }
        for part in bytes.split_inclusive(|&b| b == b'\n') {
            let msg = self.log.sent[i] + 1;
            if part.ends_with(b"\n") {
                self.log.sent[i] += 1;
            }
            self.record(msg, part, line_faults);
        }
    }

    /// `written`, held bytes, were just written; in line mode `chunks`
    /// says, from the first, how many of them have which faults (a write
    /// may take several chunks of lines).
    pub fn written_held(
        &mut self,
        mut written: &[u8],
        chunks: impl Iterator<Item = (usize, AppliedFaults)>,
    ) {
        for (len, faults) in chunks {
            if written.is_empty() {
                return;
            }
            let (part, after) = written.split_at(len.min(written.len()));
            self.written(part, faults);
            written = after;
        }
        if !written.is_empty() {
            self.written(written, AppliedFaults::default());
        }
    }

    /// Message `msg` was kept from going by `faults` (`len` 0).
    pub fn stopped(&mut self, msg: u64, faults: AppliedFaults) {
        self.record(msg, &[], faults);
    }

    fn record(&mut self, msg: u64, bytes: &[u8], faults: AppliedFaults) {
        let dir = match self.dir {
            Direction::Up => JournalDirection::Up,
            Direction::Down => JournalDirection::Down,
        };
        self.journal.borrow_mut().record(&JournalEvent {
            t_ms: self.now,
            protocol: Protocol::Tcp,
            endpoint: self.log.endpoint.as_deref(),
            conn: Some(self.conn),
            msg,
            dir,
            bytes,
            peer: self.log.peer.take(),
            faults,
        });
    }
}

#[cfg(all(test, feature = "journal"))]
mod tests {
    use super::*;
    use crate::journal::recording::{Line, recording};

    /// The lines `write` makes.
    fn lines_of(log: &mut PairLog, write: impl FnOnce(&mut Tap<'_>)) -> Vec<Line> {
        let (journal, seen) = recording(|_| {});
        let journal = RefCell::new(journal);
        let mut tap = Tap {
            journal: &journal,
            now: 5,
            conn: 3,
            dir: Direction::Down,
            log,
        };
        write(&mut tap);
        seen.lock().unwrap().clone()
    }

    fn faults(names: &[&str]) -> AppliedFaults {
        let mut applied = [0; crate::fault::KINDS];
        let kinds = crate::FaultCounts::default().by_kind();
        for (kind, (name, _)) in kinds.into_iter().enumerate() {
            applied[kind] = u32::from(names.contains(&name));
        }
        AppliedFaults::of(&applied)
    }

    #[test]
    fn stream_mode_numbers_writes_and_names_the_directions_faults() {
        let mut log = PairLog::new("127.0.0.1:9".parse().unwrap(), None, false);
        log.faults[1] = faults(&["corrupt"]);
        let lines = lines_of(&mut log, |tap| {
            tap.written(b"ab\ncd", AppliedFaults::default());
            tap.written(b"e", AppliedFaults::default());
        });
        let corrupt = vec!["corrupt"];
        assert_eq!(
            lines,
            [
                (1, "down", b"ab\ncd".to_vec(), true, corrupt.clone()),
                (2, "down", b"e".to_vec(), false, corrupt),
            ]
        );
    }

    #[test]
    fn line_mode_gives_each_line_its_own_line_and_a_split_one_two() {
        let mut log = PairLog::new("127.0.0.1:9".parse().unwrap(), None, true);
        let lines = lines_of(&mut log, |tap| {
            let chunks = [(4, AppliedFaults::default()), (5, faults(&["delay"]))];
            // A short write: "one\n" whole, "two" of "two\r\n".
            tap.written_held(b"one\ntwo", chunks.into_iter());
            tap.written_held(b"\r\n", [(2, faults(&["delay"]))].into_iter());
            tap.stopped(3, faults(&["reset"]));
        });
        assert_eq!(
            lines,
            [
                (1, "down", b"one\n".to_vec(), true, vec![]),
                (2, "down", b"two".to_vec(), false, vec!["delay"]),
                (2, "down", b"\r\n".to_vec(), false, vec!["delay"]),
                (3, "down", b"".to_vec(), false, vec!["reset"]),
            ]
        );
    }
}
