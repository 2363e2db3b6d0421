//! Core: the `ackloop` binary against its contract (SPEC sections 1, 3
//! and 4), black box, over real sockets on 127.0.0.1 with port 0.
//!
//! Linux only: signals through `kill`, closed pipes through `pipe2`.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpListener, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{
    Closed, DEADLINE, End, SIGINT, SIGTERM, Server, assert_summary, connect, counter, join,
    line_exchange, read_exactly, read_until_closed, read_until_closed_by, run, run_closed,
    tcp_request, text, udp_request, wait_readable, write_until_blocked,
};

/// The default reply, and the line-mode reply.
const REPLY: &str = "Received";
const LINE_REPLY: &str = "Received\n";

#[test]
fn the_article_tcp_and_udp_clients_run_against_one_process_at_once() {
    let server = Server::start(&[]);
    let (tcp, udp) = (server.tcp(), server.udp());
    let start = Arc::new(Barrier::new(2));
    let go = Arc::clone(&start);
    let tcp_client = std::thread::spawn(move || {
        go.wait();
        (0..20)
            .map(|_| text(&tcp_request(tcp, b"Hello, Server")))
            .collect::<Vec<_>>()
    });
    let go = Arc::clone(&start);
    let udp_client = std::thread::spawn(move || {
        go.wait();
        (0..20)
            .map(|_| text(&udp_request(udp, b"Hello, Server")))
            .collect::<Vec<_>>()
    });
    assert_eq!(join(tcp_client), vec![REPLY; 20]);
    assert_eq!(join(udp_client), vec![REPLY; 20]);
}

#[test]
fn once_mode_replies_exactly_once_then_closes() {
    let server = Server::start(&["--mode", "once"]);
    let stream = connect(server.tcp());
    stream.set_nodelay(true).unwrap();
    (&stream).write_all(b"Hello, ").unwrap();
    // The reply follows the first bytes, without waiting for more.
    wait_readable(&stream);
    // Later bytes are read and discarded: no second reply. (The write may
    // race the server's close; either way nothing more may come back.)
    let _ = (&stream).write_all(b"Server");
    let _ = stream.shutdown(Shutdown::Write);
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(text(&drained.bytes), REPLY);
    assert_eq!(drained.end, End::Eof, "closed with a FIN, not a reset");
}

#[test]
fn once_mode_reply_survives_a_mebibyte_sent_before_reading() {
    let server = Server::start(&[]);
    // A lingering close: a reset would destroy the reply (and `tcp_request`
    // insists on an orderly close).
    for _ in 0..2 {
        assert_eq!(
            text(&tcp_request(server.tcp(), &vec![b'x'; 1 << 20])),
            REPLY
        );
    }
    assert_eq!(text(&tcp_request(server.tcp(), b"Hello, Server")), REPLY);
}

#[test]
fn a_client_that_leaves_without_sending_gets_nothing_and_the_server_goes_on() {
    let server = Server::start(&[]);
    for _ in 0..10 {
        drop(connect(server.tcp())); // Connect and leave.
    }
    // One stays connected, silent, while another is served.
    let lurker = connect(server.tcp());
    assert_eq!(text(&tcp_request(server.tcp(), b"Hello, Server")), REPLY);
    // It leaves (shuts down its side) without sending: nothing is owed.
    lurker.shutdown(Shutdown::Write).unwrap();
    let drained = read_until_closed(&lurker, DEADLINE);
    assert_eq!(text(&drained.bytes), "", "no reply without a request");
    assert_eq!(drained.end, End::Eof);
    assert_eq!(text(&tcp_request(server.tcp(), b"again")), REPLY);
}

#[test]
fn line_mode_answers_lines_sent_one_byte_at_a_time() {
    let server = Server::start(&["--mode", "line"]);
    let stream = connect(server.tcp());
    stream.set_nodelay(true).unwrap();
    // Each line goes out one byte per write; its reply comes as soon as
    // its newline does. Empty lines are lines too.
    for line in [&b"Hello, Server\n"[..], b"second\n", b"\n", b"last one\r\n"] {
        for byte in line {
            (&stream).write_all(&[*byte]).unwrap();
        }
        assert_eq!(text(&read_exactly(&stream, LINE_REPLY.len())), LINE_REPLY);
    }
    // Nothing more is owed: shutting down gets an orderly close.
    stream.shutdown(Shutdown::Write).unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(text(&drained.bytes), "");
    assert_eq!(drained.end, End::Eof);
}

