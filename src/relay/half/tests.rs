//! The half-pipe's transitions, with scripted streams: no sockets.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};

use super::*;

/// What a scripted source does on each read, in order; when the script
/// runs out it blocks.
#[derive(Debug)]
pub(super) enum Step {
    Bytes(Vec<u8>),
    Block,
    Eof,
    Fail(ErrorKind),
}

#[derive(Debug, Default)]
pub(super) struct Source {
    pub(super) script: VecDeque<Step>,
    /// Reads made, `WouldBlock` ones included.
    pub(super) reads: usize,
}

impl Source {
    pub(super) fn new(script: impl IntoIterator<Item = Step>) -> Source {
        Source {
            script: script.into_iter().collect(),
            reads: 0,
        }
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(!buf.is_empty(), "never read into an empty buffer");
        self.reads += 1;
        match self.script.pop_front() {
            None | Some(Step::Block) => Err(ErrorKind::WouldBlock.into()),
            Some(Step::Eof) => Ok(0),
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(Step::Bytes(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.script.push_front(Step::Bytes(bytes.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

/// A sink that takes `room` more bytes, then blocks.
#[derive(Debug, Default)]
pub(super) struct Sink {
    pub(super) got: Vec<u8>,
    pub(super) room: usize,
    pub(super) shut: bool,
    fail: Option<ErrorKind>,
    /// Writes tried, `WouldBlock` ones included.
    pub(super) writes: usize,
}

impl Sink {
    pub(super) fn with_room(room: usize) -> Sink {
        Sink {
            room,
            ..Sink::default()
        }
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        assert!(!self.shut, "write after our FIN");
        self.writes += 1;
        if let Some(kind) = self.fail {
            return Err(kind.into());
        }
        if self.room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(self.room).min(7); // short writes, always
        self.got.extend_from_slice(&bytes[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl super::Sink for Sink {
    fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(kind) = self.fail {
            return Err(kind.into());
        }
        self.shut = true;
        Ok(())
    }
}

/// One pump with a buffer of `buf_len` and a bound of `max_owed`.
pub(super) fn pump(
    pipe: &mut HalfPipe,
    source: &mut Source,
    sink: Option<&mut Sink>,
    (buf_len, max_owed): (usize, usize),
) -> Result<Pumped, Broken> {
    let mut buf = vec![0; buf_len];
    let mut cx = Pump::new(0, &mut buf, max_owed);
    pipe.pump(source, sink, &mut cx)
}

pub(super) const ROOMY: (usize, usize) = (64, 1024);

#[test]
fn bytes_flow_through_and_nothing_is_held() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(b"hello, upstream".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    assert_eq!(sink.got, b"hello, upstream");
    assert_eq!(pipe.held(), 0);
    assert_eq!(pipe.rest.capacity(), 0, "a flowing pipe holds no buffer");
    assert!(!pipe.wants_writable());
}

#[test]
fn the_counts_of_a_pump_are_what_moved() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(vec![1; 30])]);
    let mut sink = Sink::with_room(10);
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(0, &mut buf, 1024);
    pipe.pump(&mut source, Some(&mut sink), &mut cx).unwrap();
    assert_eq!((cx.read, cx.written), (30, 10));
    assert_eq!(pipe.held(), 20);
}

#[test]
fn a_full_sink_keeps_the_rest_and_stops_reading_the_source() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(vec![b'a'; 40]), Step::Bytes(vec![b'b'; 40])]);
    let mut sink = Sink::with_room(10);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    assert_eq!(pipe.held(), 30, "only the unwritten rest is kept");
    assert!(pipe.wants_writable());
    assert_eq!(source.reads, 1, "not read while a rest is held");
    // The sink drains: the rest goes first, then the source is read again
    // (no readable event would report the bytes left in it).
    sink.room = usize::MAX;
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    let mut expected = vec![b'a'; 40];
    expected.extend([b'b'; 40]);
    assert_eq!(sink.got, expected);
    assert_eq!(pipe.held(), 0);
    assert_eq!(pipe.rest.capacity(), 0, "drained: the memory goes back");
}

#[test]
fn the_rest_never_exceeds_the_bound() {
    for max_owed in [1, 5, 64, 100] {
        let mut pipe = HalfPipe::default();
        let mut source = Source::new([Step::Bytes(vec![7; 500])]);
        // Not connected yet: everything read is held.
        let pumped = pump(&mut pipe, &mut source, None::<&mut Sink>, (64, max_owed)).unwrap();
        assert_eq!(pumped, Pumped::Waiting, "max_owed {max_owed}");
        assert_eq!(pipe.held(), max_owed, "max_owed {max_owed}");
        // A sink that takes nothing: still nothing more is read.
        let mut sink = Sink::with_room(0);
        pump(&mut pipe, &mut source, Some(&mut sink), (64, max_owed)).unwrap();
        assert_eq!(pipe.held(), max_owed, "max_owed {max_owed}");
    }
}

#[test]
fn bytes_sent_before_the_connect_go_first_once_connected() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(b"early ".to_vec())]);
    pump(&mut pipe, &mut source, None::<&mut Sink>, ROOMY).unwrap();
    assert_eq!(pipe.held(), 6);
    assert!(!pipe.ended());
    source.script.push_back(Step::Bytes(b"later".to_vec()));
    let mut sink = Sink::with_room(usize::MAX);
    pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(sink.got, b"early later");
}

#[test]
fn the_fin_is_passed_on_after_the_bytes_before_it() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(vec![3; 20]), Step::Eof]);
    let mut sink = Sink::with_room(8);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    assert!(!sink.shut, "bytes still held: no FIN yet");
    assert_eq!(source.reads, 1);
    sink.room = usize::MAX;
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Ended);
    assert_eq!(sink.got, vec![3; 20]);
    assert!(sink.shut && pipe.ended());
    // Over: further pumps read nothing.
    let reads = source.reads;
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Ended);
    assert_eq!(source.reads, reads);
}

