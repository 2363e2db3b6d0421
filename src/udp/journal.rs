//! Datagrams in the journal: each one in, with its source, and each reply
//! as it is sent or queued (a delayed one when its delay is over). On a
//! relay, each datagram relayed `up` (client to upstream) or `down` (to the
//! client) as it is sent, with its ordinal in that direction.

use std::cell::RefCell;
use std::net::SocketAddr;

use crate::journal::{AppliedFaults, Journal, JournalDirection, JournalEvent};
use crate::reply::Protocol;
use crate::timer::Millis;

/// What the journal will say of a delayed reply when it leaves: the
/// datagram's ordinal, the faults applied to it, and which way it goes.
pub(crate) type Note = (u64, AppliedFaults, JournalDirection);

/// A datagram as its journal lines name it.
#[derive(Clone, Copy)]
pub(crate) struct Datagram<'a> {
    /// Where the lines go, if there is a journal.
    pub journal: Option<&'a RefCell<Journal>>,
    pub now: Millis,
    /// The datagram's ordinal (from 1).
    pub ordinal: u64,
    /// Its source, where its replies go; on a relay, the client.
    pub peer: SocketAddr,
    /// Which way what answers it goes: `out` (a reply), `down` (relayed
    /// from the upstream) or `up` (relayed to it).
    pub out: JournalDirection,
}

impl Datagram<'_> {
    /// Journals `bytes` going `dir`, with the faults applied, if there is
    /// a journal.
    pub fn record(&self, dir: JournalDirection, bytes: &[u8], faults: AppliedFaults) {
        if let Some(journal) = self.journal {
            journal.borrow_mut().record(&JournalEvent {
                t_ms: self.now,
                protocol: Protocol::Udp,
                conn: None,
                msg: self.ordinal,
                dir,
                bytes,
                peer: Some(self.peer),
                faults,
            });
        }
    }
}

/// Journals a delayed datagram as it finally leaves for `peer`, as its
/// note (taken when it was held) says, if it has one.
pub fn record_released(
    journal: Option<&RefCell<Journal>>,
    now: Millis,
    peer: SocketAddr,
    note: Option<Note>,
    bytes: &[u8],
) {
    if let Some((ordinal, faults, out)) = note {
        let datagram = Datagram {
            journal,
            now,
            ordinal,
            peer,
            out,
        };
        datagram.record(out, bytes, faults);
    }
}
