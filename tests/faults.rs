//! Faults on demand: the `ackloop` binary with `--fault` and `--seed`,
//! black box over loopback. Each test asserts what a client sees: the
//! bytes, EOF or reset, and lower bounds on timing (upper bounds are the
//! generous deadlines of the helpers).
//!
//! Linux only, like the other black-box suites (`/proc`, `kill`).
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    DEADLINE, End, Server, assert_summary, connect, counter, read_exactly, read_until_closed, run,
    text, wait_until,
};

const REPLY: &str = "Received";
const LINE: &str = "Received\n";
/// A delay of 300 ms is over within this: the bound is loose enough for
/// a loaded machine, and far below the deadlines (a reply held until
/// something else happens would miss it).
const DELAY_BOUND: Duration = Duration::from_secs(3);

/// Sends `request` on a new connection; what came back and how it ended.
#[track_caller]
fn tcp(addr: SocketAddr, request: &[u8]) -> (String, End, Duration) {
    let stream = connect(addr);
    let sent = Instant::now();
    (&stream).write_all(request).unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    (text(&drained.bytes), drained.end, sent.elapsed())
}

/// A UDP client bound to loopback, connected to the server.
fn udp_client(server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

/// Receives one datagram within the deadline.
#[track_caller]
fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0; 2048];
    let n = common::retrying(|| socket.recv(&mut buf))
        .unwrap_or_else(|e| panic!("no datagram within {DEADLINE:?}: {e}"));
    buf[..n].to_vec()
}

/// The datagrams already waiting on `socket`, without waiting for more.
fn waiting(socket: &UdpSocket) -> Vec<Vec<u8>> {
    socket.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 2048];
    loop {
        match common::retrying(|| socket.recv(&mut buf)) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    socket.set_nonblocking(false).unwrap();
    got
}

/// Stops the server with SIGTERM; its summary line.
#[track_caller]
fn summary(mut server: Server) -> String {
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_summary(&stderr)
}

/// Echo server with `faults`; sends datagrams `0..n` then a sentinel `end`
/// that no fault touches (the faults are limited to `first=n`); returns
/// the payloads answered, once every datagram has been judged.
#[track_caller]
fn udp_pattern(faults: &[&str], seed: &str, n: usize) -> (BTreeSet<String>, String) {
    let mut args = vec!["--echo", "--seed", seed];
    for fault in faults {
        args.extend(["--fault", fault]);
    }
    let server = Server::start(&args);
    let client = udp_client(server.udp());
    for i in 0..n {
        client.send(i.to_string().as_bytes()).unwrap();
    }
    client.send(b"end").unwrap();
    // Datagrams from one socket arrive in order on loopback: once the
    // sentinel's reply is here, every earlier reply is too.
    let mut answered = BTreeSet::new();
    loop {
        let reply = text(&recv(&client));
        if reply == "end" {
            break;
        }
        answered.insert(reply);
    }
    answered.extend(waiting(&client).iter().map(|r| text(r)));
    (answered, summary(server))
}

#[test]
fn udp_drop_every_second_datagram_and_count_it() {
    let (answered, summary) = udp_pattern(&["udp:drop,every=2,first=6"], "1", 6);
    assert_eq!(answered, ["0", "2", "4"].map(String::from).into());
    assert_eq!(counter(&summary, "faults"), Some(3), "{summary}");
    assert_eq!(counter(&summary, "datagrams"), Some(7));
}

#[test]
fn udp_first_and_after_select_by_ordinal() {
    let (answered, _) = udp_pattern(&["udp:drop,first=2"], "1", 5);
    assert_eq!(answered, ["2", "3", "4"].map(String::from).into());
    let (answered, _) = udp_pattern(&["udp:drop,after=3,first=5"], "1", 5);
    assert_eq!(answered, ["0", "1", "2"].map(String::from).into());
}

