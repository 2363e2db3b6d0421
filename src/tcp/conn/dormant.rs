//! A connection at rest: what it keeps between turns, in 20 bytes. The
//! table keeps each connection in this form and wakes it into a
//! [`Connection`] for the length of a drive, so that the state machine
//! works on plain fields and only this module knows the packing. Its
//! buffers, when it has any, are kept aside (by the table, under the
//! connection's key): a connection at rest with the fixed reply has none.
//!
//! Packed in 56 bits beside the phase's one-byte [`State`]:
//!
//! | bits | Open | Lingering | Closing, Hanging |
//! |---|---|---|---|
//! | 0 to 24 | the open line's length | milliseconds from the start of the lingering close to the last movement | 0 |
//! | 25 | the open line ends in `\r` | 0 | 0 |
//! | 26 to 50 | reply bytes owed | (0) | reply bytes owed |
//! | 51 | buffers kept aside | the same | the same |
//!
//! The open line's length is at most `--max-line + 1` (2^24 + 1) and the
//! bytes owed at most `--max-owed` plus one reply (2^24 + 1,025): both fit
//! 25 bits.

use super::{Buffers, Connection, Phase, Stamp};
use crate::framing::OpenLine;

/// Bits of the open line's length, and of the bytes owed.
const FIELD_BITS: u32 = 25;
/// The largest length or count a field holds.
const FIELD_MAX: u64 = (1 << FIELD_BITS) - 1;
/// The open line ends in `\r`.
const ENDS_CR: u64 = 1 << FIELD_BITS;
/// Where the bytes owed start.
const OWED_SHIFT: u32 = FIELD_BITS + 1;
/// The connection's buffers are kept aside.
const BUFFERED: u64 = 1 << (OWED_SHIFT + FIELD_BITS);
// A lingering close's start saturates only far past its cap.
const _: () = assert!(FIELD_MAX > super::LINGER_CAP_MS);

/// The phase of a connection at rest, without its data: one byte, whose
/// unused values are also what lets the table mark a slot empty at no
/// cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    Open,
    OpenPaused,
    Closing,
    ClosingPeerGone,
    Lingering,
    Hanging,
}

/// A connection between turns (see the module docs): 20 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dormant {
    /// The connection's serial number ([`Connection::id`]).
    pub id: u32,
    messages: u32,
    last_active: Stamp,
    /// The 56 packed bits, low to high.
    low: u32,
    mid: u16,
    high: u8,
    state: State,
}

impl Dormant {
    /// What a slot holds while its connection is awake before its first
    /// rest (just accepted, in its first drive): no one reads it, and the
    /// drive's end puts the connection there, or closes it. Its phase
    /// keeps no buffers, so closing it forgets none.
    pub const AWAKE: Dormant = Dormant {
        id: 0,
        messages: 0,
        last_active: Stamp::of(0),
        low: 0,
        mid: 0,
        high: 0,
        state: State::Open,
    };

    /// When bytes last moved, in or out, or a fault's wait ended.
    pub fn last_active(&self) -> Stamp {
        self.last_active
    }

    /// Whether its buffers are kept aside: [`Connection::wake`] wants
    /// them back.
    pub fn has_buffers(&self) -> bool {
        self.bits() & BUFFERED != 0
    }

    fn bits(&self) -> u64 {
        u64::from(self.low) | u64::from(self.mid) << 32 | u64::from(self.high) << 48
    }

    fn set_bits(&mut self, bits: u64) {
        // Truncations keep each part's own bits.
        self.low = bits as u32;
        self.mid = (bits >> 32) as u16;
        self.high = (bits >> 48) as u8;
    }
}

impl Connection {
    /// Puts the connection to rest: its packed form, and its buffers (if
    /// any) for the caller to keep aside.
    #[inline(always)]
    pub fn rest(self) -> (Dormant, Option<Box<Buffers>>) {
        let (state, line) = match self.phase {
            Phase::Open { line, paused } => {
                let (len, ends_cr) = line.parts();
                debug_assert!(len as u64 <= FIELD_MAX, "validated --max-line");
                let bits = (len as u64 & FIELD_MAX) | if ends_cr { ENDS_CR } else { 0 };
                let state = if paused {
                    State::OpenPaused
                } else {
                    State::Open
                };
                (state, bits)
            }
            Phase::Closing { peer_eof: false } => (State::Closing, 0),
            Phase::Closing { peer_eof: true } => (State::ClosingPeerGone, 0),
            // The lingering close lasts LINGER_CAP_MS at most: its start is
            // that near the last movement. Saturated (9 hours), the start
            // reads later than it was, but still far past the cap.
            Phase::Lingering { since } => {
                let ago = self.last_active.after(since).min(FIELD_MAX);
                (State::Lingering, ago)
            }
            Phase::Hanging => (State::Hanging, 0),
        };
        let owed = u64::from(self.owed);
        debug_assert!(owed <= FIELD_MAX, "validated --max-owed");
        let buffered = if self.buffers.is_some() { BUFFERED } else { 0 };
        let mut dormant = Dormant {
            id: self.id,
            messages: self.messages,
            last_active: self.last_active,
            low: 0,
            mid: 0,
            high: 0,
            state,
        };
        dormant.set_bits(line | (owed & FIELD_MAX) << OWED_SHIFT | buffered);
        (dormant, self.buffers)
    }

