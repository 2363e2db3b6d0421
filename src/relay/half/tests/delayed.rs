//! A delay is latency, not a bandwidth cap (issue 21, SPEC 14): a
//! delayed stream reads on up to `max_delayed`, each chunk's delay is
//! drawn in its range from the seed, and the stream keeps its order.

use super::*;
use crate::fault::DelayRange;

/// Pumps at `now` with the bounds `(max_owed, max_delayed)` until the
/// source blocks or the bound stops it, with no sink yet (the upstream
/// still connecting), so that everything read is held: what it read.
fn pump_bounded(
    pipe: &mut HalfPipe,
    source: &mut Source,
    now: Millis,
    (max_owed, max_delayed): (usize, usize),
) -> u64 {
    let mut buf = vec![0; 64];
    let mut cx = Pump::new(now, &mut buf, max_owed);
    cx.max_delayed = max_delayed;
    while pipe.pump(source, None::<&mut Sink>, &mut cx).unwrap() == Pumped::StillReady {}
    cx.read
}

fn delayed(ms: u64) -> Shape {
    Shape {
        delay_ms: ms,
        ..Shape::default()
    }
}

fn jittered(least_ms: u64, spread_ms: u64, seed: u64) -> Shape {
    Shape {
        delay_ms: least_ms,
        jitter: Some(DelayRange {
            least_ms,
            spread_ms,
            seed,
        }),
        ..Shape::default()
    }
}

#[test]
fn a_delayed_stream_reads_on_up_to_max_delayed() {
    for shape in [delayed(600), jittered(100, 50, 9)] {
        let mut pipe = HalfPipe::shaped(shape.clone());
        let mut source = Source::new([Step::Bytes(vec![5; 10_000])]);
        let read = pump_bounded(&mut pipe, &mut source, 0, (100, 4000));
        // Read at one time, the bytes are one chunk (jitter: chunks at
        // one release time merge, and read at one time, later ones are
        // due no earlier than the first): the bound is bytes and chunks.
        assert!(
            read as usize > 100,
            "{shape:?}: read {read}, capped at max_owed"
        );
        assert!(pipe.backlog() <= 4000 + CHUNK_COST, "{shape:?}");
        assert!(pipe.backlog() > 4000 - 64 - CHUNK_COST, "{shape:?}");
        // Full: nothing more is read until bytes go.
        assert_eq!(pump_bounded(&mut pipe, &mut source, 1, (100, 4000)), 0);
    }
}

#[test]
fn other_holding_faults_keep_max_owed() {
    // A dribble holds its bytes for its pace, not for a delay.
    let dribbled = Shape {
        dribble: Some((1, 1000)),
        ..Shape::default()
    };
    let mut pipe = HalfPipe::shaped(dribbled);
    let mut source = Source::new([Step::Bytes(vec![5; 10_000])]);
    pump_bounded(&mut pipe, &mut source, 0, (100, 4000));
    assert_eq!(pipe.backlog(), 100);
    // Judged lines (line mode) hold at most max_owed and a line.
    let mut pipe = HalfPipe::new(delayed(600), true);
    let mut source = Source::new([Step::Bytes(vec![5; 10_000])]);
    pump_bounded(&mut pipe, &mut source, 0, (100, 4000));
    assert!(pipe.backlog() <= 100 + CHUNK_COST, "{}", pipe.backlog());
}

#[test]
fn max_owed_wins_when_it_is_the_larger() {
    let mut pipe = HalfPipe::shaped(delayed(600));
    let mut source = Source::new([Step::Bytes(vec![5; 10_000])]);
    pump_bounded(&mut pipe, &mut source, 0, (3000, 1000));
    assert_eq!(pipe.backlog(), 3000);
}

/// The release time of every chunk of `shape` when a byte is read each
/// millisecond from 0 to `reads`.
fn release_times(shape: Shape, reads: u64) -> Vec<Millis> {
    let mut pipe = HalfPipe::shaped(shape);
    let mut source = Source::default();
    for now in 0..reads {
        source.script.push_back(Step::Bytes(vec![now as u8]));
        pump_bounded(&mut pipe, &mut source, now, (1 << 20, 1 << 20));
    }
    let shaped = pipe.shaped.as_ref().unwrap();
    let draws = if shaped.shape.jitter.is_some() {
        reads
    } else {
        0
    };
    assert_eq!(shaped.drawn, draws, "a draw per chunk read");
    let chunks = shaped.chunks.iter();
    chunks
        .flat_map(|c| std::iter::repeat_n(c.at, c.len))
        .collect()
}

#[test]
fn each_chunk_draws_its_delay_in_order() {
    let times = release_times(jittered(100, 50, 42), 200);
    assert_eq!(times.len(), 200);
    for (now, &at) in times.iter().enumerate() {
        // In the range (the clock's millisecond rounds up), or held for
        // an earlier byte: never before it.
        assert!(at > now as u64 + 100, "byte {now} at {at}");
        let latest = times[..=now]
            .iter()
            .enumerate()
            .map(|(t, _)| t as u64 + 151);
        assert!(at <= latest.max().unwrap(), "byte {now} at {at}");
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order");
    // Drawn per chunk: the delays differ (one draw per pair would give
    // every byte the same one).
    let delays: std::collections::BTreeSet<u64> = times
        .iter()
        .enumerate()
        .map(|(now, at)| at - now as u64)
        .collect();
    assert!(delays.len() > 10, "{delays:?}");
    // Order kept: a byte whose draw was short waits for the one before.
    assert!(times.windows(2).any(|w| w[0] == w[1]), "no byte waited");
}

#[test]
fn the_same_seed_draws_the_same_delays() {
    let once = release_times(jittered(100, 50, 42), 100);
    assert_eq!(once, release_times(jittered(100, 50, 42), 100));
    assert_ne!(once, release_times(jittered(100, 50, 43), 100));
    // Without a spread, every chunk is held the same time.
    let plain = release_times(delayed(100), 100);
    assert!(
        plain
            .iter()
            .enumerate()
            .all(|(now, &at)| at == now as u64 + 101)
    );
}

#[test]
fn a_draw_stays_in_its_range_whatever_the_range() {
    for (least_ms, spread_ms) in [(0, 1), (5, 0), (0, u64::MAX), (u64::MAX, 3)] {
        let range = DelayRange {
            least_ms,
            spread_ms,
            seed: 3,
        };
        for nth in 0..100 {
            let delay = range.draw(nth);
            assert!(delay >= least_ms, "{range:?}");
            assert!(delay - least_ms <= spread_ms, "{range:?}");
        }
    }
}