#[test]
fn ten_thousand_pipelined_lines_in_one_write_are_all_answered_in_order() {
    let server = Server::start(&["--mode", "line"]);
    let stream = connect(server.tcp());
    let lines: Vec<u8> = (0..10_000)
        .map(|i| match i % 4 {
            0 => format!("Hello, Server {i}\n"),
            1 => "\n".to_string(),
            2 => format!("crlf {i}\r\n"),
            _ => format!("{}\n", "x".repeat(i % 200)),
        })
        .flat_map(String::into_bytes)
        .collect();
    // Written from another thread while this one reads: the replies
    // (90,000 bytes) need not fit in any buffer.
    let writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        (&writer).write_all(&lines).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let drained = read_until_closed(&stream, DEADLINE);
    join(sender);
    assert_eq!(drained.end, End::Eof);
    assert_eq!(drained.bytes.len(), 10_000 * LINE_REPLY.len());
    assert!(
        drained
            .bytes
            .chunks(LINE_REPLY.len())
            .all(|r| r == LINE_REPLY.as_bytes()),
        "every reply whole and in sequence"
    );
}

#[test]
fn line_mode_crlf_and_a_final_line_after_shutdown() {
    let server = Server::start(&["--mode", "line"]);
    // CRLF lines, an empty CRLF line, and a final line without a newline
    // that is answered once the client shuts down its side.
    for (input, replies) in [
        (&b"a\r\nb\r\n\r\nfinal"[..], 4),
        (b"only", 1),
        // A newline-terminated last line leaves no final line to answer.
        (b"done\n", 1),
        (b"done\r\n", 1),
    ] {
        let stream = connect(server.tcp());
        (&stream).write_all(input).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let drained = read_until_closed(&stream, DEADLINE);
        assert_eq!(
            text(&drained.bytes),
            LINE_REPLY.repeat(replies),
            "{:?}",
            text(input)
        );
        assert_eq!(drained.end, End::Eof, "{:?}", text(input));
    }
}

#[test]
fn a_line_over_max_line_closes_the_connection_after_the_replies_owed() {
    let server = Server::start(&["--mode", "line", "--max-line", "16"]);
    let stream = connect(server.tcp());
    (&stream)
        .write_all(b"ok\n12345678901234567\nnever answered\n")
        .unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(text(&drained.bytes), LINE_REPLY, "only the line before it");
    assert_ne!(drained.end, End::TimedOut, "the connection must be closed");
    server.wait_for_stderr("a warning about the long line", |log| {
        log.lines().any(|line| {
            let line = line.to_lowercase();
            line.contains("warn") && line.contains("line")
        })
    });
    // The server goes on.
    let other = connect(server.tcp());
    assert_eq!(text(&line_exchange(&other, b"fine\n", 9)), LINE_REPLY);
}

#[test]
fn max_line_counts_the_bytes_without_the_terminator() {
    let server = Server::start(&["--mode", "line", "--max-line", "16"]);
    let stream = connect(server.tcp());
    stream.set_nodelay(true).unwrap();
    // Exactly 16 bytes, with `\n` and with `\r\n` (the `\r` sent apart
    // from its `\n`): both within the limit.
    assert_eq!(
        text(&line_exchange(&stream, b"0123456789abcdef\n", 9)),
        LINE_REPLY
    );
    (&stream).write_all(b"0123456789abcdef\r").unwrap();
    assert_eq!(text(&line_exchange(&stream, b"\n", 9)), LINE_REPLY);
    // 17 bytes: over.
    (&stream).write_all(b"0123456789abcdefg\n").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(text(&drained.bytes), "");
    assert_ne!(drained.end, End::TimedOut, "the connection must be closed");
}

#[test]
fn udp_answers_the_empty_and_the_largest_datagram() {
    let mut server = Server::start(&["--no-tcp"]);
    assert_eq!(server.tcp, None, "no tcp line with --no-tcp");
    assert_eq!(text(&udp_request(server.udp(), b"")), REPLY);
    assert_eq!(text(&udp_request(server.udp(), &vec![7; 65_507])), REPLY);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let summary = assert_summary(&stderr);
    // The largest datagram was read whole.
    assert_eq!(counter(&summary, "datagrams"), Some(2), "{summary}");
    assert_eq!(counter(&summary, "bytes in"), Some(65_507), "{summary}");
    assert_eq!(server.extra_stdout(), Vec::<String>::new());
}

