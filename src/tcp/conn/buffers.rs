//! A connection's own buffers, allocated only while needed: an idle
//! connection with the fixed reply has none.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::steps::Step;
use super::write::Message;
use super::{Connection, Phase};
use crate::framing::LineEnd;
use crate::timer::Millis;

/// A connection's own buffers: a custom responder's line and replies, and
/// input read but not yet framed. The fixed reply needs none of them.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Custom responder: the peer, given to it with each message.
    pub(super) peer: Option<SocketAddr>,
    /// Custom responder, line mode: the bytes of the open line so far.
    /// Bounded by `max_line`.
    pub(super) line: Vec<u8>,
    /// Custom responder: reply bytes owed; `out[out_at..]` are not written.
    /// Bounded by the owed-bytes bound plus one reply.
    pub(super) out: Vec<u8>,
    pub(super) out_at: usize,
    /// Input read but not framed yet: what was left of a read when the
    /// owed bytes reached their bound. At most one read buffer.
    pub(super) unread: Vec<u8>,
    /// Faults: replies shaped or delayed, and the end they chose, in order.
    /// Their bytes count as owed, so the owed-bytes bound holds.
    pub(super) steps: VecDeque<Step>,
    /// Sum of the bytes of the `Send` steps.
    pub(super) step_bytes: usize,
    /// The first step waits until then: the connection's timer wakes it.
    pub(super) wake_at: Option<Millis>,
    /// The first step's bytes are due but the socket would take no more.
    pub(super) steps_blocked: bool,
    /// With a journal: the peer, until the connection's first line names it.
    pub(super) journal_peer: Option<SocketAddr>,
    /// The open line is *cut*: it began while the fixed reply made the
    /// replies, which keeps no bytes of a line, and then rules or a
    /// `match=` fault made them need whole lines. Its first bytes are
    /// gone, so it is answered as the fixed reply would have answered it:
    /// by no rule, and picked by no `match=` (SPEC 12 matches whole lines
    /// only). `line` holds its bytes since the switch.
    pub(super) cut_line: bool,
}

impl Connection {
    /// The connection's buffers, made on first use.
    pub(super) fn buffers(&mut self) -> &mut Buffers {
        self.buffers.get_or_insert_with(Box::default)
    }

    /// Replies now need whole lines, from the fixed reply's path: a line
    /// open now is cut (see [`Buffers::cut_line`]).
    pub fn cut_open_line(&mut self) {
        if let Phase::Open { line, .. } = self.phase {
            if line.len() > 0 {
                self.buffers().cut_line = true;
            }
        }
    }

    /// The line `end` ends, for a responder: the bytes carried from
    /// earlier reads joined with its tail, in the line buffer.
    pub(super) fn join_line(&mut self, end: &LineEnd<'_>) -> Message<'static> {
        let b = self.buffers();
        if end.carried_cr {
            b.line.pop();
        }
        b.line.extend_from_slice(end.tail);
        self.open_line()
    }

    /// The open line, as a message: whole in the line buffer, or cut.
    pub(super) fn open_line(&self) -> Message<'static> {
        match self.buffers.as_ref().is_some_and(|b| b.cut_line) {
            true => Message::Cut,
            false => Message::Buffered,
        }
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
                && !b.cut_line
            {
                self.buffers = None;
            }
        }
    }

    pub(super) fn has_unread(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| !b.unread.is_empty())
    }
}
