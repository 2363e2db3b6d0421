//! Hosts: several processes on one port (`--reuse-port`), and the small
//! machine's settings. Black box over loopback, Linux like the others.
#![cfg(target_os = "linux")]

mod common;

use std::net::UdpSocket;

use common::{Server, assert_summary, counter, run, tcp_request, udp_request};

/// Stops `server`; its summary line.
#[track_caller]
fn summary(mut server: Server) -> String {
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_summary(&stderr)
}

#[test]
fn two_reuse_port_processes_share_one_address() {
    let first = Server::start(&["--reuse-port"]);
    let (tcp, udp) = (first.tcp().to_string(), first.udp().to_string());
    let second = Server::start(&["--reuse-port", "--tcp", &tcp, "--udp", &udp]);
    assert_eq!((second.tcp(), second.udp()), (first.tcp(), first.udp()));
    // The kernel spreads clients over both by their addresses: 64 new
    // connections and 64 datagrams from new sockets all reach one of them
    // with probability 2^-63.
    for _ in 0..64 {
        assert_eq!(tcp_request(first.tcp(), b"Hello, Server"), b"Received");
        assert_eq!(udp_request(first.udp(), b"Hello, Server"), b"Received");
    }
    let (a, b) = (summary(first), summary(second));
    for name in ["accepted", "datagrams"] {
        let (x, y) = (counter(&a, name).unwrap(), counter(&b, name).unwrap());
        assert_eq!(x + y, 64, "{name}: {a} / {b}");
        assert!(x > 0 && y > 0, "{name} not spread: {x} and {y}");
    }
}

#[test]
fn without_reuse_port_the_second_process_cannot_bind() {
    let first = Server::start(&[]);
    let (status, stdout, stderr) = run(&["--tcp", &first.tcp().to_string()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("cannot bind tcp"), "{stderr}");
    // Sharing takes both: a --reuse-port process cannot join one without.
    let (status, _, stderr) = run(&["--reuse-port", "--tcp", &first.tcp().to_string()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
}

#[test]
fn a_datagram_larger_than_a_small_read_buffer_is_counted_whole() {
    for extra in [&[][..], &["--echo"][..]] {
        let mut args = vec!["--read-buffer", "512"];
        args.extend(extra);
        let server = Server::start(&args);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.udp()).unwrap();
        client.set_read_timeout(Some(common::DEADLINE)).unwrap();
        let datagram: Vec<u8> = (0..65_507).map(|i| (i % 251) as u8).collect();
        client.send(&datagram).unwrap();
        let mut reply = vec![0; 70_000];
        let n = common::retrying(|| client.recv(&mut reply)).expect("a reply");
        match extra {
            // The fixed reply needs no payload at all.
            [] => assert_eq!(&reply[..n], b"Received"),
            // A responder sees what the buffer holds: the first 512 bytes.
            _ => assert_eq!(&reply[..n], &datagram[..512]),
        }
        let summary = summary(server);
        assert_eq!(counter(&summary, "bytes in"), Some(65_507), "{summary}");
    }
}

#[test]
fn small_settings_keep_long_lines_and_pipelines_whole() {
    let server = Server::start(&[
        "--mode",
        "line",
        "--echo",
        "--read-buffer",
        "512",
        "--max-owed",
        "1",
    ]);
    let stream = common::connect(server.tcp());
    let long = "x".repeat(3000);
    let request: String = (0..50).map(|i| format!("{i} {long}\n")).collect();
    use std::io::Write;
    (&stream).write_all(request.as_bytes()).unwrap();
    let reply = common::read_exactly(&stream, request.len());
    assert_eq!(common::text(&reply), request);
}