#[test]
fn two_hundred_concurrent_connections_are_all_answered() {
    let mut server = Server::start(&[]);
    let streams: Vec<_> = (0..200).map(|_| connect(server.tcp())).collect();
    for stream in &streams {
        (&*stream).write_all(b"Hello, Server").unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    for (i, stream) in streams.iter().enumerate() {
        let drained = read_until_closed_by(stream, deadline);
        assert_eq!(text(&drained.bytes), REPLY, "client {i}");
        assert_eq!(drained.end, End::Eof, "client {i}");
    }
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let summary = assert_summary(&stderr);
    assert_eq!(counter(&summary, "accepted"), Some(200), "{summary}");
    assert_eq!(counter(&summary, "rejected"), Some(0), "{summary}");
    assert_eq!(counter(&summary, "bytes in"), Some(200 * 13), "{summary}");
    assert_eq!(counter(&summary, "bytes out"), Some(200 * 8), "{summary}");
}

#[test]
fn bad_options_exit_2_with_one_line_naming_the_option() {
    let long_reply = "r".repeat(1025);
    for (args, named) in [
        (&["--frobnicate"][..], &["--frobnicate"][..]),
        (&["--mode", "bogus"], &["--mode"]),
        (&["--mode"], &["--mode"]),
        (&["--reply", ""], &["--reply"]),
        (&["--reply", &long_reply], &["--reply"]),
        (&["--max-connections", "-1"], &["--max-connections"]),
        (&["--max-connections", "many"], &["--max-connections"]),
        (&["--idle-timeout", "x"], &["--idle-timeout"]),
        (&["--idle-timeout", "-1"], &["--idle-timeout"]),
        (&["--max-line", "-5"], &["--max-line"]),
        (&["--tcp", "notanaddr"], &["--tcp"]),
        (&["--udp", "127.0.0.1"], &["--udp"]),
        (&["--no-tcp", "--no-udp"], &["--no-tcp", "--no-udp"]),
        (&["--log-level", "loud"], &["--log-level"]),
    ] {
        let shown: String = format!("{args:?}").chars().take(80).collect();
        let (status, stdout, stderr) = run(args);
        assert_eq!(status.code(), Some(2), "{shown}: {stderr}");
        assert_eq!(stdout, "", "{shown}: nothing bound, nothing printed");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{shown}: one line: {stderr}"
        );
        assert!(
            named.iter().any(|option| stderr.contains(option)),
            "{shown}: names {named:?}: {stderr}"
        );
    }
}

#[test]
fn a_taken_address_exits_1_naming_the_protocol_the_address_and_the_reason() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap().to_string();
    let udp_addr = udp.local_addr().unwrap().to_string();
    for (args, protocol, addr) in [
        (["--tcp", tcp_addr.as_str()], "tcp", &tcp_addr),
        (["--udp", udp_addr.as_str()], "udp", &udp_addr),
    ] {
        let (status, stdout, stderr) = run(&args);
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}: no address line");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        let lower = stderr.to_lowercase();
        assert!(lower.contains(protocol), "names {protocol}: {stderr}");
        assert!(stderr.contains(addr.as_str()), "names {addr}: {stderr}");
        assert!(lower.contains("in use"), "the OS reason: {stderr}");
    }
}

