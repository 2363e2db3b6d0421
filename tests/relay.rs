//! The relay (SPEC section 11): the `ackloop` binary with `--upstream`,
//! black box over loopback, between clients and upstreams the tests start
//! themselves (an echo server, scripted servers, Python's `http.server`).
//!
//! Each test asserts what the client and the upstream see: the bytes, EOF
//! or reset, lower bounds on timing; upper bounds are the helpers'
//! generous deadlines. Linux only, like the other black-box suites
//! (`/proc`, `kill`, the accept-queue behaviour a hanging connect uses).
#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::upstream::{
    HangingListener, UdpUpstream, echo, echo_upstream, refusing_addr, reset, tcp_upstream,
};
use common::{
    DEADLINE, End, Server, assert_summary, connect, counter, read_exactly, read_until_closed, text,
    wait_until,
};
use proptest::prelude::*;

/// Starts a server relaying TCP to `upstream`, with `args` after.
#[track_caller]
fn tcp_relay(upstream: SocketAddr, args: &[&str]) -> Server {
    let spec = format!("tcp:{upstream}");
    let mut all = vec!["--upstream", spec.as_str()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// Writes `data` in pieces of the given sizes (cycled) on one thread while
/// reading the echo on this one, then half-closes: what came back before
/// the relay's FIN.
#[track_caller]
fn echo_through(relay: SocketAddr, data: Vec<u8>, pieces: Vec<usize>) -> Vec<u8> {
    let stream = connect(relay);
    let writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let mut writer = writer;
        let mut at = 0;
        for size in pieces.iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size.max(&1)).min(data.len());
            writer.write_all(&data[at..end]).unwrap();
            at = end;
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let drained = read_until_closed(&stream, DEADLINE);
    common::join(sending);
    assert_eq!(drained.end, End::Eof, "after {} bytes", drained.bytes.len());
    drained.bytes
}

#[test]
fn bytes_pass_unchanged_both_ways() {
    let relay = tcp_relay(echo_upstream(), &[]);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let back = echo_through(relay.tcp(), data.clone(), vec![1, 1000, 65_536, 13]);
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Any size, any split: what the client sends reaches the upstream
    /// and what it sends back reaches the client, byte for byte.
    #[test]
    fn any_split_arrives_unchanged(
        data in proptest::collection::vec(any::<u8>(), 0..40_000),
        pieces in proptest::collection::vec(1usize..20_000, 1..8),
    ) {
        let relay = tcp_relay(echo_upstream(), &[]);
        let back = echo_through(relay.tcp(), data.clone(), pieces);
        prop_assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    }
}

#[test]
fn a_client_half_close_reaches_the_upstream_and_the_answer_comes_back() {
    // The upstream answers only once the client's FIN arrived.
    let upstream = tcp_upstream(|_, mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        stream
            .write_all(format!("got {} bytes", request.len()).as_bytes())
            .unwrap();
    });
    let relay = tcp_relay(upstream, &[]);
    let mut client = connect(relay.tcp());
    client.write_all(b"0123456789").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!(text(&drained.bytes), "got 10 bytes");
    assert_eq!(drained.end, End::Eof);
}

#[test]
fn an_upstream_half_close_reaches_the_client_and_the_client_goes_on() {
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        stream.write_all(b"banner, then my FIN").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        tell.send(rest).unwrap();
    });
    let relay = tcp_relay(upstream, &[]);
    let mut client = connect(relay.tcp());
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!(text(&drained.bytes), "banner, then my FIN");
    assert_eq!(
        drained.end,
        End::Eof,
        "the upstream's FIN reached the client"
    );
    client.write_all(b"still talking").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let rest = told.recv_timeout(DEADLINE).unwrap();
    assert_eq!(text(&rest), "still talking");
}

#[test]
fn an_upstream_reset_resets_the_client_and_counts() {
    let upstream = tcp_upstream(|_, mut stream| {
        let mut byte = [0; 1];
        stream.read_exact(&mut byte).unwrap();
        reset(stream);
    });
    let relay = tcp_relay(upstream, &["--control", "127.0.0.1:0"]);
    let mut client = connect(relay.tcp());
    client.write_all(b"x").unwrap();
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!(drained.end, End::Reset);
    let (_, summary, _) = relay_summary(relay);
    assert_eq!(counter(&summary, "upstream failed"), Some(1), "{summary}");
}

