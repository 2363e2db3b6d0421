//! Line mode's transitions, with the half-pipe's scripted streams.

use crate::fault::Faults;
use crate::relay::Direction;
use crate::relay::half::tests::{Sink, Source, Step};
use crate::relay::half::{Doom, HalfPipe, LineCx, Pump, Pumped, Shape};
use crate::stats::Counters;
use crate::timer::{Millis, RateLimit};

/// One pump at `now` of a line-mode pipe (client to upstream, pair 0)
/// under `faults`, into `sink` (or none: not connected yet).
fn pump_lines(
    pipe: &mut HalfPipe,
    source: &mut Source,
    sink: Option<&mut Sink>,
    (faults, counters): (&mut Faults, &Counters),
    now: Millis,
) -> Pumped {
    let mut buf = vec![0; 64];
    let mut warnings = RateLimit::default();
    let mut cx = Pump::new(now, &mut buf, 1024);
    cx.lines = Some(LineCx {
        faults,
        counters,
        dir: Direction::Up,
        conn: 0,
        max_line: 16,
        warnings: &mut warnings,
    });
    pipe.pump(source, sink, &mut cx).unwrap()
}

fn faults(specs: &[&str]) -> Faults {
    let parsed: Vec<crate::Fault> = specs.iter().map(|s| s.parse().unwrap()).collect();
    Faults::relaying(1, &parsed, [crate::fault::Relaying::Messages; 2])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn lines_without_faults_go_straight_and_count_as_messages() {
    let (mut set, counters) = (faults(&[]), Counters::default());
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let reads = [b"one\ntwo\nthr".to_vec(), b"ee\n".to_vec()];
    let mut source = Source::new(reads.map(Step::Bytes));
    let mut sink = Sink::with_room(usize::MAX);
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        0,
    );
    assert_eq!(sink.got, b"one\ntwo\nthree\n");
    assert_eq!(pipe.held(), 0);
    assert_eq!(counters.snapshot().messages, 3);
}

#[test]
fn a_delayed_line_holds_the_lines_after_it() {
    let (mut set, counters) = (
        faults(&["tcp:delay=100,every=2,dir=up"]),
        Counters::default(),
    );
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let mut source = Source::new([Step::Bytes(b"one\ntwo\nthree\n".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        0,
    );
    assert_eq!(
        sink.got, b"one\n",
        "the second line waits, the third behind it"
    );
    assert_eq!(pipe.wake_at(), Some(101));
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        101,
    );
    assert_eq!(sink.got, b"one\ntwo\nthree\n");
}

#[test]
fn a_line_is_judged_once_complete() {
    let (mut set, counters) = (faults(&["tcp:corrupt,dir=up"]), Counters::default());
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let mut source = Source::new([Step::Bytes(b"hel".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        0,
    );
    assert!(sink.got.is_empty(), "held until its newline");
    source.script.push_back(Step::Bytes(b"lo\n".to_vec()));
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        1,
    );
    assert_eq!(sink.got.len(), 6);
    assert!(sink.got[..5].iter().zip(b"hello").all(|(a, b)| a != b));
    assert_eq!(sink.got[5], b'\n', "corrupt keeps the newline");
}

#[test]
fn close_reset_truncate_and_hang_end_at_their_line() {
    let run = |spec: &str| {
        let (mut set, counters) = (faults(&[spec]), Counters::default());
        let mut pipe = HalfPipe::new(Shape::default(), true);
        let reads = [Step::Bytes(b"one\ntwo\nthree\n".to_vec()), Step::Eof];
        let mut source = Source::new(reads);
        let mut sink = Sink::with_room(usize::MAX);
        let cx = (&mut set, &counters);
        let pumped = pump_lines(&mut pipe, &mut source, Some(&mut sink), cx, 0);
        (pumped, text(&sink.got), sink.shut)
    };
    let close = (Pumped::Doom(Doom::Close), "one\n".to_string(), false);
    assert_eq!(run("tcp:close,every=2,dir=up"), close);
    let reset = (Pumped::Doom(Doom::Reset), String::new(), false);
    assert_eq!(run("tcp:reset,first=1,dir=up"), reset);
    let cut = (Pumped::Cut, "one\ntw".to_string(), true);
    assert_eq!(run("tcp:truncate=2,every=2,dir=up"), cut);
    let hang = (Pumped::Waiting, "one\n".to_string(), false);
    assert_eq!(run("tcp:hang,every=2,dir=up"), hang);
}

#[test]
fn a_line_over_max_line_closes_after_the_lines_before_it() {
    for spec in [&[][..], &["tcp:delay=0,dir=up"]] {
        let (mut set, counters) = (faults(spec), Counters::default());
        let mut pipe = HalfPipe::new(Shape::default(), true);
        let long = [b"ok\n".as_slice(), &[b'x'; 40], b"\n"].concat();
        let mut source = Source::new([Step::Bytes(long)]);
        let mut sink = Sink::with_room(usize::MAX);
        let cx = (&mut set, &counters);
        let pumped = pump_lines(&mut pipe, &mut source, Some(&mut sink), cx, 0);
        assert_eq!(pumped, Pumped::Doom(Doom::Close), "{spec:?}");
        assert_eq!(sink.got, b"ok\n", "{spec:?}");
    }
}

#[test]
fn lines_held_before_the_connect_or_by_a_full_sink_go_later() {
    let (mut set, counters) = (faults(&[]), Counters::default());
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let mut source = Source::new([Step::Bytes(b"early\n".to_vec())]);
    pump_lines(&mut pipe, &mut source, None, (&mut set, &counters), 0);
    assert_eq!(pipe.held(), 6);
    let mut sink = Sink::with_room(3);
    source.script.push_back(Step::Bytes(b"later\n".to_vec()));
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        1,
    );
    assert_eq!(sink.got, b"ear");
    sink.room = usize::MAX;
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        2,
    );
    assert_eq!(sink.got, b"early\nlater\n");
}