#[test]
fn sigterm_delivers_the_replies_owed_then_exits_0_with_a_summary() {
    let mut server = Server::start(&["--mode", "line"]);
    let stream = connect(server.tcp());
    // 2 MB of lines, pipelined, none of the replies read yet: far more
    // than the socket buffers hold, so replies are owed when the signal
    // comes.
    let writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        write_until_blocked(&writer, 2_000_000, &b"x\n".repeat(16 * 1024))
    });
    wait_readable(&stream); // The server has begun answering.
    server.signal(SIGTERM);
    let signalled = Instant::now();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(
        drained.end,
        End::Eof,
        "the stream ends with a FIN, not a reset"
    );
    let got = drained.bytes.len();
    assert!(got >= LINE_REPLY.len(), "at least one reply");
    assert_eq!(
        got % LINE_REPLY.len(),
        0,
        "whole replies only ({got} bytes)"
    );
    assert!(
        drained
            .bytes
            .chunks(LINE_REPLY.len())
            .all(|r| r == LINE_REPLY.as_bytes()),
        "whole replies only"
    );
    let status = server.wait_timeout(Duration::from_secs(10));
    let waited = signalled.elapsed();
    drop(stream);
    join(sender);
    let Some(status) = status else {
        panic!("still running 10 s after SIGTERM:\n{}", server.stderr());
    };
    let stderr = server.final_stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(waited < Duration::from_secs(10), "exited after {waited:?}");
    let summary = assert_summary(&stderr);
    assert_eq!(counter(&summary, "accepted"), Some(1), "{summary}");
    // Every reply byte the server counts as sent reached the client.
    assert_eq!(
        counter(&summary, "bytes out"),
        Some(got as u64),
        "{summary}"
    );
    assert_eq!(
        server.extra_stdout(),
        Vec::<String>::new(),
        "stdout: addresses only"
    );
}

#[test]
fn an_idle_server_exits_at_once_on_sigterm_and_on_sigint() {
    for signal in [SIGTERM, SIGINT] {
        let mut server = Server::start(&[]);
        let signalled = Instant::now();
        server.signal(signal);
        let status = server.wait_timeout(Duration::from_secs(3));
        let Some(status) = status else {
            panic!("idle server still running 3 s after signal {signal}");
        };
        let stderr = server.final_stderr();
        assert_eq!(status.code(), Some(0), "signal {signal}: {stderr}");
        assert!(signalled.elapsed() < Duration::from_secs(3));
        let summary = assert_summary(&stderr);
        assert_eq!(counter(&summary, "accepted"), Some(0), "{summary}");
    }
}

#[test]
fn reply_sets_the_reply_text_for_tcp_udp_and_lines() {
    let got_it = Server::start(&["--reply", "Got it"]);
    assert_eq!(text(&tcp_request(got_it.tcp(), b"Hello, Server")), "Got it");
    assert_eq!(text(&udp_request(got_it.udp(), b"Hello, Server")), "Got it");

    let utf8 = "Ça marche ✓";
    let line = Server::start(&["--mode", "line", "--reply", utf8]);
    let stream = connect(line.tcp());
    let want = format!("{utf8}\n");
    let reply = line_exchange(&stream, b"one\r\n", want.len());
    assert_eq!(
        text(&reply),
        want,
        "the reply plus \\n, whatever the terminator"
    );

    // The longest reply allowed, 1024 bytes.
    let long = "r".repeat(1024);
    let server = Server::start(&["--reply", &long]);
    assert_eq!(text(&tcp_request(server.tcp(), b"Hello")), long);
    assert_eq!(text(&udp_request(server.udp(), b"Hello")), long);
}

#[test]
fn no_udp_prints_only_the_tcp_line() {
    let mut server = Server::start(&["--no-udp"]);
    assert_eq!(server.udp, None);
    assert_eq!(text(&tcp_request(server.tcp(), b"Hello, Server")), REPLY);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(
        server.extra_stdout(),
        Vec::<String>::new(),
        "one line on stdout"
    );
}

#[test]
fn echo_sends_every_message_back() {
    let server = Server::start(&["--mode", "line", "--echo"]);
    let stream = connect(server.tcp());
    // Each line comes back plus `\n`, whatever its terminator.
    let replies = line_exchange(&stream, b"one\r\ntwo\n", 8);
    assert_eq!(text(&replies), "one\ntwo\n");
    assert_eq!(text(&udp_request(server.udp(), b"datagram")), "datagram");
    let once = Server::start(&["--echo"]);
    assert_eq!(
        text(&tcp_request(once.tcp(), b"Hello, Server")),
        "Hello, Server"
    );
}

