//! Traffic through proxies made with the API: bytes both ways, and what
//! each toxic does to a connection opened after it was added.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::upstream::{echo_upstream, refusing_addr};
use crate::common::{DEADLINE, End, connect, read_exactly, read_until_closed};
use crate::{Target, target, unique};

/// A proxy to a fresh echo upstream: its name and listen address.
fn echo_proxy(t: &Target) -> (String, SocketAddr) {
    let name = unique("traffic");
    let proxy = t.create(&name, &echo_upstream().to_string());
    (name, proxy["listen"].as_str().unwrap().parse().unwrap())
}

#[track_caller]
fn add_toxic(t: &Target, name: &str, body: &str) {
    let response = t.client().post(&format!("/proxies/{name}/toxics"), body);
    assert_eq!(response.status, 200, "{body}: {}", response.text());
}

/// Sends `bytes` on a new connection and reads them back: how long the
/// round trip took.
#[track_caller]
fn round_trip(addr: SocketAddr, bytes: &[u8]) -> Duration {
    let mut stream = connect(addr);
    let started = Instant::now();
    stream.write_all(bytes).unwrap();
    assert_eq!(read_exactly(&stream, bytes.len()), bytes);
    started.elapsed()
}

#[test]
fn bytes_flow_both_ways_through_a_proxy() {
    let t = target();
    let (_, listen) = echo_proxy(&t);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stream = connect(listen);
    let writer = stream.try_clone().unwrap();
    let sent = body.clone();
    let writing = std::thread::spawn(move || (&writer).write_all(&sent).unwrap());
    assert_eq!(read_exactly(&stream, body.len()), body);
    writing.join().unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!((end.bytes.len(), end.end), (0, End::Eof));
    let _ = stream.flush();
}

#[test]
fn latency_slows_new_connections_until_it_is_removed() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    assert!(round_trip(listen, b"ping") < Duration::from_millis(300));
    add_toxic(
        &t,
        &name,
        r#"{"name":"slow","type":"latency","attributes":{"latency":300}}"#,
    );
    let took = round_trip(listen, b"ping");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let path = format!("/proxies/{name}/toxics/slow");
    assert_eq!(t.client().delete(&path).status, 204);
    let took = round_trip(listen, b"ping");
    assert!(took < Duration::from_millis(300), "{took:?}");
}

#[test]
fn a_toxicity_of_zero_never_acts() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let body = r#"{"type":"latency","toxicity":0,"attributes":{"latency":1000}}"#;
    add_toxic(&t, &name, body);
    for _ in 0..3 {
        let took = round_trip(listen, b"ping");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }
}

#[test]
fn limit_data_closes_after_its_bytes() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"limit_data","attributes":{"bytes":10}}"#,
    );
    let mut stream = connect(listen);
    stream.write_all(&[b'x'; 100]).unwrap();
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!(end.bytes, [b'x'; 10]);
    assert_ne!(end.end, End::TimedOut);
}

#[test]
fn reset_peer_resets_the_connection() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"reset_peer","attributes":{"timeout":0}}"#,
    );
    // Both reset after the first chunk in the stream (the echo of it).
    let mut stream = connect(listen);
    // The reset may be reported to the write (once: a read then sees EOF).
    if let Err(e) = stream.write_all(b"hello") {
        let kinds = [ErrorKind::ConnectionReset, ErrorKind::BrokenPipe];
        return assert!(kinds.contains(&e.kind()), "{e}");
    }
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!((end.bytes.len(), end.end), (0, End::Reset));
}

#[test]
fn timeout_zero_lets_no_data_through() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"timeout","attributes":{"timeout":0}}"#,
    );
    let mut stream = connect(listen);
    stream.write_all(b"hello").unwrap();
    // Nothing may come: this wait is the point, so it is short.
    let end = read_until_closed(&stream, Duration::from_millis(500));
    assert_eq!((end.bytes.len(), end.end), (0, End::TimedOut));
}

