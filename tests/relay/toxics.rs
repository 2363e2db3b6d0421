//! SPEC 14's stream faults with their `--fault` spellings, on a relay
//! started with `--upstream`: `bandwidth`, `timeout`, `reset-peer`,
//! `slicer`, each way; and their refusal where there is no stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::upstream::echo_upstream;
use crate::common::{
    DEADLINE, End, Server, assert_summary, connect, counter, read_until_closed, run,
};
use crate::{exchange, tcp_relay};

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Writes `bytes` on one thread while reading their echo here: how long
/// the whole took.
#[track_caller]
fn echo_timed(stream: &TcpStream, bytes: &[u8]) -> Duration {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let writer = stream.try_clone().unwrap();
    let sent = bytes.to_vec();
    let writing = std::thread::spawn(move || (&writer).write_all(&sent).unwrap());
    let mut got = vec![0; bytes.len()];
    (&*stream).read_exact(&mut got).unwrap();
    writing.join().unwrap();
    assert!(got == bytes, "byte-exact");
    started.elapsed()
}

#[test]
fn bandwidth_caps_each_direction_it_is_given() {
    for dir in ["down", "up"] {
        let fault = format!("tcp:bandwidth=20,dir={dir}");
        let relay = tcp_relay(echo_upstream(), &["--fault", &fault]);
        // 10,000 bytes at 20 KB/s: half a second, within 100 ms.
        let took = echo_timed(&connect(relay.tcp()), &body(10_000));
        assert!(took >= Duration::from_millis(400), "{dir}: {took:?}");
        assert!(took < Duration::from_secs(5), "{dir}: {took:?}");
    }
}

#[test]
fn a_timeout_discards_then_closes_after_a_quiet_time() {
    let mut relay = tcp_relay(echo_upstream(), &["--fault", "tcp:timeout=300"]);
    let mut stream = connect(relay.tcp());
    stream.write_all(b"lost").unwrap();
    let sent = Instant::now();
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!((end.bytes.len(), end.end), (0, End::Eof));
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(280), "{took:?}");
    let (_, stderr) = relay.terminate();
    let summary = assert_summary(&stderr);
    assert_eq!(counter(&summary, "timeout"), Some(1), "{summary}");
}

#[test]
fn reset_peer_resets_after_the_first_chunk_not_a_silent_connection() {
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:reset-peer=200"]);
    let silent = connect(relay.tcp());
    // Silent: not reset (this wait is the point).
    let quiet = read_until_closed(&silent, Duration::from_millis(400));
    assert_eq!((quiet.bytes.len(), quiet.end), (0, End::TimedOut));
    let mut stream = connect(relay.tcp());
    let started = Instant::now();
    stream.write_all(b"chunk").unwrap();
    let end = read_until_closed(&stream, DEADLINE);
    assert_eq!((end.bytes.len(), end.end), (0, End::Reset));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(190), "{took:?}");
}

#[test]
fn a_slicer_delivers_every_byte_in_spaced_writes() {
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:slicer=10/5/20000"]);
    // 200 bytes in writes of at most 15 bytes, 20 ms apart.
    let took = echo_timed(&connect(relay.tcp()), &body(200));
    assert!(took >= Duration::from_millis(250), "{took:?}");
    let (bytes, end, _) = exchange(relay.tcp(), b"sliced but whole");
    assert_eq!(
        (bytes.as_slice(), end),
        (&b"sliced but whole"[..], End::Eof)
    );
}

#[test]
fn stream_faults_are_refused_where_there_is_no_stream() {
    let echo = format!("tcp:{}", echo_upstream());
    for args in [
        &["--tcp", "127.0.0.1:0", "--fault", "tcp:bandwidth=10"][..],
        &["--tcp", "127.0.0.1:0", "--fault", "tcp:timeout=0"],
        &[
            "--upstream",
            &echo,
            "--mode",
            "line",
            "--fault",
            "tcp:slicer=5",
        ],
        &["--upstream", &echo, "--fault", "udp:reset-peer=5"],
    ] {
        let (status, stdout, stderr) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--fault"), "{args:?}: {stderr}");
    }
    let (_, _, stderr) = run(&["--tcp", "127.0.0.1:0", "--fault", "tcp:bandwidth=10"]);
    assert!(stderr.contains("relayed stream"), "{stderr}");
    // At run time too, on the control port.
    let server = Server::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--no-udp",
        "--control",
        "127.0.0.1:0",
    ]);
    let answer = crate::ask(server.control.unwrap(), "fault tcp:reset-peer=10");
    assert!(
        answer.starts_with("error: ") && answer.contains("relayed stream"),
        "{answer}"
    );
}
