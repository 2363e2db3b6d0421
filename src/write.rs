//! The one non-blocking write loop that every socket's owed bytes go
//! through: TCP connections, control connections, UDP replies.
//!
//! Under mio a write is never `write_all` (GUIDE trap 4): a short write is
//! progress, `WouldBlock` means "remember where you stopped and wait for
//! `WRITABLE`", `Interrupted` is retried (trap 10), and `Ok(0)` on a
//! non-empty buffer is an error, not progress.

use std::io::{self, ErrorKind, Write};

/// Makes one non-blocking call, retrying it when a signal interrupts it:
/// `Ok(Some(value))` when it succeeds, `Ok(None)` when it would block.
/// For calls that send a whole datagram, or one piece of a stream.
pub(crate) fn nonblocking<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    loop {
        match call() {
            Ok(value) => return Ok(Some(value)),
            // The caller waits for the next writable event.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` until all are out or the socket would block. Returns how
/// many bytes were written, also when an error ended the loop (so a caller
/// that counts bytes counts them all), and whether the socket blocked.
pub(crate) fn write_until_blocked(
    stream: &mut impl Write,
    bytes: &[u8],
) -> (usize, io::Result<bool>) {
    let mut written = 0;
    while written < bytes.len() {
        match nonblocking(|| stream.write(&bytes[written..])) {
            Ok(Some(0)) => return (written, Err(ErrorKind::WriteZero.into())),
            Ok(Some(n)) => written += n,
            // The socket buffer is full: the caller remembers where it stopped.
            Ok(None) => return (written, Ok(true)),
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes, then says `WouldBlock`; says
    /// `Interrupted` once first.
    struct Sink {
        taken: Vec<u8>,
        room: usize,
        interrupted: bool,
        zero: bool,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(ErrorKind::Interrupted.into());
            }
            if self.zero {
                return Ok(0);
            }
            // Short writes: three bytes at a time.
            let n = bytes.len().min(self.room).min(3);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sink(room: usize) -> Sink {
        Sink {
            taken: Vec::new(),
            room,
            interrupted: false,
            zero: false,
        }
    }

    #[test]
    fn short_writes_go_on_until_done() {
        let mut sink = sink(100);
        let (n, blocked) = write_until_blocked(&mut sink, b"Hello, Server");
        assert_eq!((n, blocked.unwrap()), (13, false));
        assert_eq!(sink.taken, b"Hello, Server");
    }

    #[test]
    fn would_block_stops_and_says_where() {
        let mut sink = sink(5);
        let (n, blocked) = write_until_blocked(&mut sink, b"Hello, Server");
        assert_eq!((n, blocked.unwrap()), (5, true));
        assert_eq!(sink.taken, b"Hello");
    }

    #[test]
    fn zero_bytes_written_is_an_error() {
        let mut sink = Sink {
            zero: true,
            ..sink(5)
        };
        let (n, result) = write_until_blocked(&mut sink, b"x");
        assert_eq!(n, 0);
        assert_eq!(result.unwrap_err().kind(), ErrorKind::WriteZero);
        assert_eq!(write_until_blocked(&mut sink, b"").0, 0, "nothing to write");
    }
}