#[test]
fn slow_close_holds_the_close() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"slow_close","attributes":{"delay":400}}"#,
    );
    let mut stream = connect(listen);
    stream.write_all(b"bye").unwrap();
    assert_eq!(read_exactly(&stream, 3), b"bye");
    let started = Instant::now();
    stream.shutdown(Shutdown::Write).unwrap();
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!(end.end, End::Eof);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[test]
fn slicer_and_bandwidth_deliver_every_byte_more_slowly() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let slicer =
        r#"{"type":"slicer","attributes":{"average_size":100,"size_variation":10,"delay":1000}}"#;
    add_toxic(&t, &name, slicer);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
    round_trip(listen, &body);
    let slicer = format!("/proxies/{name}/toxics/slicer_downstream");
    assert_eq!(t.client().delete(&slicer).status, 204);
    add_toxic(
        &t,
        &name,
        r#"{"type":"bandwidth","attributes":{"rate":10}}"#,
    );
    // 5,000 bytes at 10 KB/s: half a second.
    let took = round_trip(listen, &body);
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[test]
fn disabling_closes_connections_and_enabling_relays_again() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let open = connect(listen);
    (&open).write_all(b"x").unwrap();
    assert_eq!(read_exactly(&open, 1), b"x");
    let path = format!("/proxies/{name}");
    assert_eq!(t.client().patch(&path, r#"{"enabled":false}"#).status, 200);
    let end = read_until_closed(&open, DEADLINE);
    assert_ne!(end.end, End::TimedOut, "the open connection is closed");
    assert!(
        TcpStream::connect(listen).is_err(),
        "new connects are refused"
    );
    assert_eq!(t.client().patch(&path, r#"{"enabled":true}"#).status, 200);
    round_trip(listen, b"again");
}

#[test]
fn a_refused_upstream_ends_the_client() {
    let t = target();
    let name = unique("refused");
    let proxy = t.create(&name, &refusing_addr().to_string());
    let listen: SocketAddr = proxy["listen"].as_str().unwrap().parse().unwrap();
    // The reset may come before `connect` has looked at its socket's
    // error: then the connect itself reports it.
    let (len, end) = match std::net::TcpStream::connect_timeout(&listen, DEADLINE) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => (0, End::Reset),
        Err(e) => panic!("connect to {listen}: {e}"),
        Ok(stream) => {
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let end = read_until_closed(&stream, DEADLINE);
            (end.bytes.len(), end.end)
        }
    };
    // ackloop resets the client (SPEC 11); toxiproxy closes it.
    assert_eq!((len, end), (0, t.pick(End::Reset, End::Eof)));
}

#[test]
fn a_proxy_shows_its_own_counters() {
    let t = target();
    if t.server.is_none() {
        return; // `stats` is ackloop's extension, and its summary.
    }
    let (name, listen) = echo_proxy(&t);
    let (_, other) = echo_proxy(&t);
    for _ in 0..3 {
        round_trip(listen, b"0123456789");
    }
    round_trip(other, b"elsewhere");
    let path = format!("/proxies/{name}");
    let mut stats = serde_json::Value::Null;
    let settled = crate::common::wait_until(DEADLINE, || {
        stats = t.client().get(&path).json()["stats"].clone();
        stats["open"] == 0 && stats["accepted"] == 3
    });
    assert!(settled, "{stats}");
    for (counter, want) in [("bytes_in", 30), ("bytes_out", 30), ("up_bytes_out", 30)] {
        assert_eq!(stats[counter], want, "{counter}: {stats}");
    }
    let listed = t.client().get("/proxies").json();
    assert!(
        listed[&name].get("stats").is_none(),
        "only GET /proxies/{{name}}"
    );
    // The summary counts every endpoint together.
    let mut server = t.server.unwrap();
    let (_, stderr) = server.terminate();
    let summary = crate::common::assert_summary(&stderr);
    assert_eq!(
        crate::common::counter(&summary, "accepted"),
        Some(4),
        "{summary}"
    );
}

#[test]
fn max_connections_counts_pairs_across_endpoints() {
    let t = crate::target_with(&["--max-connections", "2"]);
    if t.server.is_none() {
        return; // ackloop's own limit.
    }
    let (_, first) = echo_proxy(&t);
    let (_, second) = echo_proxy(&t);
    let held: Vec<TcpStream> = [first, second]
        .into_iter()
        .map(|addr| {
            let mut stream = connect(addr);
            stream.write_all(b"x").unwrap();
            assert_eq!(read_exactly(&stream, 1), b"x");
            stream
        })
        .collect();
    let mut third = connect(first);
    let _ = third.write_all(b"x");
    let end = read_until_closed(&third, DEADLINE);
    assert_eq!(end.bytes.len(), 0, "a third pair is refused");
    assert_ne!(end.end, End::TimedOut);
    drop(held);
}

#[test]
fn sigterm_closes_the_endpoints_pairs_and_exits() {
    let t = target();
    if t.server.is_none() {
        return; // ackloop's own shutdown.
    }
    let (_, listen) = echo_proxy(&t);
    let open = connect(listen);
    (&open).write_all(b"x").unwrap();
    assert_eq!(read_exactly(&open, 1), b"x");
    let mut server = t.server.unwrap();
    server.signal(crate::common::SIGTERM);
    let end = read_until_closed(&open, DEADLINE);
    assert_ne!(end.end, End::TimedOut, "the pair is closed");
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(listen).is_err(), "no endpoint listens");
}

/// One round trip on an open connection: how long it took.
#[track_caller]
fn round_trip_on(mut stream: &TcpStream, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(bytes).unwrap();
    assert_eq!(read_exactly(stream, bytes.len()), bytes);
    started.elapsed()
}

#[test]
fn a_latency_toxic_slows_connections_already_open() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    // A pool: connections opened before the toxic.
    let pool: Vec<TcpStream> = (0..3).map(|_| connect(listen)).collect();
    for stream in &pool {
        assert!(round_trip_on(stream, b"before") < Duration::from_millis(300));
    }
    add_toxic(
        &t,
        &name,
        r#"{"name":"slow","type":"latency","attributes":{"latency":300}}"#,
    );
    for stream in &pool {
        let took = round_trip_on(stream, b"during");
        assert!(took >= Duration::from_millis(300), "{took:?}");
    }
    let path = format!("/proxies/{name}/toxics/slow");
    assert_eq!(t.client().delete(&path).status, 204);
    for stream in &pool {
        let took = round_trip_on(stream, b"after");
        assert!(took < Duration::from_millis(300), "{took:?}");
    }
}

