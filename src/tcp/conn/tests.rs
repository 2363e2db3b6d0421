//! The connection's transitions, driven through a scripted stream: no
//! sockets, no loop, time passed in.

use std::collections::VecDeque;

use super::*;
use crate::reply::{Echo, Pattern, Request};

const REPLY: &[u8] = b"Received";

/// A scripted socket. Each read returns the next chunk of `input` (cut to
/// the buffer), then `WouldBlock`, or end of stream once `eof` is set.
/// Writes take up to `room` bytes, then `WouldBlock`.
#[derive(Default)]
struct Script {
    input: VecDeque<io::Result<Vec<u8>>>,
    eof: bool,
    reads: usize,
    written: Vec<u8>,
    room: usize,
    write_error: Option<ErrorKind>,
    /// This many writes fail with `Interrupted` before any other outcome.
    interrupted_writes: usize,
    /// Writes return `Ok(0)`: the socket takes nothing and says so.
    zero_writes: bool,
    /// `shutdown(Write)` was called: our FIN.
    shut_down: std::cell::Cell<bool>,
}

impl Script {
    fn with_input(chunks: &[&[u8]]) -> Script {
        let mut script = Script::default();
        for chunk in chunks {
            script.push(chunk);
        }
        script
    }

    fn push(&mut self, chunk: &[u8]) {
        self.input.push_back(Ok(chunk.to_vec()));
    }

    fn room(mut self, room: usize) -> Script {
        self.room = room;
        self
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        match self.input.pop_front() {
            Some(Ok(mut chunk)) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.input.push_front(Ok(chunk.split_off(n)));
                }
                Ok(n)
            }
            Some(Err(e)) => Err(e),
            None if self.eof => Ok(0),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Script {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.interrupted_writes > 0 {
            self.interrupted_writes -= 1;
            return Err(ErrorKind::Interrupted.into());
        }
        if let Some(kind) = self.write_error {
            return Err(kind.into());
        }
        if self.zero_writes {
            return Ok(0);
        }
        if self.room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(self.room);
        self.room -= n;
        self.written.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Script {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shut_down.set(true);
        Ok(())
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 9)))
    }
}

fn lingering(conn: &Connection) -> bool {
    matches!(conn.phase(), Phase::Lingering { .. })
}

fn open(conn: &Connection) -> bool {
    matches!(conn.phase(), Phase::Open { .. })
}

fn closing(conn: &Connection) -> bool {
    matches!(conn.phase(), Phase::Closing { .. })
}

/// The loop's side: what a `Ctx` borrows.
struct Loop {
    mode: Mode,
    max_line: usize,
    max_owed: usize,
    now: Millis,
    buf: Vec<u8>,
    replies: Replies,
    counters: Counters,
    warnings: RateLimit,
    faults: Faults,
    journal: Option<std::cell::RefCell<crate::journal::Journal>>,
}

impl Loop {
    fn new(mode: Mode) -> Loop {
        Loop {
            mode,
            max_line: 16,
            max_owed: crate::DEFAULT_MAX_OWED,
            now: 0,
            buf: vec![0; 64 * 1024],
            replies: Replies::Fixed(Pattern::new(REPLY, mode == Mode::Line, 64)),
            counters: Counters::default(),
            warnings: RateLimit::default(),
            faults: Faults::new(1, &[]),
            journal: None,
        }
    }

    fn custom(mut self, responder: impl crate::Responder + Send + 'static) -> Loop {
        self.replies = Replies::Custom {
            responder: crate::reply::Scripted::new(Vec::new(), Box::new(responder)),
            scratch: Vec::new(),
        };
        self
    }

    fn connection(&self) -> Connection {
        let custom = matches!(self.replies, Replies::Custom { .. });
        let peer = custom.then(|| SocketAddr::from(([127, 0, 0, 1], 9)));
        Connection::new(7, self.now, peer)
    }

    fn advance(
        &mut self,
        conn: &mut Connection,
        stream: &mut Script,
        readable: bool,
    ) -> Result<Advance, Close> {
        let mut cx = Ctx {
            now: self.now,
            mode: self.mode,
            max_line: self.max_line,
            max_owed: self.max_owed,
            buf: &mut self.buf,
            replies: &mut self.replies,
            counters: &self.counters,
            warnings: &mut self.warnings,
            faults: &mut self.faults,
            journal: self.journal.as_ref(),
        };
        conn.advance(stream, readable, &mut cx)
    }

    fn stats(&self) -> crate::Stats {
        self.counters.snapshot()
    }
}

fn lines(n: usize) -> Vec<u8> {
    b"x\n".repeat(n)
}

fn line_replies(n: usize) -> Vec<u8> {
    b"Received\n".repeat(n)
}

