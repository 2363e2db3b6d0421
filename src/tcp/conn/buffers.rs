//! A connection's own buffers, allocated only while needed: an idle
//! connection with the fixed reply has none.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::Connection;
use super::steps::Step;
use crate::timer::Millis;

/// A connection's own buffers: a custom responder's line and replies, and
/// input read but not yet framed. The fixed reply needs none of them.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    /// Custom responder: the peer, given to it with each message.
    pub peer: Option<SocketAddr>,
    /// Custom responder, line mode: the bytes of the open line so far.
    /// Bounded by `max_line`.
    pub line: Vec<u8>,
    /// Custom responder: reply bytes owed; `out[out_at..]` are not written.
    /// Bounded by the owed-bytes bound plus one reply.
    pub out: Vec<u8>,
    pub out_at: usize,
    /// Input read but not framed yet: what was left of a read when the
    /// owed bytes reached their bound. At most one read buffer.
    pub unread: Vec<u8>,
    /// Faults: replies shaped or delayed, and the end they chose, in order.
    /// Their bytes count as owed, so the owed-bytes bound holds.
    pub steps: VecDeque<Step>,
    /// Sum of the bytes of the `Send` steps.
    pub step_bytes: usize,
    /// The first step waits until then: the connection's timer wakes it.
    pub wake_at: Option<Millis>,
    /// The first step's bytes are due but the socket would take no more.
    pub steps_blocked: bool,
    /// With a journal: the peer, until the connection's first line names it.
    pub journal_peer: Option<SocketAddr>,
}

impl Connection {
    /// The connection's buffers, made on first use.
    pub(super) fn buffers(&mut self) -> &mut Buffers {
        self.buffers.get_or_insert_with(Box::default)
    }

    /// Frees the buffers of a fixed-reply connection once they are empty:
    /// an idle connection keeps none.
    pub(super) fn drop_idle_buffers(&mut self) {
        if let Some(b) = &self.buffers {
            if b.peer.is_none()
                && b.unread.is_empty()
                && b.out.is_empty()
                && b.line.is_empty()
                && b.steps.is_empty()
            {
                self.buffers = None;
            }
        }
    }

    pub(super) fn has_unread(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| !b.unread.is_empty())
    }
}