#[test]
fn a_fin_before_the_connect_waits_for_it() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(b"bye".to_vec()), Step::Eof]);
    let pumped = pump(&mut pipe, &mut source, None::<&mut Sink>, ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    assert!(!pipe.ended());
    let mut sink = Sink::with_room(usize::MAX);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Ended);
    assert_eq!(sink.got, b"bye");
    assert!(sink.shut);
}

#[test]
fn a_source_reset_breaks_the_pipe() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([
        Step::Bytes(b"x".to_vec()),
        Step::Fail(ErrorKind::ConnectionReset),
    ]);
    let mut sink = Sink::with_room(usize::MAX);
    let broken = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap_err();
    assert!(matches!(broken, Broken::Source(e) if e.kind() == ErrorKind::ConnectionReset));
    assert_eq!(sink.got, b"x", "bytes before the reset went through");
}

#[test]
fn a_sink_reset_breaks_the_pipe() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([Step::Bytes(b"x".to_vec())]);
    let mut sink = Sink {
        fail: Some(ErrorKind::BrokenPipe),
        ..Sink::with_room(usize::MAX)
    };
    let broken = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap_err();
    assert!(matches!(broken, Broken::Sink(e) if e.kind() == ErrorKind::BrokenPipe));
}

#[test]
fn a_drained_source_waits_for_its_next_event() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([
        Step::Bytes(b"one".to_vec()),
        Step::Block,
        Step::Bytes(b"two".to_vec()),
    ]);
    let mut sink = Sink::with_room(usize::MAX);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    assert_eq!(sink.got, b"one");
    pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(sink.got, b"onetwo");
}

#[test]
fn interrupted_reads_are_retried() {
    let mut pipe = HalfPipe::default();
    let mut source = Source::new([
        Step::Fail(ErrorKind::Interrupted),
        Step::Bytes(b"ok".to_vec()),
    ]);
    let mut sink = Sink::with_room(usize::MAX);
    pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(sink.got, b"ok");
}

#[test]
fn a_fast_source_is_cut_short_by_the_budget() {
    let mut pipe = HalfPipe::default();
    let chunks = (0..READS_PER_PUMP + 3).map(|_| Step::Bytes(vec![1; 64]));
    let mut source = Source::new(chunks);
    let mut sink = Sink::with_room(usize::MAX);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::StillReady);
    assert_eq!(source.reads, READS_PER_PUMP);
    let pumped = pump(&mut pipe, &mut source, Some(&mut sink), ROOMY).unwrap();
    assert_eq!(pumped, Pumped::Waiting);
    assert_eq!(sink.got.len(), (READS_PER_PUMP + 3) * 64);
}

// ----- faults on a direction ---------------------------------------------

/// One pump at `now` of a shaped pipe into a sink that takes everything.
pub(super) fn pump_at(
    pipe: &mut HalfPipe,
    source: &mut Source,
    sink: &mut Sink,
    now: Millis,
) -> Pumped {
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(now, &mut buf, 1024);
    pipe.pump(source, Some(sink), &mut cx).unwrap()
}

