//! Time passed in: idle deadlines, the lingering close and its cap,
//! fault waits.

use super::*;

#[test]
fn idle_means_no_bytes_moved_either_way() {
    let idle = Some(1_000);
    let mut lp = Loop::new(Mode::Line);
    lp.now = 100;
    let mut conn = lp.connection();
    assert_eq!(conn.deadline(lp.now, idle), Some(1_100), "from the accept");
    assert_eq!(conn.deadline(lp.now, None), None, "no idle timeout");
    lp.now = 300;
    let mut s = Script::with_input(&[&lines(3)]).room(9);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(
        conn.deadline(lp.now, idle),
        Some(1_300),
        "bytes arrived at 300"
    );
    // No input since, but the client drains its replies slowly: each
    // write moves the deadline.
    lp.now = 900;
    s.room = 9;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(
        conn.deadline(lp.now, idle),
        Some(1_900),
        "bytes left at 900"
    );
    // A writable event that writes nothing moves nothing.
    lp.now = 1_000;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(conn.deadline(lp.now, idle), Some(1_900));
}

#[test]
fn lingering_ends_linger_ms_after_the_peers_last_bytes() {
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    lp.now = 50;
    let mut s = Script::with_input(&[b"hi"]).room(100);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(lingering(&conn));
    assert_eq!(conn.deadline(lp.now, Some(10_000)), Some(50 + LINGER_MS));
    assert_eq!(
        conn.deadline(lp.now, None),
        Some(50 + LINGER_MS),
        "idle or not"
    );
    // Input while lingering is discarded and moves the linger deadline.
    lp.now = 80;
    s.push(b"late");
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(s.written, REPLY, "no second reply");
    assert_eq!(conn.deadline(lp.now, None), Some(80 + LINGER_MS));
}

#[test]
fn a_closing_connection_with_replies_owed_keeps_its_idle_deadline() {
    let idle = Some(1_000);
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    lp.now = 100;
    let mut s = Script::with_input(&[b"hi"]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(closing(&conn));
    assert_eq!(conn.deadline(lp.now, idle), Some(1_100));
    assert_eq!(
        conn.deadline(lp.now, None),
        None,
        "no idle timeout: no deadline"
    );
}

#[test]
fn a_delay_at_the_end_of_time_neither_overflows_nor_wakes() {
    let mut lp = Loop::new(Mode::Line);
    lp.faults = Faults::new(1, &["tcp:delay=18446744073709551615".parse().unwrap()]);
    lp.now = 5;
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\n"]).room(100);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(s.written.is_empty(), "held back");
    assert_eq!(conn.wake_at(), Some(u64::MAX));
    assert!(!conn.wants_writable(), "waiting on time, not on the socket");
    assert_eq!(
        conn.expiry(lp.now, Some(1_000)),
        None,
        "owed a delayed reply: not idle"
    );
}

#[test]
fn a_peer_that_keeps_sending_is_lingered_for_at_most_the_cap() {
    let mut lp = Loop::new(Mode::Once);
    lp.now = 50;
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"hi"]).room(100);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(lingering(&conn));
    // A byte every second: each one would move a silence-only deadline.
    for second in 1..=40 {
        lp.now = 50 + second * 1_000;
        s.push(b"x");
        lp.advance(&mut conn, &mut s, true).unwrap();
        let deadline = conn
            .deadline(lp.now, None)
            .expect("lingering has a deadline");
        assert!(
            deadline <= 50 + LINGER_CAP_MS,
            "at {} ms the close is due at {deadline} ms",
            lp.now
        );
    }
    assert_eq!(conn.deadline(lp.now, None), Some(50 + LINGER_CAP_MS));
    assert_eq!(s.written, REPLY, "one reply, the rest discarded");
}

#[test]
fn the_idle_timeout_counts_from_the_end_of_a_delay() {
    let idle = Some(1_000);
    let mut lp = Loop::new(Mode::Line);
    lp.faults = Faults::new(1, &["tcp:delay=5000".parse().unwrap()]);
    lp.now = 100;
    let mut conn = lp.connection();
    // The client sends a line and reads nothing: its reply, once due,
    // will not fit.
    let mut s = Script::with_input(&[b"a\n"]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(
        conn.deadline(lp.now, idle),
        Some(5_101),
        "the delay, not idle"
    );
    lp.now = 5_101;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert!(conn.wants_writable(), "due, but the socket takes nothing");
    assert_eq!(
        conn.deadline(lp.now, idle),
        Some(6_101),
        "idle from the end of the wait, not from the line at 100"
    );
}
