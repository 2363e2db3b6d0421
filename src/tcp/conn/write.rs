//! Replies owed and written: the fixed reply's count, a responder's bytes
//! and (in [`steps`](super::steps)) the faults' steps, each written until
//! all is out or the socket would block.

use std::io;
use std::net::SocketAddr;

use super::journal::Entry;
use super::{Buffers, Close, Connection, Ctx, KEEP_CAPACITY, Phase, Stamp, Stream, TooLong};
use crate::framing::{OpenLine, Piece};
use crate::reply::{Replies, Request, Scripted, ask};
use crate::stats::{Counters, add};
use crate::timer::Millis;
use crate::vocab::Protocol;
use crate::write::write_until_blocked;

/// Where a message's bytes are.
#[derive(Clone, Copy)]
pub(super) enum Message<'a> {
    /// In the input just taken.
    Input(&'a [u8]),
    /// In the connection's line buffer (a line that spanned reads).
    Buffered,
    /// A cut line (see [`Buffers::cut_line`]): its first bytes are gone,
    /// the line buffer holds the rest.
    Cut,
}

impl Connection {
    /// Counts one message and owes its reply: with the fixed reply one
    /// more unit of the pattern, with a custom one whatever the responder
    /// says (plus `\n` in line mode), queued on the connection. A message
    /// a fault selects, or one behind a fault's step, is queued as steps.
    /// `ending`: the line's terminator as it came, for the journal.
    pub(super) fn owe_reply(
        &mut self,
        message: Message<'_>,
        newline: bool,
        ending: &[u8],
        cx: &mut Ctx<'_>,
    ) {
        add(&cx.counters.messages, 1);
        self.messages = self.messages.wrapping_add(1);
        let verdict = self.judge(message, cx);
        if verdict.is_some() || self.has_steps() {
            self.journal_in(message, ending, self.journal_entry(cx));
            return self.queue_steps(message, newline, verdict.unwrap_or_default(), cx);
        }
        // Clean, with nothing queued: the owed-count fast path.
        let (responder, scratch) = match cx.replies {
            Replies::Fixed(pattern) => {
                self.owed += pattern.unit() as u32;
                return;
            }
            Replies::Custom { responder, scratch } => (responder, scratch),
        };
        let entry = Entry::of(cx.journal, cx.now, self.id);
        self.journal_in(message, ending, entry);
        let buffers = self.buffers();
        let reply = respond(buffers, message, responder, scratch);
        let start = buffers.out.len();
        append_reply(&mut buffers.out, reply, newline);
        // Written with what is owed before it, in this turn's flush.
        self.journal_out(start, entry);
    }

    /// The fixed reply's length, when it answers every message at once:
    /// no fault in force, no step queued (with a journal, replies come
    /// from a responder).
    pub(super) fn fixed_unit(&self, cx: &Ctx<'_>) -> Option<u32> {
        match &*cx.replies {
            Replies::Fixed(pattern) if !cx.faults.any(Protocol::Tcp) && !self.has_steps() => {
                Some(pattern.unit() as u32)
            }
            _ => None,
        }
    }

    /// Line mode with the fixed reply answering at once (see
    /// [`fixed_unit`](Self::fixed_unit)): the lines in `input` only need
    /// counting, `unit` bytes owed for each, until the input ends or the
    /// backlog reaches its bound; returns how many bytes were used. What
    /// [`owe_reply`](Self::owe_reply) does per message, done once per
    /// read: pipelined lines cost a search for `\n` each and little more.
    pub(super) fn owe_fixed_lines(
        &mut self,
        input: &[u8],
        unit: u32,
        cx: &mut Ctx<'_>,
    ) -> Result<usize, TooLong> {
        let Phase::Open { mut line, paused } = self.phase else {
            return Ok(0);
        };
        // Besides the count, a fixed-reply connection owes nothing.
        let (base, max_owed) = (self.backlog() - self.owed as usize, cx.max_owed);
        let (mut used, mut owed, mut taken) = (0, self.owed, 0u32);
        if let Some((lines, open)) = whole_lines(line, input, cx.max_line) {
            // Lines are taken while the backlog is under its bound; once
            // it is reached, what follows the last one taken stays unread.
            let room = max_owed
                .saturating_sub(base + owed as usize)
                .div_ceil(unit as usize);
            if lines < room || (lines == room && input.last() == Some(&b'\n')) {
                // Bounded by `room`: the count stays within its bound.
                (owed, taken, line, used) =
                    (owed + lines as u32 * unit, lines as u32, open, input.len());
            }
        }
        let result = loop {
            if used >= input.len() || base + owed as usize >= max_owed {
                break Ok(used);
            }
            let (n, piece) = line.next(&input[used..], cx.max_line);
            used += n;
            match piece {
                Piece::Line(_) => {
                    owed += unit;
                    taken += 1;
                }
                Piece::Partial(_) => {}
                Piece::TooLong => break Err(TooLong),
            }
        };
        self.phase = Phase::Open { line, paused };
        self.owed = owed;
        self.messages = self.messages.wrapping_add(taken);
        add(&cx.counters.messages, u64::from(taken));
        result
    }

