//! The journal names the endpoint of every line it writes for one (SPEC
//! 13 and 14): a named endpoint's relayed chunks carry `"endpoint"`, the
//! main sockets' lines do not. Against ackloop only (toxiproxy has no
//! journal); needs `python3`, as the other journal tests do.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};

use crate::common::journal::{TempPath, read_journal};
use crate::common::upstream::echo_upstream;
use crate::common::{DEADLINE, Server, connect, read_exactly, wait_until};
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
