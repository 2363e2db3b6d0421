//! Live control: `--control ADDR` over a real control connection, black
//! box on loopback, every wait bounded by a deadline.
//!
//! Linux only, like the other black-box suites.

// Some helpers serve only the tests of rules (`scripts`).
#![cfg_attr(not(feature = "scripts"), allow(unused))]
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::control::Control;
use common::{DEADLINE, Server, connect, run, tcp_request, text, udp_request, wait_until};

/// One UDP exchange with a short wait: the reply, or `None` on a timeout.
fn udp_try(addr: SocketAddr, wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send(b"Hello, Server").unwrap();
    let mut buf = [0; 64];
    match common::retrying(|| socket.recv(&mut buf)) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn the_control_line_comes_after_the_others_and_is_loopback_only() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    assert!(server.tcp.is_some() && server.udp.is_some() && server.control.is_some());
    let (status, _, stderr) = run(&["--control", "0.0.0.0:0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--control"), "{stderr}");
}

#[test]
fn past_the_fault_cap_control_answers_an_error_and_keeps_the_list() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    for _ in 0..64 {
        assert_eq!(control.ask("fault udp:delay=0"), "ok");
    }
    let answer = control.ask("fault udp:drop");
    assert!(answer.starts_with("error: fault 'udp:drop'"), "{answer}");
    assert!(!answer.contains("--fault"), "no flag was typed: {answer}");
    // The drop was not added: datagrams are still answered.
    assert_eq!(udp_request(server.udp(), b"hi"), b"Received");
    assert_eq!(control.ask("clear"), "ok");
    assert_eq!(control.ask("fault udp:drop,first=1"), "ok");
}

#[test]
fn fault_then_clear_changes_what_clients_see() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    assert_eq!(udp_request(server.udp(), b"hi"), b"Received");
    assert_eq!(control.ask("fault udp:drop"), "ok");
    assert_eq!(
        udp_try(server.udp(), Duration::from_millis(300)),
        None,
        "dropped"
    );
    assert_eq!(control.ask("fault tcp:close"), "ok");
    assert_eq!(
        tcp_request(server.tcp(), b"hi"),
        b"",
        "closed without a reply"
    );
    assert_eq!(control.ask("clear"), "ok");
    assert_eq!(udp_request(server.udp(), b"hi"), b"Received");
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"Received");
    let stats = control.ask("stats");
    assert!(stats.contains(" faults=2"), "{stats}");
}

#[test]
fn a_fault_added_later_counts_from_then() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    for _ in 0..3 {
        assert_eq!(tcp_request(server.tcp(), b"hi"), b"Received");
    }
    assert_eq!(control.ask("fault tcp:close,first=1"), "ok");
    assert_eq!(
        tcp_request(server.tcp(), b"hi"),
        b"",
        "the first after the ok"
    );
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"Received");
}

#[test]
fn reply_changes_the_text_but_not_replies_already_owed() {
    let server = Server::start(&["--mode", "line", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let client = connect(server.tcp());
    let mut lines = BufReader::new(client.try_clone().unwrap());
    (&client).write_all(b"one\n").unwrap();
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "Received\n");
    assert_eq!(control.ask("reply Got it, thanks"), "ok");
    (&client).write_all(b"two\n").unwrap();
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "Got it, thanks\n");
    assert_eq!(udp_request(server.udp(), b"x"), b"Got it, thanks");
    assert!(control.ask("reply").starts_with("error: "), "empty reply");
}