#[test]
fn the_same_seed_drops_the_same_datagrams_in_another_process() {
    let faults = ["udp:drop,p=0.5,first=60"];
    let (a, summary_a) = udp_pattern(&faults, "7", 60);
    let (b, _) = udp_pattern(&faults, "7", 60);
    let (c, _) = udp_pattern(&faults, "8", 60);
    assert_eq!(a, b, "seed 7 twice");
    assert_ne!(a, c, "seeds 7 and 8");
    assert!(
        (10..50).contains(&a.len()),
        "{} of 60 answered at p=0.5",
        a.len()
    );
    assert_eq!(counter(&summary_a, "faults"), Some(60 - a.len() as u64));
}

#[test]
fn udp_duplicate_truncate_and_corrupt_shape_the_reply() {
    let server = Server::start(&["--fault", "udp:duplicate", "--fault", "udp:truncate=3"]);
    let client = udp_client(server.udp());
    client.send(b"Hello, Server").unwrap();
    assert_eq!(text(&recv(&client)), "Rec");
    assert_eq!(text(&recv(&client)), "Rec", "the reply twice");
    drop(server);
    let server = Server::start(&["--fault", "udp:corrupt"]);
    let client = udp_client(server.udp());
    client.send(b"Hello, Server").unwrap();
    let reply = recv(&client);
    assert_eq!(reply.len(), REPLY.len());
    assert!(
        reply.iter().zip(REPLY.bytes()).all(|(a, b)| *a != b),
        "{reply:?}"
    );
}

#[test]
fn udp_delay_holds_the_reply_back() {
    let server = Server::start(&["--fault", "udp:delay=300"]);
    let client = udp_client(server.udp());
    let sent = Instant::now();
    client.send(b"Hello, Server").unwrap();
    assert_eq!(text(&recv(&client)), REPLY);
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took <= DELAY_BOUND, "{took:?}");
    let summary = summary(server);
    assert_eq!(counter(&summary, "delay"), Some(1), "{summary}");
}

/// Runs a stream through an `--echo` server with `udp:delay=50`: a
/// datagram every half millisecond for a second (each due while the next
/// ones arrive, so the loop releases replies as it reads), then `end`.
/// Another thread collects the replies until `end`'s, for at most
/// `within` after it was sent: how many came, and when `end`'s did.
struct DelayedStream {
    server: Server,
    /// When `end` left the client.
    ended: Instant,
    collector: std::thread::JoinHandle<(usize, Option<Instant>)>,
}

