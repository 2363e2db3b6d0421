//! Writes: short, interrupted, failing, and what the buffers keep after.

use super::*;

/// A stream whose writes fail with a broken pipe once `left` bytes went.
struct FailAfter {
    inner: Script,
    left: usize,
}

impl Read for FailAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for FailAfter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let n = bytes.len().min(self.left);
        self.left -= n;
        self.inner.write(&bytes[..n])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for FailAfter {
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

#[test]
fn interrupted_reads_and_writes_are_retried() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::default().room(100);
    s.input.push_back(Err(ErrorKind::Interrupted.into()));
    s.push(b"a\n");
    s.interrupted_writes = 2;
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, line_replies(1));
    assert_eq!(
        s.interrupted_writes, 0,
        "both interrupted writes were retried"
    );
    assert!(!conn.wants_writable());
}

#[test]
fn bytes_written_before_a_write_error_are_counted() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(2)]).room(12);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(lp.stats().bytes_out, 12);
    s.room = 3;
    s.push(&lines(1));
    // Three more bytes go out; then the socket fails.
    let mut failing = FailAfter { inner: s, left: 3 };
    let result = {
        let mut cx = Ctx {
            now: 0,
            mode: Mode::Line,
            max_line: lp.max_line,
            max_owed: lp.max_owed,
            buf: &mut lp.buf,
            replies: &mut lp.replies,
            counters: &lp.counters,
            warnings: &mut lp.warnings,
            faults: &mut lp.faults,
            journal: None,
        };
        conn.advance(&mut failing, true, &mut cx)
    };
    assert!(matches!(result, Err(Close::Failed(_))));
    assert_eq!(
        lp.stats().bytes_out,
        15,
        "the 3 bytes before the error count"
    );
}

#[test]
fn a_write_error_closes_with_the_error() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\n"]).room(100);
    s.write_error = Some(ErrorKind::BrokenPipe);
    match lp.advance(&mut conn, &mut s, true) {
        Err(Close::Failed(e)) => assert_eq!(e.kind(), ErrorKind::BrokenPipe),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_socket_that_takes_zero_bytes_fails_the_connection_instead_of_spinning() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\n"]).room(100);
    s.zero_writes = true;
    match lp.advance(&mut conn, &mut s, true) {
        Err(Close::Failed(e)) => assert_eq!(e.kind(), ErrorKind::WriteZero),
        other => panic!("{other:?}"),
    }
}

#[test]
fn short_writes_of_fixed_replies_resume_where_they_stopped_across_the_pattern_end() {
    // More lines than one pass over the 64 KiB reply pattern holds, written
    // through a socket that takes an odd number of bytes at a time: every
    // resumption starts at the right byte, also where the pattern wraps.
    let n = 10_000;
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(n)]).room(4_099);
    lp.advance(&mut conn, &mut s, true).unwrap();
    let mut turns = 0;
    while s.written.len() < n * 9 {
        turns += 1;
        assert!(turns < 100, "stuck at {} bytes", s.written.len());
        assert!(conn.wants_writable(), "bytes owed: writable wanted");
        s.room = 4_099;
        lp.advance(&mut conn, &mut s, false).unwrap();
    }
    assert!(s.written == line_replies(n), "the replies are not intact");
    assert_eq!(conn.owed_len(), 0);
    assert_eq!(lp.stats().messages, n as u64);
    assert_eq!(lp.stats().bytes_out, (n * 9) as u64);
}

#[test]
fn short_writes_of_custom_replies_resume_where_they_stopped() {
    let mut lp = Loop::new(Mode::Line).custom(Echo);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"hello\nab\n"]).room(2);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, b"he");
    assert_eq!(conn.owed_len(), 7, "\"llo\\nab\\n\" owed");
    assert!(conn.wants_writable());
    s.room = 5;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, b"hello\na");
    assert_eq!(conn.owed_len(), 2);
    s.room = 100;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, b"hello\nab\n");
    assert_eq!(conn.owed_len(), 0);
    assert!(!conn.wants_writable());
    // The next reply goes out whole after the drained ones.
    s.push(b"c\n");
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, b"hello\nab\nc\n");
}

#[test]
fn after_a_burst_the_reply_buffer_shrinks_but_is_kept_for_the_next_replies() {
    // A custom responder's replies go through the connection's own
    // buffer. After a burst it shrinks back to at most KEEP_CAPACITY, so
    // an idle connection keeps little memory; yet ordinary replies then
    // reuse what is kept: no allocation per message.
    let reply = |_: &Request<'_>, out: &mut Vec<u8>| {
        out.extend_from_slice(&[b'y'; 99]);
        true
    };
    let mut lp = Loop::new(Mode::Line).custom(reply);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(100)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(conn.owed_len(), 100 * 100, "a burst of replies owed");
    s.room = usize::MAX;
    lp.advance(&mut conn, &mut s, false).unwrap();
    let capacity = |conn: &Connection| conn.buffers.as_ref().unwrap().out.capacity();
    let kept = capacity(&conn);
    assert!(kept <= KEEP_CAPACITY, "{kept} bytes kept after the burst");
    for _ in 0..3 {
        // The reply is made while the socket is full: it waits in the
        // buffer kept, which holds it without growing.
        s.room = 0;
        s.push(&lines(1));
        lp.advance(&mut conn, &mut s, true).unwrap();
        assert_eq!(conn.owed_len(), 100);
        assert_eq!(capacity(&conn), kept, "the buffer grew for one reply");
        s.room = usize::MAX;
        lp.advance(&mut conn, &mut s, false).unwrap();
        assert_eq!(capacity(&conn), kept, "the buffer changed once drained");
    }
    assert_eq!(s.written.len(), 103 * 100);
}
