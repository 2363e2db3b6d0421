//! What each toxic of SPEC 14 does to traffic, on connections opened
//! before it and after it: a rate, a quiet-time close, a reset after a
//! chunk, slices, a chain of them; and ackloop's own types (section 8's
//! other kinds, selectors as attributes). Timing is asserted as bounds
//! measured against deadlines; a wait is only ever the point of a test.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::upstream::echo_upstream;
use crate::common::{DEADLINE, End, connect, read_exactly, read_until_closed};
use crate::{Target, assert_error, target, unique};

/// A proxy to a fresh echo upstream: its name and listen address.
fn echo_proxy(t: &Target) -> (String, SocketAddr) {
    let name = unique("toxics");
    let proxy = t.create(&name, &echo_upstream().to_string());
    (name, proxy["listen"].as_str().unwrap().parse().unwrap())
}

/// Adds a toxic; its JSON.
#[track_caller]
fn add_toxic(t: &Target, name: &str, body: &str) -> serde_json::Value {
    let response = t.client().post(&format!("/proxies/{name}/toxics"), body);
    assert_eq!(response.status, 200, "{body}: {}", response.text());
    response.json()
}

/// Sends `bytes` on `stream` and reads them back: the time to the first
/// byte back, and to the last.
#[track_caller]
fn echo_timed(mut stream: &TcpStream, bytes: &[u8]) -> (Duration, Duration) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    stream.write_all(bytes).unwrap();
    let mut got = vec![0; bytes.len()];
    let mut first = None;
    let mut at = 0;
    while at < got.len() {
        let n = stream.read(&mut got[at..]).unwrap();
        assert!(n > 0, "closed after {at} bytes");
        first.get_or_insert_with(|| started.elapsed());
        at += n;
    }
    assert!(got == bytes, "byte-exact");
    (first.unwrap(), started.elapsed())
}

/// An echo proxy and a connection through it that was open, and used,
/// before any toxic: toxics act on open connections too (SPEC 14).
fn proxy_with_an_open_connection(t: &Target) -> (String, SocketAddr, TcpStream) {
    let (name, listen) = echo_proxy(t);
    let open = connect(listen);
    echo_timed(&open, b"before");
    (name, listen, open)
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn bandwidth_caps_the_rate_on_open_and_new_connections() {
    let t = target();
    let (name, listen, open) = proxy_with_an_open_connection(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"bandwidth","attributes":{"rate":20}}"#,
    );
    // 10,000 bytes at 20 KB/s: half a second, smooth to within 100 ms
    // (the first tenth of a second's worth goes at once), less what the
    // loop's millisecond clock rounds off its five waits.
    let bytes = body(10_000);
    for stream in [&open, &connect(listen)] {
        let (_, took) = echo_timed(stream, &bytes);
        assert!(took >= Duration::from_millis(390), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    // A rate, not a dribble: a message well under it waits no more than
    // its own time (100 bytes at 100 KB/s: 1 ms), not a tenth of a second.
    let body = r#"{"attributes":{"rate":100}}"#;
    let path = format!("/proxies/{name}/toxics/bandwidth_downstream");
    assert_eq!(t.client().patch(&path, body).status, 200);
    let started = Instant::now();
    // (A dribble of a tenth of a second's worth would take 3 s here.)
    for _ in 0..30 {
        echo_timed(&open, &bytes[..100]);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "30 round trips: {took:?}"
    );
    assert_eq!(t.client().delete(&path).status, 204);
    let (_, took) = echo_timed(&open, &bytes);
    assert!(
        took < Duration::from_millis(400),
        "unharmed again: {took:?}"
    );
}

#[test]
fn a_timeout_discards_and_closes_after_a_quiet_time_that_data_restarts() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"timeout","attributes":{"timeout":600}}"#,
    );
    let mut stream = connect(listen);
    // Echoed bytes arrive in the stream every 200 ms: each restarts it.
    let mut last = Instant::now();
    for _ in 0..4 {
        stream.write_all(b"tick").unwrap();
        last = Instant::now();
        let quiet = read_until_closed(&stream, Duration::from_millis(200));
        assert_eq!((quiet.bytes.len(), quiet.end), (0, End::TimedOut));
    }
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!(
        (end.bytes.len(), end.end),
        (0, End::Eof),
        "no data, a close"
    );
    let since = last.elapsed();
    assert!(since >= Duration::from_millis(550), "{since:?}");
}

