//! The bulk scenario: one connection sends `--mib` MiB, shuts down its
//! sending side, and waits for the server's one reply and close.

use std::io::{self, ErrorKind, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::measure::{Stats, Window, report};
use crate::{Args, SETUP_LIMIT, eof, invalid, wait};

/// The one connection of a bulk run.
struct Bulk {
    stream: TcpStream,
    /// Payload bytes still to send; then the sending side is shut down.
    unsent: u64,
    /// What has arrived of the reply (a line-mode server's one line).
    received: Vec<u8>,
    eof: bool,
}

impl Bulk {
    /// Writes until everything is sent or `WouldBlock`, then shuts down the
    /// sending side (once). The payload has no newline: it is one unfinished
    /// line, answered at EOF.
    fn send(&mut self, chunk: &[u8], registry: &Registry) -> io::Result<()> {
        while self.unsent > 0 {
            let n = chunk
                .len()
                .min(usize::try_from(self.unsent).unwrap_or(usize::MAX));
            match self.stream.write(&chunk[..n]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.unsent -= n as u64;
                    if self.unsent == 0 {
                        self.stream.shutdown(std::net::Shutdown::Write)?;
                        // Nothing more to write: only the reply is awaited.
                        registry.reregister(&mut self.stream, Token(0), Interest::READABLE)?;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until `WouldBlock` or EOF; the reply may come in any split,
    /// and anything past its length is an error.
    fn receive(&mut self, buf: &mut [u8], reply: &[u8]) -> io::Result<()> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) if self.received.len() + n > reply.len() => {
                    return Err(invalid("more than one reply"));
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// bulk: connect, then (in the window) send `--mib` MiB and wait for the
/// server's one reply line and its close.
pub fn run_bulk(args: &Args) -> io::Result<()> {
    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(16));
    let mut stream = TcpStream::connect(args.tcp)?;
    let interest = Interest::READABLE | Interest::WRITABLE;
    poll.registry().register(&mut stream, Token(0), interest)?;
    let end = Instant::now() + SETUP_LIMIT;
    while stream.peer_addr().is_err() {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        if Instant::now() >= end {
            return Err(io::Error::new(ErrorKind::TimedOut, "connect timed out"));
        }
        wait(&mut poll, &mut events, end)?;
    }
    let mut reply = args.reply.clone();
    reply.push(b'\n');
    let (chunk, mut buf) = (vec![b'x'; 64 * 1024], vec![0; 64 * 1024]);
    let mut bulk = Bulk {
        stream,
        unsent: args.mib << 20,
        received: Vec::new(),
        eof: false,
    };
    let mut stats = Stats::default();
    let window = Window::open(args.pid);
    let end = window.started + SETUP_LIMIT;
    let mut result = Ok(());
    while result.is_ok() && !bulk.eof && Instant::now() < end {
        result = bulk.send(&chunk, poll.registry());
        if result.is_ok() {
            result = bulk.receive(&mut buf, &reply);
        }
        if result.is_ok() && !bulk.eof {
            wait(&mut poll, &mut events, end)?;
        }
    }
    match (result, bulk.eof && bulk.received == reply) {
        (Err(e), _) => stats.error(e),
        (Ok(()), true) => {
            stats.record(window.started);
            stats.ops = args.mib; // an operation is one MiB
        }
        (Ok(()), false) if !bulk.eof => stats.error(eof("no reply within the time limit")),
        (Ok(()), false) => stats.error(eof("closed before the whole reply")),
    }
    report(
        args,
        &stats,
        window.close(stats.ops),
        &format!(" mib={}", args.mib),
    );
    Ok(())
}
