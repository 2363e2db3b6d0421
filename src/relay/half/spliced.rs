//! A plain direction's bulk through a kernel pipe (Linux): while nothing
//! needs to see a direction's bytes (no fault shapes it, no line is judged,
//! no journal records it), they go from the source socket to the sink
//! socket by `splice(2)` ([`Pipe`]), never through the loop's buffer.
//!
//! * **When**: a direction starts by copying (the half-pipe's own
//!   [`pump`](HalfPipe::pump)). A pump that read [`SPLICE_AFTER`] bytes
//!   shows bulk: the direction opens its pipe then, so that a pair that
//!   exchanges short messages (or none: an idle pair) holds no pipe and
//!   pays no system call for one. A pipe that cannot be opened (no
//!   descriptor left) leaves the direction copying, for good.
//! * **Order**: bytes held in the rest before the pipe opened go out
//!   first; then the pipe's; the source's FIN once both are out. Should
//!   something come to need the bytes while the pipe holds some, those go
//!   out first and the direction copies from then on.
//! * **Bound**: the pipe holds at most `--max-owed` bytes; it is emptied
//!   into the sink before the source is read again, so while the sink
//!   blocks the source is not read (backpressure), as when copying.

use std::io::{ErrorKind, Read};
use std::os::fd::RawFd;

use super::{Broken, HalfPipe, Pump, Pumped, READS_PER_PUMP, Sink};
use crate::relay::splice::{self, Pipe};

/// Bytes one pump must read for its direction to open a pipe: bulk.
pub(crate) const SPLICE_AFTER: usize = 64 * 1024;

impl HalfPipe {
    /// Pumps this direction as [`pump`](HalfPipe::pump) does, through
    /// its kernel pipe while nothing needs its bytes and both ends are
    /// sockets.
    pub fn relay<S: Read + Sink>(
        &mut self,
        source: &mut S,
        mut sink: Option<&mut S>,
        cx: &mut Pump<'_>,
    ) -> Result<Pumped, Broken> {
        let fds = (sink.as_deref()).and_then(|sink| source.splice_fd().zip(sink.splice_fd()));
        let plain = self.is_bare(cx);
        let bare = plain && fds.is_some();
        if let Some(mut pipe) = self.pipe.take() {
            let spliced = match (fds, sink.as_deref_mut()) {
                (Some(fds), Some(sink)) if bare => {
                    Some(self.pump_spliced(&mut pipe, fds, sink, cx))
                }
                // Something needs the bytes from now on: the pipe's go
                // first.
                (Some((_, to)), Some(_)) => match self.drain_pipe(&mut pipe, to, cx) {
                    Ok(()) if pipe.held() == 0 => None,
                    Ok(()) => Some(Ok(Pumped::Waiting)),
                    Err(broken) => Some(Err(broken)),
                },
                // No sink now: the pipe's bytes wait for it.
                _ => (pipe.held() > 0).then_some(Ok(Pumped::Waiting)),
            };
            if plain || pipe.held() > 0 {
                self.pipe = Some(pipe);
            }
            if let Some(result) = spliced {
                return result;
            }
        }
        let result = self.pump(source, sink, cx);
        let bulk = cx.read as usize >= SPLICE_AFTER.min(cx.max_owed.saturating_mul(4));
        if bare && bulk && self.pipe.is_none() && !self.splice_refused {
            match splice::allowed().then(|| Pipe::open(cx.max_owed)) {
                Some(Ok(pipe)) => self.pipe = Some(Box::new(pipe)),
                _ => self.splice_refused = true,
            }
        }
        result
    }

    /// Bytes held for the sink, in the rest and in the pipe.
    pub fn owed(&self) -> usize {
        self.held() + self.pipe.as_ref().map_or(0, |pipe| pipe.held())
    }

    /// Whether nothing needs to see this direction's bytes: no fault, no
    /// lines, no journal.
    fn is_bare(&self, cx: &Pump<'_>) -> bool {
        self.shaped.is_none() && self.lines.is_none() && cx.lines.is_none() && cx.tap.is_none()
    }

    /// Moves bytes from the socket `from` through `pipe` to the socket
    /// `to` (which is `sink`) until one of them blocks, the read budget
    /// runs out, or the FIN has been passed on.
    fn pump_spliced<S: Sink>(
        &mut self,
        pipe: &mut Pipe,
        (from, to): (RawFd, RawFd),
        sink: &mut S,
        cx: &mut Pump<'_>,
    ) -> Result<Pumped, Broken> {
        if self.sink_shut {
            return Ok(Pumped::Ended);
        }
        if self.held() > 0 {
            // Read before the pipe opened: these go first.
            self.flush(sink, cx)?;
            if self.blocked {
                return Ok(Pumped::Waiting);
            }
        }
        let mut fills = 0;
        loop {
            self.drain_pipe(pipe, to, cx)?;
            if self.blocked {
                return Ok(Pumped::Waiting);
            }
            if self.source_done {
                return self.pass_fin(sink, cx.now);
            }
            if fills == READS_PER_PUMP {
                return Ok(Pumped::StillReady);
            }
            fills += 1;
            match pipe.fill(from) {
                Ok(0) => self.source_done = true,
                Ok(n) => cx.read += n as u64,
                // The pipe is empty here, so it is the source that has
                // nothing: its next bytes bring an event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Pumped::Waiting),
                Err(e) => return Err(Broken::Source(e)),
            }
        }
    }

    /// Splices what `pipe` holds out to the socket `to` until it is empty
    /// or the socket blocks ([`HalfPipe::wants_writable`] then).
    fn drain_pipe(&mut self, pipe: &mut Pipe, to: RawFd, cx: &mut Pump<'_>) -> Result<(), Broken> {
        self.blocked = false;
        while pipe.held() > 0 {
            match pipe.drain(to) {
                Ok(n) => cx.written += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(());
                }
                Err(e) => return Err(Broken::Sink(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
