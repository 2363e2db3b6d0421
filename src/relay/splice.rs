//! The kernel's copy of a relayed stream (Linux): `splice(2)` moves bytes
//! from the source socket into a pipe and from the pipe into the sink
//! socket, without their passing through ackloop's memory, as haproxy does
//! with `option splice-request` and `splice-response`. Two system calls per
//! pipeful, as reading and writing are, but no copy to user space and back.
//!
//! A [`Pipe`] is one direction's: bytes spliced in and not yet out are
//! *held*, counted exactly from what each call returns, and never more
//! than its limit (the direction's `--max-owed`): while it holds its limit
//! the source is not read, so the bound and the backpressure are those of
//! the copying path. Both ends are non-blocking, so a call that would wait
//! says `WouldBlock` instead.
//!
//! What decides when a direction splices is the half-pipe's
//! ([`half::spliced`](super::half)); this module only moves bytes.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// A new pipe's capacity on Linux (16 pages). A limit above it asks for a
/// bigger pipe (`F_SETPIPE_SZ`); below it, the byte count alone bounds
/// what is held.
const DEFAULT_CAPACITY: usize = 64 * 1024;
/// The largest pipe an unprivileged process may ask for by default
/// (`/proc/sys/fs/pipe-max-size`). A bigger limit keeps this capacity.
const MAX_CAPACITY: usize = 1024 * 1024;

/// One direction's pipe: its two ends and what it holds.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// The read end: spliced out to the sink.
    out: OwnedFd,
    /// The write end: the source is spliced in.
    into: OwnedFd,
    /// Bytes spliced in and not yet out.
    held: usize,
    /// Bytes held at most.
    limit: usize,
}

