//! The journal names the endpoint of every line it writes for one (SPEC
//! 13 and 14): a named endpoint's relayed chunks and datagrams carry
//! `"endpoint"`, the main sockets' lines do not. Against ackloop only (toxiproxy has no
//! journal); needs `python3`, as the other journal tests do.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, UdpSocket};

use crate::common::journal::{TempPath, read_journal};
use crate::common::upstream::{UdpUpstream, echo_upstream};
use crate::common::{DEADLINE, Server, connect, connected_udp, read_exactly, retrying, wait_until};
use crate::http::Client;

/// Sends `ping\n` to `addr`, reads `expected` back, closes, and waits
/// for the journal to hold `lines` lines.
#[track_caller]
fn ping(addr: SocketAddr, expected: &[u8], journal: &TempPath, lines: usize) {
    let stream = connect(addr);
    (&stream).write_all(b"ping\n").unwrap();
    assert_eq!(read_exactly(&stream, expected.len()), expected);
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(
        wait_until(DEADLINE, || journal.lines() >= lines),
        "{lines} journal lines"
    );
}

#[test]
fn a_named_endpoints_lines_carry_its_name_and_the_main_sockets_do_not() {
    let upstream = echo_upstream();
    let config = TempPath::new("journal-endpoints.json");
    let text = format!(r#"[{{"name":"db","listen":"127.0.0.1:0","upstream":"{upstream}"}}]"#);
    std::fs::write(&config.0, text).unwrap();
    let journal = TempPath::new("journal-endpoints.jsonl");
    // Each ping is one write each way: bounds of its own (the smallest
    // settings would relay it a byte a write).
    let bounds = ["--max-owed", "65536", "--read-buffer", "65536"];
    let args = ["--config", config.path(), "--api", "127.0.0.1:0"];
    let mut server = Server::start(&[&args[..], &bounds, &["--journal", journal.path()]].concat());
    let mut client = Client::connect(server.api.unwrap());
    let body =
        format!(r#"{{"name":"cache \"2\"","listen":"127.0.0.1:0","upstream":"{upstream}"}}"#);
    let made = client.post("/proxies", &body);
    assert_eq!(made.status, 201, "{}", made.text());
    let proxies = client.get("/proxies").json();
    let listen = |name: &str| proxies[name]["listen"].as_str().unwrap().parse().unwrap();

    ping(server.tcp(), b"Received", &journal, 2);
    ping(listen("db"), b"ping\n", &journal, 4);
    ping(listen("cache \"2\""), b"ping\n", &journal, 6);
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap());
    assert_eq!(
        lines,
        [
            "tcp 1 1 in 5 b'ping\\n' peer",
            "tcp 1 1 out 8 b'Received'",
            "@db tcp 1 1 up 5 b'ping\\n' peer",
            "@db tcp 1 1 down 5 b'ping\\n'",
            "@cache \"2\" tcp 1 1 up 5 b'ping\\n' peer",
            "@cache \"2\" tcp 1 1 down 5 b'ping\\n'",
        ]
    );
}

/// Sends `datagram` on `socket` (connected), and waits for the journal to
/// hold `lines` lines.
#[track_caller]
fn send(socket: &UdpSocket, datagram: &[u8], journal: &TempPath, lines: usize) {
    socket.send(datagram).unwrap();
    assert!(
        wait_until(DEADLINE, || journal.lines() >= lines),
        "{lines} journal lines"
    );
}

/// The next datagram `socket` receives.
#[track_caller]
fn receive(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0; 64];
    let n = retrying(|| socket.recv(&mut buf)).expect("a datagram back");
    buf[..n].to_vec()
}

#[test]
fn a_udp_endpoints_lines_carry_its_name_and_the_main_sockets_do_not() {
    let upstream = UdpUpstream::echo();
    let config = TempPath::new("journal-udp-endpoints.json");
    let up = upstream.addr;
    let text = format!(r#"[{{"name":"dns","listen":"udp:127.0.0.1:0","upstream":"udp:{up}"}}]"#);
    std::fs::write(&config.0, text).unwrap();
    let journal = TempPath::new("journal-udp-endpoints.jsonl");
    let args = ["--config", config.path(), "--api", "127.0.0.1:0"];
    let mut server = Server::start(&[&args[..], &["--journal", journal.path()]].concat());
    let mut api = Client::connect(server.api.unwrap());
    // Its first reply dropped by a fault: the line of a datagram that
    // never left names it too.
    let body = format!(
        r#"{{"name":"media","listen":"udp:127.0.0.1:0","upstream":"udp:{up}",
            "toxics":[{{"type":"drop","attributes":{{"first":1}}}}]}}"#
    );
    let made = api.post("/proxies", &body);
    assert_eq!(made.status, 201, "{}", made.text());
    let proxies = api.get("/proxies").json();
    let listen = |name: &str| {
        let listen = proxies[name]["listen"].as_str().unwrap();
        connected_udp(listen.strip_prefix("udp:").unwrap().parse().unwrap())
    };

    let main = connected_udp(server.udp());
    send(&main, b"ping", &journal, 2);
    assert_eq!(receive(&main), b"Received");
    let dns = listen("dns");
    send(&dns, b"ping", &journal, 4);
    assert_eq!(receive(&dns), b"ping");
    let media = listen("media");
    send(&media, b"gone", &journal, 6);
    send(&media, b"kept", &journal, 8);
    assert_eq!(receive(&media), b"kept", "the first reply was dropped");
    // A datagram a delay holds when its proxy is deleted: dropped then.
    let latency = r#"{"type":"latency","stream":"upstream","attributes":{"latency":60000}}"#;
    assert_eq!(api.post("/proxies/media/toxics", latency).status, 200);
    media.send(b"late").unwrap();
    let held = || api.get("/proxies/media").json()["stats"]["faults"] == 2;
    assert!(wait_until(DEADLINE, held), "held back by the latency");
    assert_eq!(api.delete("/proxies/media").status, 204);
    assert!(wait_until(DEADLINE, || journal.lines() >= 9), "9 lines");
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
    let lines = read_journal(&std::fs::read_to_string(&journal.0).unwrap());
    assert_eq!(
        lines,
        [
            "udp - 1 in 4 b'ping' peer",
            "udp - 1 out 8 b'Received' peer",
            "@dns udp - 1 up 4 b'ping' peer",
            "@dns udp - 1 down 4 b'ping' peer",
            "@media udp - 1 up 4 b'gone' peer",
            "@media udp - 1 down 0 b'' peer drop",
            "@media udp - 2 up 4 b'kept' peer",
            "@media udp - 2 down 4 b'kept' peer",
            "@media udp - 3 up 0 b'' peer delay",
        ]
    );
}
