//! The stream toxics on a half-pipe (SPEC 14): a rate, slices, a timeout,
//! a reset after a chunk, alone and chained, with time passed in.

use std::io::{self, Write};

use super::{Source, Step, pump_at};
use crate::fault::Slices;
use crate::relay::half::{Doom, HalfPipe, Pump, Pumped, Shape, Toxics};
use crate::timer::Millis;

/// A sink that takes everything and notes when each write came.
#[derive(Debug, Default)]
struct Recorder {
    now: Millis,
    writes: Vec<(Millis, usize)>,
    got: Vec<u8>,
}

impl Write for Recorder {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.writes.push((self.now, bytes.len()));
        self.got.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::relay::half::Sink for Recorder {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn shaped(toxics: Toxics) -> HalfPipe {
    HalfPipe::shaped(Shape {
        toxics,
        ..Shape::default()
    })
}

/// Pumps `pipe` at every millisecond of `times` into `sink`.
fn run(pipe: &mut HalfPipe, source: &mut Source, sink: &mut Recorder, times: std::ops::Range<u64>) {
    for now in times {
        sink.now = now;
        let mut buf = vec![0; 4096];
        let mut cx = Pump::new(now, &mut buf, 1 << 20);
        pipe.pump(source, Some(&mut *sink), &mut cx).unwrap();
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn latency_bandwidth_and_slicer_on_one_stream_each_do_their_part() {
    let mut pipe = HalfPipe::shaped(Shape {
        delay_ms: 200,
        toxics: Toxics {
            bandwidth: Some(10), // 10 KB/s: 10 bytes a millisecond.
            slicer: Some(Slices {
                average: 100,
                variation: 20,
                delay_us: 5000,
                seed: 3,
            }),
            ..Toxics::default()
        },
        ..Shape::default()
    });
    let sent = body(3000);
    let mut source = Source::new([Step::Bytes(sent.clone())]);
    let mut sink = Recorder::default();
    run(&mut pipe, &mut source, &mut sink, 0..2000);
    assert_eq!(sink.got, sent, "byte-exact");
    let writes = &sink.writes;
    // Latency: nothing before it.
    assert!(writes[0].0 >= 200, "{writes:?}");
    // Slicer: each write at most average + variation, some smaller than
    // the average, and apart by its delay (within the clock's rounding).
    assert!(writes.iter().all(|&(_, n)| n <= 120), "{writes:?}");
    assert!(writes.iter().any(|&(_, n)| n < 100), "sizes vary");
    assert!(
        writes.windows(2).all(|w| w[1].0 >= w[0].0 + 4),
        "{writes:?}"
    );
    // Bandwidth: at most 10 bytes a millisecond, within 100 ms, over any
    // stretch (the slicer alone would send 20).
    for (i, &(start, _)) in writes.iter().enumerate() {
        for end in writes[i..].iter().map(|w| w.0) {
            let bytes: usize = (writes[i..].iter())
                .take_while(|w| w.0 <= end)
                .map(|w| w.1)
                .sum();
            let allowed = 10 * (end - start + 1 + 100) as usize;
            assert!(bytes <= allowed, "{bytes} in {start}..={end}");
        }
    }
    let last = writes.last().unwrap().0;
    assert!((390..=520).contains(&last), "the rate's pace: {last}");
}

#[test]
fn a_slicer_without_delay_writes_many_pieces_in_a_turn_within_a_budget() {
    let mut pipe = shaped(Toxics {
        slicer: Some(Slices {
            average: 10,
            variation: 0,
            delay_us: 0,
            seed: 1,
        }),
        ..Toxics::default()
    });
    let sent = body(1000);
    let mut source = Source::new([Step::Bytes(sent.clone())]);
    let mut sink = Recorder::default();
    run(&mut pipe, &mut source, &mut sink, 0..1);
    assert!(sink.writes.iter().all(|&(_, n)| n == 10));
    assert!(sink.got.len() < 1000, "a budget a pump");
    assert_eq!(pipe.wake_at(), Some(0), "the rest goes next turn");
    run(&mut pipe, &mut source, &mut sink, 1..5);
    assert_eq!(sink.got, sent);
}

#[test]
fn a_timeout_discards_and_closes_after_a_quiet_time_that_data_restarts() {
    let mut pipe = shaped(Toxics {
        timeout_ms: Some(50),
        ..Toxics::default()
    });
    let mut source = Source::new([Step::Bytes(b"lost".to_vec())]);
    let mut sink = super::Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 0),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), Some(51));
    source.script.push_back(Step::Bytes(b"more".to_vec()));
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 40),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), Some(91), "data restarts the clock");
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 60),
        Pumped::Waiting
    );
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 91),
        Pumped::Doom(Doom::Close)
    );
    assert!(sink.got.is_empty() && !sink.shut, "nothing passed");
}

