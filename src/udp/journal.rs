//! Datagrams in the journal: each one in, with its source, and each
//! datagram sent as it leaves (or is queued for the socket): a reply
//! (`out`), or on a relay one relayed `up` (client to upstream) or `down`
//! (to the client), with its ordinal in that direction. A delayed one is
//! journaled when its delay is over; one dropped (by a fault, a full
//! queue, a full socket) has a line of length 0, with the faults applied.

use std::cell::RefCell;
use std::net::SocketAddr;

use crate::journal::{AppliedFaults, Journal, JournalDirection, JournalEvent};
use crate::reply::Protocol;
use crate::timer::Millis;

/// A datagram as its journal lines name it.
#[derive(Clone, Copy)]
pub(crate) struct Datagram<'a> {
    /// Where the lines go, if there is a journal.
    pub journal: Option<&'a RefCell<Journal>>,
    /// The named endpoint (SPEC 14) whose socket it passed, if any.
    pub endpoint: Option<&'a str>,
    pub now: Millis,
    /// The datagram's ordinal (from 1) in its direction.
    pub ordinal: u64,
    /// The client: its source, where its replies go.
    pub peer: SocketAddr,
}

impl Datagram<'_> {
    /// Journals `bytes` going `dir`, with the faults applied, if there is
    /// a journal.
    pub fn record(&self, dir: JournalDirection, bytes: &[u8], faults: AppliedFaults) {
        if let Some(journal) = self.journal {
            journal.borrow_mut().record(&JournalEvent {
                t_ms: self.now,
                protocol: Protocol::Udp,
                endpoint: self.endpoint,
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