#[test]
fn removing_a_timeout_closes_the_connections_it_held() {
    let t = target();
    let (name, _, held) = proxy_with_an_open_connection(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"timeout","attributes":{"timeout":0}}"#,
    );
    (&held).write_all(b"lost").unwrap();
    // Held: nothing comes, and no close (this wait is the point).
    let early = read_until_closed(&held, Duration::from_millis(400));
    assert_eq!((early.bytes.len(), early.end), (0, End::TimedOut));
    let path = format!("/proxies/{name}/toxics/timeout_downstream");
    let removed = Instant::now();
    assert_eq!(t.client().delete(&path).status, 204);
    let end = read_until_closed(&held, DEADLINE);
    assert_eq!((end.bytes.len(), end.end), (0, End::Eof));
    let took = removed.elapsed();
    assert!(took < Duration::from_secs(3), "closed at once: {took:?}");
}

/// Writes `bytes` and reads until the connection ends: how it ended,
/// counting a reset the write saw.
fn end_after_writing(mut stream: &TcpStream, bytes: &[u8]) -> End {
    if let Err(e) = stream.write_all(bytes) {
        let kinds = [ErrorKind::ConnectionReset, ErrorKind::BrokenPipe];
        assert!(kinds.contains(&e.kind()), "{e}");
        return End::Reset;
    }
    let end = read_until_closed(stream, DEADLINE);
    assert_eq!(end.bytes.len(), 0, "nothing passes");
    end.end
}

#[test]
fn reset_peer_waits_for_a_chunk_then_resets_its_time_later() {
    let t = target();
    let (name, listen, open) = proxy_with_an_open_connection(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"reset_peer","attributes":{"timeout":300}}"#,
    );
    let new = connect(listen);
    // A silent connection is not reset (this wait is the point).
    for stream in [&open, &new] {
        let quiet = read_until_closed(stream, Duration::from_millis(400));
        assert_eq!((quiet.bytes.len(), quiet.end), (0, End::TimedOut));
    }
    for (stream, opened_before) in [(&open, true), (&new, false)] {
        let started = Instant::now();
        let end = end_after_writing(stream, b"chunk");
        let took = started.elapsed();
        // toxiproxy sets SO_LINGER 0 only on connections opened after
        // the toxic: one opened before sees a FIN.
        let want = match opened_before {
            true => t.pick(End::Reset, End::Eof),
            false => End::Reset,
        };
        assert_eq!(end, want, "opened before: {opened_before}");
        assert!(took >= Duration::from_millis(280), "{took:?}");
    }
}

#[test]
fn a_slicer_cuts_the_stream_into_spaced_writes_byte_exact() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let slicer =
        r#"{"type":"slicer","attributes":{"average_size":10,"size_variation":5,"delay":20000}}"#;
    add_toxic(&t, &name, slicer);
    // 200 bytes in writes of at most 15, 20 ms apart: 13 gaps at least.
    let stream = connect(listen);
    let (_, took) = echo_timed(&stream, &body(200));
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The sizes vary about the average: the reads (one a write, or a few
    // run together) are not all multiples of it.
    let slicer = r#"{"attributes":{"delay":50000}}"#;
    let path = format!("/proxies/{name}/toxics/slicer_downstream");
    assert_eq!(t.client().patch(&path, slicer).status, 200);
    let reads = read_sizes(&stream, &body(200));
    assert!(reads.iter().any(|n| n % 10 != 0), "{reads:?}");
    let small = reads.iter().filter(|&&n| n <= 15).count();
    assert!(small * 2 >= reads.len(), "{reads:?}");
}

/// Sends `bytes` on `stream` and reads them back: the size of each read.
fn read_sizes(mut stream: &TcpStream, bytes: &[u8]) -> Vec<usize> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut reads = Vec::new();
    let mut buf = [0; 4096];
    while got.len() < bytes.len() {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        reads.push(n);
    }
    assert!(got == bytes, "byte-exact");
    reads
}

#[test]
fn latency_bandwidth_and_slicer_chained_on_one_stream_compose() {
    let t = target();
    let (name, listen, open) = proxy_with_an_open_connection(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"latency","attributes":{"latency":300}}"#,
    );
    add_toxic(
        &t,
        &name,
        r#"{"type":"bandwidth","attributes":{"rate":10}}"#,
    );
    let slicer =
        r#"{"type":"slicer","attributes":{"average_size":100,"size_variation":20,"delay":20000}}"#;
    add_toxic(&t, &name, slicer);
    // 4,000 bytes: the first after the latency; the rest at 10 KB/s (a
    // tenth of a second's worth at a time) cut into writes of about 100
    // bytes 20 ms apart: the slices' 39 gaps, at least 780 ms, where the
    // rate alone would take 300 ms (the unit test in
    // src/relay/half/tests/toxics.rs holds each write to the rate too).
    for stream in [&open, &connect(listen)] {
        let (first, last) = echo_timed(stream, &body(4000));
        assert!(first >= Duration::from_millis(290), "{first:?}");
        assert!(last >= Duration::from_millis(950), "{last:?}");
        assert!(last < Duration::from_secs(10), "{last:?}");
    }
}

