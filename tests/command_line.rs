//! The `ackloop` binary against its contract (SPEC sections 1 to 4), over
//! real sockets on 127.0.0.1 with port 0.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};

use common::{Process, connect, run, tcp_request, udp_request};

#[test]
fn the_article_clients_run_against_one_process_at_once() {
    let server = Process::start(&[]);
    let (tcp, udp) = (server.tcp(), server.udp());
    let tcp_client = std::thread::spawn(move || tcp_request(tcp, b"Hello, Server"));
    let udp_client = std::thread::spawn(move || udp_request(udp, b"Hello, Server"));
    assert_eq!(tcp_client.join().unwrap(), b"Received");
    assert_eq!(udp_client.join().unwrap(), b"Received");
}

#[test]
fn once_mode_survives_a_megabyte_before_reading_and_silent_clients() {
    let server = Process::start(&["--reply", "Got it"]);
    // Connect and leave without sending: nothing is owed, the server goes on.
    let mut silent = connect(server.tcp());
    silent.shutdown(Shutdown::Write).unwrap();
    let mut nothing = Vec::new();
    silent.read_to_end(&mut nothing).unwrap();
    assert_eq!(nothing, b"", "no reply without a request");
    // A megabyte before reading: the reply must not be destroyed by a reset.
    assert_eq!(tcp_request(server.tcp(), &vec![b'x'; 1 << 20]), b"Got it");
    assert_eq!(tcp_request(server.tcp(), b"Hello, Server"), b"Got it");
}

#[test]
fn line_mode_framing_over_the_wire() {
    let server = Process::start(&["--mode", "line", "--max-line", "16"]);
    // Single bytes, \r\n, and a final line after shutdown(Write).
    let mut stream = connect(server.tcp());
    stream.set_nodelay(true).unwrap();
    for byte in b"one\r\ntwo\n\nlast" {
        stream.write_all(&[*byte]).unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut replies = Vec::new();
    stream.read_to_end(&mut replies).unwrap();
    assert_eq!(replies, b"Received\n".repeat(4));

    // A line over --max-line: the reply owed before it, then the close.
    let mut stream = connect(server.tcp());
    stream
        .write_all(b"ok\n12345678901234567\nnever answered\n")
        .unwrap();
    let mut replies = Vec::new();
    stream.read_to_end(&mut replies).unwrap();
    assert_eq!(replies, b"Received\n");
    assert!(
        server.stderr().contains("--max-line"),
        "warned: {}",
        server.stderr()
    );
}

#[test]
fn ten_thousand_pipelined_lines_are_answered_in_order() {
    let server = Process::start(&["--mode", "line", "--reply", "ack"]);
    let stream = connect(server.tcp());
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let lines: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        writer.write_all(&lines).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut replies = Vec::new();
    (&stream).read_to_end(&mut replies).unwrap();
    sender.join().unwrap();
    assert_eq!(replies, b"ack\n".repeat(10_000));
}

#[test]
fn udp_answers_the_empty_and_the_largest_datagram() {
    let server = Process::start(&["--no-tcp"]);
    assert!(server.tcp.is_none());
    assert_eq!(udp_request(server.udp(), b""), b"Received");
    assert_eq!(udp_request(server.udp(), &vec![7; 65_507]), b"Received");
}

#[test]
fn two_hundred_concurrent_connections_are_all_answered() {
    let server = Process::start(&["--mode", "line"]);
    let mut streams: Vec<_> = (0..200).map(|_| connect(server.tcp())).collect();
    for stream in &mut streams {
        stream.write_all(b"Hello, Server\n").unwrap();
    }
    for stream in &mut streams {
        let mut reply = [0; 9];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"Received\n");
    }
}

#[test]
fn bad_options_exit_2_with_one_line_naming_the_option() {
    for (args, option) in [
        (&["--frobnicate"][..], "--frobnicate"),
        (&["--mode", "bogus"], "--mode"),
        (&["--reply", ""], "--reply"),
        (&["--max-connections", "-1"], "--max-connections"),
        (&["--idle-timeout", "x"], "--idle-timeout"),
        (&["--tcp", "notanaddr"], "--tcp"),
        (&["--no-tcp", "--no-udp"], "--no-udp"),
        (&["--log-level", "loud"], "--log-level"),
    ] {
        let (status, stdout, stderr) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}: nothing bound, nothing printed");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_address_exits_1_naming_protocol_and_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stdout, stderr) = run(&["--tcp", &addr, "--no-udp"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    let line = stderr.lines().last().unwrap();
    assert!(line.contains("tcp") && line.contains(&addr), "{stderr}");
    assert!(
        line.to_lowercase().contains("in use"),
        "OS reason: {stderr}"
    );
}

#[test]
fn sigterm_delivers_owed_replies_then_exits_0_with_a_summary() {
    let mut server = Process::start(&["--mode", "line"]);
    let stream = connect(server.tcp());
    // Pipeline far more than the socket buffers hold, without reading.
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&b"x\n".repeat(1_000_000));
    });
    let mut first = [0; 9];
    (&stream).read_exact(&mut first).unwrap(); // The server is answering.
    server.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    (&stream).read_to_end(&mut rest).expect("EOF, not a reset");
    assert_eq!(rest.len() % 9, 0, "whole replies only");
    assert!(rest.chunks(9).all(|reply| reply == b"Received\n"));
    drop(stream);
    let _ = sender.join();
    assert_eq!(server.wait().code(), Some(0));
    let summary = server.stderr();
    for counter in [
        "accepted",
        "rejected",
        "messages",
        "datagrams",
        "bytes in",
        "bytes out",
    ] {
        assert!(summary.contains(counter), "{counter} missing: {summary}");
    }
}

#[test]
fn an_idle_server_exits_at_once_on_sigint_and_sigterm() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut server = Process::start(&[]);
        server.signal(signal);
        assert_eq!(server.wait().code(), Some(0));
    }
}

#[test]
fn idle_connections_are_closed_active_ones_kept() {
    let server = Process::start(&["--mode", "line", "--idle-timeout", "1"]);
    let mut idle = connect(server.tcp());
    let mut active = connect(server.tcp());
    let mut reply = [0; 9];
    // The active client talks every 200 ms for 2 s: past the idle timeout.
    for _ in 0..10 {
        active.write_all(b"ping\n").unwrap();
        active.read_exact(&mut reply).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)
        .expect("closed with EOF within the deadline");
    assert_eq!(rest, b"");
    active.write_all(b"still here\n").unwrap();
    active.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"Received\n");
}

#[test]
fn echo_sends_every_message_back() {
    let server = Process::start(&["--mode", "line", "--echo"]);
    let mut stream = connect(server.tcp());
    stream.write_all(b"one\r\ntwo\n").unwrap();
    let mut replies = [0; 8];
    stream.read_exact(&mut replies).unwrap();
    assert_eq!(&replies, b"one\ntwo\n");
    assert_eq!(udp_request(server.udp(), b"datagram"), b"datagram");
}
