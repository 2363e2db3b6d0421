//! The arrows of the module docs' diagram, one by one, with the phase
//! each leaves the connection in.

use super::*;

fn paused(conn: &Connection) -> bool {
    matches!(conn.phase(), Phase::Open { paused: true, .. })
}

#[test]
fn open_pauses_at_the_bound_and_resumes_when_the_replies_drain() {
    let mut lp = Loop::new(Mode::Line);
    lp.max_owed = 9;
    let mut conn = lp.connection();
    assert_eq!(conn.phase(), Phase::OPEN);
    let mut s = Script::with_input(&[&lines(3)]).room(0);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert!(paused(&conn), "{:?}", conn.phase());
    s.room = usize::MAX;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert_eq!(conn.phase(), Phase::OPEN, "resumed, every line answered");
    assert_eq!(s.written, line_replies(3));
}

#[test]
fn the_peers_eof_makes_closing_end_in_a_close_not_a_linger() {
    let mut lp = Loop::new(Mode::Line);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\n"]).room(0);
    s.eof = true;
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(conn.phase(), Phase::Closing { peer_eof: true });
    s.room = usize::MAX;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, false),
        Err(Close::Done)
    ));
    assert!(!s.shut_down.get(), "no FIN for a peer that has gone");
}

#[test]
fn closing_writes_then_lingers_from_the_moment_it_sends_its_fin() {
    let mut lp = Loop::new(Mode::Once);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"hi"]).room(3);
    lp.now = 40;
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(conn.phase(), Phase::Closing { peer_eof: false });
    lp.now = 70;
    s.room = usize::MAX;
    lp.advance(&mut conn, &mut s, false).unwrap();
    assert!(s.shut_down.get());
    assert_eq!(
        conn.phase(),
        Phase::Lingering {
            since: Stamp::of(70)
        }
    );
    s.eof = true;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Done)
    ));
}

#[test]
fn hanging_reads_and_discards_until_the_peers_eof() {
    let mut lp = Loop::new(Mode::Line);
    lp.faults = Faults::new(1, &["tcp:hang".parse().unwrap()]);
    let mut conn = lp.connection();
    let mut s = Script::with_input(&[b"a\nb\n"]).room(usize::MAX);
    lp.advance(&mut conn, &mut s, true).unwrap();
    assert_eq!(conn.phase(), Phase::Hanging);
    assert!(s.written.is_empty());
    s.push(b"more\n");
    s.eof = true;
    assert!(matches!(
        lp.advance(&mut conn, &mut s, true),
        Err(Close::Done)
    ));
    assert!(s.input.is_empty(), "read to the end");
}