impl DelayedStream {
    #[track_caller]
    fn run(within: Duration) -> DelayedStream {
        // About 100 replies are held at once: a queue of its own, so the
        // smallest settings' (ACKLOOP_TEST_ARGS, one datagram) drop none.
        let queue = ["--udp-queue-len", "1024", "--udp-queue-bytes", "1048576"];
        let mut args = vec!["--echo", "--fault", "udp:delay=50"];
        args.extend(queue);
        let server = Server::start(&args);
        let client = udp_client(server.udp());
        let receiver = client.try_clone().unwrap();
        let started = Instant::now();
        let stop_at = started + Duration::from_secs(1) + within;
        let collector = std::thread::spawn(move || {
            receiver
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let (mut count, mut buf) = (0, [0; 64]);
            while Instant::now() < stop_at + Duration::from_secs(1) {
                match common::retrying(|| receiver.recv(&mut buf)) {
                    Ok(n) if &buf[..n] == b"end" => return (count, Some(Instant::now())),
                    Ok(_) => count += 1,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("recv: {e}"),
                }
            }
            (count, None)
        });
        let mut i = 0u64;
        while started.elapsed() < Duration::from_secs(1) {
            client.send(i.to_string().as_bytes()).unwrap();
            i += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        client.send(b"end").unwrap();
        DelayedStream {
            server,
            ended: Instant::now(),
            collector,
        }
    }

    /// How many replies came before `end`'s, and how long after `end`
    /// was sent its reply came (`None`: not within the bound).
    fn collect(self) -> (Server, usize, Option<Duration>) {
        let (count, end) = common::join(self.collector);
        (self.server, count, end.map(|at| at - self.ended))
    }
}

/// Every delayed reply leaves when due, however the replies fell due
/// between reads: after a stream, the last one arrives its delay after
/// the last datagram (within a bound a loaded machine keeps), not
/// whenever the next datagram happens to come in.
#[test]
fn udp_delayed_replies_never_wait_for_the_next_datagram() {
    let bound = Duration::from_secs(3);
    let stream = DelayedStream::run(bound);
    let (server, count, end) = stream.collect();
    let end =
        end.unwrap_or_else(|| panic!("`end` not answered within {bound:?} ({count} replies)"));
    assert!(end >= Duration::from_millis(50), "{end:?}");
    assert!(end <= bound, "{end:?}");
    let summary = summary(server);
    assert_eq!(counter(&summary, "replies dropped"), Some(0), "{summary}");
}

/// SIGTERM with delayed replies pending: the server sends them when they
/// are due and exits then, long before the grace period ends.
#[test]
fn sigterm_sends_the_pending_delayed_replies_and_exits_promptly() {
    let bound = Duration::from_secs(3);
    let stream = DelayedStream::run(bound);
    let mut server = stream.server;
    let signalled = Instant::now();
    server.signal(common::SIGTERM);
    let exited = server.wait_timeout(DEADLINE);
    let took = signalled.elapsed();
    let stream = DelayedStream { server, ..stream };
    let (server, count, end) = stream.collect();
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert!(took <= bound, "exited {took:?} after SIGTERM");
    assert!(end.is_some(), "`end` not answered ({count} replies)");
    let summary = assert_summary(&server.final_stderr());
    assert_eq!(counter(&summary, "replies dropped"), Some(0), "{summary}");
}

#[test]
fn tcp_delay_in_once_mode() {
    let server = Server::start(&["--fault", "tcp:delay=300"]);
    let (reply, end, took) = tcp(server.tcp(), b"Hello, Server");
    assert_eq!((reply.as_str(), end), (REPLY, End::Eof));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took <= DELAY_BOUND, "{took:?}");
}

#[test]
fn tcp_random_delays_keep_line_order() {
    let server = Server::start(&["--mode", "line", "--echo", "--fault", "tcp:delay=0-300"]);
    let stream = connect(server.tcp());
    let lines: String = (0..8).map(|i| format!("line {i}\n")).collect();
    let sent = Instant::now();
    (&stream).write_all(lines.as_bytes()).unwrap();
    assert_eq!(text(&read_exactly(&stream, lines.len())), lines);
    // Delays of at most 300 ms: the last reply is not held past them.
    assert!(sent.elapsed() <= DELAY_BOUND, "{:?}", sent.elapsed());
}

#[test]
fn tcp_dribble_sends_the_reply_in_pieces() {
    let server = Server::start(&["--fault", "tcp:dribble=3/100"]);
    let stream = connect(server.tcp());
    let sent = Instant::now();
    (&stream).write_all(b"Hello, Server").unwrap();
    let mut pieces = Vec::new();
    let mut buf = [0; 64];
    loop {
        match (&stream).read(&mut buf).expect("read within the deadline") {
            0 => break,
            n => pieces.push((buf[..n].to_vec(), sent.elapsed())),
        }
    }
    let bytes: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.clone()).collect();
    assert_eq!(text(&bytes), REPLY);
    assert!(pieces.iter().all(|(p, _)| p.len() <= 3), "{pieces:?}");
    // 8 bytes in 3-byte pieces: two gaps of 100 ms at least.
    let last = pieces.last().unwrap().1;
    assert!(last >= Duration::from_millis(200), "{pieces:?}");
}