#[test]
fn once_answers_the_first_bytes_then_lingers_until_eof() {
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"Hello, Server", b"more"]).room(1024);
    assert_eq!(
        lp.advance(&mut conn, &mut s, true).unwrap(),
        Advance::Waiting
    );
    assert_eq!(s.written, REPLY);
    assert!(
        lingering(&conn) && s.shut_down.get(),
        "FIN sent once the reply is out"
    );
    assert!(!conn.wants_writable());
    assert!(
        s.input.is_empty(),
        "input after the first bytes is discarded"
    );
    let stats = lp.stats();
    assert_eq!(
        (stats.messages, stats.bytes_in, stats.bytes_out),
        (1, 17, 8)
    );
    s.eof = true;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Done)
    ));
}

#[test]
fn once_without_bytes_closes_without_a_reply() {
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    let mut s = Script::default().room(1024);
    s.eof = true;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Done)
    ));
    assert!(s.written.is_empty());
    assert_eq!(lp.stats().messages, 0);
}

#[test]
fn writable_interest_exactly_while_bytes_are_owed() {
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    assert!(!conn.wants_writable(), "nothing owed yet");
    let mut s = Script::with_input(&[b"hi"]).room(3);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, b"Rec", "a short write is progress");
    assert_eq!(conn.owed_len(), 5);
    assert!(conn.wants_writable(), "5 bytes owed");
    assert!(closing(&conn));
    assert!(!s.shut_down.get(), "no FIN before the reply");
    s.room = 2;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert!(conn.wants_writable(), "3 bytes still owed");
    s.room = 100;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, REPLY);
    assert!(!conn.wants_writable(), "drained");
    assert!(lingering(&conn));
}

#[test]
fn line_mode_answers_every_line_however_split() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"one\r", b"\ntwo\n\nthr", b"ee\r\n"]).room(1024);
    assert_eq!(
        lp.advance(&mut conn, &mut s, true).unwrap(),
        Advance::Waiting
    );
    assert_eq!(s.written, line_replies(4));
    assert_eq!(lp.stats().messages, 4);
    assert!(open(&conn));
    assert!(!conn.wants_writable());
}

#[test]
fn line_mode_answers_a_final_unterminated_line_then_closes() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\nlast"]).room(1024);
    s.eof = true;
    // The peer's EOF came first, so once the replies are out: closed,
    // with no FIN and no lingering for a peer that has gone.
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Done)
    ));
    assert_eq!(s.written, line_replies(2));
    assert_eq!(s.reads, 2, "the bytes, then the EOF: nothing read after it");
    assert!(!s.shut_down.get());
}

#[test]
fn line_mode_eof_with_replies_owed_closes_once_they_are_written() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\n"]).room(4);
    s.eof = true;
    assert!(lp.advance(&mut conn, &mut s, true).is_ok());
    assert!(closing(&conn));
    s.room = 100;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, false),
        Err(Close::Done)
    ));
    assert_eq!(s.written, line_replies(1));
}

#[test]
fn a_too_long_line_closes_after_the_earlier_replies_and_warns_once() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection(); // max_line 16
    let mut s = Script::with_input(&[b"ok\n", &[b'x'; 17], b"\nafter\n"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, line_replies(1), "the line before it is answered");
    assert!(lingering(&conn), "then FIN");
    assert_eq!(lp.stats().messages, 1, "nothing after it is framed");
    assert!(
        !lp.warnings.allow(lp.now),
        "the warning used the rate limit"
    );
}

#[test]
fn backpressure_stops_taking_lines_at_the_bound_and_resumes_when_drained() {
    let mut lp = Loop::new(Mode::Line);
    lp.max_owed = 2 * 9; // two replies
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(10)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(conn.owed_len(), 18, "two lines taken, the rest kept");
    assert_eq!(lp.stats().messages, 2);
    assert!(conn.wants_writable());
    let reads = s.reads;
    // More input arrives, but a paused connection does not read it.
    s.push(&lines(2));
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.reads, reads, "paused: no read");
    // The client reads its replies: the writable event drains the owed
    // bytes, and the kept input and the socket are taken at once, since
    // nothing will report them again.
    s.room = usize::MAX;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, line_replies(12));
    assert_eq!(lp.stats().messages, 12);
    assert!(!conn.wants_writable());
    assert!(open(&conn));
}

#[test]
fn an_amplifying_responder_cannot_push_owed_bytes_past_the_bound() {
    let big = |_: &Request<'_>, reply: &mut Vec<u8>| {
        reply.extend_from_slice(&[b'y'; 1000]);
        true
    };
    let mut lp = Loop::new(Mode::Line).custom(big);
    lp.max_owed = 4096;
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(100)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(conn.owed_len() >= 4096);
    assert!(
        conn.owed_len() <= 4096 + 1001,
        "owes {} bytes: more than the bound plus one reply",
        conn.owed_len()
    );
    s.room = usize::MAX;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(
        s.written.len(),
        100 * 1001,
        "every line answered in the end"
    );
}