impl Pipe {
    /// A pipe that holds at most `limit` bytes (at least 1). Fails when
    /// the process has no descriptor left (the caller copies instead).
    pub fn open(limit: usize) -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open descriptors, owned here
        // alone.
        let (out, into) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if limit > DEFAULT_CAPACITY {
            let size = limit.min(MAX_CAPACITY) as libc::c_int;
            // Best effort: over the user's pipe quota the pipe keeps its
            // size, and a fill then takes less per call.
            // SAFETY: a plain fcntl on a descriptor we own.
            unsafe { libc::fcntl(into.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        }
        Ok(Pipe {
            out,
            into,
            held: 0,
            limit: limit.max(1),
        })
    }

    /// Bytes held: spliced in from the source, not yet out to the sink.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Splices what `source` has (a socket) into the pipe, up to the
    /// limit: the count, 0 at the source's end (its FIN), `WouldBlock`
    /// when it has nothing now or the pipe holds its limit.
    pub fn fill(&mut self, source: RawFd) -> io::Result<usize> {
        let room = self.limit - self.held;
        if room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = splice(source, self.into.as_raw_fd(), room)?;
        self.held += n;
        Ok(n)
    }

    /// Splices what the pipe holds out to `sink` (a socket): the count,
    /// short or `WouldBlock` when the sink's buffer is full.
    pub fn drain(&mut self, sink: RawFd) -> io::Result<usize> {
        if self.held == 0 {
            return Ok(0);
        }
        let n = splice(self.out.as_raw_fd(), sink, self.held)?;
        if n == 0 {
            // The pipe said it was empty while our count says it holds
            // bytes: never seen, but not a reason to spin.
            return Err(ErrorKind::WriteZero.into());
        }
        self.held -= n;
        Ok(n)
    }
}

/// One non-blocking `splice` of up to `len` bytes, retried when a signal
/// interrupts it.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: no offsets (both are a socket or a pipe); the kernel
        // checks the descriptors, which the callers hold open.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether this process may splice into sockets: `splice(2)` into a
/// socket whose peer is gone raises `SIGPIPE` (it has no `MSG_NOSIGNAL`,
/// which the copying path's `send` has), so only while that signal is
/// ignored or handled, as in every Rust program (its runtime ignores it).
/// A host that left it at its default, which kills the process, relays
/// by copying. Asked once.
pub(crate) fn allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        // SAFETY: reads the current action only (a null new action).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A connected pair of sockets on 127.0.0.1: (ours, the peer's), ours
    /// non-blocking.
    fn sockets() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, peer)
    }

    /// Calls `call` until it says something other than `WouldBlock` (the
    /// peer's bytes arrive when they arrive).
    fn until_ready<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match call() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "still nothing");
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }

    /// Fills from `source` and drains into `sink` until `want` bytes went
    /// out; the pipe never holds more than its limit.
    fn relay(pipe: &mut Pipe, source: &TcpStream, sink: &TcpStream, want: usize) -> usize {
        let mut moved = 0;
        while moved < want {
            if pipe.held() == 0 {
                let n = until_ready(|| pipe.fill(source.as_raw_fd())).unwrap();
                assert!(n > 0, "an early EOF");
            }
            assert!(pipe.held() <= pipe.limit);
            moved += until_ready(|| pipe.drain(sink.as_raw_fd())).unwrap();
        }
        moved
    }

    /// Reads `len` bytes from `stream` on a thread of its own.
    fn reader(mut stream: TcpStream, len: usize) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut got = vec![0; len];
            stream.read_exact(&mut got).unwrap();
            got
        })
    }

    #[test]
    fn bytes_pass_from_socket_to_socket_unchanged() {
        let (source, mut client) = sockets();
        let (sink, upstream) = sockets();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || client.write_all(&sent).unwrap());
        let reader = reader(upstream, data.len());
        let mut pipe = Pipe::open(64 * 1024).unwrap();
        assert_eq!(relay(&mut pipe, &source, &sink, data.len()), data.len());
        writer.join().unwrap();
        assert!(reader.join().unwrap() == data, "the bytes changed");
    }

    #[test]
    fn a_fill_takes_no_more_than_the_limit_and_waits_while_full() {
        let (source, mut client) = sockets();
        client.write_all(&[b'x'; 10_000]).unwrap();
        let mut pipe = Pipe::open(1000).unwrap();
        while pipe.held() < 1000 {
            until_ready(|| pipe.fill(source.as_raw_fd())).unwrap();
        }
        assert_eq!(pipe.held(), 1000);
        let full = pipe.fill(source.as_raw_fd()).unwrap_err();
        assert_eq!(full.kind(), ErrorKind::WouldBlock, "full: not read");
    }

    #[test]
    fn a_fill_says_would_block_when_empty_and_zero_at_the_fin() {
        let (source, client) = sockets();
        let mut pipe = Pipe::open(4096).unwrap();
        let empty = pipe.fill(source.as_raw_fd()).unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::WouldBlock);
        client.shutdown(Shutdown::Write).unwrap();
        let eof = until_ready(|| pipe.fill(source.as_raw_fd()));
        assert_eq!(eof.unwrap(), 0);
    }

    #[test]
    fn a_drain_into_a_full_sink_keeps_the_rest_held() {
        const LEN: usize = 4 << 20;
        let (source, mut client) = sockets();
        let (sink, upstream) = sockets();
        let writer = std::thread::spawn(move || client.write_all(&vec![b'y'; LEN]).unwrap());
        let mut pipe = Pipe::open(64 * 1024).unwrap();
        // The upstream reads nothing yet: its receive buffer and the
        // sink's send buffer fill, and the pipe keeps what they refuse.
        let mut drained = 0;
        loop {
            if pipe.held() == 0 {
                until_ready(|| pipe.fill(source.as_raw_fd())).unwrap();
            }
            match pipe.drain(sink.as_raw_fd()) {
                Ok(n) => drained += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(drained < LEN, "the sink never filled");
        }
        assert!(pipe.held() > 0, "blocked with nothing held");
        let reader = reader(upstream, LEN);
        drained += relay(&mut pipe, &source, &sink, LEN - drained);
        assert_eq!(drained, LEN);
        writer.join().unwrap();
        assert!(reader.join().unwrap().iter().all(|&b| b == b'y'));
    }

    #[test]
    fn a_reset_source_fails_the_fill() {
        let (source, client) = sockets();
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let mut pipe = Pipe::open(4096).unwrap();
        let failed = until_ready(|| pipe.fill(source.as_raw_fd()));
        assert_eq!(failed.unwrap_err().kind(), ErrorKind::ConnectionReset);
    }

    #[test]
    fn a_limit_over_the_default_asks_for_a_bigger_pipe() {
        let pipe = Pipe::open(256 * 1024).unwrap();
        // SAFETY: a plain fcntl on the pipe's own descriptor.
        let size = unsafe { libc::fcntl(pipe.into.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert!(size == 256 * 1024 || size == 64 * 1024, "{size}");
    }

    #[test]
    fn this_test_process_may_splice() {
        // The test harness, as every Rust program, ignores SIGPIPE.
        assert!(allowed());
    }
}