#[test]
fn a_last_line_without_its_newline_is_judged_at_the_fin() {
    let (mut set, counters) = (faults(&["tcp:corrupt,every=2,dir=up"]), Counters::default());
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let reads = [Step::Bytes(b"one\nlast".to_vec()), Step::Eof];
    let mut source = Source::new(reads);
    let mut sink = Sink::with_room(usize::MAX);
    let pumped = pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        0,
    );
    assert_eq!(pumped, Pumped::Ended, "the FIN follows the last line");
    assert_eq!(&sink.got[..4], b"one\n");
    assert_eq!(sink.got.len(), 8);
    assert!(
        sink.got[4..].iter().zip(b"last").all(|(a, b)| a != b),
        "every byte"
    );
    assert!(sink.shut);
    assert_eq!(counters.snapshot().messages, 2);
}

#[test]
fn a_shutdown_lets_an_open_line_go_as_it_is() {
    let (mut set, counters) = (faults(&["tcp:corrupt,dir=up"]), Counters::default());
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let mut source = Source::new([Step::Bytes(b"half a li".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        0,
    );
    assert!(sink.got.is_empty());
    pipe.finish();
    let pumped = pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut set, &counters),
        1,
    );
    assert_eq!(pumped, Pumped::Ended);
    assert_eq!(sink.got, b"half a li");
}

#[test]
fn bytes_held_before_a_fault_came_go_first_as_they_are() {
    let counters = Counters::default();
    let mut pipe = HalfPipe::new(Shape::default(), true);
    let mut source = Source::new([Step::Bytes(b"early\n".to_vec())]);
    let mut none = faults(&[]);
    // Not connected yet: the line passed, and is held for the sink.
    pump_lines(&mut pipe, &mut source, None, (&mut none, &counters), 0);
    assert_eq!(pipe.held(), 6);
    // A fault now: the next line is held for its delay, the bytes held
    // before go as they are.
    let mut delay = faults(&["tcp:delay=100,dir=up"]);
    source.script.push_back(Step::Bytes(b"next\n".to_vec()));
    pump_lines(&mut pipe, &mut source, None, (&mut delay, &counters), 1);
    let mut sink = Sink::with_room(usize::MAX);
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut delay, &counters),
        2,
    );
    assert_eq!(sink.got, b"early\n");
    pump_lines(
        &mut pipe,
        &mut source,
        Some(&mut sink),
        (&mut delay, &counters),
        102,
    );
    assert_eq!(sink.got, b"early\nnext\n");
}
