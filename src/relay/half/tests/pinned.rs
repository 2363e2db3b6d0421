//! The half-pipe's comparisons and arithmetic, pinned: what a pump
//! counts, copies, holds and asks of the sink, exactly, where the
//! scenario tests only see the bytes come out right.

use super::*;

/// A pump's counts, and what it held and asked for.
fn pump_counting(
    pipe: &mut HalfPipe,
    source: &mut Source,
    sink: Option<&mut Sink>,
    (now, max_owed): (Millis, usize),
) -> (Pumped, u64, u64) {
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(now, &mut buf, max_owed);
    let pumped = pipe.pump(source, sink, &mut cx).unwrap();
    (pumped, cx.read, cx.written)
}

fn delayed(ms: u64) -> HalfPipe {
    HalfPipe::shaped(Shape {
        delay_ms: ms,
        ..Shape::default()
    })
}

#[test]
fn a_short_write_keeps_only_the_unwritten_bytes_and_stops() {
    // Plain, corrupted or truncated (past the read), the bytes go
    // straight from the buffer.
    for shape in [
        Shape::default(),
        Shape {
            corrupt: Some(3),
            ..Shape::default()
        },
        Shape {
            truncate: Some(1000),
            ..Shape::default()
        },
    ] {
        let mut pipe = HalfPipe::shaped(shape.clone());
        let mut source = Source::new([Step::Bytes(vec![5; 40]), Step::Bytes(vec![6; 40])]);
        let mut sink = Sink::with_room(10);
        let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (0, 1024));
        assert_eq!(counts, (Pumped::Waiting, 40, 10), "{shape:?}");
        assert_eq!(pipe.held(), 30);
        // Straight from the buffer: only the 30 unwritten bytes copied.
        assert_eq!((pipe.rest.len(), pipe.rest_at), (30, 0), "{shape:?}");
        assert!(pipe.wants_writable());
        // 7, 3, then WouldBlock: the pump stops there, no retry.
        assert_eq!((source.reads, sink.writes), (1, 3), "{shape:?}");
    }
}

#[test]
fn a_whole_write_leaves_nothing_and_asks_for_no_writable() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(vec![1; 21])]);
    let mut sink = Sink::with_room(21);
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (0, 1024));
    assert_eq!(counts, (Pumped::Waiting, 21, 21));
    assert!(
        !pipe.wants_writable(),
        "written to the last byte: not blocked"
    );
    assert_eq!(pipe.rest.capacity(), 0);
}

#[test]
fn unconnected_bytes_are_held_without_waiting_for_writable() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(vec![2; 12])]);
    let counts = pump_counting(&mut pipe, &mut source, None, (0, 1024));
    assert_eq!(counts, (Pumped::Waiting, 12, 0));
    assert_eq!(pipe.held(), 12);
    assert!(!pipe.wants_writable(), "no sink to wait for");
}

#[test]
fn a_truncate_counts_what_it_took_across_reads() {
    // 1 byte, then 7: the count is 1 + 6, cut at exactly 6.
    let mut pipe = HalfPipe::shaped(Shape {
        truncate: Some(6),
        ..Shape::default()
    });
    let mut source = Source::new([
        Step::Bytes(b"a".to_vec()),
        Step::Block,
        Step::Bytes(b"bcdefgh".to_vec()),
    ]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 0),
        Pumped::Waiting
    );
    assert_eq!(sink.got, b"a");
    assert!(!sink.shut, "1 of 6: not cut");
    assert_eq!(pump_at(&mut pipe, &mut source, &mut sink, 0), Pumped::Cut);
    assert_eq!(sink.got, b"abcdef");
    // Exactly the count in one read: cut at once, with nothing to spare.
    let mut pipe = HalfPipe::shaped(Shape {
        truncate: Some(3),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"xyz".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(pump_at(&mut pipe, &mut source, &mut sink, 0), Pumped::Cut);
    assert_eq!((sink.got.as_slice(), source.reads), (&b"xyz"[..], 1));
}

#[test]
fn a_corrupted_stream_keeps_its_offsets_across_reads() {
    let shape = Shape {
        corrupt: Some(9),
        ..Shape::default()
    };
    let mut whole = HalfPipe::shaped(shape.clone());
    let mut source = Source::new([Step::Bytes(b"abcdef".to_vec())]);
    let mut once = Sink::with_room(usize::MAX);
    pump_at(&mut whole, &mut source, &mut once, 0);
    let mut split = HalfPipe::shaped(shape);
    let steps = [b"ab", b"cd", b"ef"].map(|b| [Step::Bytes(b.to_vec()), Step::Block]);
    let mut source = Source::new(steps.into_iter().flatten());
    let mut pieces = Sink::with_room(usize::MAX);
    for _ in 0..3 {
        pump_at(&mut split, &mut source, &mut pieces, 0);
    }
    assert_eq!(pieces.got, once.got);
}

#[test]
fn delayed_bytes_go_exactly_when_due_and_count_as_written() {
    let mut pipe = delayed(10);
    let mut source = Source::new([Step::Bytes(vec![4; 10])]);
    let mut sink = Sink::with_room(usize::MAX);
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (0, 1024));
    assert_eq!(counts, (Pumped::Waiting, 10, 0));
    assert_eq!(pipe.wake_at(), Some(11));
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (10, 1024));
    assert_eq!((counts.2, sink.writes), (0, 0), "not due at 10");
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (11, 1024));
    assert_eq!(counts.2, 10, "due at 11: written, and counted");
    assert!(!pipe.wants_writable(), "all of it went");
    assert_eq!((pipe.held(), pipe.rest.capacity()), (0, 0));
}

