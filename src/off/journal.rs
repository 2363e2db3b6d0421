//! The journal when the `journal` feature is off: the names its callers
//! in the core use (a connection's and a datagram's journal lines), for a
//! [`Journal`] no value can have. The loop's `Option<&RefCell<Journal>>`
//! is then always `None`, so every journal branch compiles to nothing.

use std::net::SocketAddr;

use crate::fault::KINDS;
use crate::vocab::Protocol;

/// The journal: none can exist.
pub(crate) enum Journal {}

impl Journal {
    pub fn record(&mut self, _: &JournalEvent<'_>) {
        match *self {}
    }
    pub fn flush(&mut self) {
        match *self {}
    }
    pub fn lost(&self) -> u64 {
        match *self {}
    }
    pub fn has_pending(&self) -> bool {
        match *self {}
    }
}

/// Which way a line's bytes went (see the `journal` feature's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JournalDirection {
    In,
    Out,
    Up,
    Down,
}

/// The fault kinds applied to a message: nobody asks without a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AppliedFaults(());

impl AppliedFaults {
    pub(crate) fn of(_: &[u32; KINDS]) -> AppliedFaults {
        AppliedFaults(())
    }
    pub fn is_empty(&self) -> bool {
        true
    }
}

/// One journal line, as its callers build it (for a journal that cannot
/// exist).
pub(crate) struct JournalEvent<'a> {
    pub t_ms: u64,
    pub protocol: Protocol,
    pub endpoint: Option<&'a str>,
    pub conn: Option<u64>,
    pub msg: u64,
    pub dir: JournalDirection,
    pub bytes: &'a [u8],
    pub peer: Option<SocketAddr>,
    pub faults: AppliedFaults,
}
