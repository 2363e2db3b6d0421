//! Faults on relayed TCP (and UDP, each kind each way): delay, dribble,
//! truncate, corrupt, the ends, seeds, line mode, faults at run time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::upstream::{UdpUpstream, echo_upstream, tcp_upstream};
use crate::common::{DEADLINE, End, connect, read_exactly, text};
use crate::udp::{udp_client, udp_receive, udp_relay};
use crate::{ask, exchange, tcp_relay};

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
    // A hang lasts until the client ends it (SPEC 8), here with its FIN:
    // no idle timeout to end it instead.
    let relay = tcp_relay(
        echo_upstream(),
        &["--fault", "tcp:hang", "--idle-timeout", "0"],
    );
    let (bytes, end, _) = exchange(relay.tcp(), b"anyone?");
    assert!(bytes.is_empty(), "{bytes:?}");
    assert_eq!(end, End::Eof, "closed once the client's FIN came");
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
            // Ended by the client's FIN, not by a timeout (there is none).
            ("hang", Some(&b""[..]), End::Eof, ms(0)),
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
                "0",
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
        let (status, stdout, stderr) = crate::common::run(args);
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
    let (status, _, stderr) = crate::common::run(&["--fault", "tcp:delay=5,dir=up"]);
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