#[test]
fn tcp_truncate_cuts_the_reply_then_closes() {
    let server = Server::start(&["--fault", "tcp:truncate=4"]);
    let (reply, end, _) = tcp(server.tcp(), b"Hello, Server");
    assert_eq!((reply.as_str(), end), ("Rece", End::Eof));
    let server = Server::start(&["--mode", "line", "--fault", "tcp:truncate=4,after=1"]);
    let (reply, end, _) = tcp(server.tcp(), b"one\ntwo\nthree\n");
    assert_eq!((reply.as_str(), end), ("Received\nRece", End::Eof));
}

#[test]
fn tcp_corrupt_keeps_the_length_and_the_newline() {
    let server = Server::start(&["--mode", "line", "--fault", "tcp:corrupt"]);
    let stream = connect(server.tcp());
    (&stream).write_all(b"one\ntwo\n").unwrap();
    let replies = read_exactly(&stream, 2 * LINE.len());
    for reply in replies.chunks(LINE.len()) {
        assert_eq!(reply.last(), Some(&b'\n'));
        for (got, was) in reply[..REPLY.len()].iter().zip(REPLY.bytes()) {
            assert!(*got != was && *got != b'\n', "{reply:?}");
        }
    }
    let server = Server::start(&["--fault", "tcp:corrupt"]);
    let stream = connect(server.tcp());
    (&stream).write_all(b"x").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!((drained.bytes.len(), drained.end), (REPLY.len(), End::Eof));
    assert!(
        drained
            .bytes
            .iter()
            .zip(REPLY.bytes())
            .all(|(a, b)| *a != b)
    );
}

#[test]
fn tcp_hang_keeps_the_connection_open_until_the_idle_timeout() {
    for (mode, request, expect) in [("once", "Hello", ""), ("line", "a\nb\nc\n", LINE)] {
        let server = Server::start(&[
            "--mode",
            mode,
            "--idle-timeout",
            "1",
            "--fault",
            "tcp:hang,after=1",
        ]);
        if mode == "once" {
            assert_eq!(tcp(server.tcp(), b"first").0, REPLY, "after=1 spares one");
        }
        let (reply, end, took) = tcp(server.tcp(), request.as_bytes());
        assert_eq!(reply, expect, "{mode}");
        assert_eq!(end, End::Eof, "{mode}: closed by the idle timeout");
        assert!(took >= Duration::from_millis(900), "{mode}: {took:?}");
        let summary = summary(server);
        assert_eq!(counter(&summary, "hang"), Some(1), "{summary}");
    }
}

#[test]
fn tcp_close_and_reset_end_the_connection_without_a_reply() {
    let server = Server::start(&["--fault", "tcp:close"]);
    assert_eq!(tcp(server.tcp(), b"Hello").1, End::Eof);
    let server = Server::start(&["--fault", "tcp:reset"]);
    let (reply, end, _) = tcp(server.tcp(), b"Hello");
    assert_eq!((reply.as_str(), end), ("", End::Reset));
    let server = Server::start(&["--mode", "line", "--fault", "tcp:close,after=1"]);
    let (reply, end, _) = tcp(server.tcp(), b"a\nb\nc\n");
    assert_eq!((reply.as_str(), end), (LINE, End::Eof));
    let server = Server::start(&["--mode", "line", "--fault", "tcp:reset,after=1"]);
    let (reply, end, _) = tcp(server.tcp(), b"a\nb\nc\n");
    assert!(LINE.starts_with(&reply), "{reply:?}");
    assert_eq!(end, End::Reset);
}