#[test]
fn a_timeout_of_zero_holds_until_the_stream_ends_and_its_removal_closes() {
    let toxics = Toxics {
        timeout_ms: Some(0),
        ..Toxics::default()
    };
    let mut pipe = shaped(toxics.clone());
    let mut source = Source::new([Step::Bytes(b"lost".to_vec())]);
    let mut sink = super::Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 0),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), None, "held: no clock");
    pipe.reshape(Shape::default());
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 1),
        Pumped::Doom(Doom::Close),
        "removing it closes what it held"
    );
    // The stream's end closes the connection too (toxiproxy's Close).
    let mut pipe = shaped(toxics);
    let mut source = Source::new([Step::Bytes(b"x".to_vec()), Step::Eof]);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 0),
        Pumped::Doom(Doom::Close)
    );
}

#[test]
fn reset_peer_waits_for_a_chunk_then_resets_its_time_later() {
    let mut pipe = shaped(Toxics {
        reset_peer_ms: Some(30),
        ..Toxics::default()
    });
    let mut source = Source::default();
    let mut sink = super::Sink::with_room(usize::MAX);
    for now in [0, 50, 100] {
        assert_eq!(
            pump_at(&mut pipe, &mut source, &mut sink, now),
            Pumped::Waiting
        );
        assert_eq!(pipe.wake_at(), None, "a silent stream is not reset");
    }
    source.script.push_back(Step::Bytes(b"chunk".to_vec()));
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 100),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), Some(131));
    source.script.push_back(Step::Bytes(b"later".to_vec()));
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 120),
        Pumped::Waiting
    );
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 131),
        Pumped::Doom(Doom::Reset)
    );
    assert!(sink.got.is_empty(), "nothing passed");
}

#[test]
fn a_rate_added_to_an_open_stream_paces_it_and_its_removal_releases_the_rest() {
    let mut pipe = HalfPipe::new(Shape::default(), false);
    pipe.reshape(Shape {
        toxics: Toxics {
            bandwidth: Some(1),
            ..Toxics::default()
        },
        ..Shape::default()
    });
    let sent = body(500);
    let mut source = Source::new([Step::Bytes(sent.clone())]);
    let mut sink = Recorder::default();
    run(&mut pipe, &mut source, &mut sink, 0..150);
    assert_eq!(
        sink.got.len(),
        200,
        "100 bytes at 0 and at 100: {:?}",
        sink.writes
    );
    pipe.reshape(Shape::default());
    run(&mut pipe, &mut source, &mut sink, 150..151);
    assert_eq!(sink.got, sent, "released at once");
}

#[test]
fn a_changed_timeout_counts_from_the_change() {
    let timeout = |ms| Shape {
        toxics: Toxics {
            timeout_ms: Some(ms),
            ..Toxics::default()
        },
        ..Shape::default()
    };
    let mut pipe = HalfPipe::shaped(timeout(50));
    let mut source = Source::default();
    let mut sink = super::Sink::with_room(usize::MAX);
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 0),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), Some(51));
    pipe.reshape(timeout(50));
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 30),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), Some(51), "the same one goes on");
    pipe.reshape(timeout(100));
    assert_eq!(
        pump_at(&mut pipe, &mut source, &mut sink, 40),
        Pumped::Waiting
    );
    assert_eq!(pipe.wake_at(), Some(141), "a new one counts from now");
}
