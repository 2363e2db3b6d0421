//! Datagrams in the journal: each one in, with its source, and each reply
//! as it is sent or queued (a delayed one when its delay is over).

use std::net::SocketAddr;

use std::cell::RefCell;

use crate::journal::{AppliedFaults, Direction, Journal, JournalEvent};
use crate::reply::Protocol;
use crate::timer::Millis;

/// What the journal will say of a delayed reply when it leaves: the
/// datagram's ordinal and the faults applied to it.
pub(super) type Note = (u64, AppliedFaults);

/// The journal, if any, and the turn's clock reading.
pub(super) type Where<'a> = (Option<&'a RefCell<Journal>>, Millis);

/// Journals `bytes` of datagram `ordinal` going `dir`, if there is a
/// journal.
pub(super) fn record(
    t: Where<'_>,
    ordinal: u64,
    dir: Direction,
    bytes: &[u8],
    peer: SocketAddr,
    faults: AppliedFaults,
) {
    if let (Some(journal), now) = t {
        journal.borrow_mut().record(&JournalEvent {
            t_ms: now,
            protocol: Protocol::Udp,
            conn: None,
            msg: ordinal,
            dir,
            bytes,
            peer: Some(peer),
            faults,
        });
    }
}
