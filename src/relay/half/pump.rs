//! What a half-pipe works with: the [`Sink`] it writes to, the [`Pump`]
//! a pass lends it, and what a pass reports back ([`Pumped`], [`Doom`],
//! [`Broken`]). The vocabulary of [`half`](super), apart from its state.

use std::io::{self, Write};

use super::LineCx;
use crate::relay::journal::Tap;
use crate::timer::Millis;

/// Reads per half-pipe per pump, so one fast pair cannot starve the others
/// (with 64 KiB reads, 1 MiB a turn), as for an ordinary connection.
pub(crate) const READS_PER_PUMP: usize = crate::limits::READS_PER_TURN;

/// What a half-pipe needs of the socket it writes to: bytes, and a FIN.
pub(crate) trait Sink: Write {
    /// Sends our FIN: `shutdown(Write)`.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// The socket's descriptor, for `splice(2)`: none for what is no
    /// socket (the tests' scripted peers), whose bytes are copied.
    #[cfg(target_os = "linux")]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

impl Sink for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    #[cfg(target_os = "linux")]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

/// How far one pump got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// Blocked on a socket (the source has nothing, or the sink takes
    /// nothing now: then [`HalfPipe::wants_writable`] says so), or waiting
    /// for a fault's time ([`HalfPipe::wake_at`]). An event continues it.
    Waiting,
    /// The read budget ran out with input perhaps left: pump it again next
    /// turn, since no event will report it.
    StillReady,
    /// The source's FIN was passed on: this direction is over.
    Ended,
    /// A `truncate` fault's bytes are out and the FIN with them: the pair
    /// ends.
    Cut,
    /// Line mode: a `close`, `reset` or `slow-close` on a line (or a line
    /// over `--max-line`) ends the pair, now that the lines before it are
    /// out.
    Doom(Doom),
}

/// A fault that ends the whole pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doom {
    /// `close`: FIN both ways (then a lingering close).
    Close,
    /// `reset`: RST both ways.
    Reset,
}

/// Why a half-pipe cannot go on: the pair is reset.
#[derive(Debug)]
pub(crate) enum Broken {
    /// Reading the source failed: it reset (or worse).
    Source(io::Error),
    /// Writing to the sink failed: it reset, or closed while bytes were
    /// still coming.
    Sink(io::Error),
}

/// What a pump lends a half-pipe and what it learns back.
pub(crate) struct Pump<'a> {
    /// The turn's clock reading.
    pub now: Millis,
    /// The loop's one read buffer.
    pub buf: &'a mut [u8],
    /// Bytes held for the sink at most; past it the source is not read.
    pub max_owed: usize,
    /// The same while a delay holds a stream's bytes, if larger than
    /// `max_owed` (`--max-delayed`); [`Pump::new`] makes it `max_owed`.
    pub max_delayed: usize,
    /// Bytes read from the source during this pump.
    pub read: u64,
    /// Bytes written to the sink during this pump.
    pub written: u64,
    /// Line mode: how this direction's lines are judged.
    pub lines: Option<LineCx<'a>>,
    /// With a journal: where the bytes written are recorded.
    pub tap: Option<Tap<'a>>,
}

impl<'a> Pump<'a> {
    pub fn new(now: Millis, buf: &'a mut [u8], max_owed: usize) -> Pump<'a> {
        Pump {
            now,
            buf,
            max_owed,
            max_delayed: max_owed,
            read: 0,
            written: 0,
            lines: None,
            tap: None,
        }
    }

    /// What a direction may hold ([`HalfPipe::backlog`]: bytes and
    /// chunks): `max_owed`, or the larger `max_delayed` while a delay
    /// holds a stream's bytes (`delayed`), and in line mode room for one
    /// whole line beyond it (a line is judged once it is complete). A
    /// read or a judged line may pass it by one chunk, never more.
    pub(super) fn bound(&self, delayed: bool) -> usize {
        let line = self.lines.as_ref().map_or(0, |lx| lx.max_line + 1);
        let held = match delayed {
            true => self.max_owed.max(self.max_delayed),
            false => self.max_owed,
        };
        held + line
    }
}