#[test]
fn a_delay_holds_every_byte_that_long_after_it_arrived() {
    let mut pipe = HalfPipe::shaped(Shape {
        delay_ms: 100,
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"first".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 10),
        Pumped::Waiting
    );
    assert!(sink.got.is_empty());
    // Rounded up by the clock's millisecond: a lower bound.
    assert_eq!(pipe.wake_at(), Some(111));
    assert!(
        !pipe.wants_writable(),
        "waiting for time, not for the socket"
    );
    source.script.push_back(Step::Bytes(b"second".to_vec()));
    pump_at(&mut pipe, &mut source, &mut sink, 50);
    assert!(sink.got.is_empty());
    pump_at(&mut pipe, &mut source, &mut sink, 111);
    assert_eq!(sink.got, b"first", "the second bytes are not due yet");
    assert_eq!(pipe.wake_at(), Some(151));
    pump_at(&mut pipe, &mut source, &mut sink, 151);
    assert_eq!(sink.got, b"firstsecond");
    assert_eq!(pipe.wake_at(), None);
}

#[test]
fn delayed_bytes_count_against_the_bound() {
    let mut pipe = HalfPipe::shaped(Shape {
        delay_ms: 100,
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(vec![1; 500])]);
    let mut sink = Sink::with_room(usize::MAX);
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(0, &mut buf, 200);
    pipe.pump(&mut source, Some(&mut sink), &mut cx).unwrap();
    // Read at one time, the bytes are one chunk, whose bookkeeping counts.
    assert_eq!(pipe.held(), 200 - CHUNK_COST);
    assert_eq!(pipe.backlog(), 200);
}

/// A delay holding bytes that came at different times keeps a chunk per
/// time; a line mode fault a chunk per held line. Each costs its size.
#[test]
fn held_chunks_count_against_the_bound_and_stop_the_reading() {
    let mut pipe = HalfPipe::shaped(Shape {
        delay_ms: 10_000,
        ..Shape::default()
    });
    let mut source = Source::new((0..1000).flat_map(|_| [Step::Bytes(vec![1]), Step::Block]));
    let mut sink = Sink::with_room(usize::MAX);
    let max_owed = 1024;
    let mut reads = Vec::new();
    for now in 0..100 {
        let mut buf = vec![0; 64];
        let mut cx = Pump::new(now, &mut buf, max_owed);
        pipe.pump(&mut source, Some(&mut sink), &mut cx).unwrap();
        reads.push(cx.read);
        assert!(pipe.backlog() < max_owed + 1 + CHUNK_COST, "at {now}");
    }
    // A byte a millisecond, each its own chunk: 49 bytes of backlog each.
    let taken = max_owed.div_ceil(1 + CHUNK_COST) as u64;
    assert_eq!(reads.iter().sum::<u64>(), taken);
    assert_eq!(pipe.held() as u64, taken);
    assert!(reads[taken as usize..].iter().all(|&n| n == 0), "{reads:?}");
    assert!(sink.got.is_empty(), "nothing due yet");
    // The first ones come due and go: reading resumes, no further.
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(10_001, &mut buf, max_owed);
    pipe.pump(&mut source, Some(&mut sink), &mut cx).unwrap();
    assert_eq!(sink.got.len(), 1, "the byte of 0 ms");
    assert!(pipe.backlog() < max_owed + 1 + CHUNK_COST);
}

/// A delay that never lets the rest run dry (bytes keep coming as older
/// ones go) does not keep all it ever relayed.
#[test]
fn a_rest_that_never_drains_keeps_only_what_it_holds() {
    let mut pipe = HalfPipe::shaped(Shape {
        delay_ms: 10,
        ..Shape::default()
    });
    let mut source = Source::default();
    let mut sink = Sink::with_room(usize::MAX);
    for now in 0..2_000 {
        source.script.push_back(Step::Bytes(vec![7; 50]));
        let mut buf = vec![0; 64];
        let mut cx = Pump::new(now, &mut buf, 4096);
        pipe.pump(&mut source, Some(&mut sink), &mut cx).unwrap();
        assert!(pipe.held() <= 11 * 50, "at {now}: {}", pipe.held());
        assert!(pipe.rest.len() <= 2 * pipe.held() + 50, "at {now}");
    }
    // Due 11 ms after its read (the clock's millisecond rounds up).
    assert_eq!(sink.got.len(), (2_000 - 11) * 50);
}