#[test]
fn ackloops_own_types_take_their_value_and_selectors_as_attributes() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let mut client = t.client();
    let toxics = format!("/proxies/{name}/toxics");
    let corrupt = r#"{"type":"corrupt","attributes":{"first":1,"bogus":"x"}}"#;
    let response = client.post(&toxics, corrupt);
    if !t.is_ackloop() {
        // Section 8's kinds are ackloop's: toxiproxy knows none of them.
        return assert_error(&response, 400, "invalid toxic type");
    }
    assert_eq!(response.status, 200, "{}", response.text());
    let want = json!({"first": 1, "after": null, "every": null, "match": null});
    assert_eq!(
        response.json()["attributes"],
        want,
        "every one, defaults too"
    );
    // The first connection is corrupted, the second not.
    let first = connect(listen);
    (&first).write_all(b"hello").unwrap();
    let got = read_exactly(&first, 5);
    assert!(got.iter().zip(b"hello").all(|(a, b)| a != b), "{got:?}");
    echo_timed(&connect(listen), b"hello"); // The second: echoed as sent.
    // Values as --fault writes them; defaults shown.
    let dribble = client.post(&toxics, r#"{"type":"dribble"}"#);
    assert_eq!(dribble.status, 200, "{}", dribble.text());
    assert_eq!(dribble.json()["attributes"]["dribble"], "1/0");
    let path = format!("{toxics}/dribble_downstream");
    let slow = client.patch(&path, r#"{"attributes":{"dribble":"2/100"}}"#);
    assert_eq!(slow.json()["attributes"]["dribble"], "2/100");
    let (_, took) = echo_timed(&connect(listen), b"abcdef");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // Wrong types and values --fault refuses are 400s; nothing changes.
    for bad in [
        r#"{"attributes":{"dribble":"0/5"}}"#,
        r#"{"attributes":{"dribble":"1/1,first=2"}}"#,
        r#"{"attributes":{"every":0}}"#,
        r#"{"attributes":{"first":"one"}}"#,
        r#"{"attributes":{"match":7}}"#,
    ] {
        assert_error(&client.patch(&path, bad), 400, "bad request body");
    }
    assert_eq!(client.get(&path).json(), slow.json());
    // match= needs messages, and an endpoint relays streams.
    let matching = r#"{"type":"hang","attributes":{"match":"x"}}"#;
    assert_error(&client.post(&toxics, matching), 400, "bad request body");
    // A UDP kind on a TCP endpoint.
    assert_error(
        &client.post(&toxics, r#"{"type":"drop"}"#),
        400,
        "bad request body",
    );
}

#[test]
fn selectors_are_attributes_of_toxiproxys_types_too_shown_only_when_set() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let body = r#"{"type":"latency","attributes":{"latency":400,"after":1}}"#;
    let toxic = add_toxic(&t, &name, body);
    let want = t.pick(
        json!({"latency": 400, "jitter": 0, "after": 1}),
        json!({"latency": 400, "jitter": 0}),
    );
    assert_eq!(toxic["attributes"], want);
    if !t.is_ackloop() {
        return;
    }
    // All but the first connection are slowed.
    let (_, quick) = echo_timed(&connect(listen), b"x");
    assert!(quick < Duration::from_millis(400), "{quick:?}");
    let (_, slow) = echo_timed(&connect(listen), b"x");
    assert!(slow >= Duration::from_millis(400), "{slow:?}");
}

#[test]
fn a_toxic_added_judges_the_open_connections_in_the_order_they_came() {
    let t = target();
    if !t.is_ackloop() {
        return; // `corrupt` and `first` are ackloop's.
    }
    let (name, listen) = echo_proxy(&t);
    // The oldest goes, and a newer one may take its place in the table.
    let oldest = connect(listen);
    echo_timed(&oldest, b"x");
    let older = connect(listen);
    echo_timed(&older, b"x");
    let old = connect(listen);
    echo_timed(&old, b"x");
    drop(oldest);
    let stats = format!("/proxies/{name}");
    let closed = crate::common::wait_until(DEADLINE, || {
        t.client().get(&stats).json()["stats"]["open"] == 2
    });
    assert!(closed, "the oldest pair closed");
    let newest = connect(listen);
    echo_timed(&newest, b"x");
    add_toxic(&t, &name, r#"{"type":"corrupt","attributes":{"first":1}}"#);
    for (stream, corrupted) in [(&older, true), (&old, false), (&newest, false)] {
        (&*stream).write_all(b"hello").unwrap();
        let got = read_exactly(stream, 5);
        assert_eq!(got != b"hello", corrupted, "{got:?}");
    }
}
