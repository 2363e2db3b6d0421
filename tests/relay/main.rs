//! The relay (SPEC section 11): the `ackloop` binary with `--upstream`,
//! black box over loopback, between clients and upstreams the tests start
//! themselves (an echo server, scripted servers, Python's `http.server`).
//!
//! Each test asserts what the client and the upstream see: the bytes, EOF
//! or reset, lower bounds on timing; upper bounds are the helpers'
//! generous deadlines. Linux only, like the other black-box suites
//! (`/proc`, `kill`, the accept-queue behaviour a hanging connect uses).
//!
//! Here: bytes, half-closes, resets, limits and shutdown over TCP; in
//! [`ends`], how the peers end a pair (a reset after a half-close, a
//! hang the client ends, SIGTERM while bytes are held); in [`bounds`],
//! the memory bound under faults; in [`faults`], faults on what is
//! relayed; in [`delayed`], a delay as latency (not a bandwidth cap)
//! and its jitter; in [`udp`], UDP flows; in [`python`], a real client and
//! server no one here wrote; in [`splice`], bulk through the pipes a
//! plain direction splices through.
#![cfg(target_os = "linux")]

mod bounds;
#[path = "../common/mod.rs"]
mod common;
mod delayed;
mod ends;
mod faults;
mod python;
mod splice;
mod toxics;
mod udp;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::upstream::{HangingListener, echo, echo_upstream, refusing_addr, reset, tcp_upstream};
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
