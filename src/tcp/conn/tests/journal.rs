//! The journal's view of a connection: each line in as it is taken, each
//! reply out as it leaves, and the fault that ends it.

use super::*;
use crate::journal::recording::{Lines, recording};

/// Journals `lp`'s connection (number 8) into a list a test reads back.
fn journaled(lp: &mut Loop) -> Lines {
    let (journal, seen) = recording(|e| {
        assert_eq!((e.protocol, e.conn), (crate::Protocol::Tcp, Some(8)));
    });
    lp.journal = Some(std::cell::RefCell::new(journal));
    seen
}

#[test]
fn the_journal_sees_the_greeting_each_line_as_sent_and_each_reply_as_it_leaves() {
    let mut lp = Loop::new(Mode::Line).custom(crate::FixedReply(REPLY.to_vec()));
    let seen = journaled(&mut lp);
    let mut conn = lp.connection();
    conn.journal_peer(SocketAddr::from(([127, 0, 0, 1], 9)));
    conn.send_unasked(b"220 hi\r\n".to_vec(), true);
    // Split across reads, a \r\n terminator, and no room to write at first.
    let mut s = Script::with_input(&[b"he", b"llo\r", b"\nyo\n"]);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (1, "in", b"hello\r\n".to_vec(), true, vec![]),
            (2, "in", b"yo\n".to_vec(), false, vec![]),
        ],
        "nothing has left yet"
    );
    s.room = 1024;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, b"220 hi\r\nReceived\nReceived\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[2], (0, "out", b"220 hi\r\n".to_vec(), false, vec![]));
    assert_eq!(seen[3], (1, "out", b"Received\n".to_vec(), false, vec![]));
    assert_eq!(seen[4], (2, "out", b"Received\n".to_vec(), false, vec![]));
}

#[test]
fn the_journal_names_the_fault_that_ends_a_connection_on_its_out_line() {
    let mut lp = Loop::new(Mode::Line).custom(crate::FixedReply(REPLY.to_vec()));
    lp.faults = Faults::new(1, &["tcp:reset,every=2".parse().unwrap()]);
    let seen = journaled(&mut lp);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\nb\nc\n"]).room(1024);
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Reset)
    ));
    assert_eq!(s.written, b"Received\n");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter()
            .map(|l| (l.0, l.1, l.2.len()))
            .collect::<Vec<_>>(),
        [(1, "in", 2), (1, "out", 9), (2, "in", 2), (2, "out", 0)]
    );
    assert_eq!(seen[3].4, ["reset"]);
}