#[test]
fn tcp_slow_close_sends_the_reply_then_waits() {
    let server = Server::start(&["--fault", "tcp:slow-close=500"]);
    let stream = connect(server.tcp());
    let sent = Instant::now();
    (&stream).write_all(b"Hello").unwrap();
    assert_eq!(text(&read_exactly(&stream, REPLY.len())), REPLY);
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!((drained.bytes.len(), drained.end), (0, End::Eof));
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn tcp_first_selects_connections_in_arrival_order() {
    let server = Server::start(&["--fault", "tcp:close,first=2"]);
    let replies: Vec<String> = (0..4).map(|_| tcp(server.tcp(), b"hi").0).collect();
    assert_eq!(replies, ["", "", REPLY, REPLY]);
}

#[test]
fn tcp_the_same_seed_picks_the_same_connections() {
    let pattern = |seed: &str| -> Vec<bool> {
        let server = Server::start(&["--fault", "tcp:close,p=0.5", "--seed", seed]);
        (0..24)
            .map(|_| tcp(server.tcp(), b"hi").0.is_empty())
            .collect()
    };
    let a = pattern("11");
    assert_eq!(a, pattern("11"));
    assert_ne!(a, pattern("12"));
}

#[test]
fn a_long_delay_is_owed_so_backpressure_bounds_a_never_reader() {
    let server = Server::start(&["--mode", "line", "--fault", "tcp:delay=60000"]);
    let flooder = connect(server.tcp());
    flooder
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let sent = common::write_until_blocked(&flooder, 64 << 20, &b"x\n".repeat(4096));
    // The server took lines only until the delayed replies reached the
    // owed-bytes bound, then stopped reading: TCP flow control did the rest.
    assert!(sent < 64 << 20, "the server read all 64 MiB");
    let rss = server.rss_kib();
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
    // Others are still served (UDP has no fault).
    assert_eq!(common::udp_request(server.udp(), b"hi"), REPLY.as_bytes());
    let summary = summary(server);
    let messages = counter(&summary, "messages").unwrap();
    assert!(messages <= 64 * 1024 / 9 + 1, "{summary}");
}

#[test]
fn a_udp_flood_with_a_long_delay_drops_and_counts_past_the_queue() {
    let server = Server::start(&["--fault", "udp:delay=60000"]);
    let client = udp_client(server.udp());
    // Datagrams until the queue is full: a burst alone may overflow the
    // server's receive buffer on a loaded machine before a queue's worth
    // is read.
    let handled = wait_until(DEADLINE, || {
        for _ in 0..300 {
            client.send(b"x").unwrap();
        }
        let rss = server.rss_kib();
        assert!(rss < 64 * 1024, "RSS {rss} KiB");
        server.stderr().contains("reply queue full")
    });
    assert!(handled, "no queue-full warning");
    let summary = summary(server);
    let dropped = counter(&summary, "replies dropped").unwrap();
    let datagrams = counter(&summary, "datagrams").unwrap();
    assert!(dropped >= datagrams.saturating_sub(1024), "{summary}");
    assert!(dropped > 0, "{summary}");
}

#[test]
fn bad_fault_specs_exit_2_naming_the_spec() {
    for spec in [
        "tcp:drop",
        "udp:hang",
        "udp:drop,p=2",
        "udp:drop,every=0",
        "tcp:delay=9-1",
        "tcp:delay",
        "tcp:wobble",
    ] {
        let (status, stdout, stderr) = run(&["--fault", spec]);
        assert_eq!(status.code(), Some(2), "{spec}: {stderr}");
        assert_eq!(stdout, "", "{spec}: nothing bound");
        assert_eq!(stderr.lines().count(), 1, "{spec}: {stderr}");
        assert!(stderr.contains(spec), "{spec}: {stderr}");
    }
}

#[test]
fn a_random_seed_is_logged_for_replay() {
    let server = Server::start(&["--fault", "udp:drop,p=0.5"]);
    let log = server.wait_for_stderr("the seed", |log| log.contains("seed"));
    assert!(log.contains("replay with --seed"), "{log}");
    // Faults that make no random choice: no seed is said to decide them.
    let server = Server::start(&["--fault", "tcp:delay=5", "--fault", "udp:drop,every=2"]);
    let log = server.wait_for_stderr("the faults", |log| log.contains("serving"));
    assert!(log.contains("faults tcp:delay=5 udp:drop,every=2"), "{log}");
    assert!(!log.contains("seed"), "{log}");
}