#[test]
fn a_client_reset_resets_the_upstream() {
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        stream.write_all(b"hello").unwrap();
        let mut buf = [0; 16];
        let end = loop {
            match stream.read(&mut buf) {
                Ok(0) => break "eof",
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
                Err(e) => panic!("{e}"),
            }
        };
        tell.send(end).unwrap();
    });
    let relay = tcp_relay(upstream, &[]);
    let client = connect(relay.tcp());
    assert_eq!(read_exactly(&client, 5), b"hello");
    reset(client);
    assert_eq!(told.recv_timeout(DEADLINE).unwrap(), "reset");
}

#[test]
fn a_refused_upstream_resets_the_client_with_no_bytes() {
    let relay = tcp_relay(refusing_addr(), &[]);
    for _ in 0..3 {
        let (bytes, end, _) = exchange(relay.tcp(), b"anyone there?");
        assert_eq!((bytes.len(), end), (0, End::Reset));
    }
    let (_, summary, stderr) = relay_summary(relay);
    assert_eq!(counter(&summary, "upstream failed"), Some(3), "{summary}");
    // Logged at most once a second: one warning for three failures.
    let warnings = stderr.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "{stderr}");
}

/// The connect hangs deterministically: the upstream's accept queue is
/// full (backlog 0, never accepted), so Linux drops the relay's SYN.
#[test]
fn an_unanswered_connect_resets_the_client_at_the_timeout() {
    let hanging = HangingListener::new();
    let relay = tcp_relay(hanging.addr, &["--connect-timeout", "1"]);
    let client = connect(relay.tcp());
    let started = Instant::now();
    let drained = read_until_closed(&client, DEADLINE);
    let took = started.elapsed();
    assert_eq!(drained.end, End::Reset);
    assert!(took >= Duration::from_millis(900), "reset after {took:?}");
    assert!(took < Duration::from_secs(4), "reset after {took:?}");
    let (_, summary, _) = relay_summary(relay);
    assert_eq!(counter(&summary, "upstream failed"), Some(1), "{summary}");
}

#[test]
fn a_pair_counts_against_max_connections_and_its_idle_timeout() {
    let relay = tcp_relay(
        echo_upstream(),
        &["--max-connections", "1", "--idle-timeout", "1"],
    );
    let first = connect(relay.tcp());
    (&first).write_all(b"ping").unwrap();
    assert_eq!(read_exactly(&first, 4), b"ping");
    let second = connect(relay.tcp());
    let drained = read_until_closed(&second, DEADLINE);
    assert!(drained.bytes.is_empty(), "rejected: {:?}", drained.end);
    // The first pair, silent both ways, closes after the idle timeout.
    let started = Instant::now();
    let drained = read_until_closed(&first, DEADLINE);
    assert_eq!(drained.end, End::Eof);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let (_, summary, _) = relay_summary(relay);
    assert_eq!(counter(&summary, "rejected"), Some(1), "{summary}");
    assert_eq!(counter(&summary, "up bytes out"), Some(4), "{summary}");
    assert_eq!(counter(&summary, "up bytes in"), Some(4), "{summary}");
    assert_eq!(counter(&summary, "bytes in"), Some(4), "{summary}");
}

