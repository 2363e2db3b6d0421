//! Line mode's transitions, with the half-pipe's scripted streams.

use crate::fault::Faults;
use crate::relay::half::tests::{Sink, Source, Step};
use crate::relay::half::{CHUNK_COST, Doom, HalfPipe, LineCx, Pump, Pumped, Shape};
use crate::stats::Counters;
use crate::timer::{Millis, RateLimit};
use crate::vocab::Direction;

/// A line-mode pipe (client to upstream, pair 0) under `faults`, reading
/// `source`, writing `sink` once `connected`.
struct Rig {
    faults: Faults,
    counters: Counters,
    pipe: HalfPipe,
    source: Source,
    sink: Sink,
    connected: bool,
}

impl Rig {
    /// Connected to a sink with room for everything.
    fn new(specs: &[&str], reads: impl IntoIterator<Item = Step>) -> Rig {
        Rig {
            faults: faults(specs),
            counters: Counters::default(),
            pipe: HalfPipe::new(Shape::default(), true),
            source: Source::new(reads),
            sink: Sink::with_room(usize::MAX),
            connected: true,
        }
    }

    /// One pump at `now`.
    fn pump(&mut self, now: Millis) -> Pumped {
        let mut buf = vec![0; 64];
        let mut warnings = RateLimit::default();
        let mut cx = Pump::new(now, &mut buf, 1024);
        cx.lines = Some(LineCx {
            faults: &mut self.faults,
            counters: &self.counters,
            dir: Direction::Up,
            conn: 0,
            max_line: 16,
            warnings: &mut warnings,
        });
        let sink = self.connected.then_some(&mut self.sink);
        self.pipe.pump(&mut self.source, sink, &mut cx).unwrap()
    }

    /// Another read for the source to return.
    fn arrives(&mut self, bytes: &[u8]) {
        self.source.script.push_back(Step::Bytes(bytes.to_vec()));
    }
}