#[test]
fn removing_a_toxic_releases_what_it_holds() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    let stream = connect(listen);
    add_toxic(
        &t,
        &name,
        r#"{"name":"slow","type":"latency","attributes":{"latency":5000}}"#,
    );
    let started = Instant::now();
    (&stream).write_all(b"held").unwrap();
    // Held: nothing comes for a while (this wait is the point).
    let early = read_until_closed(&stream, Duration::from_millis(500));
    assert_eq!((early.bytes.len(), early.end), (0, End::TimedOut));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let path = format!("/proxies/{name}/toxics/slow");
    assert_eq!(t.client().delete(&path).status, 204);
    assert_eq!(read_exactly(&stream, 4), b"held");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3000),
        "released at once: {took:?}"
    );
}

/// 1 MiB of bytes that are not all alike.
fn megabyte() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect()
}

/// Writes `body` on a thread of its own: a proxy that holds it must not
/// stop the test's reading.
fn write_on_a_thread(stream: &TcpStream, body: &[u8]) -> std::thread::JoinHandle<()> {
    let writer = stream.try_clone().unwrap();
    let body = body.to_vec();
    std::thread::spawn(move || (&writer).write_all(&body).unwrap())
}

/// A latency toxic is latency, not a bandwidth cap (SPEC 14, issue 21):
/// 1 MiB through 600 ms ± 100 arrives in about 0.7 s, not the 10 s a
/// relay that stopped reading at its `--max-owed` took.
#[test]
fn a_latency_toxic_does_not_cap_the_bandwidth() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"type":"latency","attributes":{"latency":600,"jitter":100}}"#,
    );
    let body = megabyte();
    let stream = connect(listen);
    let started = Instant::now();
    let writing = write_on_a_thread(&stream, &body);
    let back = read_exactly(&stream, body.len());
    let took = started.elapsed();
    crate::common::join(writing);
    assert!(back == body, "the bytes changed");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

/// Removing a latency toxic releases a whole held megabyte at once.
#[test]
fn removing_a_latency_toxic_releases_a_megabyte_at_once() {
    let t = target();
    let (name, listen) = echo_proxy(&t);
    add_toxic(
        &t,
        &name,
        r#"{"name":"slow","type":"latency","attributes":{"latency":20000,"jitter":1000}}"#,
    );
    let body = megabyte();
    let stream = connect(listen);
    let writing = write_on_a_thread(&stream, &body);
    crate::common::join(writing);
    // Held: nothing comes for a while (this wait is the point).
    let early = read_until_closed(&stream, Duration::from_millis(300));
    assert_eq!((early.bytes.len(), early.end), (0, End::TimedOut));
    let path = format!("/proxies/{name}/toxics/slow");
    let removed = Instant::now();
    assert_eq!(t.client().delete(&path).status, 204);
    assert!(
        read_exactly(&stream, body.len()) == body,
        "the bytes changed"
    );
    let took = removed.elapsed();
    assert!(took < Duration::from_millis(3000), "{took:?}");
}