/// A client that never reads, fed by an upstream that never stops, and an
/// upstream that never reads, fed by a client that never stops: the relay
/// holds a bounded amount for each while another client is served.
#[test]
fn never_readers_on_either_side_leave_memory_bounded() {
    let upstream = tcp_upstream(|ordinal, mut stream| match ordinal {
        // A firehose towards a client that never reads.
        0 => {
            let chunk = vec![b'x'; 64 * 1024];
            while stream.write_all(&chunk).is_ok() {}
        }
        // Never reads what the client sends.
        1 => {
            let mut byte = [0; 1];
            let _ = stream.peek(&mut byte);
            std::thread::sleep(DEADLINE);
        }
        _ => echo(stream),
    });
    let relay = tcp_relay(upstream, &["--max-owed", "65536", "--idle-timeout", "0"]);
    let before = relay.rss_kib();
    let never_reads = connect(relay.tcp());
    // Bytes arriving prove the upstream's connection 0 (the firehose) is
    // this client's, before the next client connects.
    common::wait_readable(&never_reads);
    let flooder = connect(relay.tcp());
    flooder
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sent = common::write_until_blocked(&flooder, 64 << 20, &[b'y'; 64 * 1024]);
    assert!(
        sent < 32 << 20,
        "{sent} bytes went into a relay whose upstream never reads"
    );
    let served = connect(relay.tcp());
    (&served).write_all(b"still served").unwrap();
    assert_eq!(read_exactly(&served, 12), b"still served");
    let grown = relay.rss_kib().saturating_sub(before);
    // Two stalled pairs, each holding at most 2 x max_owed (64 KiB here):
    // 256 KiB, and as much again for the allocator's slack. (Measured:
    // 64 to 84 KiB.)
    assert!(grown < 512, "RSS grew {grown} KiB");
    drop(never_reads);
}

/// SIGTERM: what each pair holds goes out, then the pair closes.
#[test]
fn sigterm_flushes_pairs_then_exits() {
    let relay = tcp_relay(echo_upstream(), &[]);
    let client = connect(relay.tcp());
    (&client).write_all(b"in flight").unwrap();
    assert_eq!(read_exactly(&client, 9), b"in flight");
    let (status, _, stderr) = relay_summary(relay);
    assert!(status.success(), "{stderr}");
    let drained = read_until_closed(&client, DEADLINE);
    assert_eq!(drained.end, End::Eof);
}

#[test]
fn stats_name_the_relay_counters() {
    let relay = tcp_relay(echo_upstream(), &["--control", "127.0.0.1:0"]);
    let client = connect(relay.tcp());
    (&client).write_all(b"12345").unwrap();
    assert_eq!(read_exactly(&client, 5), b"12345");
    let control = relay.control.unwrap();
    let mut stats = String::new();
    assert!(
        wait_until(DEADLINE, || {
            stats = ask(control, "stats");
            stats.contains(" up_bytes_in=5 ")
        }),
        "{stats}"
    );
    assert!(stats.contains(" upstream_failed=0 "), "{stats}");
    assert!(stats.contains(" up_bytes_out=5 "), "{stats}");
    // Stream mode: a pair whose client sent bytes is one message, so a
    // test can wait for its clients with `received`.
    assert!(stats.contains(" messages=1 "), "{stats}");
    let second = connect(relay.tcp());
    (&second).write_all(b"6").unwrap();
    assert_eq!(ask(control, "received 2 5"), "ok 2");
}

// ----- faults on relayed TCP ----------------------------------------------

/// One exchange through a relay to the echo upstream: sends `request`,
/// half-closes, reads to the end; the bytes, how it ended, how long.
fn exchange(relay: SocketAddr, request: &[u8]) -> (Vec<u8>, End, Duration) {
    let started = Instant::now();
    // A pair reset at once may reset the connect itself.
    let mut client = match TcpStream::connect(relay) {
        Ok(client) => client,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            return (Vec::new(), End::Reset, started.elapsed());
        }
        Err(e) => panic!("connect to {relay}: {e}"),
    };
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    // A reset that arrives first fails the write, which takes the error:
    // the read after it would only see an EOF.
    let sent = client
        .write_all(request)
        .and_then(|()| client.shutdown(Shutdown::Write));
    if let Err(e) = sent {
        assert!(is_reset(&e), "sending: {e}");
        return (Vec::new(), End::Reset, started.elapsed());
    }
    let drained = read_until_closed(&client, DEADLINE);
    (drained.bytes, drained.end, started.elapsed())
}