#[test]
fn refuse_then_accept_on_the_same_port() {
    let server = Server::start(&["--mode", "line", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let open = connect(server.tcp());
    // Accepted and served (a client still in the backlog is reset when
    // the listener closes, as with any server).
    assert_eq!(
        text(&common::line_exchange(&open, b"hi\n", 9)),
        "Received\n"
    );
    assert_eq!(control.ask("refuse"), "ok");
    assert_eq!(control.ask("refuse"), "ok", "may be repeated");
    let refused = TcpStream::connect(server.tcp()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    // The open connection goes on.
    let reply = common::line_exchange(&open, b"still here\n", 9);
    assert_eq!(text(&reply), "Received\n");
    assert_eq!(control.ask("accept"), "ok");
    let again = connect(server.tcp());
    assert_eq!(
        text(&common::line_exchange(&again, b"back\n", 9)),
        "Received\n"
    );
}

#[test]
fn refuse_and_accept_without_tcp_are_errors() {
    let server = Server::start(&["--no-tcp", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    assert!(control.ask("refuse").starts_with("error: "));
    assert!(control.ask("accept").starts_with("error: "));
}

#[test]
fn received_answers_when_the_count_arrives_without_blocking_others() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    control.send("received 3 10");
    // While it waits, the server serves (and counts) other clients.
    assert_eq!(udp_request(server.udp(), b"1"), b"Received");
    assert_eq!(tcp_request(server.tcp(), b"2"), b"Received");
    // A second control connection is answered meanwhile.
    let mut other = Control::open(&server);
    assert!(other.ask("stats").contains("messages=1 datagrams=1"));
    assert_eq!(udp_request(server.udp(), b"3"), b"Received");
    assert_eq!(control.answer(), "ok 3");
    // Already there: at once.
    assert_eq!(control.ask("received 2 0"), "ok 2");
}

#[test]
fn received_times_out_with_the_count_so_far_and_commands_wait_their_turn() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    assert_eq!(udp_request(server.udp(), b"1"), b"Received");
    let asked = Instant::now();
    // Pipelined: the stats answer comes after the received one.
    control.send("received 5 0.3");
    control.send("stats");
    assert_eq!(control.answer(), "error: timeout after 0.3 s with 1");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert!(control.answer().starts_with("ok accepted=0"));
}

#[test]
fn bad_commands_answer_errors_and_change_nothing() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    for command in [
        "",
        "frobnicate",
        "fault tcp:drop",
        "fault",
        "received x 1",
        "stats now",
    ] {
        let answer = control.ask(command);
        assert!(answer.starts_with("error: "), "{command:?}: {answer}");
    }
    assert!(control.ask("stats").ends_with("faults=0"));
    assert_eq!(udp_request(server.udp(), b"hi"), b"Received");
}

#[test]
fn control_connections_are_not_data() {
    let server = Server::start(&[
        "--control",
        "127.0.0.1:0",
        "--max-connections",
        "1",
        "--idle-timeout",
        "1",
        "--max-line",
        "32",
    ]);
    let mut control = Control::open(&server);
    // Not counted, not limited by --max-connections.
    let mut second = Control::open(&server);
    assert_eq!(
        tcp_request(server.tcp(), b"hi"),
        b"Received",
        "the data slot is free"
    );
    let stats = second.ask("stats");
    assert!(
        stats.starts_with("ok accepted=1 rejected=0 open="),
        "{stats}"
    );
    // Not closed by the idle timeout: quiet for longer than it.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100)); // The quiet spell itself.
    }
    assert_eq!(control.ask("clear"), "ok");
    // An over-long line closes that control connection only.
    control.send(&"x".repeat(40));
    let drained = common::read_until_closed(&control.stream, DEADLINE);
    assert_ne!(drained.end, common::End::TimedOut);
    assert!(second.ask("stats").starts_with("ok "));
}

#[test]
fn at_most_64_control_connections() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut open: Vec<Control> = (0..64).map(|_| Control::open(&server)).collect();
    for control in &mut open {
        assert!(control.ask("stats").starts_with("ok "));
    }
    let extra = connect(server.control.unwrap());
    let drained = common::read_until_closed(&extra, DEADLINE);
    assert_ne!(drained.end, common::End::TimedOut, "the 65th is closed");
    assert!(open[0].ask("stats").starts_with("ok "));
}

#[test]
fn sigterm_closes_control_connections_at_once() {
    let mut server = Server::start(&["--control", "127.0.0.1:0"]);
    let control = Control::open(&server);
    server.signal(common::SIGTERM);
    let status = server.wait_timeout(DEADLINE).expect("exits");
    assert_eq!(status.code(), Some(0));
    let drained = common::read_until_closed(&control.stream, DEADLINE);
    assert_ne!(drained.end, common::End::TimedOut);
}

#[test]
fn the_python_example_runs_against_the_binary() {
    let mut child = std::process::Command::new("python3")
        .arg("examples/control.py")
        .arg(common::bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (examples/control.py needs Python 3, standard library only)");
    let finished = common::wait_until(DEADLINE, || child.try_wait().unwrap().is_some());
    if !finished {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(finished && output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("udp:drop:   the client times out"),
        "{stdout}"
    );
    assert!(stdout.contains("datagrams=5"), "{stdout}");
}

// ----- misuse: half-closed, never-reading and starved clients -----------------

/// Every line of what a control client read to the end, checked to end
/// the stream with an orderly close.
#[track_caller]
fn answers_until_closed(stream: &TcpStream) -> Vec<String> {
    let drained = common::read_until_closed(stream, DEADLINE);
    assert_eq!(drained.end, common::End::Eof, "{:?}", text(&drained.bytes));
    let answers = text(&drained.bytes);
    assert!(answers.is_empty() || answers.ends_with('\n'), "{answers:?}");
    answers.lines().map(String::from).collect()
}

#[test]
fn a_client_that_half_closes_gets_every_answer_then_the_close() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    // `printf 'stats\nclear\n' | nc -N`: everything, then FIN at once.
    let stream = connect(server.control.unwrap());
    (&stream).write_all(b"stats\nclear\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answers = answers_until_closed(&stream);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].starts_with("ok accepted=0"), "{answers:?}");
    assert_eq!(answers[1], "ok");
}

#[test]
fn a_last_line_without_newline_is_answered_at_the_end_of_stream() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let stream = connect(server.control.unwrap());
    (&stream).write_all(b"clear\nstats").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answers = answers_until_closed(&stream);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0], "ok");
    assert!(answers[1].starts_with("ok accepted=0"), "{answers:?}");
}

