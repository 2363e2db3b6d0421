//! Faults on a connection: replies shaped or held back, and the end a
//! fault chose, as *steps* queued behind what the connection already owes.
//!
//! A message judged by a fault becomes a `Send` step (its reply bytes,
//! shaped, with the moment they may leave) and perhaps an `End` step (FIN
//! or RST, at a moment or some time after the steps before it). Flushing
//! runs the steps that are due, in order, and stops at one that must
//! wait, noting when: that moment becomes the connection's deadline on
//! the loop's timer heap. Steps count in the connection's backlog, their
//! bytes and their own size ([`STEP_COST`]), so backpressure bounds them
//! as it bounds any reply, whatever their bytes.
//!
//! Only what needs a step becomes one: a message no fault selects, with
//! no step waiting before it, takes the owed-count fast path, and a reply
//! with no bytes and no end (a responder that declined) needs no step.

use log::debug;

use super::journal::Note;
use super::write::{Message, append_reply, pattern_start, respond};
use super::{Buffers, Close, Connection, Ctx, Phase, Stamp, Stream};
use crate::fault::{self, FaultKind, Verdict};
use crate::journal::{AppliedFaults, JournalDirection};
use crate::reply::{Pattern, Replies};
use crate::timer::{Millis, at_least};
use crate::vocab::{Direction, Protocol};

/// What a step costs in the backlog besides its bytes: its place in the
/// queue and the allocation that holds its bytes (a generous 16 bytes of
/// allocator overhead).
pub(super) const STEP_COST: usize = std::mem::size_of::<Step>() + 16;

/// A reply shaped by faults, or the end they chose, waiting its turn.
#[derive(Debug)]
pub(super) enum Step {
    /// Reply bytes to write from `at` on; with a dribble, `chunk` bytes at
    /// a time, `every_ms` apart (`chunk_left` of the current one to go).
    Send {
        bytes: Vec<u8>,
        at: Millis,
        dribble: Option<(u32, Millis)>,
        chunk_left: usize,
        /// With a journal: its line, written when its first bytes leave.
        note: Option<Note>,
    },
    /// Then end the connection: at `at`, or `wait_ms` after the steps
    /// before it are done.
    End {
        ending: Ending,
        at: Option<Millis>,
        wait_ms: Millis,
        /// With a journal: the fault that ends it, journaled then.
        note: Option<Note>,
    },
}

impl Step {
    /// Bytes to send as soon as the steps before them are done, undribbled.
    fn at_once(bytes: Vec<u8>, note: Option<Note>) -> Step {
        Step::Send {
            bytes,
            at: 0,
            dribble: None,
            chunk_left: 0,
            note,
        }
    }
}

/// How a fault ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// FIN, then the usual lingering close.
    Fin,
    /// RST.
    Reset,
}

impl Connection {
    /// The fixed reply is about to change: the bytes owed under the old
    /// one become a step at the front of the queue, so they go out as
    /// they were promised.
    pub fn keep_owed_bytes(&mut self, pattern: &Pattern) {
        let (owed, start) = (self.owed as usize, pattern_start(self.owed, pattern.unit()));
        // The next pattern starts afresh, whatever its length.
        self.owed = 0;
        if owed == 0 {
            return;
        }
        let bytes: Vec<u8> = pattern
            .bytes()
            .iter()
            .copied()
            .cycle()
            .skip(start)
            .take(owed)
            .collect();
        let buffers = self.buffers();
        buffers.step_bytes += bytes.len();
        buffers.steps.push_front(Step::at_once(bytes, None));
        // Owed bytes left after a flush are bytes the socket refused: the
        // step is blocked on it as they were, and writable interest stays.
        buffers.steps_blocked = true;
    }

    /// Queues bytes the client did not ask for (a greeting, a push)
    /// behind what it is owed: they count in its backlog, and later
    /// replies follow them in order.
    pub fn send_unasked(&mut self, bytes: Vec<u8>, journal: bool) {
        let note = journal.then_some(Note::unfaulted(0));
        let buffers = self.buffers();
        buffers.step_bytes += bytes.len();
        buffers.steps.push_back(Step::at_once(bytes, note));
    }

