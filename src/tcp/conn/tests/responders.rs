//! A custom responder's connection: whole lines across reads, declined
//! messages, echo in once mode, and the peer it always sees.

use super::*;

#[test]
fn a_custom_responder_gets_whole_lines_across_reads() {
    let mut lp = Loop::new(Mode::Line).custom(Echo);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"hel", b"lo\r", b"\nwor", b"ld\n"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, b"hello\nworld\n");
}

#[test]
fn a_responder_that_declines_sends_nothing_but_counts_the_message() {
    let mut lp = Loop::new(Mode::Line).custom(|_: &Request<'_>, _: &mut Vec<u8>| false);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\nb\n"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(s.written.is_empty());
    assert_eq!(lp.stats().messages, 2);
    assert!(!conn.wants_writable());
}

#[test]
fn once_mode_echo_returns_the_first_read() {
    let mut lp = Loop::new(Mode::Once).custom(Echo);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"ping"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, b"ping");
    assert!(lingering(&conn));
}

#[test]
fn a_custom_responder_always_sees_the_peer_even_after_backpressure() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    // Records every request; answers all but those starting with 'q'.
    let recorder = move |request: &Request<'_>, reply: &mut Vec<u8>| {
        log.lock()
            .unwrap()
            .push((request.peer, request.message.to_vec()));
        reply.extend_from_slice(b"ok");
        !request.message.starts_with(b"q")
    };
    let mut lp = Loop::new(Mode::Line).custom(recorder);
    lp.max_owed = 3; // one "ok\n"
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\nq\n", b"z\n"]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1, "\"q\" kept: one reply owed");
    // The reply drains; the kept "q" (declined) and the socket's "z" are
    // taken. The connection's buffers are empty for a moment in between,
    // but it stays a custom responder's connection with its peer.
    s.room = 100;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, b"ok\nok\n");
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let expected = [
        (peer, b"a".to_vec()),
        (peer, b"q".to_vec()),
        (peer, b"z".to_vec()),
    ];
    assert_eq!(*seen.lock().unwrap(), expected);
}

/// Replies switch to a responder with a rule while a line is half read,
/// as a control line adding the first rule does: `Tcp::switch_to_responder`.
#[cfg(feature = "scripts")]
fn switch_with_rule(lp: &mut Loop, conn: &mut Connection, rule: &str) {
    let old = lp.replies.make_responder().expect("fixed replies before");
    conn.keep_owed_bytes(&old);
    conn.cut_open_line();
    lp.replies
        .rules()
        .unwrap()
        .add(rule.parse().unwrap())
        .unwrap();
}

#[test]
#[cfg(feature = "scripts")]
fn a_line_cut_by_the_switch_to_a_responder_is_answered_as_before() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"ab"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    switch_with_rule(&mut lp, &mut conn, "* => RULE");
    // The cut line's rest, then a whole line, then a final cut-free one.
    s.push(b"c\r");
    lp.advance(&mut conn, &mut s, true).unwrap();
    s.push(b"\nxyz\n");
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, b"Received\nRULE\n");
    let cut = conn.buffers.as_ref().is_some_and(|b| b.cut_line);
    assert!(!cut, "the cut line's mark goes with it");

    // A cut line ended by the peer's EOF is answered as before too.
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"ab"]).room(1024);
    lp.advance(&mut conn, &mut s, true).unwrap();
    switch_with_rule(&mut lp, &mut conn, "* => RULE");
    s.push(b"c");
    s.eof = true;
    let end = lp.advance(&mut conn, &mut s, true);
    assert!(matches!(end, Err(Close::Done)), "{end:?}");
    assert_eq!(s.written, b"Received\n");
}

#[test]
fn a_reader_that_keeps_pace_but_never_catches_up_cannot_grow_the_reply_buffer() {
    let mut lp = Loop::new(Mode::Line).custom(Echo);
    lp.max_owed = 100;
    let mut conn = lp.connection();
    // 32 bytes of replies owed first, then every turn 32 more for the 32
    // the client reads: never all written, never over the bound.
    let mut s = Script::with_input(&[&b"x\n".repeat(16)]);
    lp.advance(&mut conn, &mut s, true).unwrap();
    for _ in 0..1000 {
        s.push(&b"x\n".repeat(16));
        s.room = 32;
        lp.advance(&mut conn, &mut s, true).unwrap();
        assert_eq!(conn.owed_len(), 32);
        let kept = conn.buffers.as_ref().map_or(0, |b| b.out.len());
        assert!(kept <= 2 * 100, "{kept} bytes kept for 32 owed");
    }
    assert_eq!(s.written, b"x\n".repeat(16 * 1000));
}