#[test]
fn held_bytes_the_sink_takes_in_part_wait_for_writable() {
    let mut pipe = delayed(10);
    let mut source = Source::new([Step::Bytes(vec![4; 10])]);
    let mut sink = Sink::with_room(4);
    pump_counting(&mut pipe, &mut source, Some(&mut sink), (0, 1024));
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (11, 1024));
    assert_eq!(counts.2, 4);
    assert!(pipe.wants_writable());
    assert_eq!(
        pipe.wake_at(),
        None,
        "waiting for the socket, not the clock"
    );
    sink.room = usize::MAX;
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (12, 1024));
    assert_eq!(counts.2, 6);
    assert!(!pipe.wants_writable());
}

#[test]
fn the_rest_drops_what_went_out_once_it_is_as_long_as_what_is_left() {
    // Two reads a millisecond apart: two chunks, due at 11 and 12.
    for (second, kept) in [(10, 10), (20, 30)] {
        let mut pipe = delayed(10);
        let mut source = Source::new([
            Step::Bytes(vec![1; 10]),
            Step::Block,
            Step::Bytes(vec![2; second]),
        ]);
        let mut sink = Sink::with_room(usize::MAX);
        pump_counting(&mut pipe, &mut source, Some(&mut sink), (0, 1024));
        pump_counting(&mut pipe, &mut source, Some(&mut sink), (1, 1024));
        assert_eq!(pipe.rest.len(), 10 + second);
        pump_counting(&mut pipe, &mut source, Some(&mut sink), (11, 1024));
        assert_eq!(sink.got, vec![1; 10]);
        // 10 out and 10 left: dropped; 10 out and 20 left: kept as is.
        assert_eq!(pipe.rest.len(), kept, "second read {second}");
        assert_eq!(pipe.held(), second);
        pump_counting(&mut pipe, &mut source, Some(&mut sink), (12, 1024));
        assert_eq!(&sink.got[10..], vec![2; second]);
    }
}

#[test]
fn a_dribble_sends_its_pieces_no_larger_and_no_sooner() {
    let mut pipe = HalfPipe::shaped(Shape {
        dribble: Some((3, 20)),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"abcdefg".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    let counts = pump_counting(&mut pipe, &mut source, Some(&mut sink), (100, 1024));
    assert_eq!(counts, (Pumped::Waiting, 7, 3));
    assert!(!pipe.wants_writable(), "a whole piece went: not blocked");
    assert_eq!(pipe.wake_at(), Some(121));
    for (now, got) in [(120, 3), (121, 6), (141, 6), (142, 7)] {
        pump_counting(&mut pipe, &mut source, Some(&mut sink), (now, 1024));
        assert_eq!(sink.got.len(), got, "at {now}");
    }
    assert_eq!(sink.got, b"abcdefg");
}

#[test]
fn a_delay_with_nothing_kept_holds_nothing() {
    // A truncate reached and a delay: the bytes past the count make no
    // chunk, so nothing waits for the clock.
    let mut pipe = HalfPipe::shaped(Shape {
        delay_ms: 50,
        truncate: Some(0),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"dropped".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(pump_at(&mut pipe, &mut source, &mut sink, 0), Pumped::Cut);
    assert!(pipe.shaped.as_ref().unwrap().chunks.is_empty());
    assert!(sink.got.is_empty());
}

/// With a journal, each write straight to the sink is one line of the
/// bytes written, and a write the sink took nothing of is none.
#[test]
#[cfg(feature = "journal")]
fn the_journal_records_what_each_straight_write_took() {
    use crate::journal::recording::recording;
    use crate::relay::journal::{PairLog, Tap};
    use crate::vocab::Direction;
    use std::cell::RefCell;
    let (journal, seen) = recording(|_| {});
    let journal = RefCell::new(journal);
    let mut log = PairLog::new("127.0.0.1:9".parse().unwrap(), None, false);
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(b"first".to_vec()), Step::Block]);
    let mut sink = Sink::with_room(0);
    let mut pump_tapped = |pipe: &mut HalfPipe, source: &mut Source, sink: &mut Sink| {
        let mut buf = vec![0; 64];
        let mut cx = Pump::new(0, &mut buf, 1024);
        cx.tap = Some(Tap {
            journal: &journal,
            now: 0,
            conn: 1,
            dir: Direction::Up,
            log: &mut log,
        });
        pipe.pump(source, Some(sink), &mut cx).unwrap();
    };
    pump_tapped(&mut pipe, &mut source, &mut sink);
    assert!(seen.lock().unwrap().is_empty(), "nothing taken: no line");
    // Held now, and still not taken: no line either.
    pump_tapped(&mut pipe, &mut source, &mut sink);
    assert!(seen.lock().unwrap().is_empty(), "nothing taken: no line");
    sink.room = usize::MAX;
    pump_tapped(&mut pipe, &mut source, &mut sink);
    source.script.push_back(Step::Bytes(b"second".to_vec()));
    pump_tapped(&mut pipe, &mut source, &mut sink);
    let lines: Vec<Vec<u8>> = seen.lock().unwrap().iter().map(|l| l.2.clone()).collect();
    assert_eq!(lines, [b"first".to_vec(), b"second".to_vec()]);
}