fn faults(specs: &[&str]) -> Faults {
    let parsed: Vec<crate::Fault> = specs.iter().map(|s| s.parse().unwrap()).collect();
    Faults::relaying(1, &parsed, [crate::fault::Relaying::Messages; 2])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bytes(b: &[u8]) -> Step {
    Step::Bytes(b.to_vec())
}

#[test]
fn lines_without_faults_go_straight_and_count_as_messages() {
    let mut rig = Rig::new(&[], [bytes(b"one\ntwo\nthr"), bytes(b"ee\n")]);
    rig.pump(0);
    assert_eq!(rig.sink.got, b"one\ntwo\nthree\n");
    assert_eq!(rig.pipe.held(), 0);
    assert_eq!(rig.counters.snapshot().messages, 3);
}

#[test]
fn a_delayed_line_holds_the_lines_after_it() {
    let faults = ["tcp:delay=100,every=2,dir=up"];
    let mut rig = Rig::new(&faults, [bytes(b"one\ntwo\nthree\n")]);
    rig.pump(0);
    assert_eq!(
        rig.sink.got, b"one\n",
        "the second line waits, the third behind it"
    );
    assert_eq!(rig.pipe.wake_at(), Some(101));
    rig.pump(101);
    assert_eq!(rig.sink.got, b"one\ntwo\nthree\n");
}

#[test]
fn a_line_is_judged_once_complete() {
    let mut rig = Rig::new(&["tcp:corrupt,dir=up"], [bytes(b"hel")]);
    rig.pump(0);
    assert!(rig.sink.got.is_empty(), "held until its newline");
    rig.arrives(b"lo\n");
    rig.pump(1);
    let got = &rig.sink.got;
    assert_eq!(got.len(), 6);
    assert!(got[..5].iter().zip(b"hello").all(|(a, b)| a != b));
    assert_eq!(got[5], b'\n', "corrupt keeps the newline");
}

#[test]
fn close_reset_truncate_and_hang_end_at_their_line() {
    let run = |spec: &str| {
        let mut rig = Rig::new(&[spec], [bytes(b"one\ntwo\nthree\n"), Step::Eof]);
        let pumped = rig.pump(0);
        (pumped, text(&rig.sink.got), rig.sink.shut)
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
        let long = [b"ok\n".as_slice(), &[b'x'; 40], b"\n"].concat();
        let mut rig = Rig::new(spec, [Step::Bytes(long)]);
        assert_eq!(rig.pump(0), Pumped::Doom(Doom::Close), "{spec:?}");
        assert_eq!(rig.sink.got, b"ok\n", "{spec:?}");
    }
}

#[test]
fn lines_held_before_the_connect_or_by_a_full_sink_go_later() {
    let mut rig = Rig::new(&[], [bytes(b"early\n")]);
    rig.connected = false;
    rig.pump(0);
    assert_eq!(rig.pipe.held(), 6);
    (rig.connected, rig.sink.room) = (true, 3);
    rig.arrives(b"later\n");
    rig.pump(1);
    assert_eq!(rig.sink.got, b"ear");
    rig.sink.room = usize::MAX;
    rig.pump(2);
    assert_eq!(rig.sink.got, b"early\nlater\n");
}

#[test]
fn a_last_line_without_its_newline_is_judged_at_the_fin() {
    let faults = ["tcp:corrupt,every=2,dir=up"];
    let mut rig = Rig::new(&faults, [bytes(b"one\nlast"), Step::Eof]);
    let pumped = rig.pump(0);
    assert_eq!(pumped, Pumped::Ended, "the FIN follows the last line");
    let got = &rig.sink.got;
    assert_eq!(&got[..4], b"one\n");
    assert_eq!(got.len(), 8);
    assert!(
        got[4..].iter().zip(b"last").all(|(a, b)| a != b),
        "every byte"
    );
    assert!(rig.sink.shut);
    assert_eq!(rig.counters.snapshot().messages, 2);
}

#[test]
fn a_shutdown_lets_an_open_line_go_as_it_is() {
    let mut rig = Rig::new(&["tcp:corrupt,dir=up"], [bytes(b"half a li")]);
    rig.pump(0);
    assert!(rig.sink.got.is_empty());
    rig.pipe.finish();
    assert_eq!(rig.pump(1), Pumped::Ended);
    assert_eq!(rig.sink.got, b"half a li");
}

#[test]
fn bytes_held_before_a_fault_came_go_first_as_they_are() {
    let mut rig = Rig::new(&[], [bytes(b"early\n")]);
    // Not connected yet: the line passed, and is held for the sink.
    rig.connected = false;
    rig.pump(0);
    assert_eq!(rig.pipe.held(), 6);
    // A fault now: the next line is held for its delay, the bytes held
    // before go as they are.
    rig.faults = faults(&["tcp:delay=100,dir=up"]);
    rig.arrives(b"next\n");
    rig.pump(1);
    rig.connected = true;
    rig.pump(2);
    assert_eq!(rig.sink.got, b"early\n");
    rig.pump(102);
    assert_eq!(rig.sink.got, b"early\nnext\n");
}

/// The recipe, small: short lines, every second one dribbled, so
/// no two neighbours share a chunk. The bound counts each chunk's size:
/// the source is not read past it, and lines past it wait unjudged.
#[test]
fn short_held_lines_count_their_chunks_against_the_bound() {
    let lines: Vec<u8> = b"x\n".repeat(5_000);
    let reads = lines.chunks(64).map(bytes);
    let mut rig = Rig::new(&["tcp:dribble=1/1000,every=2,dir=up"], reads);
    let bound = 1024 + 16 + 1;
    for now in 0..50 {
        rig.pump(now);
        assert!(
            rig.pipe.backlog() <= bound + CHUNK_COST,
            "{}",
            rig.pipe.backlog()
        );
    }
    let taken = lines.len()
        - rig
            .source
            .script
            .iter()
            .map(|s| match s {
                Step::Bytes(b) => b.len(),
                _ => 0,
            })
            .sum::<usize>();
    assert!(taken <= bound, "read {taken} bytes");
    // Every line judged so far is a chunk: far fewer than read.
    let judged = rig.counters.snapshot().messages as usize;
    assert!(
        judged * (2 + CHUNK_COST) <= bound + 2 + CHUNK_COST,
        "{judged} lines judged"
    );
    // Time lets the dribble go: the lines come out whole and in order.
    for now in (1_000..400_000).step_by(1_000) {
        rig.pump(now);
        assert!(rig.pipe.backlog() <= bound + CHUNK_COST);
    }
    assert!(rig.sink.got.len() > 300, "{}", rig.sink.got.len());
    assert!(rig.sink.got.chunks(2).all(|l| l == b"x\n"));
}

/// Once a fault has held lines the direction keeps its chunks; with the
/// faults gone, a line passes straight, and what of it the sink would not
/// take is one chunk, to go when the sink drains. A line it took whole
/// leaves no chunk behind.
#[test]
fn a_line_passed_straight_keeps_what_the_sink_left_as_one_chunk() {
    let mut rig = Rig::new(&["tcp:delay=5,dir=up"], [bytes(b"held\n")]);
    rig.pump(0);
    assert!(rig.sink.got.is_empty());
    rig.pump(6);
    assert_eq!(rig.sink.got, b"held\n");
    rig.faults = faults(&[]);
    rig.arrives(b"whole\n");
    rig.pump(7);
    assert_eq!(text(&rig.sink.got), "held\nwhole\n");
    let chunks = |rig: &Rig| rig.pipe.shaped.as_ref().map_or(0, |s| s.chunks.len());
    assert_eq!(chunks(&rig), 0, "taken whole: no chunk");
    rig.sink.room = 3;
    rig.arrives(b"partly\n");
    rig.pump(8);
    assert_eq!(text(&rig.sink.got), "held\nwhole\npar");
    assert_eq!((rig.pipe.held(), chunks(&rig)), (4, 1));
    rig.sink.room = usize::MAX;
    rig.pump(9);
    assert_eq!(text(&rig.sink.got), "held\nwhole\npartly\n");
    assert_eq!((rig.pipe.held(), chunks(&rig)), (0, 0));
}