#[test]
fn a_dribble_paces_the_stream() {
    let mut pipe = HalfPipe::shaped(Shape {
        dribble: Some((4, 50)),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"0123456789".to_vec()), Step::Eof]);
    let mut sink = Sink::with_room(usize::MAX);
    pump_at(&mut pipe, &mut source, &mut sink, 0);
    assert_eq!(sink.got, b"0123");
    assert_eq!(pipe.wake_at(), Some(51));
    pump_at(&mut pipe, &mut source, &mut sink, 30);
    assert_eq!(sink.got, b"0123", "not before the gap");
    pump_at(&mut pipe, &mut source, &mut sink, 51);
    assert_eq!(sink.got, b"01234567");
    assert!(!sink.shut, "the FIN comes after the last piece");
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 102),
        Pumped::Ended
    );
    assert_eq!(sink.got, b"0123456789");
    assert!(sink.shut);
}

#[test]
fn a_truncate_relays_that_many_bytes_then_cuts() {
    let mut pipe = HalfPipe::shaped(Shape {
        truncate: Some(6),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"abcd".to_vec()), Step::Bytes(b"efgh".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(pump_at(&mut pipe, &mut source, &mut sink, 0), Pumped::Cut);
    assert_eq!(sink.got, b"abcdef");
    assert!(sink.shut);
    let mut zero = HalfPipe::shaped(Shape {
        truncate: Some(0),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"abcd".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(pump_at(&mut zero, &mut source, &mut sink, 0), Pumped::Cut);
    assert!(sink.got.is_empty() && sink.shut);
}

#[test]
fn corrupt_changes_every_byte_the_same_way_at_any_split() {
    let shape = Shape {
        corrupt: Some(42),
        ..Shape::default()
    };
    let text: Vec<u8> = (0..200u8).collect();
    let mut outputs = Vec::new();
    for split in [1, 7, 64, 200] {
        let mut pipe = HalfPipe::shaped(shape.clone());
        let chunks = text.chunks(split).map(|c| Step::Bytes(c.to_vec()));
        let mut source = Source::new(chunks);
        let mut sink = Sink::with_room(usize::MAX);
        while pump_at(&mut pipe, &mut source, &mut sink, 0) == Pumped::StillReady {}
        assert_eq!(sink.got.len(), text.len());
        assert!(
            sink.got.iter().zip(&text).all(|(a, b)| a != b),
            "split {split}"
        );
        outputs.push(sink.got);
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_hang_discards_and_never_passes_the_fin() {
    let mut pipe = HalfPipe::shaped(Shape {
        hang: true,
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(vec![9; 300]), Step::Eof]);
    let mut sink = Sink::with_room(usize::MAX);
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(0, &mut buf, 100);
    assert_eq!(
        pipe.pump(&mut source, Some(&mut sink), &mut cx).unwrap(),
        Pumped::Waiting
    );
    assert_eq!(cx.read, 300, "read and discarded, past the bound");
    assert!(sink.got.is_empty() && !sink.shut && !pipe.ended());
    assert_eq!(pipe.held(), 0);
}

#[test]
fn a_slow_close_holds_the_fin() {
    let mut pipe = HalfPipe::shaped(Shape {
        slow_close_ms: Some(200),
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"bye".to_vec()), Step::Eof]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 5),
        Pumped::Waiting
    );
    assert_eq!(sink.got, b"bye");
    assert!(!sink.shut);
    assert_eq!(pipe.wake_at(), Some(206));
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 205),
        Pumped::Waiting
    );
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 206),
        Pumped::Ended
    );
    assert!(sink.shut);
}

#[test]
fn no_fault_makes_a_plain_pipe() {
    let pipe = HalfPipe::shaped(Shape::default());
    assert!(pipe.shaped.is_none());
    assert_eq!(pipe.wake_at(), None);
}

#[test]
fn a_shutdown_ends_a_hanging_direction_with_its_fin() {
    let mut pipe = HalfPipe::shaped(Shape {
        hang: true,
        ..Shape::default()
    });
    let mut source = Source::new([Step::Bytes(b"ignored".to_vec())]);
    let mut sink = Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 0),
        Pumped::Waiting
    );
    pipe.finish();
    assert_eq!(pump_at(&mut pipe, &mut source, &mut sink, 1), Pumped::Ended);
    assert!(sink.got.is_empty() && sink.shut);
}

mod delayed;
mod pinned;
mod toxics;
