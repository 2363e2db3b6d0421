//! The relay meets the scripts (SPEC 11-13), black box over loopback: the
//! journal of relayed traffic (`up` and `down` lines, read back by
//! Python's `json`, in order), and `match=` faults on a relay of messages
//! (lines, datagrams), refused on a TCP relay in stream mode.
//!
//! Needs `python3` (`.ci/run` installs it); the journal tests fail, saying
//! so, without it. Linux only, like the other black-box suites.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::journal::{TempPath, read_journal};
use common::upstream::{UdpUpstream, echo_upstream};
use common::{DEADLINE, End, Server, connect, read_exactly, read_until_closed, wait_until};

/// Starts a server relaying `proto` to `upstream`, with `args` after.
#[track_caller]
fn relay(proto: &str, upstream: SocketAddr, args: &[&str]) -> Server {
    let spec = format!("{proto}:{upstream}");
    let mut all = vec!["--upstream", spec.as_str()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// Stops `server` once `journal` has `count` lines: its lines as
/// `read_journal` prints them.
#[track_caller]
fn journal_of(mut server: Server, journal: &TempPath, count: usize) -> Vec<String> {
    let written = wait_until(DEADLINE, || journal.lines() >= count);
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap_or_default());
    assert!(written, "{count} lines written within a turn: {lines:#?}");
    lines
}

/// One control command's answer line.
fn ask(control: SocketAddr, command: &str) -> String {
    let mut stream = connect(control);
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0; 1];
    while common::retrying(|| stream.read(&mut byte)).unwrap() == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_stream_relay_journals_each_chunk_each_way_and_a_fault_on_its_line() {
    let journal = TempPath::new("relay-stream.jsonl");
    let args = [
        "--journal",
        journal.path(),
        "--fault",
        "tcp:truncate=2,every=2",
    ];
    let server = relay("tcp", echo_upstream(), &args);
    for expected in [&b"ping\n"[..], b"pi"] {
        let client = connect(server.tcp());
        (&client).write_all(b"ping\n").unwrap();
        assert_eq!(read_exactly(&client, expected.len()), expected);
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let rest = read_until_closed(&client, DEADLINE);
        assert_eq!((rest.bytes.len(), rest.end), (0, End::Eof));
    }
    let lines = journal_of(server, &journal, 4);
    assert_eq!(
        lines,
        [
            "tcp 1 1 up 5 b'ping\\n' peer",
            "tcp 1 1 down 5 b'ping\\n'",
            "tcp 2 1 up 5 b'ping\\n' peer",
            "tcp 2 1 down 2 b'pi' truncate",
        ]
    );
}

/// Line mode: each line is a message in its direction, judged with its
/// text, so `match=` picks exactly the lines it names; the journal has a
/// line for each relayed line, with the faults applied to it.
#[test]
fn a_line_relay_matches_lines_and_journals_each_line() {
    let journal = TempPath::new("relay-lines.jsonl");
    let args = [
        "--mode",
        "line",
        "--journal",
        journal.path(),
        "--fault",
        "tcp:delay=300,match=prefix:slow",
        "--fault",
        "tcp:reset,match=exact:bye,dir=up",
    ];
    let server = relay("tcp", echo_upstream(), &args);
    let client = connect(server.tcp());
    let started = Instant::now();
    (&client).write_all(b"one\r\nslowly not\n").unwrap();
    assert_eq!(read_exactly(&client, 5), b"one\r\n");
    assert!(started.elapsed() < Duration::from_millis(300), "not held");
    assert_eq!(read_exactly(&client, 11), b"slowly not\n");
    assert!(started.elapsed() >= Duration::from_millis(300), "held");
    (&client).write_all(b"byebye\n").unwrap();
    assert_eq!(read_exactly(&client, 7), b"byebye\n");
    // `bye` with its `\r\n` matches: the terminator is not the text.
    (&client).write_all(b"bye\r\nnever\n").unwrap();
    let rest = read_until_closed(&client, DEADLINE);
    assert_eq!((rest.bytes.len(), rest.end), (0, End::Reset));
    let lines = journal_of(server, &journal, 7);
    assert_eq!(
        lines,
        [
            "tcp 1 1 up 5 b'one\\r\\n' peer",
            "tcp 1 2 up 11 b'slowly not\\n'",
            "tcp 1 1 down 5 b'one\\r\\n'",
            "tcp 1 2 down 11 b'slowly not\\n' delay",
            "tcp 1 3 up 7 b'byebye\\n'",
            "tcp 1 3 down 7 b'byebye\\n'",
            "tcp 1 4 up 0 b'' reset",
        ]
    );
}

/// A UDP relay journals each datagram each way with its ordinal in that
/// direction; `match=` picks datagrams by their bytes, up and down.
#[test]
fn a_udp_relay_matches_datagrams_and_journals_them_each_way() {
    let journal = TempPath::new("relay-udp.jsonl");
    let upstream = UdpUpstream::echo();
    let args = [
        "--no-tcp",
        "--journal",
        journal.path(),
        "--fault",
        "udp:drop,match=exact:lost,dir=up",
        "--fault",
        "udp:delay=300,match=exact:slow",
    ];
    let server = relay("udp", upstream.addr, &args);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server.udp()).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0; 64];
    client.send(b"a").unwrap();
    assert_eq!(common::retrying(|| client.recv(&mut buf)).unwrap(), 1);
    client.send(b"lost").unwrap();
    let sent = Instant::now();
    client.send(b"slow").unwrap();
    let n = common::retrying(|| client.recv(&mut buf)).unwrap();
    assert_eq!(&buf[..n], b"slow", "the lost one never came back");
    assert!(sent.elapsed() >= Duration::from_millis(300), "held");
    assert_eq!(
        upstream.received.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let lines = journal_of(server, &journal, 5);
    assert_eq!(
        lines,
        [
            "udp - 1 up 1 b'a' peer",
            "udp - 1 down 1 b'a' peer",
            "udp - 2 up 0 b'' peer drop",
            "udp - 3 up 4 b'slow' peer",
            "udp - 2 down 4 b'slow' peer delay",
        ]
    );
}