#[test]
fn a_received_still_waiting_at_the_end_of_stream_is_answered_when_it_ends() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    // One that is met after the FIN, with a command behind it.
    let met = connect(server.control.unwrap());
    (&met).write_all(b"received 1 10\nstats\n").unwrap();
    met.shutdown(std::net::Shutdown::Write).unwrap();
    // One that times out after the FIN.
    let late = connect(server.control.unwrap());
    (&late).write_all(b"received 5 0.2\n").unwrap();
    late.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        answers_until_closed(&late),
        ["error: timeout after 0.2 s with 0"]
    );
    assert_eq!(udp_request(server.udp(), b"1"), b"Received");
    let answers = answers_until_closed(&met);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0], "ok 1");
    assert!(answers[1].contains("datagrams=1"), "{answers:?}");
}

#[test]
fn answers_held_back_by_the_bound_all_come_once_the_client_reads() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    // About 2 MB of answers, far past the bound on unsent answers, asked
    // for before reading any of them.
    const COMMANDS: usize = 20_000;
    let stream = connect(server.control.unwrap());
    (&stream).write_all(&b"stats\n".repeat(COMMANDS)).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answers = answers_until_closed(&stream);
    assert_eq!(answers.len(), COMMANDS);
    assert!(answers.iter().all(|a| a.starts_with("ok accepted=")));
}

#[test]
fn a_control_client_that_never_reads_cannot_grow_the_server() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    assert!(control.ask("stats").starts_with("ok "));
    let before = server.rss_kib();
    // Commands without end, never reading an answer: the server must stop
    // reading this client, so that its writes block.
    const FLOOD: u64 = 16 << 20;
    let flood = connect(server.control.unwrap());
    flood
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sent = common::write_until_blocked(&flood, FLOOD, &b"stats\n".repeat(10_000));
    assert!(sent < FLOOD, "all {sent} bytes of commands were taken");
    // Everyone else is served meanwhile.
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"Received");
    assert_eq!(udp_request(server.udp(), b"hi"), b"Received");
    assert!(control.ask("stats").starts_with("ok "));
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
}

