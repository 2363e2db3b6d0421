//! How a TCP socket ends, for a served connection and a relayed pair
//! alike: a reset, a close, and the read-and-discard of a lingering close
//! before it. One copy each, below both [`tcp`](crate::tcp) and
//! [`relay`](crate::relay).

use std::io::{self, ErrorKind, Read};
use std::time::Duration;

use mio::Registry;
use mio::net::TcpStream;

/// Makes the coming close of `stream` send RST, not FIN: a zero linger
/// (`SO_LINGER` 0), as the `reset` fault and a relayed reset want.
pub(crate) fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Closes `stream`, taking it off the poll first where that is needed.
///
/// mio's rule: deregister before the descriptor closes, since some
/// selectors keep state per source. mio's epoll selector keeps none, and
/// closing the last descriptor of a socket removes it from every epoll
/// interest list (epoll(7)), which the drop here does. There the
/// `EPOLL_CTL_DEL` is a system call for nothing, measured at about 6 % of
/// a once-mode exchange's server CPU (benches/syscalls.sh,
/// benches/compare.sh). Should a copy of the descriptor live on (a child
/// forked by the host, between fork and exec), its events can still come
/// with the old token; a table key reused by then only sees a spurious
/// event, which a read ending in `WouldBlock` absorbs.
pub(crate) fn close(registry: &Registry, stream: TcpStream) {
    if !cfg!(all(
        target_os = "linux",
        not(mio_unsupported_force_poll_poll)
    )) {
        let mut stream = stream;
        let _ = registry.deregister(&mut stream);
    }
}

/// How far [`discard`] got.
#[derive(Debug)]
pub(crate) enum Discarded {
    /// The peer's EOF.
    Eof,
    /// A read failed (the peer reset, or worse).
    Failed(io::Error),
    /// Read to `WouldBlock`: the peer's next bytes or FIN bring an event.
    Drained,
    /// The read budget ran out with input perhaps left.
    OutOfBudget,
}

/// Reads and discards what the peer sends, as a lingering close (or a
/// hang) does, each read taken from `budget`: so that the close never
/// meets unread input, which would make the kernel reset the connection
/// and could destroy bytes in flight (RFC 1122 4.2.2.13). Returns the
/// bytes read, and how it ended.
pub(crate) fn discard(
    socket: &mut impl Read,
    buf: &mut [u8],
    budget: &mut usize,
) -> (u64, Discarded) {
    let mut read = 0;
    while *budget > 0 {
        *budget -= 1;
        match socket.read(buf) {
            Ok(0) => return (read, Discarded::Eof),
            Ok(n) => read += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (read, Discarded::Drained),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (read, Discarded::Failed(e)),
        }
    }
    (read, Discarded::OutOfBudget)
}