#[test]
fn a_closed_stderr_drops_the_log_lines_and_the_server_serves_on() {
    let mut server = Server::start_with_stderr_held(&[
        "--mode",
        "line",
        "--max-line",
        "8",
        "--log-level",
        "debug",
    ]);
    // The log reader goes away: every log line from now on meets EPIPE.
    server.close_stderr();
    // An over-long line: a warning, and debug lines for its connection.
    let stream = connect(server.tcp());
    (&stream).write_all(b"123456789\n").unwrap();
    let drained = read_until_closed(&stream, DEADLINE);
    assert_eq!(text(&drained.bytes), "", "no reply to the long line");
    assert_ne!(drained.end, End::TimedOut, "the connection must be closed");
    // Those lines were dropped, not the server: new clients are served.
    if !server.is_running() {
        panic!("the server died: {}", server.wait());
    }
    let other = connect(server.tcp());
    assert_eq!(text(&line_exchange(&other, b"fine\n", 9)), LINE_REPLY);
    assert_eq!(text(&udp_request(server.udp(), b"Hello, Server")), REPLY);
    drop(other);
    // And it stops as usual, its summary going nowhere.
    server.signal(SIGTERM);
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn a_closed_stdout_is_a_one_line_error_not_a_panic() {
    let (status, _, stderr) = run_closed(Closed::Stdout, &["--mode", "line"]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    match status {
        // Serving on without stdout is allowed too: it ran until killed.
        None => {}
        Some(status) => {
            assert_eq!(status.code(), Some(1), "{status}: {stderr}");
            let last = stderr.trim_end().lines().last().unwrap_or_default();
            assert!(last.contains("stdout"), "a one-line error: {stderr}");
        }
    }
}

#[test]
fn help_and_version_on_a_closed_stdout_exit_1_without_a_panic() {
    for flag in ["--help", "--version"] {
        let (status, _, stderr) = run_closed(Closed::Stdout, &[flag]);
        let status = status.expect("exits");
        assert_eq!(status.code(), Some(1), "{flag}: {status}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{flag}: {stderr}");
        assert!(stderr.contains("stdout"), "{flag}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
    }
}

#[test]
fn a_usage_error_with_a_closed_stderr_still_exits_2() {
    // The one-line error is dropped; the status still tells what happened.
    let (status, stdout, _) = run_closed(Closed::Stderr, &["--frobnicate"]);
    let status = status.expect("exits");
    assert_eq!(status.code(), Some(2), "bad usage: {status}");
    assert_eq!(stdout, "");
}

#[test]
fn a_closed_stdout_and_stderr_exit_1_without_a_panic() {
    // Neither the addresses nor the error about them can be written.
    let (status, _, _) = run_closed(Closed::Both, &[]);
    let status = status.expect("exits");
    assert_eq!(status.code(), Some(1), "stdout unwritable: {status}");
}

#[test]
fn a_fault_spec_error_says_what_was_meant() {
    for (spec, says) in [
        (
            "udp:loss",
            &["unknown fault kind 'loss'", "delay", "drop"][..],
        ),
        ("tcp:drop", &["tcp has no drop", "reset"]),
        ("udp:drop,10%", &["did you mean p=0.1?"]),
        ("udp:drop,0.25", &["did you mean p=0.25?"]),
        ("udp:drop,prob=1", &["unknown selector 'prob'", "p="]),
    ] {
        let (status, stdout, stderr) = run(&["--fault", spec]);
        assert_eq!(status.code(), Some(2), "{spec}: {stderr}");
        assert_eq!(stdout, "", "{spec}: nothing bound");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{spec}: {stderr}");
        for said in says {
            assert!(stderr.contains(said), "{spec}: says {said:?}: {stderr}");
        }
    }
}

/// The options of a part this build left out (`--no-default-features
/// --features cli`, the core's program) are bad usage: one line naming
/// the option and the cargo feature it needs, exit 2, nothing bound.
#[test]
fn an_option_of_a_part_left_out_is_a_usage_error_naming_its_feature() {
    let parts = [
        (
            "--upstream",
            "tcp:127.0.0.1:1",
            "relay",
            cfg!(feature = "relay"),
        ),
        ("--rule", "* => x", "scripts", cfg!(feature = "scripts")),
        ("--journal", "-", "journal", cfg!(feature = "journal")),
        (
            "--control",
            "127.0.0.1:0",
            "control",
            cfg!(feature = "control"),
        ),
    ];
    for (option, value, feature, built) in parts {
        if built {
            continue;
        }
        let (status, stdout, stderr) = run(&[option, value]);
        assert_eq!(status.code(), Some(2), "{option}: {stderr}");
        assert!(stdout.is_empty(), "{option}: bound and announced: {stdout}");
        let line = stderr.trim_end();
        assert!(!line.contains('\n'), "{option}: {stderr}");
        assert!(line.contains(option) && line.contains(feature), "{stderr}");
    }
}