    pub(super) fn has_steps(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| !b.steps.is_empty())
    }

    /// Judges the message just counted, with TCP faults in force: the
    /// verdict if any fault applies (counted and logged), else `None`.
    pub(super) fn judge(&self, message: Message<'_>, cx: &mut Ctx<'_>) -> Option<Verdict> {
        if !cx.faults.any(Protocol::Tcp) {
            return None;
        }
        let ordinals = [u64::from(self.id), u64::from(self.messages)];
        let bytes = match (message, &self.buffers) {
            (Message::Input(bytes), _) => Some(bytes),
            (Message::Buffered, Some(buffers)) => Some(&buffers.line[..]),
            (Message::Buffered, None) => Some(&[][..]),
            // Its first bytes are gone: no `match=` can pick it.
            (Message::Cut, _) => None,
        };
        let verdict = (cx.faults).judge_seen(Protocol::Tcp, Direction::Down, ordinals, bytes);
        if verdict.is_clean() {
            return None;
        }
        cx.counters.add_faults(&verdict.applied);
        debug!(
            "conn #{}: message {}: fault {verdict}",
            self.id, self.messages
        );
        Some(verdict)
    }

    /// Queues the reply to `message` as steps, shaped as the verdict says
    /// (a clean one too, when steps wait: replies keep their order).
    pub(super) fn queue_steps(
        &mut self,
        message: Message<'_>,
        newline: bool,
        verdict: Verdict,
        cx: &mut Ctx<'_>,
    ) {
        let note = self.note(cx, AppliedFaults::of(&verdict.applied));
        match verdict.terminal {
            Some(FaultKind::Hang) => {
                if let (Some(entry), Some(note)) = (self.journal_entry(cx), note) {
                    entry.record(
                        note,
                        JournalDirection::Out,
                        &[],
                        &mut self.buffers().journal_peer,
                    );
                }
                return self.phase = Phase::Hanging;
            }
            Some(kind) => {
                let ending = if kind == FaultKind::Reset {
                    Ending::Reset
                } else {
                    Ending::Fin
                };
                let at = Some(at_least(cx.now, verdict.delay_ms));
                return self.push_end(ending, at, 0, note);
            }
            None => {}
        }
        let mut bytes = self.reply_bytes(message, newline, cx);
        if let Some(seed) = verdict.corrupt {
            let text = bytes.len() - usize::from(newline && bytes.last() == Some(&b'\n'));
            fault::corrupt(&mut bytes[..text], seed);
        }
        if let Some(n) = verdict.truncate {
            bytes.truncate(n);
        }
        if !bytes.is_empty() {
            let buffers = self.buffers();
            buffers.step_bytes += bytes.len();
            buffers.steps.push_back(Step::Send {
                chunk_left: verdict.dribble.map_or(0, |(chunk, _)| chunk as usize),
                bytes,
                at: at_least(cx.now, verdict.delay_ms),
                dribble: verdict.dribble,
                note,
            });
        } else if let (Some(entry), Some(note)) = (self.journal_entry(cx), note) {
            // Nothing to send: journaled now if a fault made it so.
            if !note.faults.is_empty() {
                entry.record(
                    note,
                    JournalDirection::Out,
                    &[],
                    &mut self.buffers().journal_peer,
                );
            }
        }
        if verdict.truncate.is_some() || verdict.slow_close_ms.is_some() {
            self.push_end(Ending::Fin, None, verdict.slow_close_ms.unwrap_or(0), None);
        }
    }

    /// Queues the end of the connection; it takes no more messages.
    fn push_end(
        &mut self,
        ending: Ending,
        at: Option<Millis>,
        wait_ms: Millis,
        note: Option<Note>,
    ) {
        let end = Step::End {
            ending,
            at,
            wait_ms,
            note,
        };
        self.buffers().steps.push_back(end);
        self.phase = Phase::CLOSING;
    }

    /// The reply to `message` as bytes: the fixed reply's, or the
    /// responder's (none if it declines), with `\n` in line mode.
    fn reply_bytes(&mut self, message: Message<'_>, newline: bool, cx: &mut Ctx<'_>) -> Vec<u8> {
        let (responder, scratch) = match cx.replies {
            Replies::Fixed(pattern) => return pattern.bytes()[..pattern.unit()].to_vec(),
            Replies::Custom { responder, scratch } => (responder, scratch),
        };
        let reply = respond(self.buffers(), message, responder, scratch);
        let mut bytes = Vec::new();
        append_reply(&mut bytes, reply, newline);
        bytes
    }

    /// Runs the fault steps that are due, in order: writes their bytes
    /// (a dribble's a chunk at a time), ends the connection when an end
    /// comes up. Stops at a step that must wait, noting when it is due.
    pub(super) fn flush_steps(
        &mut self,
        b: &mut Buffers,
        stream: &mut impl Stream,
        cx: &Ctx<'_>,
    ) -> Result<(), Close> {
        // A wait that ends is movement: the idle timeout counts from here,
        // not from before the wait.
        if b.wake_at.take().is_some_and(|at| at <= cx.now) {
            self.last_active = Stamp::of(cx.now);
        }
        b.steps_blocked = false;
        let entry = self.journal_entry(cx);
        while let Some(step) = b.steps.front_mut() {
            match step {
                Step::Send {
                    bytes,
                    at,
                    dribble,
                    chunk_left,
                    note,
                } => {
                    if *at > cx.now {
                        b.wake_at = Some(*at);
                        return Ok(());
                    }
                    let limit = match dribble {
                        Some(_) => (*chunk_left).min(bytes.len()),
                        None => bytes.len(),
                    };
                    let (n, blocked) = self
                        .write_owed(stream, &bytes[..limit], cx.now, cx.counters)
                        .map_err(Close::Failed)?;
                    // Its first bytes left: journal it whole.
                    if let (Some(entry), true) = (&entry, n > 0) {
                        if let Some(note) = note.take() {
                            entry.record(note, JournalDirection::Out, bytes, &mut b.journal_peer);
                        }
                    }
                    bytes.drain(..n);
                    b.step_bytes -= n;
                    if let Some((chunk, every_ms)) = *dribble {
                        *chunk_left -= n;
                        if *chunk_left == 0 {
                            *chunk_left = chunk as usize;
                            *at = at_least(cx.now, every_ms);
                        }
                    }
                    if bytes.is_empty() {
                        b.steps.pop_front();
                    } else if blocked {
                        b.steps_blocked = true;
                        return Ok(());
                    }
                }
                Step::End {
                    ending,
                    at,
                    wait_ms,
                    note,
                } => {
                    let due = *at.get_or_insert(at_least(cx.now, *wait_ms));
                    if due > cx.now {
                        b.wake_at = Some(due);
                        return Ok(());
                    }
                    if let (Some(entry), Some(note)) = (&entry, note.take()) {
                        entry.record(note, JournalDirection::Out, &[], &mut b.journal_peer);
                    }
                    let ending = *ending;
                    b.steps.clear();
                    b.step_bytes = 0;
                    if ending == Ending::Reset {
                        return Err(Close::Reset);
                    }
                    // A FIN: the phase is Closing, the lingering close follows.
                }
            }
        }
        Ok(())
    }
}