#[test]
fn a_delay_holds_each_direction_that_long() {
    for dir in ["down", "up"] {
        let fault = format!("tcp:delay=300,dir={dir}");
        // Delayed bytes count against the bound: a bound of their own, so
        // that the smallest settings do not make each byte wait its turn.
        let relay = tcp_relay(echo_upstream(), &["--fault", &fault, "--max-owed", "64"]);
        let (bytes, end, took) = exchange(relay.tcp(), b"late");
        assert_eq!((text(&bytes).as_str(), end), ("late", End::Eof), "{dir}");
        assert!(took >= Duration::from_millis(300), "{dir}: {took:?}");
    }
}

#[test]
fn a_dribble_paces_the_stream() {
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:dribble=2/100"]);
    let (bytes, end, took) = exchange(relay.tcp(), b"abcdef");
    assert_eq!((text(&bytes).as_str(), end), ("abcdef", End::Eof));
    assert!(
        took >= Duration::from_millis(200),
        "three pieces, two gaps: {took:?}"
    );
}

#[test]
fn a_truncate_ends_the_pair_after_its_bytes() {
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:truncate=4"]);
    let (bytes, end, _) = exchange(relay.tcp(), b"Hello, Server");
    assert_eq!((text(&bytes).as_str(), end), ("Hell", End::Eof));
    // Up: the upstream gets the first bytes, then the FIN; the pair ends,
    // so the client sees a FIN too.
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        tell.send(got).unwrap();
    });
    let relay = tcp_relay(upstream, &["--fault", "tcp:truncate=4,dir=up"]);
    let (bytes, end, _) = exchange(relay.tcp(), b"Hello, Server");
    assert_eq!((bytes.len(), end), (0, End::Eof));
    assert_eq!(told.recv_timeout(DEADLINE).unwrap(), b"Hell");
}

#[test]
fn corrupt_changes_every_byte_the_same_way_for_the_same_seed() {
    let run = |seed: &str| {
        let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:corrupt", "--seed", seed]);
        exchange(relay.tcp(), b"Hello, Server").0
    };
    let first = run("5");
    assert_eq!(first.len(), 13);
    assert!(first.iter().zip(b"Hello, Server").all(|(a, b)| a != b));
    assert_eq!(run("5"), first, "same seed, same bytes");
    // Up: the upstream sees corrupted bytes, and echoes them as they are.
    let relay = tcp_relay(
        echo_upstream(),
        &["--fault", "tcp:corrupt,dir=up", "--seed", "5"],
    );
    assert_eq!(exchange(relay.tcp(), b"Hello, Server").0, first);
}

#[test]
fn hang_close_and_reset_end_or_stall_the_pair() {
    let relay = tcp_relay(
        echo_upstream(),
        &["--fault", "tcp:hang", "--idle-timeout", "1"],
    );
    let (bytes, end, took) = exchange(relay.tcp(), b"anyone?");
    assert!(bytes.is_empty(), "{bytes:?}");
    assert_eq!(end, End::Eof, "closed by the idle timeout");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:close"]);
    let (bytes, end, _) = exchange(relay.tcp(), b"anyone?");
    assert_eq!((bytes.len(), end), (0, End::Eof));
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:reset,dir=up"]);
    let (bytes, end, _) = exchange(relay.tcp(), b"anyone?");
    assert_eq!((bytes.len(), end), (0, End::Reset));
}

