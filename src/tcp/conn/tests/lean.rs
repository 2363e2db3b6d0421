//! What a connection holds: nothing beyond its 32 bytes while idle, even
//! with faults in force, and a bounded backlog whatever the faults do.

use super::steps::STEP_COST;
use super::*;

#[test]
fn a_connection_is_32_bytes() {
    // fd, timer stamp and this make the table's 40-byte slot; the size is
    // pinned so that a new field is a decision, not an accident.
    assert_eq!(std::mem::size_of::<Connection>(), 32);
    assert_eq!(std::mem::size_of::<Phase>(), 8);
}

#[test]
fn a_fault_that_selects_nothing_leaves_the_owed_count_fast_path() {
    let mut lp = Loop::new(Mode::Line);
    lp.faults = Faults::new(1, &["tcp:reset,first=0".parse().unwrap()]);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(50), b"x", b"y\n"]).room(usize::MAX);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, line_replies(51));
    assert!(conn.buffers.is_none(), "judged clean: no step, no buffer");
    assert_eq!(lp.stats().faults.total(), 0);
}

#[test]
fn a_delayed_declined_reply_queues_nothing() {
    let mut lp = Loop::new(Mode::Line).custom(|_: &Request<'_>, _: &mut Vec<u8>| false);
    lp.faults = Faults::new(1, &["tcp:delay=1000".parse().unwrap()]);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(10_000)]).room(usize::MAX);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(lp.stats().messages, 10_000, "every line taken");
    assert_eq!(conn.backlog(), 0, "nothing to send, nothing held");
    assert!(!conn.has_steps());
}

#[test]
fn delayed_replies_are_bounded_by_their_memory_not_their_bytes() {
    let mut lp = Loop::new(Mode::Line).custom(|_: &Request<'_>, reply: &mut Vec<u8>| {
        reply.push(b'k');
        true
    });
    lp.faults = Faults::new(1, &["tcp:delay=1000".parse().unwrap()]);
    let mut conn = lp.connection();
    // 20,000 two-byte replies are 40 KB, under the 64 KiB bound; as steps
    // they are far more.
    let mut s = Script::with_input(&[&lines(20_000)]).room(usize::MAX);
    lp.advance(&mut conn, &mut s, true).unwrap();
    let taken = lp.stats().messages as usize;
    assert!(taken < 20_000, "reading paused at the bound");
    assert!(
        conn.backlog() < lp.max_owed + STEP_COST + 2,
        "backlog {} over the bound",
        conn.backlog()
    );
    assert!(taken * (STEP_COST + 2) <= lp.max_owed + STEP_COST + 2);
    // Once the delay has passed, the replies go out and reading resumes.
    lp.now = 1_001;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert!(lp.stats().messages as usize > taken, "resumed");
}

#[test]
fn once_its_delayed_replies_are_out_a_connection_keeps_no_buffers() {
    let mut lp = Loop::new(Mode::Line);
    lp.faults = Faults::new(1, &["tcp:delay=10".parse().unwrap()]);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[&lines(3)]).room(usize::MAX);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(conn.has_steps(), "three replies held back");
    lp.now = 11;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(s.written, line_replies(3));
    assert!(conn.buffers.is_none(), "idle again: back to its 32 bytes");
}

#[test]
fn whole_lines_are_counted_at_once_with_the_line_left_open() {
    use super::write::whole_lines;
    use crate::framing::OpenLine;
    let open = |len, cr| OpenLine::from_parts(len, cr);
    let none = OpenLine::EMPTY;
    assert_eq!(whole_lines(none, b"a\nbb\n\n", 10), Some((3, none)));
    assert_eq!(whole_lines(none, b"a\r\nbb", 10), Some((1, open(2, false))));
    assert_eq!(whole_lines(none, b"a\nb\r", 10), Some((1, open(2, true))));
    assert_eq!(
        whole_lines(open(3, false), b"xy", 10),
        Some((0, open(5, false)))
    );
    assert_eq!(
        whole_lines(open(3, true), b"\nz", 10),
        Some((1, open(1, false)))
    );
    // One of them might be too long: each needs its own look.
    assert_eq!(whole_lines(open(8, false), b"abc\n", 10), None);
    assert_eq!(whole_lines(none, b"0123456789\n", 10), None);
}

#[test]
fn counted_lines_stop_at_the_owed_bound_as_single_ones_do() {
    for input in [&lines(40)[..], b"a\nb\nc\nd", b"\n\n\n\n\n\n\n"] {
        let mut lp = Loop::new(Mode::Line);
        lp.max_owed = 2 * (REPLY.len() + 1) + 1;
        let mut conn = lp.connection();
        let mut s = Script::with_input(&[input]);
        lp.advance(&mut conn, &mut s, true).unwrap();
        // Taken while under the bound: three replies, the rest kept.
        assert_eq!(lp.stats().messages, 3, "{input:?}");
        assert!(conn.has_unread(), "{input:?}");
    }
}