/// Eight clients that send lines and never read, each until the server
/// stops reading it (a write blocks for half a second); held open by the
/// caller while it measures. Each sends 64 MiB at most, which no bound
/// short of one would take.
fn never_readers(tcp: SocketAddr) -> Vec<TcpStream> {
    let flood = |_| {
        std::thread::spawn(move || {
            let stream = connect(tcp);
            let timeout = Some(Duration::from_millis(500));
            stream.set_write_timeout(timeout).unwrap();
            let lines = b"a line whose reply is never read\n".repeat(2048);
            let sent = common::write_until_blocked(&stream, 64 << 20, &lines);
            assert!(sent < 64 << 20, "all {sent} bytes were taken");
            stream
        })
    };
    let threads: Vec<_> = (0..8).map(flood).collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
#[cfg(feature = "scripts")]
fn never_readers_are_held_to_max_owed_on_both_reply_paths() {
    let server = Server::start(&["--mode", "line", "--no-udp", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    // Refused: it changes nothing, so replies stay on the fixed-reply path.
    let refused = control.ask("fault tcp:reset,match=exact:x,dir=up");
    assert!(refused.starts_with("error: "), "{refused}");
    let mut grown = Vec::new();
    for path in ["fixed reply", "responder"] {
        if path == "responder" {
            // A rule needs whole lines: replies come from the responder now.
            assert_eq!(control.ask("rule exact:never => x"), "ok");
        }
        let before = server.rss_kib();
        let held = never_readers(server.tcp());
        // Every held client is still open, and others are served.
        let open = 8 * (grown.len() as u64 + 1);
        assert!(wait_until(DEADLINE, || control.stat("open") == open));
        let other = connect(server.tcp());
        let reply = common::line_exchange(&other, b"hi\n", 9);
        assert_eq!(text(&reply), "Received\n");
        grown.push((path, server.rss_kib().saturating_sub(before)));
        std::mem::forget(held); // Held open until the server is killed.
    }
    eprintln!("RSS growth with 8 never-readers at --max-owed 65536: {grown:?} KiB");
    // Each holds at most its owed bytes (64 KiB plus one reply), one read
    // of input and its open line: under 3 MiB for eight, far below the
    // tens of MiB they sent.
    for (path, kib) in grown {
        assert!(kib < 3 * 1024, "{path}: RSS grew by {kib} KiB");
    }
}

#[test]
fn a_control_client_waiting_while_descriptors_ran_out_is_served_when_one_frees() {
    let server = Server::start_with_fd_limit(
        32,
        &[
            "--mode",
            "line",
            "--control",
            "127.0.0.1:0",
            "--log-level",
            "debug",
        ],
    );
    // Data clients take every descriptor: the one turned away (closed
    // unanswered) shows the server is at its limit.
    let mut held = Vec::new();
    loop {
        assert!(
            held.len() < 32,
            "32 descriptors held {} clients",
            held.len()
        );
        let client = connect(server.tcp());
        (&client).write_all(b"hi\n").unwrap();
        let mut reply = [0; 9];
        match std::io::Read::read_exact(&mut &client, &mut reply) {
            Ok(()) => held.push(client),
            Err(_) => break, // Closed: out of descriptors.
        }
    }
    let mut control = Control::open(&server);
    control.send("stats");
    server.wait_for_stderr("the control accept to fail", |e| {
        e.contains("control: accept failed")
    });
    // A descriptor frees; the waiting control client is now accepted.
    drop(held.pop());
    assert!(control.answer().starts_with("ok accepted="));
}

#[test]
fn reply_with_a_responder_is_an_error_that_names_no_flag() {
    let server = Server::start(&["--echo", "--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let answer = control.ask("reply Got it");
    assert!(answer.starts_with("error: "), "{answer}");
    assert!(
        !answer.contains("--"),
        "a library user typed no flag: {answer}"
    );
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"hi", "still echoing");
}

#[test]
fn received_with_extreme_counts_and_waits_is_answered_or_refused() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let max = u64::MAX;
    assert_eq!(
        control.ask(&format!("received {max} 0.05")),
        "error: timeout after 0.05 s with 0"
    );
    assert_eq!(control.ask("received 0 86400"), "ok 0", "already arrived");
    for line in [
        "received 18446744073709551616 1", // u64::MAX + 1
        "received 1 86400.001",
        "received -1 1",
        "received 1 1 1",
    ] {
        let answer = control.ask(line);
        assert!(answer.starts_with("error: "), "{line:?}: {answer:?}");
    }
    assert!(control.ask("stats").starts_with("ok "));
}

#[test]
fn control_lines_at_max_line_are_answered_and_one_more_byte_closes() {
    let server = Server::start(&["--control", "127.0.0.1:0", "--max-line", "16"]);
    let mut control = Control::open(&server);
    // "reply " and ten bytes: sixteen, the longest line allowed.
    assert_eq!(control.ask("reply 0123456789"), "ok");
    assert_eq!(
        control.ask(&format!("{:<15}x", "stats")),
        "error: stats takes no argument"
    );
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"0123456789");
    let mut long = Control::open(&server);
    long.send("reply 0123456789A");
    let drained = common::read_until_closed(&long.stream, DEADLINE);
    assert_ne!(drained.end, common::End::TimedOut, "closed");
    assert!(
        drained.bytes.is_empty(),
        "no answer: {:?}",
        text(&drained.bytes)
    );
    assert!(control.ask("stats").starts_with("ok "), "others go on");
}

#[test]
fn a_control_reply_too_long_for_a_reply_is_an_error_and_changes_nothing() {
    let server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut control = Control::open(&server);
    let answer = control.ask(&format!("reply {}", "x".repeat(2048)));
    assert_eq!(answer, "error: reply: at most 1024 bytes, got 2048");
    assert!(
        control
            .ask("reply ")
            .starts_with("error: reply: must be 1 to 1024")
    );
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"Received");
}

#[test]
fn sigterm_while_64_control_clients_wait_closes_them_all_at_once() {
    let mut server = Server::start(&["--control", "127.0.0.1:0"]);
    let mut waiting: Vec<Control> = (0..64).map(|_| Control::open(&server)).collect();
    for control in &mut waiting {
        // Answered first, so the connection is surely taken (not the 65th).
        assert!(control.ask("stats").starts_with("ok "));
        control.send("received 1000000 86400");
    }
    // Data clients are served while all 64 wait.
    assert_eq!(tcp_request(server.tcp(), b"hi"), b"Received");
    assert_eq!(udp_request(server.udp(), b"hi"), b"Received");
    let began = Instant::now();
    server.signal(common::SIGTERM);
    let status = server.wait_timeout(DEADLINE).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    for control in &waiting {
        let drained = common::read_until_closed(&control.stream, DEADLINE);
        assert_ne!(drained.end, common::End::TimedOut);
    }
}