#[test]
fn a_slow_close_holds_the_fin() {
    let relay = tcp_relay(echo_upstream(), &["--fault", "tcp:slow-close=300"]);
    let (bytes, end, took) = exchange(relay.tcp(), b"bye");
    assert_eq!((text(&bytes).as_str(), end), ("bye", End::Eof));
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

/// Every TCP kind, each way, against the echo upstream: what the client
/// gets back, how it ends, and the least time it takes.
#[test]
fn each_tcp_fault_kind_acts_in_each_direction() {
    const HELLO: &[u8] = b"Hello, Server";
    let ms = Duration::from_millis;
    for dir in ["down", "up"] {
        for (kind, bytes, end, least) in [
            ("delay=200", Some(HELLO), End::Eof, ms(200)),
            ("dribble=4/50", Some(HELLO), End::Eof, ms(150)),
            ("truncate=4", None, End::Eof, ms(0)),
            ("corrupt", None, End::Eof, ms(0)),
            ("hang", Some(&b""[..]), End::Eof, ms(900)),
            ("close", Some(&b""[..]), End::Eof, ms(0)),
            ("reset", Some(&b""[..]), End::Reset, ms(0)),
            ("slow-close=200", Some(HELLO), End::Eof, ms(200)),
        ] {
            let fault = format!("tcp:{kind},dir={dir}");
            // Delayed bytes count against the bound: one of their own, so
            // that the smallest settings do not make each byte wait its turn.
            let args = [
                "--fault",
                fault.as_str(),
                "--idle-timeout",
                "1",
                "--seed",
                "4",
                "--max-owed",
                "64",
            ];
            let relay = tcp_relay(echo_upstream(), &args);
            let (got, how, took) = exchange(relay.tcp(), HELLO);
            let case = format!("{fault}: {:?} {how:?} after {took:?}", text(&got));
            assert_eq!(how, end, "{case}");
            assert!(took >= least, "{case}");
            match (kind, bytes) {
                (_, Some(bytes)) => assert_eq!(got, bytes, "{case}"),
                // Cut after 4 bytes: down, the client gets them; up, the
                // upstream does, and the pair ends before its echo.
                ("truncate=4", None) => assert!(b"Hell".starts_with(&got), "{case}"),
                _ => {
                    assert_eq!(got.len(), HELLO.len(), "{case}");
                    assert!(got.iter().zip(HELLO).all(|(a, b)| a != b), "{case}");
                }
            }
        }
    }
}

/// Every UDP kind, each way, against the UDP echo upstream.
#[test]
fn each_udp_fault_kind_acts_in_each_direction() {
    let upstream = UdpUpstream::echo();
    for dir in ["down", "up"] {
        for kind in ["delay=200", "truncate=2", "corrupt", "duplicate", "drop"] {
            let fault = format!("udp:{kind},dir={dir}");
            let relay = udp_relay(upstream.addr, &["--fault", &fault, "--seed", "4"]);
            // A reply that comes, comes within a few milliseconds: waits
            // for absence can be short, waits for a reply must not be.
            let first_wait = if kind == "drop" { 300 } else { 5_000 };
            let client = udp_client(Duration::from_millis(first_wait));
            let sent = Instant::now();
            client.send_to(b"Hello", relay.udp()).unwrap();
            let first = udp_receive(&client).map(|(bytes, _)| bytes);
            let took = sent.elapsed();
            let second_wait = Duration::from_millis(if kind == "duplicate" { 5_000 } else { 100 });
            client.set_read_timeout(Some(second_wait)).unwrap();
            let second = udp_receive(&client).map(|(bytes, _)| bytes);
            let case = format!("{fault}: {first:?} {second:?} after {took:?}");
            match kind {
                "delay=200" => assert!(
                    first.as_deref() == Some(b"Hello") && took >= Duration::from_millis(200),
                    "{case}"
                ),
                "truncate=2" => assert_eq!(first.as_deref(), Some(&b"He"[..]), "{case}"),
                "corrupt" => {
                    let got = first.expect("a reply");
                    assert!(
                        got.len() == 5 && got.iter().zip(b"Hello").all(|(a, b)| a != b),
                        "{case}"
                    );
                }
                "duplicate" => assert!(first.is_some() && first == second, "{case}"),
                _ => assert_eq!(first, None, "{case}"),
            }
            if kind != "duplicate" {
                assert_eq!(second, None, "{case}");
            }
        }
    }
}

#[test]
fn the_same_seed_resets_the_same_connections() {
    let pattern = |seed: &str| -> Vec<End> {
        let relay = tcp_relay(
            echo_upstream(),
            &["--fault", "tcp:reset,p=0.5", "--seed", seed],
        );
        (0..12).map(|_| exchange(relay.tcp(), b"x").1).collect()
    };
    let first = pattern("11");
    assert!(
        first.contains(&End::Reset) && first.contains(&End::Eof),
        "{first:?}"
    );
    assert_eq!(pattern("11"), first);
}

#[test]
fn bad_upstreams_exit_2_naming_the_option() {
    for args in [
        &["--upstream", "tcp:127.0.0.1:0"][..],
        &["--upstream", "tcp:nowhere"],
        &["--upstream", "sctp:127.0.0.1:9"],
        &[
            "--upstream",
            "tcp:127.0.0.1:9",
            "--upstream",
            "tcp:127.0.0.1:10",
        ],
        &["--no-udp", "--upstream", "udp:127.0.0.1:9"],
    ] {
        let (status, stdout, stderr) = common::run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stdout.is_empty(),
            "{args:?}: nothing bound, nothing printed"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--upstream"), "{args:?}: {stderr}");
    }
}

#[test]
fn dir_needs_a_relay_and_faults_at_run_time_work_on_it() {
    let (status, _, stderr) = common::run(&["--fault", "tcp:delay=5,dir=up"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("dir="), "{stderr}");
    let relay = tcp_relay(echo_upstream(), &["--control", "127.0.0.1:0"]);
    let control = relay.control.unwrap();
    assert!(ask(control, "fault tcp:reset,dir=up").starts_with("ok"));
    assert_eq!(exchange(relay.tcp(), b"x").1, End::Reset);
    assert!(ask(control, "clear").starts_with("ok"));
    assert_eq!(exchange(relay.tcp(), b"x").0, b"x");
    assert!(ask(control, "refuse").starts_with("ok"));
    assert!(TcpStream::connect(relay.tcp()).is_err(), "refused");
    assert!(ask(control, "accept").starts_with("ok"));
    assert_eq!(exchange(relay.tcp(), b"y").0, b"y");
    assert!(ask(control, "fault udp:drop,dir=up").starts_with("error: "));
}

#[test]
fn line_mode_judges_each_line_in_its_direction() {
    // Down: the second reply line is held 300 ms, the third behind it.
    let args = ["--mode", "line", "--fault", "tcp:delay=300,every=2"];
    let relay = tcp_relay(echo_upstream(), &args);
    let client = connect(relay.tcp());
    let started = Instant::now();
    (&client).write_all(b"one\ntwo\nthree\n").unwrap();
    assert_eq!(read_exactly(&client, 4), b"one\n");
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(read_exactly(&client, 10), b"two\nthree\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Up: the upstream gets the first line, then the pair is reset.
    let args = ["--mode", "line", "--fault", "tcp:reset,every=2,dir=up"];
    let relay = tcp_relay(echo_upstream(), &args);
    let (bytes, end, _) = exchange(relay.tcp(), b"one\ntwo\nthree\n");
    assert_eq!(end, End::Reset);
    assert!(b"one\n".starts_with(&bytes), "{bytes:?}");
}

#[test]
fn line_mode_counts_client_lines_and_closes_on_an_over_long_one() {
    let (tell, told) = mpsc::channel();
    let upstream = tcp_upstream(move |_, mut stream| {
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        tell.send(got).unwrap();
    });
    let args = [
        "--mode",
        "line",
        "--max-line",
        "16",
        "--control",
        "127.0.0.1:0",
    ];
    let relay = tcp_relay(upstream, &args);
    let control = relay.control.unwrap();
    let (_, end, _) = exchange(relay.tcp(), b"ok\nfine\nthis line is too long\nnever\n");
    assert_eq!(end, End::Eof, "the pair is closed");
    // Without a fault lines pass as they come: the pair closes once more
    // than --max-line bytes of one went by, so at most that many passed
    // (with one big read, none of them).
    let got = text(&told.recv_timeout(DEADLINE).unwrap());
    assert!(
        got.starts_with("ok\nfine\n") && got.len() <= 8 + 16,
        "{got:?}"
    );
    assert!(!got.contains("long"), "{got:?}");
    assert_eq!(ask(control, "received 2 5"), "ok 2");
}

/// The library's way: a test server relaying to another, ackloop's own
/// line-mode echo, with a fault on the requests.
#[test]
fn the_test_server_builder_takes_an_upstream() {
    use ackloop::testing::TestServer;
    use ackloop::{Echo, Mode};
    let echo = TestServer::builder()
        .mode(Mode::Line)
        .responder(Echo)
        .start()
        .unwrap();
    let upstream = format!("tcp:{}", echo.tcp_addr()).parse().unwrap();
    let relay = TestServer::builder()
        .mode(Mode::Line)
        .upstream(upstream)
        .fault("tcp:corrupt,every=2,dir=up".parse().unwrap())
        .seed(9)
        .start()
        .unwrap();
    let client = connect(relay.tcp_addr());
    (&client).write_all(b"one\ntwo\nthree\n").unwrap();
    let back = read_exactly(&client, 14);
    assert_eq!(&back[..4], b"one\n");
    assert_ne!(
        &back[4..8],
        b"two\n",
        "the second line was corrupted on its way up"
    );
    assert_eq!(&back[8..], b"three\n");
    assert_eq!(echo.wait_for(3)[0].bytes, b"one");
    assert_eq!(relay.stats().up_bytes_out, 14);
}

// ----- a real client and server no one here wrote -------------------------

#[test]
fn python_http_server_through_the_relay() {
    let Some(mut http) = PythonHttp::start() else {
        panic!("python3 is needed (.ci/run installs it)");
    };
    // Delayed bytes count against the bound: under the smallest settings
    // (one byte) each byte would wait its own delay.
    let args = [
        "--fault",
        "tcp:delay=200",
        "--seed",
        "1",
        "--max-owed",
        "65536",
    ];
    let relay = tcp_relay(http.addr, &args);
    let url = format!("http://{}/", relay.tcp());
    let script = "import sys, urllib.request\n\
                  body = urllib.request.urlopen(sys.argv[1], timeout=10).read()\n\
                  print(len(body))";
    let started = Instant::now();
    let output = std::process::Command::new("python3")
        .args(["-c", script, &url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let length: usize = text(&output.stdout).trim().parse().unwrap();
    assert!(length > 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    http.stop();
}

/// `python3 -m http.server` on a free port, serving an empty directory.
struct PythonHttp {
    child: std::process::Child,
    addr: SocketAddr,
}

impl PythonHttp {
    fn start() -> Option<PythonHttp> {
        let dir = std::env::temp_dir().join(format!("ackloop-relay-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<p>hello through the relay</p>\n").unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait_until(DEADLINE, || TcpStream::connect(addr).is_ok()),
            "python3 -m http.server did not listen on {addr}"
        );
        Some(PythonHttp { child, addr })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

// ----- helpers --------------------------------------------------------------

/// Whether `e` says the peer reset the connection (a shutdown after the
/// reset says "not connected").
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected
    )
}

/// One control command's answer line.
fn ask(control: SocketAddr, command: &str) -> String {
    let mut stream = connect(control);
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0; 1];
    while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    text(&answer)
}

/// Stops the relay with SIGTERM: its exit status, summary line and stderr.
fn relay_summary(mut relay: Server) -> (std::process::ExitStatus, String, String) {
    let (status, stderr) = relay.terminate();
    let summary = assert_summary(&stderr);
    (status, summary, stderr)
}

// ----- UDP flows ------------------------------------------------------------

/// Starts a server relaying UDP to `upstream`, with `args` after.
#[track_caller]
fn udp_relay(upstream: SocketAddr, args: &[&str]) -> Server {
    let spec = format!("udp:{upstream}");
    let mut all = vec!["--upstream", spec.as_str()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// A client socket on a free port with a short read timeout.
fn udp_client(timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

/// The next datagram and its source, or `None` within the read timeout.
fn udp_receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0; 65_536];
    match common::retrying(|| socket.recv_from(&mut buf)) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn datagrams_relay_both_ways_through_one_flow_per_client() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(upstream.addr, &[]);
    let clients = [udp_client(DEADLINE), udp_client(DEADLINE)];
    for round in 0..3 {
        for (i, client) in clients.iter().enumerate() {
            let datagram = format!("client {i} round {round}");
            client.send_to(datagram.as_bytes(), relay.udp()).unwrap();
            let (reply, from) = udp_receive(client).expect("a reply");
            assert_eq!(text(&reply), datagram);
            assert_eq!(from, relay.udp(), "replies come from the address sent to");
        }
    }
    let sources = upstream.sources.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<_> = sources.iter().collect();
    assert_eq!(sources.len(), 6);
    assert_eq!(distinct.len(), 2, "one flow per client: {sources:?}");
    let empty = udp_client(DEADLINE);
    empty.send_to(b"", relay.udp()).unwrap();
    assert_eq!(udp_receive(&empty).expect("the empty datagram too").0, b"");
}

/// One flow at most, closed after a second of silence: a second client is
/// dropped until the first one's flow expires, then served.
#[test]
fn flows_are_capped_and_expire() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(upstream.addr, &["--max-flows", "1", "--flow-timeout", "1"]);
    let first = udp_client(DEADLINE);
    first.send_to(b"first", relay.udp()).unwrap();
    assert_eq!(udp_receive(&first).unwrap().0, b"first");
    let last_active = Instant::now();
    let second = udp_client(Duration::from_millis(100));
    let mut dropped = 0;
    let served = wait_until(DEADLINE, || {
        second.send_to(b"second", relay.udp()).unwrap();
        match udp_receive(&second) {
            Some((reply, _)) => reply == b"second",
            None => {
                dropped += 1;
                false
            }
        }
    });
    assert!(served, "the second client was never served");
    let waited = last_active.elapsed();
    assert!(dropped >= 1, "dropped while the first flow lived");
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}"
    );
    let (_, summary, _) = relay_summary(relay);
    assert!(
        counter(&summary, "replies dropped").unwrap() >= 1,
        "{summary}"
    );
}

#[test]
fn an_unreachable_upstream_is_counted_and_the_flow_goes_on() {
    let gone = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = udp_relay(gone, &["--control", "127.0.0.1:0"]);
    let client = udp_client(Duration::from_millis(50));
    let control = relay.control.unwrap();
    let mut stats = String::new();
    let counted = wait_until(DEADLINE, || {
        client.send_to(b"hello?", relay.udp()).unwrap();
        stats = ask(control, "stats");
        !stats.contains(" upstream_failed=0 ")
    });
    assert!(counted, "{stats}");
    assert!(relay_summary(relay).0.success());
}

/// The same seed drops the same replies: 10 % of them, the same ones.
#[test]
fn the_same_seed_drops_the_same_datagrams_each_way() {
    for dir in ["down", "up"] {
        let pattern = |seed: &str| -> Vec<bool> {
            let upstream = UdpUpstream::echo();
            let fault = format!("udp:drop,p=0.1,dir={dir}");
            let relay = udp_relay(upstream.addr, &["--fault", &fault, "--seed", seed]);
            let client = udp_client(Duration::from_millis(200));
            (0..30)
                .map(|i| {
                    client
                        .send_to(format!("{i}").as_bytes(), relay.udp())
                        .unwrap();
                    udp_receive(&client).is_some()
                })
                .collect()
        };
        let first = pattern("3");
        let lost = first.iter().filter(|got| !**got).count();
        assert!((1..=10).contains(&lost), "{dir}: {lost} of 30 lost");
        assert_eq!(pattern("3"), first, "{dir}");
    }
}

#[test]
fn udp_faults_shape_each_direction() {
    let upstream = UdpUpstream::echo();
    let relay = udp_relay(upstream.addr, &["--fault", "udp:delay=200,dir=up"]);
    let client = udp_client(DEADLINE);
    let started = Instant::now();
    client.send_to(b"late", relay.udp()).unwrap();
    assert_eq!(udp_receive(&client).unwrap().0, b"late");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let relay = udp_relay(
        upstream.addr,
        &[
            "--fault",
            "udp:duplicate",
            "--fault",
            "udp:truncate=2,dir=up",
        ],
    );
    client.send_to(b"twice", relay.udp()).unwrap();
    assert_eq!(udp_receive(&client).unwrap().0, b"tw");
    assert_eq!(udp_receive(&client).unwrap().0, b"tw");
}