#[test]
fn the_read_budget_leaves_the_connection_still_ready() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let chunks: Vec<Vec<u8>> = (0..READS_PER_TURN + 3).map(|_| lines(1)).collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let mut s = Script::with_input(&refs).room(usize::MAX);
    assert_eq!(
        lp.advance(&mut conn, &mut s, true).unwrap(),
        Advance::StillReady
    );
    assert_eq!(s.reads, READS_PER_TURN);
    assert_eq!(
        lp.advance(&mut conn, &mut s, true).unwrap(),
        Advance::Waiting
    );
    assert_eq!(s.written, line_replies(READS_PER_TURN + 3));
}

#[test]
fn a_writable_event_alone_reads_nothing() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\n"]).room(100);
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.reads, 0);
    assert!(s.written.is_empty());
}

#[test]
fn a_read_error_closes_with_the_error() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::default().room(100);
    s.input.push_back(Err(ErrorKind::ConnectionReset.into()));
    match lp.advance(&mut conn, &mut s, true) {
        Err(Close::Failed(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stop_takes_no_new_lines_and_closes_after_the_owed_replies() {
    let mut lp = Loop::new(Mode::Line);
    lp.max_owed = 9;
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(3)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(lp.stats().messages, 1, "one taken, two kept");
    conn.stop();
    assert!(closing(&conn));
    s.room = 100;
    s.push(&lines(1));
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, line_replies(1), "only what was owed");
    assert_eq!(lp.stats().messages, 1, "kept input is dropped");
    assert!(lingering(&conn));
    // A stop while lingering changes nothing.
    conn.stop();
    assert!(lingering(&conn));
}

#[test]
fn buffers_are_freed_once_kept_input_is_taken() {
    let mut lp = Loop::new(Mode::Line);
    lp.max_owed = 9;
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(2)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(conn.buffers.is_some(), "one line kept");
    s.room = 100;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, line_replies(2));
    assert!(
        conn.buffers.is_none(),
        "an idle fixed-reply connection keeps none"
    );
}

#[test]
fn a_closing_connection_reads_nothing_until_its_replies_are_out() {
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"hi"]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(closing(&conn));
    // The peer keeps sending and the socket says readable: not one read
    // while the reply is owed, so a peer that never reads cannot keep the
    // server busy discarding.
    let reads = s.reads;
    s.push(b"more");
    s.eof = true;
    for _ in 0..3 {
        assert_eq!(
            lp.advance(&mut conn, &mut s, true).unwrap(),
            Advance::Waiting
        );
    }
    assert_eq!(s.reads, reads);
    assert_eq!(conn.owed_len(), REPLY.len());
    // Once the reply is out: FIN, then the discarded input and the EOF.
    s.room = 100;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Done)
    ));
    assert_eq!(s.written, REPLY);
    assert!(s.shut_down.get());
    assert_eq!(lp.stats().bytes_in, 6);
}

#[test]
fn kept_input_survives_several_partial_drains() {
    let mut lp = Loop::new(Mode::Line);
    lp.max_owed = 2 * 9;
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(10)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(lp.stats().messages, 2);
    // More from the socket, behind the kept lines.
    s.push(b"y\n");
    // The client reads two replies at a time: each drain takes two more
    // kept lines, then the socket's line.
    let mut turns = 0;
    while s.written.len() < 11 * 9 {
        turns += 1;
        assert!(turns <= 6, "stuck at {} bytes", s.written.len());
        s.room = 2 * 9;
        lp.advance(&mut conn, &mut s, false).unwrap();
        assert!(conn.owed_len() <= lp.max_owed);
    }
    assert_eq!(s.written, line_replies(11));
    assert_eq!(lp.stats().messages, 11);
    assert_eq!(s.input.len(), 0, "the socket's line was read");
}

#[test]
fn a_fixed_reply_connection_keeps_no_buffers_however_its_lines_are_split() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"ab", b"c\r", b"\nde", b"f\n", b"gh"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, line_replies(2));
    assert!(
        conn.buffers.is_none(),
        "the fixed reply needs no copy of the lines"
    );
}

/// The one adapter that touches a real socket: mio's stream as a `Stream`.
#[test]
fn mios_stream_sends_our_fin_on_shutdown_write_and_knows_its_peer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, peer) = listener.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    let stream = mio::net::TcpStream::from_std(accepted);
    assert_eq!(Stream::peer_addr(&stream).unwrap(), peer);
    assert_eq!(peer, client.local_addr().unwrap());
    Stream::shutdown_write(&stream).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("our FIN ends the peer's reads");
    assert_eq!(rest, b"");
}

#[cfg(feature = "journal")]
mod journal;
mod lean;
mod phases;
mod responders;
mod time;
mod writes;
