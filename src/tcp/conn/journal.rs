//! A connection in the journal: each message as it came in, each reply as
//! it leaves (a reply owed at once goes out with the turn's writes; one
//! held back by a fault, or queued behind one, is a step carrying a
//! [`Note`] until then), and the client's address on the connection's
//! first line. Runs only with a journal: without one no note is made.

use std::cell::RefCell;
use std::net::SocketAddr;

use super::{Connection, Ctx, Message};
use crate::journal::{AppliedFaults, Journal, JournalDirection, JournalEvent};
use crate::timer::Millis;
use crate::vocab::Protocol;

/// What the journal will say of a reply, or of the end a fault chose, when
/// it happens: its message's ordinal on the connection (0: a greeting or
/// a push) and the faults applied to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Note {
    pub msg: u32,
    pub faults: AppliedFaults,
}

impl Note {
    /// The note of message `msg` when no fault touched it.
    pub fn unfaulted(msg: u32) -> Note {
        let faults = AppliedFaults::default();
        Note { msg, faults }
    }
}

/// Where a connection's journal lines go, and who it is.
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    pub journal: &'a RefCell<Journal>,
    pub now: Millis,
    /// The connection's serial number; its accept ordinal is one more.
    pub id: u32,
}

impl<'a> Entry<'a> {
    /// Connection `id`'s entry at `now`, if there is a journal.
    pub fn of(journal: Option<&'a RefCell<Journal>>, now: Millis, id: u32) -> Option<Entry<'a>> {
        journal.map(|journal| Entry { journal, now, id })
    }

    /// Records `bytes` going `dir` for `note`'s message; `peer` is taken
    /// (so named once) on the connection's first line.
    pub fn record(
        &self,
        note: Note,
        dir: JournalDirection,
        bytes: &[u8],
        peer: &mut Option<SocketAddr>,
    ) {
        self.journal.borrow_mut().record(&JournalEvent {
            t_ms: self.now,
            protocol: Protocol::Tcp,
            endpoint: None,
            conn: Some(u64::from(self.id) + 1),
            msg: u64::from(note.msg),
            dir,
            bytes,
            peer: peer.take(),
            faults: note.faults,
        });
    }
}

/// A line's terminator as it came: `\r\n` or `\n`. `consumed`: the input
/// up to and including the line's `\n`; `carried_cr`: its `\r` came in an
/// earlier read.
pub(super) fn line_ending(consumed: &[u8], carried_cr: bool) -> &'static [u8] {
    match carried_cr || consumed.ends_with(b"\r\n") {
        true => b"\r\n",
        false => b"\n",
    }
}

impl Connection {
    /// The journal's entry for this connection now, if there is a journal.
    pub(super) fn journal_entry<'a>(&self, cx: &Ctx<'a>) -> Option<Entry<'a>> {
        Entry::of(cx.journal, cx.now, self.id)
    }

    /// Journals the message just counted, as it crossed the wire: its
    /// bytes, then `ending` (the line's terminator).
    pub(super) fn journal_in(
        &mut self,
        message: Message<'_>,
        ending: &[u8],
        entry: Option<Entry<'_>>,
    ) {
        let Some(entry) = entry else {
            return;
        };
        let note = Note::unfaulted(self.messages);
        let b = self.buffers();
        let mut bytes = match message {
            Message::Input(bytes) => bytes.to_vec(),
            // A journal makes replies need whole lines from the start:
            // no line is ever cut.
            Message::Buffered | Message::Cut => b.line.clone(),
        };
        bytes.extend_from_slice(ending);
        entry.record(note, JournalDirection::In, &bytes, &mut b.journal_peer);
    }

    /// Journals the reply to the message just counted, queued at `start`
    /// of the owed bytes (none if it is empty).
    pub(super) fn journal_out(&mut self, start: usize, entry: Option<Entry<'_>>) {
        let Some(entry) = entry else {
            return;
        };
        let note = Note::unfaulted(self.messages);
        let b = self.buffers();
        if b.out.len() > start {
            entry.record(
                note,
                JournalDirection::Out,
                &b.out[start..],
                &mut b.journal_peer,
            );
        }
    }

    /// A note for the reply to the message just counted, if journaled.
    pub(super) fn note(&self, cx: &Ctx<'_>, faults: AppliedFaults) -> Option<Note> {
        cx.journal.is_some().then_some(Note {
            msg: self.messages,
            faults,
        })
    }

    /// With a journal: the connection's first line will name `peer`.
    pub fn journal_peer(&mut self, peer: SocketAddr) {
        self.buffers().journal_peer = Some(peer);
    }
}