    /// Wakes a connection put to rest, with the buffers it kept aside.
    #[inline(always)]
    pub fn wake(dormant: Dormant, buffers: Option<Box<Buffers>>) -> Connection {
        let bits = dormant.bits();
        let field = bits & FIELD_MAX;
        let line = || OpenLine::from_parts(field as usize, bits & ENDS_CR != 0);
        let phase = match dormant.state {
            State::Open => Phase::Open {
                line: line(),
                paused: false,
            },
            State::OpenPaused => Phase::Open {
                line: line(),
                paused: true,
            },
            State::Closing => Phase::Closing { peer_eof: false },
            State::ClosingPeerGone => Phase::Closing { peer_eof: true },
            State::Lingering => Phase::Lingering {
                since: dormant.last_active.back(field),
            },
            State::Hanging => Phase::Hanging,
        };
        Connection {
            id: dormant.id,
            messages: dormant.messages,
            owed: ((bits >> OWED_SHIFT) & FIELD_MAX) as u32,
            last_active: dormant.last_active,
            phase,
            buffers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::Millis;

    fn connection(phase: Phase, owed: u32, now: Millis) -> Connection {
        let mut conn = Connection::new(u32::MAX - 1, now, None);
        conn.messages = 0xdead_beef;
        conn.phase = phase;
        conn.owed = owed;
        conn
    }

    /// Rests and wakes `conn`; asserts that it came back the same.
    fn round_trip(conn: Connection) {
        let phase = conn.phase;
        let (id, messages, owed) = (conn.id, conn.messages, conn.owed);
        let last_active = conn.last_active;
        let buffered = conn.buffers.is_some();
        let (dormant, buffers) = conn.rest();
        assert_eq!(dormant.has_buffers(), buffered);
        let back = Connection::wake(dormant, buffers);
        assert_eq!(back.phase, phase);
        assert_eq!((back.id, back.messages, back.owed), (id, messages, owed));
        assert_eq!(back.last_active, last_active);
        assert_eq!(back.buffers.is_some(), buffered);
    }

    #[test]
    fn a_connection_at_rest_is_20_bytes_and_wakes_as_it_was() {
        assert_eq!(std::mem::size_of::<Dormant>(), 20);
        let longest = crate::config::MAX_MAX_LINE + 1;
        let most_owed = (crate::config::MAX_MAX_OWED + crate::config::MAX_REPLY_LEN + 1) as u32;
        for now in [0, 77_777, (9 << 32) + 5] {
            for (len, ends_cr) in [(0, false), (1, true), (longest, true), (longest, false)] {
                for paused in [false, true] {
                    let line = OpenLine::from_parts(len, ends_cr);
                    round_trip(connection(Phase::Open { line, paused }, most_owed, now));
                }
            }
            for peer_eof in [false, true] {
                round_trip(connection(Phase::Closing { peer_eof }, most_owed, now));
            }
            round_trip(connection(Phase::Hanging, 0, now));
            let mut lingering = connection(Phase::Hanging, 0, now + 30_000);
            lingering.phase = Phase::Lingering {
                since: Stamp::of(now + 1),
            };
            round_trip(lingering);
            let mut buffered = connection(Phase::Hanging, 1, now);
            buffered.journal_peer(([127, 0, 0, 1], 9).into());
            round_trip(buffered);
        }
    }

    #[test]
    fn a_lingering_close_older_than_the_field_still_reads_past_its_cap() {
        let mut conn = connection(Phase::Hanging, 0, 1 << 40);
        conn.phase = Phase::Lingering {
            since: Stamp::of((1 << 40) - (1 << 30)),
        };
        let (dormant, _) = conn.rest();
        let back = Connection::wake(dormant, None);
        let Phase::Lingering { since } = back.phase else {
            panic!("{:?}", back.phase);
        };
        assert_eq!(since.near(1 << 40), (1 << 40) - FIELD_MAX);
    }
}