    /// Writes what is owed until it is all out, the socket would block,
    /// or a fault's step must wait: the fixed reply's count, a responder's
    /// bytes, then the steps. A short write is progress, not an error: the
    /// rest waits for the next writable event.
    pub(super) fn flush(&mut self, stream: &mut impl Stream, cx: &Ctx<'_>) -> Result<(), Close> {
        let blocked = self.flush_owed(stream, cx).map_err(Close::Failed)?;
        if blocked {
            return Ok(());
        }
        match self.buffers.take() {
            Some(mut buffers) if !buffers.steps.is_empty() => {
                let result = self.flush_steps(&mut buffers, stream, cx);
                self.buffers = Some(buffers);
                // Its steps all run, a fixed-reply connection keeps none.
                self.drop_idle_buffers();
                result
            }
            buffers => {
                self.buffers = buffers;
                Ok(())
            }
        }
    }

    /// Writes the fixed reply's owed count and a responder's owed bytes;
    /// returns whether the socket blocked.
    fn flush_owed(&mut self, stream: &mut impl Stream, cx: &Ctx<'_>) -> io::Result<bool> {
        if let Replies::Fixed(pattern) = &*cx.replies {
            // The owed bytes are the next `owed` bytes of the periodic
            // pattern; write them in slices.
            while self.owed > 0 {
                let start = pattern_start(self.owed, pattern.unit());
                let end = pattern.bytes().len().min(start + self.owed as usize);
                let slice = &pattern.bytes()[start..end];
                let (n, blocked) = self.write_owed(stream, slice, cx.now, cx.counters)?;
                self.owed -= n as u32;
                if blocked {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let Some(mut buffers) = self.buffers.take() else {
            return Ok(false);
        };
        let result = self.write_owed(stream, &buffers.out[buffers.out_at..], cx.now, cx.counters);
        if let Ok((n, _)) = result {
            buffers.out_at += n;
        }
        if buffers.out_at == buffers.out.len() {
            buffers.out.clear();
            buffers.out_at = 0;
            buffers.out.shrink_to(KEEP_CAPACITY);
            buffers
                .line
                .shrink_to(KEEP_CAPACITY.max(buffers.line.len()));
        } else if buffers.out_at >= buffers.out.len() - buffers.out_at {
            // Written bytes are dropped once they are at least half: the
            // buffer holds what is owed, twice the bound at most, even for
            // a reader that keeps pace but never catches up (kept whole,
            // it grew by every byte that reader took). Moving the rest
            // costs no more than writing it did.
            buffers.out.drain(..buffers.out_at);
            buffers.out_at = 0;
        }
        self.buffers = Some(buffers);
        result.map(|(_, blocked)| blocked)
    }

    /// Writes `bytes` until all are out or the socket would block; returns
    /// how many were written and whether it blocked. Bytes written before
    /// an error are counted too.
    pub(super) fn write_owed(
        &mut self,
        stream: &mut impl Stream,
        bytes: &[u8],
        now: Millis,
        counters: &Counters,
    ) -> io::Result<(usize, bool)> {
        let (written, result) = write_until_blocked(stream, bytes);
        if written > 0 {
            add(&counters.bytes_out, written as u64);
            self.last_active = Stamp::of(now);
        }
        result.map(|blocked| (written, blocked))
    }
}

/// The lines `input` completes after the open line `line`, counted at
/// once, and the line left open after them; `None` when one of them might
/// be longer than `max_line` (then each needs its own look). A search per
/// line costs more than its short line: pipelined lines are counted in
/// one pass instead.
pub(super) fn whole_lines(
    line: OpenLine,
    input: &[u8],
    max_line: usize,
) -> Option<(usize, OpenLine)> {
    // Every line here is within the open line and this input.
    if line.len() + input.len() > max_line {
        return None;
    }
    let lines = memchr::memchr_iter(b'\n', input).count();
    // Pipelined whole lines end the input: no search for the last one.
    let last = match input.last() {
        Some(b'\n') => Some(input.len() - 1),
        _ if lines == 0 => None,
        _ => memchr::memrchr(b'\n', input),
    };
    let (len, tail) = match last {
        Some(last) => (0, &input[last + 1..]),
        None => (line.len(), input),
    };
    let ends_cr = tail.last() == Some(&b'\r');
    Some((lines, OpenLine::from_parts(len + tail.len(), ends_cr)))
}

/// Where in a pattern of `unit`-byte replies the next of `owed` bytes is:
/// they are the last bytes of whole replies.
pub(super) fn pattern_start(owed: u32, unit: usize) -> usize {
    (unit - owed as usize % unit) % unit
}

/// Asks `responder` for the reply to `message` (whose bytes may be the
/// open line in `buffers`); the reply, if any, is in `scratch`. The open
/// line is cleared: it was this message (a cut one is answered by the
/// responder behind the rules).
pub(super) fn respond<'s>(
    buffers: &mut Buffers,
    message: Message<'_>,
    responder: &mut Scripted,
    scratch: &'s mut Vec<u8>,
) -> Option<&'s [u8]> {
    let request = Request {
        protocol: Protocol::Tcp,
        peer: buffers.peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        message: match message {
            Message::Input(bytes) => bytes,
            Message::Buffered | Message::Cut => &buffers.line,
        },
    };
    let reply = match message {
        // No rule sees a cut line: the reply text answers it, as the
        // fixed reply would have.
        Message::Cut => ask(responder.unscripted(), scratch, &request),
        Message::Input(_) | Message::Buffered => ask(responder, scratch, &request),
    };
    buffers.line.clear();
    buffers.cut_line = false;
    reply
}

/// Appends a responder's reply to `out`, with `\n` in line mode.
pub(super) fn append_reply(out: &mut Vec<u8>, reply: Option<&[u8]>, newline: bool) {
    if let Some(reply) = reply {
        out.extend_from_slice(reply);
        if newline {
            out.push(b'\n');
        }
    }
}