/// A datagram the relay drops is counted and journaled (length 0, with
/// its faults): one from a source past `--max-flows`, and one an `up`
/// delay still holds when the server closes (a second SIGTERM).
#[test]
fn a_udp_relay_counts_and_journals_what_it_drops() {
    let journal = TempPath::new("relay-udp-drops.jsonl");
    let upstream = UdpUpstream::echo();
    let args = [
        "--no-tcp",
        "--journal",
        journal.path(),
        "--max-flows",
        "1",
        "--fault",
        "udp:delay=60000,dir=up,match=exact:held",
    ];
    let mut server = relay("udp", upstream.addr, &args);
    let (first, second) = (udp_socket(server.udp()), udp_socket(server.udp()));
    let mut buf = [0; 64];
    first.send(b"a").unwrap();
    assert_eq!(common::retrying(|| first.recv(&mut buf)).unwrap(), 1);
    second.send(b"b").unwrap(); // No flow to be had: dropped.
    first.send(b"held").unwrap();
    let dropped = wait_until(DEADLINE, || journal.lines() >= 3);
    assert!(dropped, "the drop was not journaled");
    // The second closes everything at once (two the kernel merges into
    // one only wait out the grace period first: the same end).
    for _ in 0..2 {
        server.signal(common::SIGTERM);
    }
    let status = server.wait();
    let stderr = server.final_stderr();
    assert!(status.success(), "{stderr}");
    let summary = common::assert_summary(&stderr);
    assert_eq!(
        common::counter(&summary, "replies dropped"),
        Some(2),
        "{summary}"
    );
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap());
    assert_eq!(
        lines,
        [
            "udp - 1 up 1 b'a' peer",
            "udp - 1 down 1 b'a' peer",
            "udp - 2 up 0 b'' peer",
            "udp - 3 up 0 b'' peer delay",
        ]
    );
}

/// A client socket connected to `server`.
fn udp_socket(server: SocketAddr) -> UdpSocket {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client
}

/// A TCP relay in stream mode has no messages: `match=` is a bad value
/// there (exit 2, `error:` on control), and works once `--mode line`
/// makes each line one.
#[test]
fn match_on_a_stream_relay_is_refused_and_on_a_line_relay_accepted() {
    let upstream = echo_upstream().to_string();
    let stream = ["--upstream", &format!("tcp:{upstream}")];
    let fault = ["--fault", "tcp:reset,match=exact:x"];
    let (status, stdout, stderr) = common::run(&[&stream[..], &fault].concat());
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "nothing bound: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("match=") && stderr.contains("--mode line"),
        "{stderr}"
    );

    let server = relay("tcp", echo_upstream(), &["--control", "127.0.0.1:0"]);
    let answer = ask(server.control.unwrap(), "fault tcp:reset,match=exact:x");
    assert!(
        answer.starts_with("error: ") && answer.contains("match="),
        "{answer}"
    );
    let client = connect(server.tcp());
    (&client).write_all(b"x").unwrap();
    assert_eq!(read_exactly(&client, 1), b"x", "no fault was added");

    let lines = ["--mode", "line", "--control", "127.0.0.1:0"];
    let server = relay("tcp", echo_upstream(), &[&lines[..], &fault].concat());
    let answer = ask(
        server.control.unwrap(),
        "fault tcp:close,match=exact:y,dir=up",
    );
    assert!(answer.starts_with("ok"), "{answer}");
    let client = connect(server.tcp());
    (&client).write_all(b"w\nx\n").unwrap();
    let rest = read_until_closed(&client, DEADLINE);
    assert_eq!(rest.end, End::Reset, "at the echoed x");
    assert!(b"w\n".starts_with(&rest.bytes), "{:?}", rest.bytes);
}
